//! Emergency overrides (the sending gateway's): what was asked with a
//! submission, the DPO's decision, and the held outbox entry it releases or
//! erases.
//!
//! SQL for both backends, expanded for each by `sql_store!` in `mod.rs`
//! (whose imports the expansion uses).

macro_rules! override_sql {
    ($store:ident, $row:ty) => {
        impl $store {
            async fn insert_override(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                asked: &NewOverride,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO emergency_overrides (referral_id, reason, justification_code, overridden, requested_org, requested_by, \
                     requested_ms, approve_by_ms, state, standing_rule) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(referral_id)
                .bind(asked.reason.as_str())
                .bind(&asked.justification_code)
                .bind(serde_json::to_string(&asked.overridden).unwrap_or_else(|_| "[]".to_owned()))
                .bind(&asked.requested_org)
                .bind(&asked.requested_by)
                .bind(asked.requested_ms)
                .bind(asked.approve_by_ms)
                .bind(OverrideState::AwaitingApproval.as_str())
                .bind(&asked.standing_rule)
                .execute(&mut *connection)
                .await?;
                // Under a standing rule, approved in the same transaction:
                // the timeline reads `awaiting_override, override_approved`.
                if let Some(rule) = &asked.standing_rule {
                    // Just stored as awaiting: if it did not settle, fail the whole write rather than keep an override whose answer says approved.
                    if !Self::settle_override(connection, referral_id, OverrideState::Approved, rule, asked.requested_ms).await? {
                        return Err(sqlx::Error::Decode("an override under a standing rule did not settle".into()));
                    }
                }
                Ok(())
            }

            /// See [`Write::SettleOverride`]: false when the referral no
            /// longer awaits it.
            async fn settle_override(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                outcome: OverrideState,
                decided_by: &str,
                at_ms: i64,
            ) -> Result<bool, sqlx::Error> {
                let event = match outcome {
                    OverrideState::Approved => ReferralEvent::OverrideApproved,
                    OverrideState::Rejected => ReferralEvent::OverrideRejected,
                    OverrideState::Expired => ReferralEvent::OverrideExpired,
                    OverrideState::AwaitingApproval | OverrideState::Stopped => return Ok(false),
                };
                let settled = sqlx::query(
                    "UPDATE emergency_overrides SET state = $1, decided_by = $2, decided_ms = $3 WHERE referral_id = $4 AND state = $5 \
                     AND EXISTS (SELECT 1 FROM referrals r WHERE r.id = $4 AND r.status = $6)",
                )
                .bind(outcome.as_str())
                .bind(decided_by)
                .bind(at_ms)
                .bind(referral_id)
                .bind(OverrideState::AwaitingApproval.as_str())
                .bind(ReferralStatus::AwaitingOverride.as_str())
                .execute(&mut *connection)
                .await?
                .rows_affected();
                if settled == 0 {
                    return Ok(false);
                }
                if outcome == OverrideState::Approved {
                    sqlx::query("UPDATE outbox SET held = FALSE, next_attempt_ms = $1 WHERE id = $2 AND packet_type = 'referral'")
                        .bind(at_ms)
                        .bind(referral_id)
                        .execute(&mut *connection)
                        .await?;
                } else {
                    Self::stop_referral_packet(connection, referral_id, OutboxEvent::Erased).await?;
                    sqlx::query("UPDATE referrals SET outcome = 'deny' WHERE id = $1").bind(referral_id).execute(&mut *connection).await?;
                }
                Self::referral_moves(connection, referral_id, event, &[], at_ms).await?;
                Ok(true)
            }

            fn override_from_row(row: &$row) -> Result<StoredOverride, StoreError> {
                let overridden: String = row.try_get("overridden")?;
                Ok(StoredOverride {
                    referral_id: row.try_get("referral_id")?,
                    asked: NewOverride {
                        reason: parsed(row.try_get("reason")?)?,
                        justification_code: row.try_get("justification_code")?,
                        overridden: string_list(Some(overridden), "overridden categories")?,
                        requested_org: row.try_get("requested_org")?,
                        requested_by: row.try_get("requested_by")?,
                        requested_ms: row.try_get("requested_ms")?,
                        approve_by_ms: row.try_get("approve_by_ms")?,
                        standing_rule: row.try_get("standing_rule")?,
                    },
                    state: parsed(row.try_get("state")?)?,
                    decided_by: row.try_get("decided_by")?,
                    decided_ms: row.try_get("decided_ms")?,
                    purpose: row.try_get("purpose")?,
                    destination_org: row.try_get("destination_org")?,
                    destination_country: row.try_get("destination_country")?,
                    priority: parsed(row.try_get("priority")?)?,
                })
            }
        }

        #[async_trait]
        impl OverrideStore for $store {
            async fn emergency_override(&self, referral_id: &str) -> Result<Option<StoredOverride>, StoreError> {
                let row = sqlx::query(&format!("SELECT {OVERRIDE_COLUMNS} FROM {OVERRIDE_FROM} WHERE o.referral_id = $1"))
                    .bind(referral_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::override_from_row).transpose()
            }

            async fn awaiting_overrides(&self, limit: i64) -> Result<Vec<StoredOverride>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT {OVERRIDE_COLUMNS} FROM {OVERRIDE_FROM} WHERE o.state = $1 AND r.status = $2 \
                     ORDER BY o.approve_by_ms, o.referral_id LIMIT $3"
                ))
                .bind(OverrideState::AwaitingApproval.as_str())
                .bind(ReferralStatus::AwaitingOverride.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::override_from_row).collect()
            }

            async fn lapsed_overrides(&self, now_ms: i64, limit: i64) -> Result<Vec<String>, StoreError> {
                let rows = sqlx::query(
                    "SELECT referral_id FROM emergency_overrides WHERE state = $1 AND approve_by_ms <= $2 ORDER BY approve_by_ms, referral_id LIMIT $3",
                )
                .bind(OverrideState::AwaitingApproval.as_str())
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map(|row| row.try_get("referral_id")).collect::<Result<_, _>>()?)
            }
        }
    };
}

pub(super) use override_sql;
