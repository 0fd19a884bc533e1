//! Bounds on reading request bodies: each body must arrive within a deadline
//! counted from the request head, and only so many bodies may be in progress
//! at once. Without them a handful of clients trickling bodies (or sending
//! none after their headers) could hold every connection indefinitely.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use hyper::body::{Frame, SizeHint};
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a guarded body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error("too many request bodies are being read at once")]
    Busy,
}

impl BodyReadError {
    /// The guard's error behind a body error, if that is what it is (it may
    /// be wrapped by axum and by `http_body_util::Limited`).
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyReadError> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(found) = error.downcast_ref::<BodyReadError>() {
                return Some(found);
            }
            current = error.source();
        }
        None
    }
}

/// The deadline and the shared pool of body-reading slots of one listener.
#[derive(Debug, Clone)]
pub struct BodyGuard {
    timeout: Duration,
    slots: Arc<Semaphore>,
}

impl BodyGuard {
    pub fn new(timeout: Duration, concurrent_bodies: usize) -> Self {
        Self { timeout, slots: Arc::new(Semaphore::new(concurrent_bodies)) }
    }

    /// Middleware: guards the request's body. The deadline starts now, when
    /// the head has been read; a slot is taken only when a handler starts
    /// reading, and given back at the body's end or when it is dropped.
    pub async fn guard(self, request: Request, next: Next) -> Response {
        let sleep = Box::pin(tokio::time::sleep(self.timeout));
        let request = request.map(|inner| {
            Body::new(GuardedBody { inner, sleep, timeout: self.timeout, slots: Arc::clone(&self.slots), permit: None, done: false })
        });
        next.run(request).await
    }
}

struct GuardedBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    done: bool,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.permit.is_none() {
            // Refused rather than queued: a waiting reader would hold its
            // connection just the same, which is what the cap prevents.
            match Arc::clone(&this.slots).try_acquire_owned() {
                Ok(permit) => this.permit = Some(permit),
                Err(_) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Box::new(BodyReadError::Busy))));
                }
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done = true;
                this.permit = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                this.done = true;
                this.permit = None;
                Poll::Ready(Some(Err(Box::new(error))))
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    this.permit = None;
                    Poll::Ready(Some(Err(Box::new(BodyReadError::TimedOut(this.timeout)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
