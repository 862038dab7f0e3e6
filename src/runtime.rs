//! The serving threads: one single-threaded async runtime a core (`serving_threads`), each
//! accepting and serving its own connections (`listener::serve`).
//!
//! A connection, the relay work of its requests and the upstream connections those requests
//! open all run on the thread that accepted it, so a request is never handed from one thread
//! to another. On a work-stealing runtime an answer arriving on one worker woke the request's
//! task on the other, a futex wake and a context switch each: 3.5 context switches a request
//! at one client, against 2 on a serving thread (the request arriving, the upstream's answer
//! arriving). The upstream client keeps a connection pool a thread
//! (`providers::http::Direct`) for the same reason.
//!
//! Everything else (timers of background tasks, the ledger's thread, blocking work) runs where
//! it did: the process's main runtime and its blocking pool.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::runtime::{Handle, Runtime};

thread_local! {
    /// n on serving thread n (from 1); 0 everywhere else.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The serving runtimes running now, each under a number of its own.
static HANDLES: Mutex<Vec<(u64, Handle)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The cores this process may run on: the default number of serving threads.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// This thread's place: n on serving thread n (from 1), 0 on any other.
pub fn worker() -> usize {
    WORKER.with(|w| w.get())
}

/// Build serving thread `n`'s runtime on the calling thread (which becomes serving thread
/// `n`); `on_park` runs each time it goes idle. The runtime is counted (`alive_tasks`,
/// `serving`) until the `Registered` is dropped.
pub fn serving_runtime(n: usize, on_park: fn()) -> std::io::Result<(Runtime, Registered)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(on_park)
        .build()?;
    WORKER.with(|w| w.set(n));
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    HANDLES.lock().push((id, rt.handle().clone()));
    Ok((rt, Registered(id)))
}

/// A serving runtime counted while this lives.
pub struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        HANDLES.lock().retain(|(id, _)| *id != self.0);
    }
}

/// The runtime the server was started on (background tasks).
static MAIN: Mutex<Option<Handle>> = Mutex::new(None);

/// Remember the calling runtime as the one background tasks run on.
pub fn set_main() {
    *MAIN.lock() = Handle::try_current().ok();
}

/// Tasks alive in the main runtime and in every serving runtime.
pub fn alive_tasks() -> usize {
    let main = MAIN
        .lock()
        .as_ref()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0);
    main + HANDLES
        .lock()
        .iter()
        .map(|(_, h)| h.metrics().num_alive_tasks())
        .sum::<usize>()
}

/// Serving threads running now.
pub fn serving() -> usize {
    HANDLES.lock().len()
}
