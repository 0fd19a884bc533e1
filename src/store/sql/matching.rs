//! Matching without disclosure (the responding gateway's, issue 22 §2):
//! the searches sent from here a query may meet, the handles an answer
//! gave, and the queries counted for each member gateway's rate limit.
//!
//! SQL for both backends, expanded for each by `sql_store!` in `mod.rs`
//! (whose imports the expansion uses).

/// The searches a query may meet: family-tracing requests with an entry,
/// still searching, not erased.
pub(super) fn candidates_sql() -> String {
    format!(
        "SELECT m.referral_id, r.sender_org, m.sealed, m.key_id FROM match_entries m JOIN referrals r ON r.id = m.referral_id \
         WHERE r.erased_ms IS NULL AND r.status IN {}",
        super::list(&crate::domain::lifecycle::ReferralStatus::SEARCHING)
    )
}

macro_rules! matching_sql {
    ($store:ident, $row:ty) => {
        impl $store {
            fn candidate_from_row(row: &$row) -> Result<MatchCandidate, StoreError> {
                Ok(MatchCandidate {
                    referral_id: row.try_get("referral_id")?,
                    sender_org: row.try_get("sender_org")?,
                    entry: SealedPayload { sealed: row.try_get("sealed")?, key_id: row.try_get("key_id")? },
                })
            }

            /// Stores the match entries of referrals just inserted.
            async fn insert_match_entries(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                stored: &[&NewReferral],
            ) -> Result<(), sqlx::Error> {
                let with_entries: Vec<(&NewReferral, &SealedMatchEntry)> = stored.iter().filter_map(|new| Some((*new, new.match_entry.as_ref()?))).collect();
                for chunk in with_entries.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new("INSERT INTO match_entries (referral_id, sealed, people, key_id, created_ms) ");
                    query.push_values(chunk, |mut row, (new, entry)| {
                        row.push_bind(new.record.id.clone())
                            .push_bind(entry.entry.sealed.clone())
                            .push_bind(entry.people.clone())
                            .push_bind(entry.entry.key_id.clone())
                            .push_bind(new.record.created_ms);
                    });
                    query.build().persistent(false).execute(&mut *connection).await?;
                }
                Ok(())
            }

            /// A search no longer matched (its consent withdrawn or narrowed):
            /// its entry goes, and the handles given for it stand for nothing.
            async fn forget_match_entry(connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection, referral_id: &str) -> Result<(), sqlx::Error> {
                sqlx::query("DELETE FROM match_entries WHERE referral_id = $1").bind(referral_id).execute(&mut *connection).await?;
                sqlx::query("UPDATE match_handles SET referral_id = NULL WHERE referral_id = $1").bind(referral_id).execute(&mut *connection).await?;
                Ok(())
            }
        }

        #[async_trait]
        impl MatchStore for $store {
            async fn match_candidates(&self) -> Result<Vec<MatchCandidate>, StoreError> {
                let rows = sqlx::query(&format!("{} ORDER BY m.referral_id", matching::candidates_sql())).fetch_all(&self.pool).await?;
                rows.iter().map(Self::candidate_from_row).collect()
            }

            async fn match_candidate(&self, referral_id: &str) -> Result<Option<MatchCandidate>, StoreError> {
                let row = sqlx::query(&format!("{} AND m.referral_id = $1", matching::candidates_sql())).bind(referral_id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::candidate_from_row).transpose()
            }

            async fn count_match_query(&self, gateway: &str, since_ms: i64, at_ms: i64, limit: i64) -> Result<bool, StoreError> {
                // Queries of one gateway count in turn (the dialect's lock), on
                // every replica sharing the database.
                let mut tx = self.pool.begin_with(Self::DIALECT.begin).await?;
                if !Self::DIALECT.count_lock.is_empty() {
                    sqlx::query(Self::DIALECT.count_lock).bind(gateway).execute(&mut *tx).await?;
                }
                let asked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM match_queries WHERE asking_gateway = $1 AND at_ms > $2")
                    .bind(gateway)
                    .bind(since_ms)
                    .fetch_one(&mut *tx)
                    .await?;
                if asked >= limit {
                    return Ok(false);
                }
                sqlx::query("INSERT INTO match_queries (asking_gateway, at_ms) VALUES ($1, $2)").bind(gateway).bind(at_ms).execute(&mut *tx).await?;
                // What no window counts any more.
                sqlx::query("DELETE FROM match_queries WHERE asking_gateway = $1 AND at_ms <= $2").bind(gateway).bind(since_ms).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn keep_match_handles(&self, handles: &[MatchHandle], now_ms: i64) -> Result<(), StoreError> {
                let mut tx = self.pool.begin_with(Self::DIALECT.begin).await?;
                sqlx::query("DELETE FROM match_handles WHERE expires_ms <= $1").bind(now_ms).execute(&mut *tx).await?;
                for chunk in handles.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new("INSERT INTO match_handles (handle, referral_id, asking_gateway, asking_org, expires_ms) ");
                    query.push_values(chunk, |mut row, handle| {
                        row.push_bind(handle.handle.clone())
                            .push_bind(handle.referral_id.clone())
                            .push_bind(handle.asking_gateway.clone())
                            .push_bind(handle.asking_org.clone())
                            .push_bind(handle.expires_ms);
                    });
                    query.build().persistent(false).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn match_people(&self, referral_id: &str) -> Result<Option<SealedPayload>, StoreError> {
                let row = sqlx::query("SELECT people, key_id FROM match_entries WHERE referral_id = $1").bind(referral_id).fetch_optional(&self.pool).await?;
                row.map(|row| Ok(SealedPayload { sealed: row.try_get("people")?, key_id: row.try_get("key_id")? })).transpose()
            }

            async fn match_handle(&self, handle: &str, gateway: &str, now_ms: i64) -> Result<Option<MatchHandle>, StoreError> {
                let row = sqlx::query(
                    "SELECT handle, referral_id, asking_gateway, asking_org, expires_ms FROM match_handles \
                     WHERE handle = $1 AND asking_gateway = $2 AND expires_ms > $3",
                )
                .bind(handle)
                .bind(gateway)
                .bind(now_ms)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| {
                    Ok(MatchHandle {
                        handle: row.try_get("handle")?,
                        referral_id: row.try_get("referral_id")?,
                        asking_gateway: row.try_get("asking_gateway")?,
                        asking_org: row.try_get("asking_org")?,
                        expires_ms: row.try_get("expires_ms")?,
                    })
                })
                .transpose()
            }
        }
    };
}

pub(super) use matching_sql;
