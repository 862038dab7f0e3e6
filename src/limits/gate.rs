//! Per-key concurrency: a fair semaphore with an optional bounded wait queue.
//!
//! A `Slot` is an RAII permit: it is released when dropped, whatever ends the request
//! (completion, error, client disconnect, a cancelled handler), so slots cannot leak.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub const DEFAULT_QUEUE_MAX: u32 = 10;
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug)]
pub struct Gate {
    pub limit: u32,
    sem: Arc<Semaphore>,
    waiting: AtomicU32,
    pub queue_enabled: bool,
    pub queue_max: u32,
    pub queue_timeout: Duration,
}

/// Holds one concurrency slot until dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug, PartialEq, Eq)]
pub enum GateError {
    /// No free slot and no queue.
    Full { current: u32, limit: u32 },
    /// The queue is at its maximum length.
    QueueFull { limit: u32, queue_max: u32 },
    /// Waited the maximum time without getting a slot.
    QueueTimeout { limit: u32, waited_ms: u64 },
}

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    pub fn new(limit: u32, queue_enabled: bool, queue_max: u32, queue_timeout_ms: u64) -> Self {
        Gate {
            limit,
            sem: Arc::new(Semaphore::new(limit as usize)),
            waiting: AtomicU32::new(0),
            queue_enabled,
            queue_max: if queue_max == 0 {
                DEFAULT_QUEUE_MAX
            } else {
                queue_max
            },
            queue_timeout: Duration::from_millis(if queue_timeout_ms == 0 {
                DEFAULT_QUEUE_TIMEOUT_MS
            } else {
                queue_timeout_ms
            }),
        }
    }

    /// Same limit and queue settings: the gate can be kept across a key update.
    pub fn same_settings(&self, other: &Gate) -> bool {
        self.limit == other.limit
            && self.queue_enabled == other.queue_enabled
            && self.queue_max == other.queue_max
            && self.queue_timeout == other.queue_timeout
    }

    /// Slots in use now.
    pub fn in_use(&self) -> u32 {
        if self.limit == 0 {
            return 0;
        }
        self.limit - self.sem.available_permits() as u32
    }

    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Acquire)
    }

    /// Take a slot without waiting; `None` when all are in use.
    pub fn try_acquire(&self) -> Option<Slot> {
        self.sem
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|p| Slot { _permit: p })
    }

    /// Take a slot, waiting in the queue if it is enabled. `None` when the key is unlimited.
    pub async fn acquire(&self) -> Result<Option<Slot>, GateError> {
        if self.limit == 0 {
            return Ok(None);
        }
        // Nobody may overtake queued waiters: only try the fast path when none wait.
        if self.waiting() == 0
            && let Ok(p) = self.sem.clone().try_acquire_owned()
        {
            return Ok(Some(Slot { _permit: p }));
        }
        if !self.queue_enabled {
            return Err(GateError::Full {
                current: self.in_use(),
                limit: self.limit,
            });
        }
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _w = Waiting(&self.waiting);
        if before >= self.queue_max {
            return Err(GateError::QueueFull {
                limit: self.limit,
                queue_max: self.queue_max,
            });
        }
        // tokio's semaphore hands permits out in FIFO order: waiters are woken fairly.
        match tokio::time::timeout(self.queue_timeout, self.sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Some(Slot { _permit: p })),
            _ => Err(GateError::QueueTimeout {
                limit: self.limit,
                waited_ms: self.queue_timeout.as_millis() as u64,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_queue_rejects_when_full_and_slots_return_on_drop() {
        let g = Gate::new(2, false, 0, 0);
        let a = g.acquire().await.unwrap();
        let b = g.acquire().await.unwrap();
        assert_eq!(g.in_use(), 2);
        assert_eq!(
            g.acquire().await.unwrap_err(),
            GateError::Full {
                current: 2,
                limit: 2
            }
        );
        drop(a);
        assert_eq!(g.in_use(), 1);
        let _c = g.acquire().await.unwrap();
        drop(b);
        assert_eq!(g.in_use(), 1);
    }

    #[tokio::test]
    async fn unlimited_takes_no_slot() {
        let g = Gate::new(0, false, 0, 0);
        assert!(g.acquire().await.unwrap().is_none());
        assert_eq!(g.in_use(), 0);
    }

    #[tokio::test]
    async fn queue_waits_in_order_bounds_length_and_times_out() {
        let g = Arc::new(Gate::new(1, true, 2, 300));
        let first = g.acquire().await.unwrap();
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (g, order) = (g.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let s = g.acquire().await.unwrap();
                order.lock().push(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(s);
            }));
            // Let each waiter enqueue before the next.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(g.waiting(), 2);
        // A third waiter does not fit in the queue.
        assert!(matches!(
            g.acquire().await,
            Err(GateError::QueueFull { .. })
        ));
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock(), vec![0, 1]);
        assert_eq!(g.in_use(), 0);
        assert_eq!(g.waiting(), 0);

        let hold = g.acquire().await.unwrap();
        let r = g.acquire().await;
        assert!(matches!(r, Err(GateError::QueueTimeout { .. })));
        assert_eq!(g.waiting(), 0, "a timed-out waiter leaves the queue");
        drop(hold);
    }

    #[tokio::test]
    async fn cancelled_waiter_leaves_the_queue() {
        let g = Arc::new(Gate::new(1, true, 5, 10_000));
        let _hold = g.acquire().await.unwrap();
        let g2 = g.clone();
        let t = tokio::spawn(async move {
            let _ = g2.acquire().await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(g.waiting(), 1);
        t.abort();
        let _ = t.await;
        assert_eq!(g.waiting(), 0);
    }
}
