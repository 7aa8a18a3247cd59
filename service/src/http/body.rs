//! Reading request bodies within a deadline and within a memory budget shared by all requests.
//!
//! The webhook body must be read whole before its signature can be checked, so anyone on the
//! internet can make previewd hold bytes. What they can make it hold is bounded three ways: one
//! body by [`MAX_BODY_BYTES`], all bodies together by the budget, and the time a body may take
//! by the deadline. The budget is counted in bytes actually buffered (the buffer's capacity),
//! not in declared lengths: a client that announces 25 MiB and then stalls holds nothing of it,
//! so stalled uploads cannot lock small deliveries out.

use axum::body::Body;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// GitHub caps webhook payloads at 25 MB; previewd accepts up to 25 MiB.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// Why a body was not read. The HTTP status follows from the variant.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over [`MAX_BODY_BYTES`], declared or sent (413).
    #[error("webhook bodies are limited to {limit} bytes")]
    TooLarge { limit: usize },
    /// The bodies being received fill the budget (503); the client may retry after
    /// `retry_after`, by when every body now held has been read or timed out.
    #[error("previewd is receiving too many request bodies at once; retry in {} s", retry_after.as_secs())]
    Busy { retry_after: Duration },
    /// The client did not send the whole body in time (408).
    #[error("the body was not received within {} s", limit.as_secs())]
    Timeout { limit: Duration },
    /// The connection failed or the framing was wrong (400).
    #[error("could not read the body: {0}")]
    Read(String),
}

/// A body read whole, with its share of the budget, given back when this is dropped.
#[derive(Debug)]
pub struct HeldBody {
    bytes: Vec<u8>,
    share: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for HeldBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The memory budget for request bodies and the deadline for reading one; cheap to clone.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    deadline: Duration,
}

impl BodyBudget {
    /// A budget of `total` bytes (at most `Semaphore::MAX_PERMITS`), bodies read within `deadline`.
    pub fn new(total: usize, deadline: Duration) -> BodyBudget {
        let total = total.min(Semaphore::MAX_PERMITS);
        BodyBudget { bytes: Arc::new(Semaphore::new(total)), total, deadline }
    }

    /// Bytes of bodies held now, for the metrics.
    pub fn held(&self) -> usize {
        self.total - self.bytes.available_permits()
    }

    /// Reads `body`, whose `Content-Length` was `declared`, whole.
    pub async fn read(&self, body: Body, declared: Option<u64>) -> Result<HeldBody, BodyError> {
        let too_large = BodyError::TooLarge { limit: MAX_BODY_BYTES };
        let declared = match declared.map(usize::try_from) {
            Some(Ok(len)) if len <= MAX_BODY_BYTES => Some(len),
            Some(_) => return Err(too_large),
            None => None,
        };
        // A body whose declared length cannot fit now is refused before the client sends it.
        // Later arrivals may still take the room first; `grow` checks again as bytes come.
        if declared.is_some_and(|len| len > self.bytes.available_permits()) {
            return Err(self.busy());
        }
        let mut held = HeldBody { bytes: Vec::new(), share: None };
        let room = declared.unwrap_or(MAX_BODY_BYTES);
        let mut body = body;
        let fill = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
                let Ok(data) = frame.into_data() else { continue };
                let needed = held.bytes.len() + data.len();
                if needed > MAX_BODY_BYTES {
                    return Err(BodyError::TooLarge { limit: MAX_BODY_BYTES });
                }
                self.grow(&mut held, needed, room)?;
                held.bytes.extend_from_slice(&data);
            }
            Ok(())
        };
        let filled = tokio::time::timeout(self.deadline, fill).await;
        match filled {
            Ok(Ok(())) => Ok(held),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(BodyError::Timeout { limit: self.deadline }),
        }
    }

    /// Makes room for `needed` bytes in `held`, doubling its buffer up to `room` (the declared
    /// length), and takes the bytes added from the budget first.
    fn grow(&self, held: &mut HeldBody, needed: usize, room: usize) -> Result<(), BodyError> {
        let capacity = held.share.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        if needed <= capacity {
            return Ok(());
        }
        let target = needed.max(capacity.saturating_mul(2).min(room));
        let more = u32::try_from(target - capacity).map_err(|_| self.busy())?;
        let permit = self.bytes.clone().try_acquire_many_owned(more).map_err(|_| self.busy())?;
        match &mut held.share {
            Some(share) => share.merge(permit),
            None => held.share = Some(permit),
        }
        held.bytes.reserve_exact(target - held.bytes.len());
        Ok(())
    }

    fn busy(&self) -> BodyError {
        BodyError::Busy { retry_after: self.deadline }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: usize) -> BodyBudget {
        BodyBudget::new(total, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_body_holds_its_bytes_until_dropped() {
        let budget = budget(MAX_BODY_BYTES);
        let body = budget.read(Body::from(vec![b'x'; 1000]), Some(1000)).await.unwrap();
        assert_eq!((body.len(), budget.held()), (1000, 1000));
        drop(body);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn limits_are_checked_on_the_declared_length_first() {
        let budget = budget(100);
        let refused = budget.read(Body::from(vec![b'x'; 10]), Some(MAX_BODY_BYTES as u64 + 1)).await;
        assert!(matches!(refused, Err(BodyError::TooLarge { .. })), "{refused:?}");
        let refused = budget.read(Body::from(vec![b'x'; 10]), Some(101)).await;
        assert!(matches!(refused, Err(BodyError::Busy { retry_after }) if retry_after == Duration::from_secs(5)));
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn an_undeclared_body_over_the_budget_is_refused_and_gives_its_share_back() {
        let budget = budget(100);
        let held = budget.read(Body::from(vec![b'x'; 60]), None).await.unwrap();
        let refused = budget.read(Body::from(vec![b'x'; 60]), None).await;
        assert!(matches!(refused, Err(BodyError::Busy { .. })), "{refused:?}");
        assert_eq!(budget.held(), 60);
        drop(held);
        assert_eq!(budget.read(Body::from(vec![b'x'; 100]), None).await.unwrap().len(), 100);
    }
}
