#![recursion_limit = "256"]
//! crs: Claude Relay Service in one binary. See ARCHITECTURE.md for the map.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod limits;
pub mod listener;
pub mod mock;
pub mod model;
pub mod providers;
pub mod relay;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod store;
pub mod ui;
pub mod usage;
pub mod web;

/// Make glibc's allocator hand memory back: fewer arenas, large blocks (argon2's 19 MiB, big
/// request bodies) always mmapped so they are unmapped on free, the heap trimmed early.
/// Without this a relay that once served a burst keeps its peak footprint for ever.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before other threads
    // allocate heavily and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// Return freed heap memory to the system (glibc keeps it otherwise).
pub fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Install the process-wide TLS provider (ring). Idempotent.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Set up tracing from the configuration. Idempotent (later calls are ignored).
pub fn init_logging(level: &str, format: config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},salvo_core=warn,hyper=warn,reqwest=warn,h2=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Json => builder.json().try_init(),
        config::LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
