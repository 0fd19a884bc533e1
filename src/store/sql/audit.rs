//! The audit log and the policy versions, read back; audit records written in a batch's transaction.
//!
//! SQL for both backends, expanded for each by `sql_store!` in `mod.rs`
//! (whose imports the expansion uses).

macro_rules! audit_sql {
    ($store:ident, $row:ty) => {
        impl $store {
            fn audit_from_row(row: &$row) -> Result<AuditRecord, StoreError> {
                let reasons: String = row.try_get("reasons")?;
                Ok(AuditRecord {
                    seq: row.try_get("seq")?,
                    at_ms: row.try_get("at_ms")?,
                    actor_org: row.try_get("actor_org")?,
                    actor_subject: row.try_get("actor_subject")?,
                    action: row.try_get("action")?,
                    referral_id: row.try_get("referral_id")?,
                    subject_key: row.try_get("subject_key")?,
                    policy_version: row.try_get("policy_version")?,
                    outcome: row.try_get("outcome")?,
                    reasons: serde_json::from_str(&reasons)
                        .map_err(|_| StoreError::Corrupt("audit reasons are not a JSON array of strings".to_owned()))?,
                    counterpart_org: row.try_get("counterpart_org")?,
                    counterpart_subject: row.try_get("counterpart_subject")?,
                    prev_hash: row.try_get("prev_hash")?,
                    hash: row.try_get("hash")?,
                })
            }

            async fn insert_audit(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                records: &[AuditRecord],
            ) -> Result<(), sqlx::Error> {
                for chunk in records.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new(format!("INSERT INTO audit_log ({AUDIT_COLUMNS}) "));
                    query.push_values(chunk, |mut row, record| {
                        row.push_bind(record.seq)
                            .push_bind(record.at_ms)
                            .push_bind(record.actor_org.clone())
                            .push_bind(record.actor_subject.clone())
                            .push_bind(record.action.clone())
                            .push_bind(record.referral_id.clone())
                            .push_bind(record.subject_key.clone())
                            .push_bind(record.policy_version.clone())
                            .push_bind(record.outcome.clone())
                            .push_bind(audit_reasons(record))
                            .push_bind(record.counterpart_org.clone())
                            .push_bind(record.counterpart_subject.clone())
                            .push_bind(record.prev_hash.clone())
                            .push_bind(record.hash.clone());
                    });
                    query.build().persistent(false).execute(&mut *connection).await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl AuditStore for $store {
            async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
                let mut query = QueryBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1"));
                if let Some(from) = filter.from_ms {
                    query.push(" AND at_ms >= ").push_bind(from);
                }
                if let Some(to) = filter.to_ms {
                    query.push(" AND at_ms < ").push_bind(to);
                }
                if let Some(action) = &filter.action {
                    query.push(" AND action = ").push_bind(action.clone());
                }
                if let Some(org) = &filter.org {
                    query.push(" AND actor_org = ").push_bind(org.clone());
                }
                if let Some(id) = &filter.referral_id {
                    query.push(" AND referral_id = ").push_bind(id.clone());
                }
                if let Some(key) = &filter.subject_key {
                    query.push(" AND subject_key = ").push_bind(key.clone());
                }
                if let Some(after) = filter.after_seq {
                    query.push(" AND seq > ").push_bind(after);
                }
                // A window's entries lie between the first `seq` of its first hour and the
                // last of its last (migration 0028): the chain is walked there only.
                if filter.from_ms.is_some() || filter.to_ms.is_some() {
                    for (bound, of_hours) in [(">=", "MIN(first_seq)"), ("<=", "MAX(last_seq)")] {
                        query.push(format!(" AND seq {bound} (SELECT {of_hours} FROM audit_hours WHERE 1 = 1"));
                        if let Some(from) = filter.from_ms {
                            query.push(" AND hour >= ").push_bind(audit_hour(from));
                        }
                        if let Some(to) = filter.to_ms {
                            query.push(" AND hour <= ").push_bind(audit_hour(to));
                        }
                        query.push(")");
                    }
                }
                query.push(" ORDER BY seq LIMIT ").push_bind(filter.limit);
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter().map(Self::audit_from_row).collect()
            }

            async fn audit_head(&self) -> Result<(i64, String), StoreError> {
                let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.pool).await?;
                Ok((row.try_get("seq")?, row.try_get("hash")?))
            }
        }

        #[async_trait]
        impl PolicyStore for $store {
            async fn policy_versions(&self) -> Result<Vec<PolicyVersionRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT number, version, author_org, author_subject, note, created_ms, files, state, effective_from_ms, \
                     effective_ms, decided_ms, reviews, restores, checks FROM policy_versions ORDER BY number",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let state: String = row.try_get("state")?;
                        let reviews: i64 = row.try_get::<i64, _>("reviews")?;
                        Ok(PolicyVersionRecord {
                            number: row.try_get("number")?,
                            version: row.try_get("version")?,
                            author_org: row.try_get("author_org")?,
                            author_subject: row.try_get("author_subject")?,
                            note: row.try_get("note")?,
                            created_ms: row.try_get("created_ms")?,
                            files: row.try_get("files")?,
                            state: state.parse().map_err(|_| StoreError::Corrupt("policy version state".to_owned()))?,
                            effective_from_ms: row.try_get("effective_from_ms")?,
                            effective_ms: row.try_get("effective_ms")?,
                            decided_ms: row.try_get("decided_ms")?,
                            reviews,
                            restores: row.try_get("restores")?,
                            checks: row.try_get("checks")?,
                        })
                    })
                    .collect()
            }

            async fn policy_sign_offs(&self) -> Result<Vec<PolicySignOffRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT number, reviewer_org, reviewer_subject, verdict, at_ms, note FROM policy_signoffs ORDER BY number, at_ms",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let verdict: String = row.try_get("verdict")?;
                        Ok(PolicySignOffRecord {
                            number: row.try_get("number")?,
                            reviewer_org: row.try_get("reviewer_org")?,
                            reviewer_subject: row.try_get("reviewer_subject")?,
                            verdict: verdict.parse().map_err(|_| StoreError::Corrupt("policy sign-off verdict".to_owned()))?,
                            at_ms: row.try_get("at_ms")?,
                            note: row.try_get("note")?,
                        })
                    })
                    .collect()
            }

            async fn policy_mark(&self) -> Result<PolicyMark, StoreError> {
                let row = sqlx::query(
                    "SELECT COALESCE(MAX(number), 0) AS latest, CAST(COALESCE(SUM(reviews), 0) AS BIGINT) AS reviews FROM policy_versions",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(PolicyMark { latest_number: row.try_get("latest")?, reviews: row.try_get("reviews")? })
            }
        }
    };
}

pub(super) use audit_sql;
