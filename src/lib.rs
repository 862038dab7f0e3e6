#![recursion_limit = "256"]
//! crs: Claude Relay Service in one binary. See ARCHITECTURE.md for the map.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod config;
pub mod convert;
pub mod crypto;
pub mod events;
pub mod limits;
pub mod listener;
pub mod logfile;
pub mod metrics;
pub mod migrate;
pub mod mock;
pub mod model;
pub mod notify;
pub mod ops;
pub mod providers;
pub mod relay;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod store;
pub mod ui;
pub mod upgrade;
pub mod usage;
pub mod web;

/// The library's tests run on the system allocator, counting what each thread has allocated
/// and not freed: a test on a current-thread runtime can see what a piece of work leaves behind.
#[cfg(test)]
pub(crate) mod test_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    fn count(delta: isize) {
        // `try_with`: nothing is counted while the thread's locals are being torn down.
        let _ = LIVE.try_with(|l| l.set(l.get() + delta));
    }

    /// Bytes this thread allocated and did not free (frees of other threads' blocks count
    /// where they happen).
    pub fn live_here() -> isize {
        LIVE.with(Cell::get)
    }

    pub struct Counting;

    // SAFETY: every call is passed to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(layout.size() as isize);
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            count(-(layout.size() as isize));
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count(layout.size() as isize);
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count(new_size as isize - layout.size() as isize);
            // SAFETY: the caller's contract, passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;
}

/// The allocator of the `crs` binary: mimalloc. It is several times faster than glibc's malloc
/// under a relay's allocation pattern (measured: +40% requests/s at concurrency 32) and, tuned
/// here, gives memory back instead of keeping a burst's peak for ever.
pub type GlobalAllocator = mimalloc::MiMalloc;

/// Memory settings, applied first thing in `main`: no transparent huge pages for this process
/// (they fault memory in 2 MiB at a time: tens of MiB for a mostly idle relay; the `no_thp`
/// build feature also keeps mimalloc from asking for them before `main` runs, which left one
/// 2 MiB page resident for the life of the process), and mimalloc's page settings below. The
/// options are set only for mimalloc 3.x, whose option numbers these are. An option set in the
/// environment (`MIMALLOC_PURGE_DELAY=100`, read by mimalloc itself) is left as the operator set
/// it.
pub fn tune_allocator() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE only changes this process's THP policy.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // SAFETY: a plain FFI call that reads mimalloc's version.
    if !(30000..40000).contains(&unsafe { libmimalloc_sys::mi_version() }) {
        return;
    }
    for (option, value) in allocator_options(|name| std::env::var_os(name).is_some()) {
        // SAFETY: sets an integer option of mimalloc 3.x, before any other thread runs.
        unsafe { libmimalloc_sys::mi_option_set(option, value) };
    }
}

/// The mimalloc 3.x options `tune_allocator` sets, as (option number, value): those whose
/// `MIMALLOC_*` variable `in_env` reports set are left out, so the operator's value holds.
fn allocator_options(in_env: impl Fn(&str) -> bool) -> Vec<(i32, libc::c_long)> {
    const PURGE_DELAY: i32 = 15;
    const ARENA_PURGE_MULT: i32 = 24;
    const PAGE_FULL_RETAIN: i32 = 36;
    const PAGE_MAX_RECLAIM: i32 = 41;
    let wanted = [
        // Memory freed pages gave back goes to the system at once. The price, under load: a
        // page a request's buffers take is often one purged a moment before and faulted in
        // anew (at 128 clients 1.6 page faults and 0.18 madvise calls a request, with TLB
        // shootdowns across the workers; perf stat). `MIMALLOC_PURGE_DELAY=100` cuts the
        // faults to a quarter and CPU a request by 11% (median of five alternating runs each:
        // 190 -> 169 us), but pages reused while still resident stay fully resident where a
        // few live blocks keep them: 3-4 MiB more after light load, 40-50 MiB more while
        // 9,500 streams run over HTTP/1.1 (400-450 against 358 MiB). A relay shared by a few
        // people spends its time idle, so memory wins the default.
        (PURGE_DELAY, "PURGE_DELAY", 0),
        (ARENA_PURGE_MULT, "ARENA_PURGE_MULT", 1),
        // Keep no extra empty pages per size class around after a burst.
        (PAGE_FULL_RETAIN, "PAGE_FULL_RETAIN", 0),
        // A full page a thread gave up is not taken back into that thread's heap when one of
        // its blocks is freed: it is released once its last block is. Taking such pages back
        // kept a few live blocks each spread over many pages after a burst (9,500 streams:
        // 14 MiB of heap afterwards with reclaiming, 11 MiB without; the same requests/s and
        // CPU a request at 32 clients).
        (PAGE_MAX_RECLAIM, "PAGE_MAX_RECLAIM", 0),
    ];
    wanted
        .into_iter()
        .filter(|(_, name, _)| !in_env(&format!("MIMALLOC_{name}")))
        .map(|(option, _, value)| (option, value))
        .collect()
}

/// Called by each runtime worker when it goes idle: at most once a second, give the memory
/// its heap no longer uses back to the system. mimalloc heaps are per thread, so this must run
/// on the workers themselves; the periodic `trim_allocator` covers the rest.
pub fn on_worker_park() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    LAST.with(|last| {
        let now = Instant::now();
        if last
            .get()
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            last.set(Some(now));
            trim_allocator();
        }
    });
}

/// Return freed memory to the system.
pub fn trim_allocator() {
    // SAFETY: mi_collect only frees memory mimalloc no longer uses.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Install the process-wide TLS provider (ring). Idempotent.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Set up tracing from the configuration. Idempotent (later calls are ignored).
pub fn init_logging(level: &str, format: config::LogFormat) {
    init_logging_to(level, format, None);
}

/// Set up tracing for `crs serve`: stderr, and the rotating log files when `log_dir` is set.
pub fn init_server_logging(cfg: &config::Config) -> anyhow::Result<()> {
    let files = match &cfg.log_dir {
        Some(dir) => Some(
            logfile::RotatingFile::open(dir, cfg.log_max_bytes, cfg.log_max_files)
                .map_err(|e| anyhow::anyhow!("opening the log directory {}: {e}", dir.display()))?,
        ),
        None => None,
    };
    init_logging_to(&cfg.log_level, cfg.log_format, files);
    Ok(())
}

fn init_logging_to(level: &str, format: config::LogFormat, files: Option<logfile::RotatingFile>) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::layer;
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},salvo_core=warn,hyper=warn,reqwest=warn,h2=warn"
        ))
    });
    let json = matches!(format, config::LogFormat::Json);
    let (stderr_json, stderr_text) = if json {
        (Some(layer().json().with_writer(std::io::stderr)), None)
    } else {
        (
            None,
            Some(layer().with_ansi(false).with_writer(std::io::stderr)),
        )
    };
    let (file_json, file_text) = match files {
        Some(f) if json => (Some(layer().json().with_writer(f)), None),
        Some(f) => (None, Some(layer().with_ansi(false).with_writer(f))),
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr_json)
        .with(stderr_text)
        .with(file_json)
        .with(file_text)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::allocator_options;

    #[test]
    fn allocator_options_leave_what_the_environment_sets_to_the_operator() {
        let all = allocator_options(|_| false);
        assert_eq!(all, vec![(15, 0), (24, 1), (36, 0), (41, 0)]);
        let some = allocator_options(|name| name == "MIMALLOC_PURGE_DELAY");
        assert_eq!(some, vec![(24, 1), (36, 0), (41, 0)]);
        assert!(allocator_options(|name| name.starts_with("MIMALLOC_")).is_empty());
    }
}
