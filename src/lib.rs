#![recursion_limit = "256"]
//! crs: Claude Relay Service in one binary. See ARCHITECTURE.md for the map.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod limits;
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
