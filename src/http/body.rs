//! Reading request bodies under three bounds: a size limit per route (413, after the
//! oversize body was read and discarded up to a bound so that a client that writes its
//! whole body before reading sees the 413 and not a reset connection), a body read
//! timeout (408), and a listener-wide budget of body bytes held in memory at once (503
//! OVERLOADED when spent).

use super::error::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hypercache_actors::metrics::Metrics;
use hypercache_actors::CacheError;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Most bytes of an oversize body read and discarded before the 413 is sent.
pub const LINGER_BYTES: u64 = 64 << 20;
/// Longest time spent discarding an oversize body before the 413 is sent.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// Which listener's budget (and gauge) a [`BodyLimits`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    Client,
    Dist,
}

/// The body-reading bounds of one listener; cheap to clone.
#[derive(Clone)]
pub struct BodyLimits {
    budget: Arc<Semaphore>,
    which: Budget,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// Bytes taken from a listener's budget, shown in its gauge; returned on drop.
struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    which: Budget,
    metrics: Arc<Metrics>,
}

impl Reservation {
    fn gauge(&self) -> &AtomicU64 {
        match self.which {
            Budget::Client => &self.metrics.client_buffer_bytes,
            Budget::Dist => &self.metrics.dist_buffer_bytes,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gauge().fetch_sub(self.bytes, Relaxed);
    }
}

/// Bytes held from a listener's budget by [`BodyLimits::hold`]; returned on drop.
pub struct Held {
    _reserved: Vec<Reservation>,
}

/// A request body in memory; its share of the listener's budget is returned on drop.
pub struct Buffered {
    pub bytes: Bytes,
    _reserved: Vec<Reservation>,
}

impl BodyLimits {
    /// `budget` bytes of bodies may be held at once; each body must arrive within
    /// `timeout`.
    pub fn new(which: Budget, budget: u64, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        let permits = usize::try_from(budget)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            budget: Arc::new(Semaphore::new(permits)),
            which,
            timeout,
            metrics,
        }
    }

    /// Takes `n` bytes of the budget for a buffer outside HTTP (a RESP connection's read
    /// buffer); `None` when the budget is spent (counted like a refused body).
    pub fn hold(&self, n: u64) -> Option<Held> {
        let mut held = Vec::new();
        self.reserve(n, &mut held).ok()?;
        Some(Held { _reserved: held })
    }

    /// Takes `n` bytes of the budget into `held`, or answers 503 `OVERLOADED`.
    fn reserve(&self, n: u64, held: &mut Vec<Reservation>) -> Result<(), ApiError> {
        if n == 0 {
            return Ok(());
        }
        let permits = u32::try_from(n).map_err(|_| CacheError::Overloaded)?;
        match self.budget.clone().try_acquire_many_owned(permits) {
            Ok(p) => {
                let r = Reservation {
                    _permit: p,
                    bytes: n,
                    which: self.which,
                    metrics: self.metrics.clone(),
                };
                r.gauge().fetch_add(n, Relaxed);
                held.push(r);
                Ok(())
            }
            Err(_) => {
                Metrics::inc(&self.metrics.request_buffer_refused_total);
                Err(CacheError::Overloaded.into())
            }
        }
    }

    /// Reads the whole body: at most `limit` bytes; `require_length` refuses a body
    /// without `Content-Length` (411).
    pub async fn read(
        &self,
        headers: &HeaderMap,
        body: Body,
        limit: u64,
        require_length: bool,
    ) -> Result<Buffered, ApiError> {
        let declared = match headers.get(header::CONTENT_LENGTH) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| CacheError::BadRequest("invalid Content-Length".into()))?,
            ),
        };
        if require_length && declared.is_none() {
            return Err(ApiError::LengthRequired);
        }
        let deadline = Instant::now() + self.timeout;
        if let Some(size) = declared.filter(|s| *s > limit) {
            linger(headers, body, deadline).await;
            return Err(CacheError::PayloadTooLarge { size, limit }.into());
        }
        let mut held = Vec::new();
        self.reserve(declared.unwrap_or(0), &mut held)?;
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        let mut body = body;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    Metrics::inc(&self.metrics.request_body_timeouts_total);
                    return Err(ApiError::BodyTimeout);
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(CacheError::BadRequest(format!(
                        "could not read the request body: {e}"
                    ))
                    .into())
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let total = buf.len() as u64 + data.len() as u64;
            if total > limit {
                linger(headers, body, deadline).await;
                return Err(CacheError::PayloadTooLarge { size: total, limit }.into());
            }
            if declared.is_none() {
                // Chunked: the budget is taken as the bytes arrive.
                self.reserve(data.len() as u64, &mut held)?;
            }
            buf.extend_from_slice(&data);
        }
        Ok(Buffered {
            bytes: buf.freeze(),
            _reserved: held,
        })
    }
}

/// Reads and discards what is left of an oversize body (at most [`LINGER_BYTES`], for at
/// most [`LINGER_TIME`] and never past `deadline`), so the client reads the 413 instead
/// of a reset. A client that sent `Expect: 100-continue` has not sent its body: it gets
/// the 413 at once.
async fn linger(headers: &HeaderMap, mut body: Body, deadline: Instant) {
    let expects = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects {
        return;
    }
    let deadline = deadline.min(Instant::now() + LINGER_TIME);
    let mut seen = 0u64;
    while seen < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => {
                seen += f.data_ref().map_or(0, |d| d.len() as u64);
            }
            _ => return,
        }
    }
}
