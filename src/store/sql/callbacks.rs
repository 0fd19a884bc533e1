//! Status callbacks (the sending gateway's): each timeline entry of a
//! referral whose organisation is registered, queued in the transaction
//! that records the entry, then claimed, retried and settled by the
//! callback worker.
//!
//! SQL for both backends, expanded for each by `sql_store!` in `mod.rs`
//! (whose imports the expansion uses).

macro_rules! callback_sql {
    ($store:ident, $row:ty) => {
        impl $store {
            /// Queues the timeline entry just recorded for `referral_id` (its
            /// latest) if its organisation is registered; nothing otherwise.
            /// Its position is the number of entries the referral has now.
            /// (SQLite; PostgreSQL queues it in the entry's own statement, `referral_moves`.)
            async fn queue_callback(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                event: ReferralEvent,
                reasons: Option<&str>,
                at_ms: i64,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(&queue_callback_sql(""))
                    .bind(referral_id)
                    .bind(event.as_str())
                    .bind(at_ms)
                    .bind(reasons)
                    .bind(CallbackState::Pending.as_str())
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            }

            /// Queues the first timeline entry (`queued` or `denied`, the
            /// status each was stored with) of referrals just stored.
            async fn queue_first_callbacks(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_ids: &[&str],
            ) -> Result<(), sqlx::Error> {
                let mut query = QueryBuilder::new(format!(
                    "INSERT INTO callbacks ({CALLBACK_INSERTED}) \
                     SELECT r.id || '.1', r.id, r.sender_org, 1, r.status, r.created_ms, NULL, "
                ));
                query
                    .push_bind(CallbackState::Pending.as_str())
                    .push(
                        ", r.created_ms, r.created_ms + s.retry_ms \
                         FROM referrals r JOIN callback_subscriptions s ON s.org = r.sender_org WHERE r.id IN (",
                    );
                let mut ids = query.separated(", ");
                for id in referral_ids {
                    ids.push_bind(id.to_string());
                }
                query.push(")");
                query.build().persistent(false).execute(&mut *connection).await?;
                Ok(())
            }

            fn due_callback_from_row(row: &$row) -> Result<DueCallback, StoreError> {
                let reasons: Option<String> = row.try_get("reasons")?;
                Ok(DueCallback {
                    id: row.try_get("id")?,
                    referral_id: row.try_get("referral_id")?,
                    org: row.try_get("org")?,
                    position: row.try_get("position")?,
                    event: parsed(row.try_get("event")?)?,
                    at_ms: row.try_get("at_ms")?,
                    reasons: string_list(reasons, "callback reasons")?,
                    attempts: row.try_get("attempts")?,
                    deadline_ms: row.try_get("deadline_ms")?,
                })
            }
        }

        #[async_trait]
        impl CallbackStore for $store {
            async fn register_callbacks(&self, subscriptions: &[CallbackSubscription]) -> Result<(), StoreError> {
                // Upserts only: a replica started with an older or smaller
                // configuration must not drop what the others queue.
                for subscription in subscriptions {
                    sqlx::query("INSERT INTO callback_subscriptions (org, retry_ms) VALUES ($1, $2) ON CONFLICT (org) DO UPDATE SET retry_ms = $2")
                        .bind(&subscription.org)
                        .bind(subscription.retry_ms)
                        .execute(&self.pool)
                        .await?;
                }
                Ok(())
            }

            async fn claim_callbacks(&self, orgs: &[crate::domain::OrgId], now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<DueCallback>, StoreError> {
                if orgs.is_empty() {
                    return Ok(Vec::new());
                }
                let rows = self.claim(&claim_callbacks_sql(&Self::DIALECT, orgs), "callbacks", "id", CALLBACK_COLUMNS, now_ms, lease_ms, limit).await?;
                let mut due = rows.iter().map(Self::due_callback_from_row).collect::<Result<Vec<_>, _>>()?;
                due.sort_by_key(|c| c.position);
                Ok(due)
            }

            async fn callback_delivered(&self, id: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM callbacks WHERE id = $1").bind(id).execute(&self.pool).await?;
                Ok(())
            }

            async fn retry_callback(&self, id: &str, next_ms: i64, error_code: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE callbacks SET next_ms = $1, last_error = $2, claim_node = NULL, claim_instance = NULL WHERE id = $3 AND state = $4")
                    .bind(next_ms)
                    .bind(error_code)
                    .bind(id)
                    .bind(CallbackState::Pending.as_str())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn give_up_callback(&self, id: &str, error_code: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE callbacks SET state = $1, last_error = $2, claim_node = NULL, claim_instance = NULL WHERE id = $3 AND state = $4")
                    .bind(CallbackState::Failed.as_str())
                    .bind(error_code)
                    .bind(id)
                    .bind(CallbackState::Pending.as_str())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn undelivered_callbacks(&self, referral_id: &str) -> Result<UndeliveredCallbacks, StoreError> {
                let rows = sqlx::query("SELECT state, last_error FROM callbacks WHERE referral_id = $1 ORDER BY position")
                    .bind(referral_id)
                    .fetch_all(&self.pool)
                    .await?;
                let mut undelivered = UndeliveredCallbacks::default();
                for row in &rows {
                    match parsed::<CallbackState>(row.try_get("state")?)? {
                        CallbackState::Pending => undelivered.pending += 1,
                        CallbackState::Failed => undelivered.failed += 1,
                    }
                    if let Some(error) = row.try_get::<Option<String>, _>("last_error")? {
                        undelivered.last_error = Some(error);
                    }
                }
                Ok(undelivered)
            }

            async fn callback_counts(&self) -> Result<Vec<CallbackCount>, StoreError> {
                let rows = sqlx::query("SELECT org, state, COUNT(*) AS n FROM callbacks GROUP BY org, state ORDER BY org, state")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| Ok(CallbackCount { org: row.try_get("org")?, state: parsed(row.try_get("state")?)?, count: row.try_get("n")? }))
                    .collect()
            }
        }
    };
}

pub(super) use callback_sql;
