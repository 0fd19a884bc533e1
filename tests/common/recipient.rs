//! IOM Banjul as the benches and the replica test play it: it tails its
//! inbox at the Gambian gateway in arrival order and acknowledges every
//! case, `at_once` at a time. Included with `#[path]` by
//! `tests/common/replicas.rs` and `benches/federation.rs`.

// `value["key"]` on JSON gives `Null` for what is missing; it does not panic.
#![allow(clippy::indexing_slicing)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the recipient acknowledged.
#[derive(Debug, Default)]
pub struct Acknowledged {
    pub cases: u64,
    /// Of them, listed as sealed end to end.
    pub sealed: u64,
    /// When each acknowledgement was answered, by packet id.
    pub at: HashMap<String, Instant>,
}

/// Tails the inbox at `base` from `cursor` (the start if `None`) and acknowledges every case until `count` are
/// acknowledged or `limit` passes. A list or an acknowledgement refused
/// for good (a 4xx) ends it with an error; one that failed otherwise is
/// logged and tried again a moment later (acknowledging is idempotent).
pub async fn acknowledge_all(
    client: &reqwest::Client,
    base: &str,
    count: u64,
    at_once: usize,
    limit: Duration,
    mut cursor: Option<String>,
) -> Result<Acknowledged, BoxError> {
    let started = Instant::now();
    let mut acknowledged = Acknowledged::default();
    let mut retry: Vec<String> = Vec::new();
    while acknowledged.cases < count && started.elapsed() < limit {
        // Tailing: the arrival order (`due`, the default, is a worklist that reorders as cases move).
        let mut request = client.get(format!("{base}/v1/inbox")).query(&[("limit", "100"), ("order", "arrival")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor.as_str())]);
        }
        let response = request.send().await?;
        if response.status().is_server_error() {
            // Busy (a pool's acquire timeout under load, say): the page is asked for again in a moment.
            eprintln!("inbox list: HTTP {}", response.status());
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let page: Value = response.error_for_status()?.json().await?;
        let available: Vec<&Value> = page["items"].as_array().map(|items| items.iter().filter(|i| i["state"] == "available").collect()).unwrap_or_default();
        acknowledged.sealed += available.iter().filter(|i| i["end_to_end"] == Value::Bool(true)).count() as u64;
        let mut items = std::mem::take(&mut retry);
        items.extend(available.iter().filter_map(|i| i["packet_id"].as_str().map(str::to_owned)));
        if let Some(next) = page["next_cursor"].as_str() {
            cursor = Some(next.to_owned());
        }
        if items.is_empty() {
            // Nothing new yet: the next page is asked for in a moment.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let mut acks = tokio::task::JoinSet::new();
        for chunk in items.chunks(items.len().div_ceil(at_once.max(1))) {
            let (client, base, chunk) = (client.clone(), base.to_owned(), chunk.to_vec());
            acks.spawn(async move {
                let (mut done, mut failed) = (Vec::new(), Vec::new());
                for packet_id in chunk {
                    match client.post(format!("{base}/v1/inbox/{packet_id}/ack")).send().await {
                        Ok(response) if response.status().is_success() => done.push((packet_id, Instant::now())),
                        Ok(response) if response.status().is_client_error() => {
                            return Err::<_, BoxError>(format!("acknowledging {packet_id}: HTTP {}", response.status()).into());
                        }
                        Ok(response) => {
                            eprintln!("acknowledge: HTTP {}", response.status());
                            failed.push(packet_id);
                        }
                        Err(error) => {
                            eprintln!("acknowledge: {error}");
                            failed.push(packet_id);
                        }
                    }
                }
                Ok((done, failed))
            });
        }
        while let Some(joined) = acks.join_next().await {
            let (done, failed) = joined??;
            acknowledged.cases += done.len() as u64;
            acknowledged.at.extend(done);
            retry.extend(failed);
        }
        if !retry.is_empty() {
            // A failed acknowledgement is tried again in a moment, not at once.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(acknowledged)
}
