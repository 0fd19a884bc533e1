//! The inbox: packets received from peers, their moves (screened, forwarded, pushed, applied, erased or cut), the withdrawals kept for them.
//!
//! SQL for both backends, expanded for each by `sql_store!` in `mod.rs`
//! (whose imports the expansion uses).

macro_rules! inbox_sql {
    ($store:ident, $row:ty) => {
        impl $store {
            /// Inserts packets whose id is new, one statement per chunk.
            /// Returns the ids inserted; the others were known already.
            async fn insert_inbox(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                entries: &[&NewInboxEntry],
            ) -> Result<HashSet<String>, sqlx::Error> {
                let mut inserted = HashSet::new();
                for chunk in entries.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new(
                        "INSERT INTO inbox (packet_id, issuer, packet_sha256, packet_type, recipient_org, sealed, key_id, receipt, received_ms, expires_ms) ",
                    );
                    query.push_values(chunk, |mut row, entry| {
                        row.push_bind(entry.packet_id.clone())
                            .push_bind(entry.issuer.clone())
                            .push_bind(entry.packet_sha256.clone())
                            .push_bind(entry.packet_type.clone())
                            .push_bind(entry.recipient_org.clone())
                            .push_bind(entry.claims.sealed.clone())
                            .push_bind(entry.claims.key_id.clone())
                            .push_bind(entry.receipt.clone().unwrap_or_default())
                            .push_bind(entry.received_ms)
                            .push_bind(entry.expires_ms);
                    });
                    query.push(" ON CONFLICT (packet_id) DO NOTHING RETURNING packet_id");
                    for row in query.build().persistent(false).fetch_all(&mut *connection).await? {
                        inserted.insert(row.try_get::<String, _>("packet_id")?);
                    }
                }
                Ok(inserted)
            }

            /// See [`Write::ReferOnward`]: `None` when the copy is stored, or
            /// why nothing was. The checks run in the write's transaction,
            /// which every other write waits for.
            async fn insert_onward_copy(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                copy: &NewOnwardCopy,
            ) -> Result<Option<Written>, sqlx::Error> {
                let live = list(&InboxState::LIVE);
                let parent = sqlx::query(&format!("SELECT key_id FROM inbox WHERE packet_id = $1 AND state IN {live}"))
                    .bind(&copy.of.parent)
                    .fetch_optional(&mut *connection)
                    .await?;
                let unchanged = match parent {
                    Some(row) => row.try_get::<String, _>("key_id")? == copy.parent_key_id,
                    None => false,
                };
                if !unchanged {
                    return Ok(Some(Written::AlreadySettled));
                }
                let held = sqlx::query(&format!("SELECT packet_id FROM inbox WHERE onward_of = $1 AND recipient_org = $2 AND state IN {live}"))
                    .bind(&copy.of.parent)
                    .bind(&copy.entry.recipient_org)
                    .fetch_optional(&mut *connection)
                    .await?;
                if held.is_some() {
                    return Ok(Some(Written::KnownPacket));
                }
                let entry = &copy.entry;
                let inserted = sqlx::query(
                    "INSERT INTO inbox (packet_id, issuer, packet_sha256, packet_type, recipient_org, sealed, key_id, receipt, received_ms, expires_ms, \
                     onward_of, onward_number, onward_kind, onward_referred_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&entry.packet_id)
                .bind(&entry.issuer)
                .bind(&entry.packet_sha256)
                .bind(&entry.packet_type)
                .bind(&entry.recipient_org)
                .bind(&entry.claims.sealed)
                .bind(&entry.claims.key_id)
                .bind(entry.receipt.as_deref().unwrap_or_default())
                .bind(entry.received_ms)
                .bind(entry.expires_ms)
                .bind(&copy.of.parent)
                .bind(i64::from(copy.of.number))
                .bind(copy.of.kind.as_str())
                .bind(&copy.of.referred_by)
                .execute(&mut *connection)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Ok(Some(Written::DuplicateKey));
                }
                if !Self::inbox_moves(connection, &copy.forward).await? {
                    return Err(sqlx::Error::Protocol("an onward copy just stored did not move to its recipient".to_owned()));
                }
                Self::queue_reply(connection, &copy.reply).await?;
                Ok(None)
            }

            /// See [`Write::OnwardRefused`]: whether `told` is new for the case
            /// (and is now recorded).
            async fn tell_onward_refusal(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                packet_id: &str,
                told: &str,
                at_ms: i64,
            ) -> Result<bool, sqlx::Error> {
                let inserted = sqlx::query("INSERT INTO onward_refusals (packet_id, told, at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(packet_id)
                    .bind(told)
                    .bind(at_ms)
                    .execute(&mut *connection)
                    .await?
                    .rows_affected();
                Ok(inserted > 0)
            }

            /// The copies of `parent` made after a withdrawal of it worked out
            /// its effects (not among `seen`): erased whole, as the case or
            /// part of it is withdrawn and they may hold what is.
            async fn erase_unseen_copies(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                parent: &str,
                seen: &[String],
                at_ms: i64,
                notice_until_ms: i64,
            ) -> Result<(), sqlx::Error> {
                let rows = sqlx::query("SELECT packet_id FROM inbox WHERE onward_of = $1").bind(parent).fetch_all(&mut *connection).await?;
                for row in rows {
                    let copy: String = row.try_get("packet_id")?;
                    if seen.contains(&copy) {
                        continue;
                    }
                    // Pushed a notice if its organisation was pushed the copy (one that pulls is then listed it, as the pusher finds).
                    let erasure = ReceivedErasure { event: InboxEvent::WithdrawnWhole { pushed: true }, notice_until_ms, reasons: None };
                    Self::erase_received(connection, &copy, at_ms, &erasure).await?;
                }
                Ok(())
            }

            /// Moves a received packet on; false when it was not in the expected state.
            async fn inbox_moves(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                change: &InboxChange,
            ) -> Result<bool, sqlx::Error> {
                let Some(to) = change.to() else {
                    return Ok(false);
                };
                let reasons = serde_json::to_string(change.step.reasons()).unwrap_or_else(|_| "[]".to_owned());
                // One statement per move, whatever it sets: on PostgreSQL each
                // statement of the group commit is a round trip the writer waits for.
                let mut update = QueryBuilder::new("UPDATE inbox SET state = ");
                update.push_bind(to.as_str()).push(", reasons = ").push_bind(reasons).push(", settled_ms = ").push_bind(change.at_ms);
                // Numbered when it first becomes visible: see `visible_seq` in migration 0003.
                const NUMBERED: &str = ", visible_seq = COALESCE(visible_seq, (SELECT COALESCE(MAX(visible_seq), 0) + 1 FROM inbox))";
                match to {
                    // What is refused, or applied to a referral, is not kept to be read later.
                    InboxState::Refused | InboxState::Applied | InboxState::Undeliverable => {
                        update.push(", sealed = ").push_bind(Vec::<u8>::new());
                    }
                    // The first push is due at once.
                    InboxState::Pushing => {
                        update.push(", next_push_ms = ").push_bind(change.at_ms).push(NUMBERED);
                    }
                    InboxState::NarrowingPushing => {
                        update.push(", next_push_ms = ").push_bind(change.at_ms).push(", push_attempts = 0");
                    }
                    InboxState::Available => {
                        update.push(NUMBERED);
                    }
                    _ => {}
                }
                match &change.step {
                    InboxMove::ConfirmNarrowing { .. } => {
                        update.push(", narrowing_confirmed_ms = ").push_bind(change.at_ms);
                    }
                    InboxMove::Forward { retention, reseal, queue, answers, .. } => {
                        if let Some(answered) = answers {
                            update.push(", answers_referral = ").push_bind(answered.referral_id.clone());
                        }
                        let rank = if queue.priority == Some(Priority::Emergency) { 0 } else { 1 };
                        update
                            .push(", priority = ")
                            .push_bind(queue.priority.map(Priority::as_str))
                            .push(", answer_by_ms = ")
                            .push_bind(queue.answer_by_ms)
                            .push(", due_ms = ")
                            .push_bind(queue.acknowledge_by_ms)
                            .push(", queue_rank = ")
                            .push_bind(rank);
                        // A forwarded case is listed or pushed, never blanked: `sealed` is set here only.
                        if let Some(reseal) = reseal {
                            update.push(", sealed = ").push_bind(reseal.sealed.clone()).push(", key_id = ").push_bind(reseal.key_id.clone());
                        }
                        update
                            .push(", retention_until_ms = ")
                            .push_bind(retention.until_ms)
                            .push(", retention_days_after_closure = ")
                            .push_bind(retention.days_after_closure);
                    }
                    // Its first answer is awaited next, unless it came already (a case
                    // made visible before deadlines existed has none: it awaits nothing).
                    InboxMove::Acknowledge { .. } => {
                        update.push(
                            ", due_ms = CASE WHEN queue_rank < 2 THEN COALESCE(answer_by_ms, 0) ELSE due_ms END, \
                             queue_rank = CASE WHEN queue_rank < 2 AND answer_by_ms IS NULL THEN 2 ELSE queue_rank END",
                        );
                    }
                    _ => {}
                }
                update.push(" WHERE packet_id = ").push_bind(change.packet_id.clone()).push(" AND state = ").push_bind(change.from.as_str());
                if update.build().execute(&mut *connection).await?.rows_affected() == 0 {
                    return Ok(false);
                }
                if matches!(to, InboxState::Refused | InboxState::Undeliverable) {
                    // A case nobody will be handed over: nor are its sealed withdrawals.
                    sqlx::query("UPDATE narrowed_packets SET end_to_end = '' WHERE packet_id = $1 AND end_to_end IS NOT NULL")
                        .bind(&change.packet_id)
                        .execute(&mut *connection)
                        .await?;
                }
                match &change.step {
                    InboxMove::Forward { answers: Some(answered), .. } => {
                        Self::referral_moves(connection, &answered.referral_id, ReferralEvent::ReplyReceived, &answered.reasons, change.at_ms).await?;
                    }
                    InboxMove::ApplyToReferral { referral_id, events, reasons, retention_until_ms } => {
                        Self::apply_to_referral(connection, referral_id, events, reasons, *retention_until_ms, change.at_ms).await?;
                    }
                    InboxMove::ApplyStatuses { applied, .. } => {
                        for status in applied {
                            Self::apply_to_referral(connection, &status.referral_id, &status.events, &status.reasons, status.retention_until_ms, change.at_ms)
                                .await?;
                        }
                    }
                    InboxMove::ApplyWithdrawal { tombstone, effects, copies, reply, .. } => {
                        Self::keep_tombstone(connection, tombstone, change.at_ms).await?;
                        Self::erase_unseen_copies(connection, &tombstone.packet_id, copies, change.at_ms, reply.deadline_ms).await?;
                        for effect in effects {
                            match effect {
                                WithdrawalEffect::Narrow { narrowing, notice_until_ms } => {
                                    Self::narrow_received(connection, narrowing, change.at_ms, *notice_until_ms).await?;
                                }
                                WithdrawalEffect::Erase { packet_id, pushed, notice_until_ms } => {
                                    let erasure =
                                        ReceivedErasure { event: InboxEvent::WithdrawnWhole { pushed: *pushed }, notice_until_ms: *notice_until_ms, reasons: None };
                                    Self::erase_received(connection, packet_id, change.at_ms, &erasure).await?;
                                }
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(reply) = change.step.reply() {
                    Self::queue_reply(connection, reply).await?;
                }
                Ok(true)
            }

            /// A status or an erasure confirmation applied to a referral sent
            /// from here (see `InboxMove::ApplyToReferral`).
            async fn apply_to_referral(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                events: &[ReferralEvent],
                reasons: &[String],
                retention_until_ms: Option<i64>,
                at_ms: i64,
            ) -> Result<(), sqlx::Error> {
                if let Some(until_ms) = retention_until_ms {
                    Self::bring_forward(connection, "referrals", "id", referral_id, until_ms).await?;
                }
                for event in events {
                    Self::referral_moves(connection, referral_id, *event, reasons, at_ms).await?;
                }
                Ok(())
            }

            /// The start of a query for an organisation's cases in `states`
            /// that it could see: a case refused before it was ever visible is
            /// not listed, not even once erased.
            fn listed_to(recipient_org: &str, states: &[InboxState]) -> QueryBuilder<'static, <$row as Row>::Database> {
                let mut query = QueryBuilder::new(format!("SELECT {INBOX_COLUMNS} FROM inbox WHERE recipient_org = "));
                query.push_bind(recipient_org.to_owned()).push(" AND state IN (");
                let mut listed = query.separated(", ");
                for state in states {
                    listed.push_bind(state.as_str());
                }
                query.push(") AND visible_seq IS NOT NULL");
                query
            }

            /// A received case its recipient answered: nothing more is awaited of it.
            async fn queue_answered(connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection, packet_id: &str) -> Result<(), sqlx::Error> {
                sqlx::query("UPDATE inbox SET queue_rank = 2, due_ms = 0 WHERE packet_id = $1 AND queue_rank IS NOT NULL")
                    .bind(packet_id)
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            }

            /// Keeps what a withdrawal withdraws, whether or not the referral
            /// packet is held yet: a packet arriving later is erased or cut down on arrival.
            async fn keep_tombstone(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                tombstone: &Tombstone,
                at_ms: i64,
            ) -> Result<(), sqlx::Error> {
                match tombstone {
                    Tombstone { packet_id, issuer, categories: None, .. } => {
                        sqlx::query("INSERT INTO withdrawn_packets (packet_id, issuer, at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                            .bind(packet_id)
                            .bind(issuer)
                            .bind(at_ms)
                            .execute(&mut *connection)
                            .await?;
                    }
                    Tombstone { withdrawal_id, packet_id, issuer, categories: Some(categories), end_to_end } => {
                        sqlx::query(
                            "INSERT INTO narrowed_packets (withdrawal_id, packet_id, issuer, categories, at_ms, end_to_end) VALUES ($1, $2, $3, $4, $5, $6) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(withdrawal_id)
                        .bind(packet_id)
                        .bind(issuer)
                        .bind(serde_json::to_string(categories).unwrap_or_else(|_| "[]".to_owned()))
                        .bind(at_ms)
                        .bind(end_to_end)
                        .execute(&mut *connection)
                        .await?;
                    }
                }
                Ok(())
            }

            /// A received case cut down by a partial withdrawal: listed again,
            /// last, so that a recipient tailing its inbox learns what to erase;
            /// a case already pushed to a webhook is told of by a push, tried
            /// until `notice_until_ms` at least.
            async fn narrow_received(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                narrowing: &ReceivedNarrowing,
                at_ms: i64,
                notice_until_ms: i64,
            ) -> Result<(), sqlx::Error> {
                let event = InboxEvent::Narrowed { pushed: narrowing.pushed };
                let Some(moving) = moves("state", |state: InboxState| state.after(event)) else {
                    return Ok(());
                };
                // The states from which a notice is to be pushed.
                let noticed: Vec<InboxState> =
                    InboxState::ALL.iter().copied().filter(|state| *state != InboxState::NarrowingPushing && state.after(event) == Some(InboxState::NarrowingPushing)).collect();
                let (next_push, attempts) = if noticed.is_empty() {
                    ("next_push_ms".to_owned(), "push_attempts".to_owned())
                } else {
                    let noticed = list(&noticed);
                    (format!("CASE WHEN state IN {noticed} THEN $4 ELSE next_push_ms END"), format!("CASE WHEN state IN {noticed} THEN 0 ELSE push_attempts END"))
                };
                sqlx::query(&format!(
                    "UPDATE inbox SET sealed = $1, key_id = $2, narrowed = $3, narrowing_confirmed_ms = NULL, \
                     state = {}, next_push_ms = {next_push}, push_attempts = {attempts}, \
                     expires_ms = CASE WHEN $5 AND expires_ms < $7 THEN $7 ELSE expires_ms END, \
                     visible_seq = CASE WHEN visible_seq IS NULL THEN NULL ELSE (SELECT COALESCE(MAX(visible_seq), 0) + 1 FROM inbox) END \
                     WHERE packet_id = $6 AND state IN {}",
                    moving.set, moving.from
                ))
                .bind(&narrowing.claims.sealed)
                .bind(&narrowing.claims.key_id)
                .bind(serde_json::to_string(&narrowing.categories).unwrap_or_else(|_| "[]".to_owned()))
                .bind(at_ms)
                .bind(narrowing.pushed)
                .bind(&narrowing.packet_id)
                .bind(notice_until_ms)
                .execute(&mut *connection)
                .await?;
                Ok(())
            }

            /// Brings a row's retention deadline forward to `until_ms`; a
            /// later date changes nothing, so racing closures keep the earliest.
            async fn bring_forward(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                table: &str,
                key: &str,
                id: &str,
                until_ms: i64,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(&format!("UPDATE {table} SET retention_until_ms = $1 WHERE {key} = $2 AND retention_until_ms > $1"))
                    .bind(until_ms)
                    .bind(id)
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            }

            /// Erases a received case in a state `erasure.event` erases: claims
            /// blanked; listed again, last, if its recipient could see it, so that
            /// a recipient tailing its inbox learns it must erase its own copy; a
            /// case already pushed to a webhook is told of by a push first, tried
            /// until `notice_until_ms` at least (the packet's own expiry may be
            /// long past). Whether it was erased.
            async fn erase_received(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                packet_id: &str,
                at_ms: i64,
                erasure: &ReceivedErasure<'_>,
            ) -> Result<bool, sqlx::Error> {
                let Some(moving) = moves("state", |state: InboxState| state.after(erasure.event)) else {
                    return Ok(false);
                };
                let pushed = matches!(erasure.event, InboxEvent::WithdrawnWhole { pushed: true } | InboxEvent::RetentionPassed { pushed: true });
                let erased = sqlx::query(&format!(
                    "UPDATE inbox SET state = {}, \
                     reasons = COALESCE($4, reasons), next_push_ms = $2, push_attempts = 0, sealed = $1, settled_ms = $2, \
                     queue_rank = CASE WHEN queue_rank IS NULL THEN NULL ELSE 2 END, due_ms = CASE WHEN queue_rank IS NULL THEN NULL ELSE 0 END, \
                     priority = NULL, answer_by_ms = NULL, \
                     expires_ms = CASE WHEN $5 AND expires_ms < $6 THEN $6 ELSE expires_ms END, \
                     visible_seq = CASE WHEN visible_seq IS NULL THEN NULL ELSE (SELECT COALESCE(MAX(visible_seq), 0) + 1 FROM inbox) END \
                     WHERE packet_id = $3 AND state IN {}",
                    moving.set, moving.from
                ))
                .bind(Vec::<u8>::new())
                .bind(at_ms)
                .bind(packet_id)
                .bind(erasure.reasons)
                .bind(pushed)
                .bind(erasure.notice_until_ms)
                .execute(&mut *connection)
                .await?
                .rows_affected();
                if erased > 0 {
                    // Its sealed withdrawals name categories of it: they go with it.
                    sqlx::query("UPDATE narrowed_packets SET end_to_end = '' WHERE packet_id = $1 AND end_to_end IS NOT NULL")
                        .bind(packet_id)
                        .execute(&mut *connection)
                        .await?;
                }
                Ok(erased > 0)
            }

            fn inbox_from_row(row: &$row) -> Result<InboxItem, StoreError> {
                let reasons: Option<String> = row.try_get("reasons")?;
                Ok(InboxItem {
                    packet_id: row.try_get("packet_id")?,
                    issuer: row.try_get("issuer")?,
                    packet_type: row.try_get("packet_type")?,
                    recipient_org: row.try_get("recipient_org")?,
                    claims: SealedPayload { sealed: row.try_get("sealed")?, key_id: row.try_get("key_id")? },
                    state: parsed(row.try_get("state")?)?,
                    reasons: string_list(reasons, "inbox reasons")?,
                    received_ms: row.try_get("received_ms")?,
                    expires_ms: row.try_get("expires_ms")?,
                    push_attempts: row.try_get("push_attempts")?,
                    visible_seq: row.try_get("visible_seq")?,
                    narrowed: match row.try_get::<Option<String>, _>("narrowed")? {
                        Some(text) => serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("inbox narrowing is not a JSON array".to_owned()))?,
                        None => Vec::new(),
                    },
                    narrowing_confirmed: row.try_get::<Option<i64>, _>("narrowing_confirmed_ms")?.is_some(),
                    retention: retention_of(row.try_get("retention_until_ms")?, row.try_get("retention_days_after_closure")?),
                    priority: row.try_get::<Option<String>, _>("priority")?.map(parsed).transpose()?,
                    queue: match (row.try_get::<Option<i64>, _>("queue_rank")?, row.try_get::<Option<i64>, _>("due_ms")?, row.try_get::<Option<i64>, _>("visible_seq")?) {
                        (Some(rank), Some(due_ms), Some(visible_seq)) => Some(QueuePlace { rank, due_ms, visible_seq }),
                        _ => None,
                    },
                    onward: match row.try_get::<Option<String>, _>("onward_of")? {
                        Some(parent) => Some(OnwardCopyOf {
                            parent,
                            number: u32::try_from(row.try_get::<Option<i64>, _>("onward_number")?.unwrap_or(0))
                                .map_err(|_| StoreError::Corrupt("inbox onward number out of range".to_owned()))?,
                            kind: parsed(row.try_get::<Option<String>, _>("onward_kind")?.unwrap_or_default())?,
                            referred_by: row.try_get::<Option<String>, _>("onward_referred_by")?.unwrap_or_default(),
                        }),
                        None => None,
                    },
                    answers: row.try_get("answers_referral")?,
                })
            }
        }

        #[async_trait]
        impl InboxStore for $store {
            async fn unprocessed_inbox(&self, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
                let rows = sqlx::query(&format!("SELECT {INBOX_COLUMNS} FROM inbox WHERE state = $2 ORDER BY received_ms, packet_id LIMIT $1"))
                    .bind(limit)
                    .bind(InboxState::Received.as_str())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::inbox_from_row).collect()
            }

            async fn withdrawn_part(&self, packet_id: &str, issuer: &str) -> Result<Option<WithdrawnPart>, StoreError> {
                // One read for both kinds: it is made for every received referral.
                let rows = sqlx::query(
                    "SELECT NULL AS categories FROM withdrawn_packets WHERE packet_id = $1 AND issuer = $2 \
                     UNION ALL SELECT categories FROM narrowed_packets WHERE packet_id = $1 AND issuer = $2",
                )
                .bind(packet_id)
                .bind(issuer)
                .fetch_all(&self.pool)
                .await?;
                let mut categories = std::collections::BTreeSet::new();
                for row in &rows {
                    match row.try_get::<Option<String>, _>("categories")? {
                        None => return Ok(Some(WithdrawnPart::Whole)),
                        Some(text) => categories.extend(
                            serde_json::from_str::<Vec<String>>(&text).map_err(|_| StoreError::Corrupt("narrowed categories are not a JSON array".to_owned()))?,
                        ),
                    }
                }
                Ok((!categories.is_empty()).then(|| WithdrawnPart::Categories(categories.into_iter().collect())))
            }

            async fn sealed_withdrawals(&self, packet_id: &str, issuer: &str) -> Result<Vec<SealedWithdrawal>, StoreError> {
                let rows = sqlx::query(
                    "SELECT withdrawal_id, end_to_end FROM narrowed_packets WHERE packet_id = $1 AND issuer = $2 AND end_to_end <> '' \
                     ORDER BY at_ms, withdrawal_id",
                )
                .bind(packet_id)
                .bind(issuer)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| Ok(SealedWithdrawal { withdrawal_id: row.try_get("withdrawal_id")?, end_to_end: row.try_get("end_to_end")? }))
                    .collect()
            }

            async fn onward_copies(&self, packet_id: &str) -> Result<Vec<InboxItem>, StoreError> {
                let rows = sqlx::query(&format!("SELECT {INBOX_COLUMNS} FROM inbox WHERE onward_of = $1 ORDER BY onward_number"))
                    .bind(packet_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::inbox_from_row).collect()
            }

            async fn inbox_item(&self, packet_id: &str) -> Result<Option<InboxItem>, StoreError> {
                let row = sqlx::query(&format!("SELECT {INBOX_COLUMNS} FROM inbox WHERE packet_id = $1")).bind(packet_id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::inbox_from_row).transpose()
            }

            async fn claim_pushes(&self, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
                let rows = self.claim(&claim_pushes_sql(&Self::DIALECT), "inbox", "packet_id", INBOX_COLUMNS, now_ms, lease_ms, limit).await?;
                rows.iter().map(Self::inbox_from_row).collect()
            }

            async fn retry_push(&self, packet_id: &str, next_push_ms: i64, error_code: &str) -> Result<(), StoreError> {
                sqlx::query(&format!(
                    "UPDATE inbox SET next_push_ms = $1, push_error = $2, claim_node = NULL, claim_instance = NULL \
                     WHERE packet_id = $3 AND state IN {}",
                    list(&InboxState::PUSHING)
                ))
                    .bind(next_push_ms)
                    .bind(error_code)
                    .bind(packet_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn inbox_for(&self, recipient_org: &str, states: &[InboxState], after: Option<i64>, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
                let mut query = Self::listed_to(recipient_org, states);
                if let Some(after) = after {
                    query.push(" AND visible_seq > ").push_bind(after);
                }
                query.push(" ORDER BY visible_seq LIMIT ").push_bind(limit);
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter().map(Self::inbox_from_row).collect()
            }

            async fn inbox_queue(&self, recipient_org: &str, states: &[InboxState], after: Option<QueuePlace>, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
                let mut query = Self::listed_to(recipient_org, states);
                query.push(" AND queue_rank IS NOT NULL");
                if let Some(after) = after {
                    // Row values: an index range on (recipient_org, queue_rank, due_ms, visible_seq).
                    query
                        .push(" AND (queue_rank, due_ms, visible_seq) > (")
                        .push_bind(after.rank)
                        .push(", ")
                        .push_bind(after.due_ms)
                        .push(", ")
                        .push_bind(after.visible_seq)
                        .push(")");
                }
                query.push(" ORDER BY queue_rank, due_ms, visible_seq LIMIT ").push_bind(limit);
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter().map(Self::inbox_from_row).collect()
            }

            async fn inbox_receipt(&self, packet_id: &str) -> Result<Option<InboxReceipt>, StoreError> {
                let row = sqlx::query("SELECT packet_id, packet_sha256, receipt, received_ms FROM inbox WHERE packet_id = $1")
                    .bind(packet_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => Some(InboxReceipt {
                        packet_id: row.try_get("packet_id")?,
                        packet_sha256: row.try_get("packet_sha256")?,
                        receipt: Some(row.try_get::<String, _>("receipt")?).filter(|receipt| !receipt.is_empty()),
                        received_ms: row.try_get("received_ms")?,
                    }),
                    None => None,
                })
            }

            async fn expired_received(&self, now_ms: i64, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
                let rows = sqlx::query(&expired_received_sql(&Self::DIALECT))
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::inbox_from_row).collect()
            }

            async fn refused_between(&self, window: (i64, i64), after: Option<(i64, String)>, limit: i64) -> Result<Vec<RefusedPacket>, StoreError> {
                let (after_ms, after_id) = after.unwrap_or((i64::MIN, String::new()));
                let rows = sqlx::query(
                    "SELECT packet_id, settled_ms, reasons FROM inbox \
                     WHERE state = 'refused' AND settled_ms >= $1 AND settled_ms < $2 \
                     AND (settled_ms, packet_id) > ($3, $4) \
                     ORDER BY settled_ms, packet_id LIMIT $5",
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
                        let reasons: Option<String> = row.try_get("reasons")?;
                        Ok(RefusedPacket {
                            packet_id: row.try_get("packet_id")?,
                            refused_ms: row.try_get("settled_ms")?,
                            reasons: string_list(reasons, "refusal reasons")?,
                        })
                    })
                    .collect()
            }

            async fn receipt_for_bytes(&self, packet_sha256: &str, issuer: &str) -> Result<Option<InboxReceipt>, StoreError> {
                let row = sqlx::query("SELECT packet_id, packet_sha256, receipt, received_ms FROM inbox WHERE packet_sha256 = $1 AND issuer = $2")
                    .bind(packet_sha256)
                    .bind(issuer)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => Some(InboxReceipt {
                        packet_id: row.try_get("packet_id")?,
                        packet_sha256: row.try_get("packet_sha256")?,
                        receipt: Some(row.try_get::<String, _>("receipt")?).filter(|receipt| !receipt.is_empty()),
                        received_ms: row.try_get("received_ms")?,
                    }),
                    None => None,
                })
            }
        }
    };
}

pub(super) use inbox_sql;
