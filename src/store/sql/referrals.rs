//! The sending gateway's referrals: their rows, timelines and statuses, consent withdrawn whole or in part.
//!
//! SQL for both backends, expanded for each by `sql_store!` in `mod.rs`
//! (whose imports the expansion uses).

macro_rules! referral_sql {
    ($store:ident, $row:ty) => {
        impl $store {
            fn referral_from_row(row: &$row) -> Result<StoredReferral, sqlx::Error> {
                Ok(StoredReferral {
                    id: row.try_get("id")?,
                    sender_org: row.try_get("sender_org")?,
                    idempotency_key: row.try_get("idempotency_key")?,
                    request_fingerprint: row.try_get("request_fingerprint")?,
                    subject_key: row.try_get("subject_key")?,
                    destination_org: row.try_get("destination_org")?,
                    destination_country: row.try_get("destination_country")?,
                    purpose: row.try_get("purpose")?,
                    outcome: row.try_get("outcome")?,
                    policy_version: row.try_get("policy_version")?,
                    decision: row.try_get("decision")?,
                    consent: row.try_get("consent")?,
                    policy_number: row.try_get("policy_number")?,
                    status: parsed(row.try_get("status")?)?,
                    created_ms: row.try_get("created_ms")?,
                    handover: row.try_get("handover")?,
                    priority: parsed(row.try_get("priority")?)?,
                    answers: row.try_get("answers_packet")?,
                })
            }

            fn facts_from_row(row: &$row) -> Result<DecisionFactsAtRest, sqlx::Error> {
                Ok(DecisionFactsAtRest {
                    referral_id: row.try_get("referral_id")?,
                    decided_ms: row.try_get("decided_ms")?,
                    facts: SealedFacts {
                        sealed: SealedPayload { sealed: row.try_get("sealed")?, key_id: row.try_get("key_id")? },
                        key_for_facts_only: row.try_get("key_for_facts_only")?,
                    },
                })
            }

            /// Inserts referrals whose idempotency key is free, with their first
            /// timeline event, their decision's facts and (on allow) their outbox entry, in one statement
            /// per table. Returns the ids inserted; the others found their key taken.
            async fn insert_referrals(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referrals: &[&NewReferral],
            ) -> Result<HashSet<String>, sqlx::Error> {
                let mut inserted = HashSet::new();
                if referrals.is_empty() {
                    return Ok(inserted);
                }
                // Numbered in the order stored: every write holds the audit chain's head
                // (locked on PostgreSQL, the one writer on SQLite), so no later number
                // commits first. A referral whose key is taken leaves a gap.
                let top: i64 = sqlx::query("SELECT COALESCE(MAX(listed_seq), 0) AS top FROM referrals").fetch_one(&mut *connection).await?.try_get("top")?;
                let mut next_seq = top;
                for chunk in referrals.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new(format!(
                        "INSERT INTO referrals ({REFERRAL_COLUMNS}, retention_until_ms, retention_days_after_closure, listed_seq) "
                    ));
                    query.push_values(chunk, |mut row, new| {
                        next_seq += 1;
                        let r = &new.record;
                        let retention = new.outbox.as_ref().and_then(|o| o.retention);
                        row.push_bind(r.id.clone())
                            .push_bind(r.sender_org.clone())
                            .push_bind(r.idempotency_key.clone())
                            .push_bind(r.request_fingerprint.clone())
                            .push_bind(r.subject_key.clone())
                            .push_bind(r.destination_org.clone())
                            .push_bind(r.destination_country.clone())
                            .push_bind(r.purpose.clone())
                            .push_bind(r.outcome.clone())
                            .push_bind(r.policy_version.clone())
                            .push_bind(r.decision.clone())
                            .push_bind(r.consent.clone())
                            .push_bind(r.policy_number)
                            .push_bind(r.status.as_str())
                            .push_bind(r.created_ms)
                            .push_bind(r.handover)
                            .push_bind(r.priority.as_str())
                            .push_bind(r.answers.clone())
                            .push_bind(retention.map(|k| k.until_ms))
                            .push_bind(retention.and_then(|k| k.days_after_closure))
                            .push_bind(next_seq);
                    });
                    query.push(" ON CONFLICT (sender_org, idempotency_key) DO NOTHING RETURNING id");
                    for row in query.build().persistent(false).fetch_all(&mut *connection).await? {
                        inserted.insert(row.try_get::<String, _>("id")?);
                    }
                }
                let stored: Vec<&NewReferral> = referrals.iter().copied().filter(|r| inserted.contains(&r.record.id)).collect();
                for chunk in stored.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new("INSERT INTO referral_events (referral_id, status, at_ms) ");
                    query.push_values(chunk, |mut row, new| {
                        row.push_bind(new.record.id.clone()).push_bind(ReferralEvent::from(new.record.status).as_str()).push_bind(new.record.created_ms);
                    });
                    query.build().persistent(false).execute(&mut *connection).await?;
                    let ids: Vec<&str> = chunk.iter().map(|new| new.record.id.as_str()).collect();
                    Self::queue_first_callbacks(&mut *connection, &ids).await?;
                }
                let queued: Vec<(&NewReferral, &NewOutboxEntry, &String)> = stored
                    .iter()
                    .filter_map(|new| Some((*new, new.outbox.as_ref()?, new.record.destination_country.as_ref()?)))
                    .collect();
                let with_facts: Vec<(&NewReferral, &SealedFacts)> = stored.iter().filter_map(|new| Some((*new, new.facts.as_ref()?))).collect();
                for chunk in with_facts.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new(format!("INSERT INTO decision_facts ({FACTS_COLUMNS}) "));
                    query.push_values(chunk, |mut row, (new, facts)| {
                        row.push_bind(new.record.id.clone())
                            .push_bind(new.record.created_ms)
                            .push_bind(facts.sealed.sealed.clone())
                            .push_bind(facts.sealed.key_id.clone())
                            .push_bind(facts.key_for_facts_only);
                    });
                    query.build().persistent(false).execute(&mut *connection).await?;
                }
                Self::insert_match_entries(&mut *connection, &stored).await?;
                for chunk in queued.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new(
                        "INSERT INTO outbox (id, referral_id, packet_type, destination_country, recipient_org, purpose, policy_version, \
                         sealed, key_id, next_attempt_ms, created_ms, consent_expires_ms, deadline_ms, handover, end_to_end, held, onward, in_reply_to) ",
                    );
                    query.push_values(chunk, |mut row, (new, entry, country)| {
                        row.push_bind(new.record.id.clone())
                            .push_bind(new.record.id.clone())
                            .push_bind("referral")
                            .push_bind((*country).clone())
                            .push_bind(new.record.destination_org.clone())
                            .push_bind(new.record.purpose.clone())
                            .push_bind(new.record.policy_version.clone())
                            .push_bind(entry.payload.sealed.clone())
                            .push_bind(entry.payload.key_id.clone())
                            .push_bind(new.record.created_ms)
                            .push_bind(new.record.created_ms)
                            .push_bind(entry.consent_expires_ms)
                            .push_bind(entry.deadline_ms)
                            .push_bind(new.record.handover)
                            .push_bind(entry.end_to_end)
                            .push_bind(entry.held)
                            .push_bind(entry.onward.as_ref().map(|o| o.sealed.clone()))
                            // A reply's packet names the request it answers.
                            .push_bind(new.record.answers.clone());
                    });
                    query.build().persistent(false).execute(&mut *connection).await?;
                }
                for new in &stored {
                    if let Some(asked) = &new.emergency_override {
                        Self::insert_override(&mut *connection, &new.record.id, asked).await?;
                    }
                }
                Ok(inserted)
            }

            /// See [`Write::Withdraw`]: whether the peer is to be told, or
            /// `None` if the referral is unknown or was withdrawn before.
            async fn withdraw(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                withdrawal: &NewWithdrawal,
                at_ms: i64,
            ) -> Result<Option<bool>, sqlx::Error> {
                if !Self::still_consented(connection, referral_id).await? {
                    return Ok(None);
                }
                // Queued and stopped in the same transaction.
                let notified = Self::queue_withdrawal(connection, referral_id, withdrawal, at_ms).await?;
                Self::stop_referral_packet(connection, referral_id, OutboxEvent::Withdrawn).await?;
                Self::referral_moves(connection, referral_id, ReferralEvent::Withdrawn, &[], at_ms).await?;
                Ok(Some(notified))
            }

            /// A referral's payload and kept packet blanked (the packet id stays:
            /// statuses about the referral are still recognised), its delivery
            /// stopped if still pending.
            async fn stop_referral_packet(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                event: OutboxEvent,
            ) -> Result<(), sqlx::Error> {
                let state = moves("state", |state: OutboxState| state.after(event)).map_or_else(|| "state".to_owned(), |moving| moving.set);
                sqlx::query(&format!("UPDATE outbox SET state = {state}, sealed = $1, onward = NULL, packet = NULL WHERE id = $2 AND packet_type = 'referral'"))
                    .bind(Vec::<u8>::new())
                    .bind(referral_id)
                    .execute(&mut *connection)
                    .await?;
                // An emergency override still awaiting a DPO has nothing left to approve.
                sqlx::query("UPDATE emergency_overrides SET state = $1 WHERE referral_id = $2 AND state = $3")
                    .bind(OverrideState::Stopped.as_str())
                    .bind(referral_id)
                    .bind(OverrideState::AwaitingApproval.as_str())
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            }

            /// Whether the referral exists and what it sent is still shared.
            async fn still_consented(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
            ) -> Result<bool, sqlx::Error> {
                let row = sqlx::query("SELECT status FROM referrals WHERE id = $1").bind(referral_id).fetch_optional(&mut *connection).await?;
                let status: Option<ReferralStatus> = row.map(|row| parsed(row.try_get("status")?)).transpose()?;
                Ok(status.is_some_and(ReferralStatus::still_shared))
            }

            /// See [`Write::Narrow`]: whether the peer is to be told, or
            /// `None` when the referral was withdrawn whole before.
            async fn narrow(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                narrowing: &SentNarrowing,
                withdrawal: &NewWithdrawal,
                at_ms: i64,
            ) -> Result<Written, sqlx::Error> {
                if !Self::still_consented(connection, referral_id).await? {
                    return Ok(Written::AlreadySettled);
                }
                if let Some((payload, sealed_from)) = &narrowing.payload {
                    // Only over the payload it was cut from: one cut by another withdrawal
                    // meanwhile holds what that one left, and is cut again by the caller.
                    // The onward limits go with the payload: cut the same way, under its new key.
                    // No packet made yet: an attempt under way seals the old payload, which is
                    // not kept (`keep_packet`), so the entry is freed and due now, to be sealed
                    // from the new one at once instead of when that attempt's lease runs out.
                    // A packet made is sent by whoever holds it; the withdrawal follows it.
                    // Only while pending: an entry settled meanwhile (delivered, its payload
                    // blanked) keeps nothing, and the caller cuts again from the blank.
                    let replaced = sqlx::query(
                        "UPDATE outbox SET sealed = $1, key_id = $2, onward = $5, \
                         next_attempt_ms = CASE WHEN packet IS NULL THEN $6 ELSE next_attempt_ms END, \
                         claim_node = CASE WHEN packet IS NULL THEN NULL ELSE claim_node END, \
                         claim_instance = CASE WHEN packet IS NULL THEN NULL ELSE claim_instance END \
                         WHERE id = $3 AND packet_type = 'referral' AND key_id = $4 AND state = $7",
                    )
                        .bind(&payload.sealed)
                        .bind(&payload.key_id)
                        .bind(referral_id)
                        .bind(sealed_from)
                        .bind(&narrowing.onward)
                        .bind(at_ms)
                        .bind(OutboxState::Pending.as_str())
                        .execute(&mut *connection)
                        .await?
                        .rows_affected();
                    if replaced == 0 {
                        return Ok(Written::PayloadMoved);
                    }
                }
                let notified = Self::queue_withdrawal(connection, referral_id, withdrawal, at_ms).await?;
                // Withdrawn before any packet was made: nothing is to be erased elsewhere.
                let step = if notified { ReferralEvent::ConsentNarrowed } else { ReferralEvent::ConsentNarrowedBeforeSending };
                Self::referral_moves(connection, referral_id, step, &narrowing.categories, at_ms).await?;
                Ok(Written::Withdrawn { seq: 0, peer_notified: notified })
            }

            /// Queues `withdrawal` for the peer if a packet was ever made for
            /// the referral (it may have arrived); whether it was queued. Read
            /// and queued in one statement: no attempt can make a packet for
            /// it after this reads that there was none.
            async fn queue_withdrawal(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                withdrawal: &NewWithdrawal,
                at_ms: i64,
            ) -> Result<bool, sqlx::Error> {
                Ok(sqlx::query(
                    "INSERT INTO outbox (id, referral_id, packet_type, destination_country, recipient_org, sealed, key_id, \
                                         next_attempt_ms, created_ms, deadline_ms, in_reply_to, end_to_end) \
                     SELECT $1, id, 'withdrawal', destination_country, recipient_org, $2, $3, $4, $4, $5, packet_id, end_to_end \
                     FROM outbox WHERE id = $6 AND packet_type = 'referral' AND packet_id IS NOT NULL",
                )
                .bind(&withdrawal.packet_id)
                .bind(&withdrawal.payload.sealed)
                .bind(&withdrawal.payload.key_id)
                .bind(at_ms)
                .bind(withdrawal.deadline_ms)
                .bind(referral_id)
                .execute(&mut *connection)
                .await?
                .rows_affected()
                    > 0)
            }

            /// A referral's entry in the timeline, and its new status if the
            /// entry moves it (see `ReferralStatus::after`).
            async fn referral_moves(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                event: ReferralEvent,
                reasons: &[String],
                at_ms: i64,
            ) -> Result<(), sqlx::Error> {
                let moving = moves("status", |status: ReferralStatus| status.after(event));
                let reasons = (!reasons.is_empty()).then(|| serde_json::to_string(reasons).unwrap_or_else(|_| "[]".to_owned()));
                if Self::DIALECT.writing_ctes {
                    let status = moving
                        .map(|moving| format!("moved AS (UPDATE referrals SET status = {} WHERE id = $1 AND status IN {}), ", moving.set, moving.from))
                        .unwrap_or_default();
                    // Every part runs once, whatever the main statement reads of it.
                    // All parts see one snapshot: the position counts the entries
                    // committed before, which is exact because writers take turns
                    // (each batch first locks the audit chain's head row).
                    sqlx::query(&format!(
                        "WITH {status}entry AS (INSERT INTO referral_events (referral_id, status, at_ms, reasons) VALUES ($1, $2, $3, $4)) {}",
                        queue_callback_sql(" + 1")
                    ))
                    .bind(referral_id)
                    .bind(event.as_str())
                    .bind(at_ms)
                    .bind(reasons.as_deref())
                    .bind(CallbackState::Pending.as_str())
                    .execute(&mut *connection)
                    .await?;
                    return Ok(());
                }
                if let Some(moving) = moving {
                    sqlx::query(&format!("UPDATE referrals SET status = {} WHERE id = $1 AND status IN {}", moving.set, moving.from))
                        .bind(referral_id)
                        .execute(&mut *connection)
                        .await?;
                }
                sqlx::query("INSERT INTO referral_events (referral_id, status, at_ms, reasons) VALUES ($1, $2, $3, $4)")
                    .bind(referral_id)
                    .bind(event.as_str())
                    .bind(at_ms)
                    .bind(reasons.as_deref())
                    .execute(&mut *connection)
                    .await?;
                Self::queue_callback(connection, referral_id, event, reasons.as_deref(), at_ms).await
            }
        }

        impl $store {
            /// `(status = .. AND priority = .. AND created_ms <= ..)` for a cutoff, and
            /// (`unlogged`) not logged for its deadline yet.
            fn push_cutoff<'q>(query: &mut QueryBuilder<'q, <$row as Row>::Database>, cutoff: &AwaitingCutoff, unlogged: bool) {
                query
                    .push("(status = ")
                    .push_bind(cutoff.status.as_str())
                    .push(" AND priority = ")
                    .push_bind(cutoff.priority.as_str())
                    .push(" AND created_ms <= ")
                    .push_bind(cutoff.accepted_by_ms);
                if unlogged {
                    query.push(" AND (overdue_warned IS NULL OR overdue_warned <> ").push_bind(cutoff.deadline.as_str()).push(")");
                }
                query.push(")");
            }

            /// `(cutoff OR cutoff ...)`: a referral any of them takes in (none: `(1 = 0)`).
            fn push_any_cutoff<'q>(query: &mut QueryBuilder<'q, <$row as Row>::Database>, cutoffs: &[AwaitingCutoff], unlogged: bool) {
                query.push("(");
                if cutoffs.is_empty() {
                    query.push("1 = 0");
                }
                for (at, cutoff) in cutoffs.iter().enumerate() {
                    if at > 0 {
                        query.push(" OR ");
                    }
                    Self::push_cutoff(query, cutoff, unlogged);
                }
                query.push(")");
            }
        }

        #[async_trait]
        impl ReferralStore for $store {
            async fn referrals_of(&self, sender_org: &str, filter: &ReferralFilter, after: Option<i64>, limit: i64) -> Result<Vec<ListedReferral>, StoreError> {
                let mut query = QueryBuilder::new(format!("SELECT {REFERRAL_COLUMNS}, listed_seq FROM referrals WHERE sender_org = "));
                query.push_bind(sender_org.to_owned());
                if !filter.statuses.is_empty() {
                    query.push(" AND status IN (");
                    let mut listed = query.separated(", ");
                    for status in &filter.statuses {
                        listed.push_bind(status.as_str());
                    }
                    query.push(")");
                }
                if let Some(purpose) = &filter.purpose {
                    query.push(" AND purpose = ").push_bind(purpose.clone());
                }
                if let Some(priority) = filter.priority {
                    query.push(" AND priority = ").push_bind(priority.as_str());
                }
                if let Some((overdue, cutoffs)) = &filter.overdue {
                    query.push(if *overdue { " AND " } else { " AND NOT " });
                    Self::push_any_cutoff(&mut query, cutoffs, false);
                }
                if let Some(from_ms) = filter.from_ms {
                    query.push(" AND created_ms >= ").push_bind(from_ms);
                }
                if let Some(to_ms) = filter.to_ms {
                    query.push(" AND created_ms < ").push_bind(to_ms);
                }
                if filter.replies_only {
                    query.push(" AND answers_packet IS NOT NULL");
                }
                if let Some(after) = after {
                    query.push(" AND listed_seq > ").push_bind(after);
                }
                query.push(" ORDER BY listed_seq LIMIT ").push_bind(limit);
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| Ok(ListedReferral { listed_seq: row.try_get("listed_seq")?, referral: Self::referral_from_row(row)? }))
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(StoreError::from)
            }

            async fn count_awaiting(&self, cutoffs: &[AwaitingCutoff]) -> Result<Vec<i64>, StoreError> {
                if cutoffs.is_empty() {
                    return Ok(Vec::new());
                }
                // One count per cutoff, each an index range (migration 0016), in one round trip.
                let mut query = QueryBuilder::new("");
                for (at, cutoff) in cutoffs.iter().enumerate() {
                    if at > 0 {
                        query.push(" UNION ALL ");
                    }
                    query.push("SELECT ").push_bind(i64::try_from(at).unwrap_or(i64::MAX)).push(" AS at, COUNT(*) AS n FROM referrals WHERE ");
                    Self::push_cutoff(&mut query, cutoff, false);
                }
                let rows = query.build().fetch_all(&self.pool).await?;
                let mut counts = vec![0; cutoffs.len()];
                for row in rows {
                    let at: i64 = row.try_get("at")?;
                    if let Some(count) = usize::try_from(at).ok().and_then(|at| counts.get_mut(at)) {
                        *count = row.try_get("n")?;
                    }
                }
                Ok(counts)
            }

            async fn overdue_unlogged(&self, cutoffs: &[AwaitingCutoff], limit: i64) -> Result<Vec<OverdueReferral>, StoreError> {
                if cutoffs.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = QueryBuilder::new("SELECT id, status, priority, created_ms FROM referrals WHERE ");
                Self::push_any_cutoff(&mut query, cutoffs, true);
                query.push(" ORDER BY created_ms, id LIMIT ").push_bind(limit);
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        Ok(OverdueReferral {
                            referral_id: row.try_get("id")?,
                            status: parsed(row.try_get("status")?)?,
                            priority: parsed(row.try_get("priority")?)?,
                            created_ms: row.try_get("created_ms")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(StoreError::from)
            }

            async fn mark_overdue_logged(&self, referral_id: &str, deadline: DeadlineKind) -> Result<bool, StoreError> {
                let marked = sqlx::query("UPDATE referrals SET overdue_warned = $1 WHERE id = $2 AND (overdue_warned IS NULL OR overdue_warned <> $1)")
                    .bind(deadline.as_str())
                    .bind(referral_id)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(marked > 0)
            }

            async fn referral(&self, id: &str) -> Result<Option<StoredReferral>, StoreError> {
                let row = sqlx::query(&format!("SELECT {REFERRAL_COLUMNS} FROM referrals WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(Self::referral_from_row).transpose()?)
            }

            async fn referral_by_key(&self, sender_org: &str, key: &str) -> Result<Option<StoredReferral>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE sender_org = $1 AND idempotency_key = $2"
                ))
                .bind(sender_org)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.as_ref().map(Self::referral_from_row).transpose()?)
            }

            async fn timeline(&self, referral_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
                let rows = sqlx::query("SELECT status, at_ms, reasons FROM referral_events WHERE referral_id = $1 ORDER BY id")
                    .bind(referral_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        let reasons: Option<String> = row.try_get("reasons")?;
                        Ok(TimelineEntry {
                            status: parsed(row.try_get("status")?)?,
                            at_ms: row.try_get("at_ms")?,
                            reasons: string_list(reasons, "timeline reasons")?,
                        })
                    })
                    .collect()
            }

            async fn sealed_payload(&self, referral_id: &str) -> Result<Option<SealedPayload>, StoreError> {
                let row = sqlx::query("SELECT sealed, key_id FROM outbox WHERE referral_id = $1 AND packet_type = 'referral'")
                    .bind(referral_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row
                    .map(|row| Ok::<_, sqlx::Error>(SealedPayload { sealed: row.try_get("sealed")?, key_id: row.try_get("key_id")? }))
                    .transpose()?)
            }

            async fn sealed_payload_and_onward(&self, referral_id: &str) -> Result<Option<(SealedPayload, Option<Vec<u8>>)>, StoreError> {
                let row = sqlx::query("SELECT sealed, key_id, onward FROM outbox WHERE referral_id = $1 AND packet_type = 'referral'")
                    .bind(referral_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row
                    .map(|row| {
                        let payload = SealedPayload { sealed: row.try_get("sealed")?, key_id: row.try_get("key_id")? };
                        Ok::<_, sqlx::Error>((payload, row.try_get::<Option<Vec<u8>>, _>("onward")?))
                    })
                    .transpose()?)
            }

            async fn subject_referrals(&self, subject_key: &str) -> Result<Vec<SubjectReferral>, StoreError> {
                let rows = sqlx::query(
                    "SELECT r.id, r.sender_org, r.destination_org, r.destination_country, r.purpose, r.outcome, r.decision, r.consent, \
                            r.policy_version, r.status, r.created_ms, r.answers_packet, \
                            o.state, o.attempts, o.packet_id, o.packet, o.receipt, o.last_error \
                     FROM referrals r LEFT JOIN outbox o ON o.id = r.id AND o.packet_type = 'referral' \
                     WHERE r.subject_key = $1 ORDER BY r.created_ms, r.id",
                )
                .bind(subject_key)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        let delivery = Self::delivery_record_from_row(row)?;
                        Ok(SubjectReferral {
                            referral_id: row.try_get("id")?,
                            sender_org: row.try_get("sender_org")?,
                            destination_org: row.try_get("destination_org")?,
                            destination_country: row.try_get("destination_country")?,
                            purpose: row.try_get("purpose")?,
                            outcome: row.try_get("outcome")?,
                            decision: row.try_get("decision")?,
                            consent: row.try_get("consent")?,
                            policy_version: row.try_get("policy_version")?,
                            status: parsed(row.try_get("status")?)?,
                            answers: row.try_get("answers_packet")?,
                            created_ms: row.try_get("created_ms")?,
                            delivery,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()?)
            }

            async fn referral_retention(&self, referral_id: &str) -> Result<Option<StoredRetention>, StoreError> {
                let row = sqlx::query("SELECT retention_until_ms, retention_days_after_closure FROM referrals WHERE id = $1")
                    .bind(referral_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => retention_of(row.try_get("retention_until_ms")?, row.try_get("retention_days_after_closure")?),
                    None => None,
                })
            }

            async fn decision_facts_between(&self, window: (i64, i64), after: Option<(i64, String)>, limit: i64) -> Result<Vec<DecisionFactsAtRest>, StoreError> {
                let (after_ms, after_id) = after.unwrap_or((i64::MIN, String::new()));
                let rows = sqlx::query(&format!(
                    "SELECT {FACTS_COLUMNS} FROM decision_facts \
                     WHERE decided_ms >= $1 AND decided_ms <= $5 AND (decided_ms > $2 OR (decided_ms = $2 AND referral_id > $3)) \
                     ORDER BY decided_ms, referral_id LIMIT $4"
                ))
                .bind(window.0)
                .bind(after_ms)
                .bind(after_id)
                .bind(limit)
                .bind(window.1)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map(Self::facts_from_row).collect::<Result<_, sqlx::Error>>()?)
            }

            async fn decision_facts_before(&self, before_ms: i64, limit: i64) -> Result<Vec<DecisionFactsAtRest>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT {FACTS_COLUMNS} FROM decision_facts WHERE decided_ms < $1 ORDER BY decided_ms, referral_id LIMIT $2"
                ))
                .bind(before_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map(Self::facts_from_row).collect::<Result<_, sqlx::Error>>()?)
            }

            async fn decision_facts_of(&self, referral_id: &str) -> Result<Option<DecisionFactsAtRest>, StoreError> {
                let row = sqlx::query(&format!("SELECT {FACTS_COLUMNS} FROM decision_facts WHERE referral_id = $1"))
                    .bind(referral_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(Self::facts_from_row).transpose()?)
            }

            async fn referrals_accepted_between(&self, window: (i64, i64), after: Option<(i64, String)>, limit: i64) -> Result<Vec<AcceptedReferral>, StoreError> {
                let (after_ms, after_id) = after.unwrap_or((i64::MIN, String::new()));
                let rows = sqlx::query(
                    "SELECT id, created_ms, destination_country, decision FROM referrals \
                     WHERE created_ms >= $1 AND created_ms < $2 AND (created_ms, id) > ($3, $4) \
                     ORDER BY created_ms, id LIMIT $5",
                )
                .bind(window.0)
                .bind(window.1)
                .bind(after_ms)
                .bind(after_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(AcceptedReferral {
                            id: row.try_get("id")?,
                            created_ms: row.try_get("created_ms")?,
                            destination_country: row.try_get("destination_country")?,
                            decision: row.try_get("decision")?,
                        })
                    })
                    .collect()
            }

            async fn released_statistics(&self, period: &str) -> Result<Option<String>, StoreError> {
                let row = sqlx::query("SELECT answer FROM statistics_releases WHERE period = $1").bind(period).fetch_optional(&self.pool).await?;
                Ok(row.map(|row| row.try_get("answer")).transpose()?)
            }

            async fn keep_released_statistics(&self, period: &str, answer: &str, released_ms: i64) -> Result<String, StoreError> {
                // The first kept wins: a second replica's insert does nothing, and both read the first back.
                sqlx::query("INSERT INTO statistics_releases (period, answer, released_ms) VALUES ($1, $2, $3) ON CONFLICT (period) DO NOTHING")
                    .bind(period)
                    .bind(answer)
                    .bind(released_ms)
                    .execute(&self.pool)
                    .await?;
                let row = sqlx::query("SELECT answer FROM statistics_releases WHERE period = $1").bind(period).fetch_one(&self.pool).await?;
                Ok(row.try_get("answer")?)
            }

            async fn steps_of_referrals_active_between(&self, window: (i64, i64), after: Option<(String, i64)>, limit: i64) -> Result<Vec<PeriodStep>, StoreError> {
                let (after_id, after_step) = after.unwrap_or((String::new(), i64::MIN));
                let rows = sqlx::query(
                    "SELECT e.referral_id, e.id, e.status, e.at_ms, e.reasons, r.created_ms, \
                     EXISTS (SELECT 1 FROM outbox o WHERE o.referral_id = e.referral_id AND o.packet_type = 'referral' AND o.packet_id IS NOT NULL) AS packet_made \
                     FROM referral_events e JOIN referrals r ON r.id = e.referral_id \
                     WHERE e.at_ms < $2 \
                     AND e.referral_id IN (SELECT referral_id FROM referral_events WHERE at_ms >= $1 AND at_ms < $2) \
                     AND (e.referral_id, e.id) > ($3, $4) \
                     ORDER BY e.referral_id, e.id LIMIT $5",
                )
                .bind(window.0)
                .bind(window.1)
                .bind(after_id)
                .bind(after_step)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let reasons: Option<String> = row.try_get("reasons")?;
                        Ok(PeriodStep {
                            referral_id: row.try_get("referral_id")?,
                            step: row.try_get("id")?,
                            accepted_ms: row.try_get("created_ms")?,
                            packet_made: row.try_get("packet_made")?,
                            status: parsed(row.try_get("status")?)?,
                            at_ms: row.try_get("at_ms")?,
                            reasons: string_list(reasons, "timeline reasons")?,
                        })
                    })
                    .collect()
            }

            async fn forget_decision_facts(&self, referral_ids: &[String]) -> Result<u64, StoreError> {
                let mut forgotten = 0;
                for chunk in referral_ids.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new("DELETE FROM decision_facts WHERE referral_id IN (");
                    let mut ids = query.separated(", ");
                    for id in chunk {
                        ids.push_bind(id.clone());
                    }
                    query.push(")");
                    forgotten += query.build().persistent(false).execute(&self.pool).await?.rows_affected();
                }
                Ok(forgotten)
            }

            async fn expired_referrals(&self, now_ms: i64, limit: i64) -> Result<Vec<ExpiredReferral>, StoreError> {
                let rows = sqlx::query(&expired_referrals_sql(&Self::DIALECT))
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|row| Ok(ExpiredReferral { referral_id: row.try_get("id")?, key_id: row.try_get("key_id")? }))
                    .collect::<Result<_, sqlx::Error>>()?)
            }
        }
    };
}

pub(super) use referral_sql;
