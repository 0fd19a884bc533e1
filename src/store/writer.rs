//! Group commit: writes queue here and are committed together, one
//! transaction per batch (a failed batch is committed again write by write,
//! so that one bad write fails alone). Throughput then scales with concurrency instead of
//! being bound by one disk flush per referral, and the audit chain, which
//! needs its entries one after another, is extended by one task only.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, Write, Written};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;
const QUEUE_DEPTH: usize = 4096;

type Request = (Write, oneshot::Sender<Result<Written, StoreError>>);

/// Handle to the writing task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    queue: mpsc::Sender<Request>,
    /// How long a caller waits for its write, queueing included (none: as long as it takes).
    deadline: Option<Duration>,
}

impl Writer {
    /// Starts the writing task on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(store, requests));
        Self { queue, deadline: None }
    }

    /// A caller waits at most `deadline` for its write, queueing included:
    /// behind a batch that hangs on an unreachable database, it would
    /// otherwise wait for that batch's deadline and then its own. A write
    /// given up may still be committed later (a submission retried with
    /// its idempotency key then finds it).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Queues `write` and waits until it is committed (or failed).
    pub async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        let written = async {
            self.queue.send((write, reply)).await.map_err(|_| StoreError::Unavailable("writer stopped".to_owned()))?;
            answer.await.map_err(|_| StoreError::Unavailable("writer stopped".to_owned()))?
        };
        match self.deadline {
            None => written.await,
            Some(deadline) => tokio::time::timeout(deadline, written)
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("the write was not committed within {} ms", deadline.as_millis())))),
        }
    }

    /// Queues `writes` in their order, usually into one commit, and waits
    /// for each. They are committed in that order; if one fails, those after
    /// it may still be stored.
    pub async fn write_all(&self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>> {
        let mut answers = Vec::with_capacity(writes.len());
        for write in writes {
            let (reply, answer) = oneshot::channel();
            answers.push(match self.queue.send((write, reply)).await {
                Ok(()) => Some(answer),
                Err(_) => None,
            });
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(match answer {
                Some(answer) => answer.await.unwrap_or_else(|_| Err(StoreError::Unavailable("writer stopped".to_owned()))),
                None => Err(StoreError::Unavailable("writer stopped".to_owned())),
            });
        }
        results
    }
}

async fn run(store: Arc<dyn Store>, mut requests: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (writes, replies): (Vec<Write>, Vec<_>) = batch.drain(..).unzip();
        match store.write_batch(&writes).await {
            Ok(results) if results.len() == replies.len() => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Ok(_) => {
                let error = StoreError::Corrupt("batch results do not match the batch".to_owned());
                replies.into_iter().for_each(|reply| drop(reply.send(Err(error.clone()))));
            }
            // Unreachable, each write alone would fail the same way, one deadline after another.
            Err(error) if writes.len() > 1 && !matches!(error, StoreError::Unavailable(_)) => {
                // One bad write must not take the others down with it: commit them one by one.
                tracing::warn!(error = %error, writes = writes.len(), "batch write failed; committing its writes one by one");
                for (write, reply) in writes.iter().zip(replies) {
                    let result = store
                        .write_batch(std::slice::from_ref(write))
                        .await
                        .and_then(|mut results| results.pop().ok_or_else(|| StoreError::Corrupt("a write gave no result".to_owned())));
                    if let Err(error) = &result {
                        tracing::error!(error = %error, "write failed; nothing of it was stored");
                    }
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "write failed; nothing of it was stored");
                replies.into_iter().for_each(|reply| drop(reply.send(Err(error.clone()))));
            }
        }
    }
}
