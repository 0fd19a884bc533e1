//! The outbox: every packet this gateway sends, its kept packet, its settlement (delivered or expired) and its retries.
//!
//! SQL for both backends, expanded for each by `sql_store!` in `mod.rs`
//! (whose imports the expansion uses).

macro_rules! outbox_sql {
    ($store:ident, $row:ty) => {
        impl $store {
            /// Keeps the packet made for a pending entry (see `Write::KeepPacket`):
            /// the packet the entry holds now, or `AlreadySettled` when it is not
            /// pending any more, or its payload is no longer the one the packet
            /// was made from. The latter also fences an attempt a cut overtook:
            /// the cut freed the entry to another attempt (`Write::Narrow`), and
            /// the overtaken one stops here instead of sending what that one keeps.
            /// A status carried meanwhile by a `statuses` entry (an attempt
            /// that outlived its lease, overtaken by a round that coalesced
            /// it) is not sent alone: it goes with its carrier only.
            async fn keep_packet(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                entry_id: &str,
                packet: &StoredPacket,
                sealed_from: &str,
            ) -> Result<Written, sqlx::Error> {
                // One statement: the values on the right are the row's before the update.
                let row = sqlx::query(
                    "UPDATE outbox SET packet_id = CASE WHEN packet IS NULL THEN $1 ELSE packet_id END, packet = COALESCE(packet, $2) \
                     WHERE id = $3 AND state = $5 AND key_id = $4 AND carried_by IS NULL RETURNING packet_id, packet",
                )
                .bind(&packet.packet_id)
                .bind(&packet.packet)
                .bind(entry_id)
                .bind(sealed_from)
                .bind(OutboxState::Pending.as_str())
                .fetch_optional(&mut *connection)
                .await?;
                let kept: Option<(Option<String>, Option<String>)> = row.map(|row| Ok::<_, sqlx::Error>((row.try_get("packet_id")?, row.try_get("packet")?))).transpose()?;
                Ok(match kept {
                    Some((Some(packet_id), Some(packet))) => Written::PacketKept(StoredPacket { packet_id, packet }),
                    // Settled, withdrawn or gone: there is nothing left to send.
                    _ => Written::AlreadySettled,
                })
            }

            /// Carries `members` by a new entry (see `Write::Coalesce`).
            async fn coalesce(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                carrier: &NewReply,
                members: &[String],
                lease_until_ms: i64,
                claimant: &Claimant,
            ) -> Result<Written, sqlx::Error> {
                let mut carry = QueryBuilder::new("UPDATE outbox SET carried_by = ");
                carry
                    .push_bind(carrier.packet_id.clone())
                    .push(", next_attempt_ms = ")
                    .push_bind(i64::MAX)
                    // The claim that found it counts as no attempt: it waits for its carrier's.
                    .push(", attempts = attempts - 1, claim_node = NULL, claim_instance = NULL WHERE state = ")
                    .push_bind(OutboxState::Pending.as_str())
                    .push(" AND packet_type = ")
                    .push_bind(PacketType::Status.as_str())
                    .push(" AND packet IS NULL AND carried_by IS NULL AND claim_node = ")
                    .push_bind(claimant.node.clone())
                    .push(" AND claim_instance = ")
                    .push_bind(claimant.instance.clone())
                    .push(" AND id IN (");
                let mut ids = carry.separated(", ");
                for member in members {
                    ids.push_bind(member.clone());
                }
                carry.push(")");
                let carried = carry.build().persistent(false).execute(&mut *connection).await?.rows_affected();
                if usize::try_from(carried).ok() != Some(members.len()) {
                    // Undone in the same transaction: each status goes on its own, at once.
                    sqlx::query("UPDATE outbox SET carried_by = NULL, next_attempt_ms = $1, attempts = attempts + 1 WHERE carried_by = $2")
                        .bind(carrier.created_ms)
                        .bind(&carrier.packet_id)
                        .execute(&mut *connection)
                        .await?;
                    return Ok(Written::AlreadySettled);
                }
                sqlx::query(
                    "INSERT INTO outbox (id, packet_type, destination_country, recipient_org, sealed, key_id, next_attempt_ms, created_ms, deadline_ms, \
                     attempts, claim_node, claim_instance) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11)",
                )
                .bind(&carrier.packet_id)
                .bind(&carrier.packet_type)
                .bind(&carrier.destination_country)
                .bind(&carrier.recipient_org)
                .bind(&carrier.payload.sealed)
                .bind(&carrier.payload.key_id)
                .bind(lease_until_ms)
                .bind(carrier.created_ms)
                .bind(carrier.deadline_ms)
                .bind(&claimant.node)
                .bind(&claimant.instance)
                .execute(&mut *connection)
                .await?;
                Ok(Written::Coalesced)
            }

            /// Removes a pending carrier and frees what it carried (see `Write::Dissolve`).
            async fn dissolve(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                carrier_id: &str,
                now_ms: i64,
            ) -> Result<Written, sqlx::Error> {
                let removed = sqlx::query("DELETE FROM outbox WHERE id = $1 AND packet_type = $2 AND state = $3")
                    .bind(carrier_id)
                    .bind(PacketType::Statuses.as_str())
                    .bind(OutboxState::Pending.as_str())
                    .execute(&mut *connection)
                    .await?
                    .rows_affected();
                if removed == 0 {
                    return Ok(Written::AlreadySettled);
                }
                sqlx::query("UPDATE outbox SET carried_by = NULL, next_attempt_ms = $1 WHERE carried_by = $2 AND state = $3")
                    .bind(now_ms)
                    .bind(carrier_id)
                    .bind(OutboxState::Pending.as_str())
                    .execute(&mut *connection)
                    .await?;
                Ok(Written::Dissolved)
            }

            async fn settle(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                entry_id: &str,
                settlement: &Settlement,
                at_ms: i64,
            ) -> Result<bool, sqlx::Error> {
                let receipt = match settlement {
                    Settlement::Delivered { receipt } => Some(receipt.clone()),
                    Settlement::Expired => None,
                };
                let event = settlement.event();
                let Some(moving) = moves("state", |state: OutboxState| state.after(event)) else {
                    return Ok(false);
                };
                // A delivery that was under way when consent was withdrawn, or the
                // retention sweep erased the referral, still leaves its receipt (proof
                // of what reached the peer); the entry stays withdrawn or erased.
                let late: Vec<OutboxState> =
                    OutboxState::ALL.iter().copied().filter(|state| receipt.is_some() && state.keeps_late_receipt()).collect();
                let late_receipt = if late.is_empty() { String::new() } else { format!(" OR (state IN {} AND receipt IS NULL)", list(&late)) };
                // Delivered or expired, the body at rest has served: only the
                // packet (readable by the peer alone) and the receipt stay, as proof.
                let updated = sqlx::query(&format!(
                    "UPDATE outbox SET state = {}, receipt = $1, settled_ms = $2, sealed = $4, onward = NULL \
                     WHERE id = $3 AND (state IN {}{late_receipt}) RETURNING referral_id, packet_type",
                    moving.set, moving.from
                ))
                .bind(receipt.clone())
                .bind(at_ms)
                .bind(entry_id)
                .bind(Vec::<u8>::new())
                .fetch_optional(&mut *connection)
                .await?;
                let Some(row) = updated else {
                    return Ok(false);
                };
                let packet_type: String = row.try_get("packet_type")?;
                if packet_type == PacketType::Statuses.as_str() {
                    // The statuses it carries end with it, with its receipt as their proof.
                    sqlx::query(&format!(
                        "UPDATE outbox SET state = {}, receipt = $1, settled_ms = $2, sealed = $4 WHERE carried_by = $3 AND state IN {}",
                        moving.set, moving.from
                    ))
                    .bind(receipt)
                    .bind(at_ms)
                    .bind(entry_id)
                    .bind(Vec::<u8>::new())
                    .execute(&mut *connection)
                    .await?;
                }
                if let Some(referral_id) = row.try_get::<Option<String>, _>("referral_id")? {
                    // A status from the peer may have come first: it stays the
                    // referral's status; the timeline still records this. Another
                    // packet about the referral (its withdrawal) is named in the timeline.
                    let step = ReferralEvent::settled(packet_type == "referral", event == OutboxEvent::Delivered);
                    Self::referral_moves(connection, &referral_id, step, &[], at_ms).await?;
                }
                Ok(true)
            }

            async fn queue_reply(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                reply: &NewReply,
            ) -> Result<(), sqlx::Error> {
                    sqlx::query(
                        "INSERT INTO outbox (id, packet_type, destination_country, recipient_org, sealed, key_id, next_attempt_ms, created_ms, deadline_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(&reply.packet_id)
                    .bind(&reply.packet_type)
                    .bind(&reply.destination_country)
                    .bind(&reply.recipient_org)
                    .bind(&reply.payload.sealed)
                    .bind(&reply.payload.key_id)
                    .bind(reply.created_ms)
                    .bind(reply.created_ms)
                    .bind(reply.deadline_ms)
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            }

            /// The outbox columns of a delivery record; `None` when `state` is null (no entry joined).
            fn delivery_record_from_row(row: &$row) -> Result<Option<DeliveryRecord>, sqlx::Error> {
                let Some(state) = row.try_get::<Option<String>, _>("state")? else {
                    return Ok(None);
                };
                Ok(Some(DeliveryRecord {
                    state: parsed(state)?,
                    attempts: row.try_get("attempts")?,
                    packet_id: row.try_get("packet_id")?,
                    packet: row.try_get("packet")?,
                    receipt: row.try_get("receipt")?,
                    last_error: row.try_get("last_error")?,
                }))
            }

            fn delivery_from_row(row: &$row) -> Result<ClaimedDelivery, sqlx::Error> {
                let packet_id: Option<String> = row.try_get("packet_id")?;
                let packet: Option<String> = row.try_get("packet")?;
                Ok(ClaimedDelivery {
                    id: row.try_get("id")?,
                    referral_id: row.try_get("referral_id")?,
                    packet_type: row.try_get("packet_type")?,
                    recipient_org: row.try_get("recipient_org")?,
                    destination_country: row.try_get("destination_country")?,
                    purpose: row.try_get("purpose")?,
                    policy_version: row.try_get("policy_version")?,
                    payload: SealedPayload { sealed: row.try_get("sealed")?, key_id: row.try_get("key_id")? },
                    onward: row.try_get("onward")?,
                    consent_expires_ms: row.try_get("consent_expires_ms")?,
                    deadline_ms: row.try_get("deadline_ms")?,
                    attempts: row.try_get("attempts")?,
                    handover: row.try_get("handover")?,
                    priority: row.try_get::<Option<String>, _>("priority")?.map(parsed).transpose()?.unwrap_or_default(),
                    end_to_end: row.try_get("end_to_end")?,
                    packet: packet_id.zip(packet).map(|(packet_id, packet)| StoredPacket { packet_id, packet }),
                    created_ms: row.try_get("created_ms")?,
                    in_reply_to: row.try_get("in_reply_to")?,
                    sender_org: row.try_get("sender_org")?,
                    retention: retention_of(row.try_get("retention_until_ms")?, row.try_get("retention_days_after_closure")?),
                })
            }
        }

        #[async_trait]
        impl OutboxStore for $store {
            async fn claim_deliveries(&self, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<ClaimedDelivery>, StoreError> {
                // A referral's retention deadline lives on its row; it goes into its packet.
                let columns = "id, referral_id, packet_type, destination_country, recipient_org, purpose, policy_version, sealed, key_id, onward, \
                               attempts, packet_id, packet, consent_expires_ms, deadline_ms, created_ms, handover, end_to_end, in_reply_to, \
                               (SELECT r.retention_until_ms FROM referrals r WHERE r.id = outbox.referral_id AND outbox.packet_type = 'referral') AS retention_until_ms, \
                               (SELECT r.retention_days_after_closure FROM referrals r WHERE r.id = outbox.referral_id AND outbox.packet_type = 'referral') \
                               AS retention_days_after_closure, \
                               (SELECT r.sender_org FROM referrals r WHERE r.id = outbox.referral_id AND outbox.packet_type = 'referral') AS sender_org, \
                               (SELECT r.priority FROM referrals r WHERE r.id = outbox.referral_id AND outbox.packet_type = 'referral') AS priority";
                let rows = self.claim(&claim_deliveries_sql(&Self::DIALECT), "outbox", "id", columns, now_ms, lease_ms, limit).await?;
                Ok(rows.iter().map(Self::delivery_from_row).collect::<Result<_, _>>()?)
            }

            async fn retry_later(&self, entry_id: &str, next_attempt_ms: i64, error_code: &str, forget_packet: bool) -> Result<(), StoreError> {
                let forget = if forget_packet { ", packet_id = NULL, packet = NULL" } else { "" };
                sqlx::query(&format!(
                    "UPDATE outbox SET next_attempt_ms = $1, last_error = $2{forget}, claim_node = NULL, claim_instance = NULL \
                     WHERE id = $3 AND state = $4 AND carried_by IS NULL"
                ))
                .bind(next_attempt_ms)
                .bind(error_code)
                .bind(entry_id)
                .bind(OutboxState::Pending.as_str())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn delivery(&self, referral_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
                let row = sqlx::query("SELECT state, attempts, packet_id, packet, receipt, last_error FROM outbox WHERE referral_id = $1 AND packet_type = 'referral'")
                    .bind(referral_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => Self::delivery_record_from_row(&row)?,
                    None => None,
                })
            }

            async fn sent_packet(&self, packet_id: &str) -> Result<Option<SentPacket>, StoreError> {
                let row = sqlx::query("SELECT id, referral_id, destination_country, packet_type, in_reply_to, created_ms FROM outbox WHERE packet_id = $1")
                    .bind(packet_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => Some(SentPacket {
                        entry_id: row.try_get("id")?,
                        referral_id: row.try_get("referral_id")?,
                        destination_country: row.try_get("destination_country")?,
                        packet_type: row.try_get("packet_type")?,
                        in_reply_to: row.try_get("in_reply_to")?,
                        created_ms: row.try_get("created_ms")?,
                    }),
                    None => None,
                })
            }

            async fn outbox_depth(&self) -> Result<i64, StoreError> {
                // What waits, a carried status included; its carrier is not one more.
                let row = sqlx::query("SELECT COUNT(*) AS depth FROM outbox WHERE state = $1 AND packet_type <> $2")
                    .bind(OutboxState::Pending.as_str())
                    .bind(PacketType::Statuses.as_str())
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get("depth")?)
            }

            async fn delivery_tallies(&self) -> Result<Vec<DeliveryTally>, StoreError> {
                let rows = sqlx::query(
                    "SELECT destination_country, packet_type, state, CAST(CASE WHEN attempts > 0 THEN 1 ELSE 0 END AS BIGINT) AS retried, COUNT(*) AS n \
                     FROM outbox WHERE packet_type <> $1 GROUP BY destination_country, packet_type, state, CASE WHEN attempts > 0 THEN 1 ELSE 0 END \
                     ORDER BY destination_country, packet_type, state",
                )
                .bind(PacketType::Statuses.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let state: String = row.try_get("state")?;
                        Ok(DeliveryTally {
                            destination_country: row.try_get("destination_country")?,
                            packet_type: row.try_get("packet_type")?,
                            state: state.parse().map_err(|e: ParseError| StoreError::Corrupt(e.to_string()))?,
                            retried: row.try_get::<i64, _>("retried")? == 1,
                            count: row.try_get("n")?,
                        })
                    })
                    .collect()
            }

            async fn erasures_awaited(&self, deadline_ms: i64, now_ms: i64) -> Result<Vec<ErasuresAwaited>, StoreError> {
                // A referral withdrawn whole stays `withdrawn` until its erasure is
                // reported: the lifecycle moves it on by nothing else, and a withdrawal
                // is only recorded while the referral is still consented to. So the
                // awaited ones are found through the index `referrals_awaiting` on
                // the status, not among every withdrawal ever made. A withdrawal
                // time missing (it cannot be) would show as overdue, not hide.
                let rows = sqlx::query(
                    "SELECT o.destination_country AS country, COUNT(*) AS awaited, \
                            CAST(SUM(CASE WHEN COALESCE(w.withdrawn_ms, 0) <= $1 THEN 1 ELSE 0 END) AS BIGINT) AS overdue \
                     FROM (SELECT r.id, (SELECT MIN(e.at_ms) FROM referral_events e WHERE e.referral_id = r.id AND e.status = $2) AS withdrawn_ms \
                           FROM referrals r WHERE r.status = $3) w \
                     JOIN outbox o ON o.referral_id = w.id AND o.packet_type = 'referral' AND o.packet_id IS NOT NULL \
                     GROUP BY o.destination_country ORDER BY o.destination_country",
                )
                .bind(now_ms.saturating_sub(deadline_ms))
                .bind(ReferralEvent::Withdrawn.as_str())
                .bind(ReferralStatus::Withdrawn.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| Ok(ErasuresAwaited { destination_country: row.try_get("country")?, awaited: row.try_get("awaited")?, overdue: row.try_get("overdue")? }))
                    .collect()
            }
        }
    };
}

pub(super) use outbox_sql;
