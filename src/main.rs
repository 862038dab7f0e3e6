use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crs::config::{CliOverrides, Config};

/// Claude Relay Service: share upstream AI accounts behind `cr_` keys with limits and usage
/// accounting.
#[derive(Parser)]
#[command(name = "crs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay server.
    Serve {
        /// Data directory (database, secrets, config.toml).
        #[arg(long, env = "CRS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, env = "HOST")]
        host: Option<String>,
        /// Port to listen on.
        #[arg(long, env = "PORT")]
        port: Option<u16>,
        /// Configuration file (TOML). Default: <data-dir>/config.toml when it exists.
        #[arg(long, env = "CRS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a mock upstream (Anthropic Messages API) for trying crs out and for benchmarks.
    #[command(hide = true)]
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: String,
        /// Keep no copy of requests (for benchmarks).
        #[arg(long)]
        no_record: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    crs::tune_allocator();
    crs::init_tls();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve {
            data_dir,
            host,
            port,
            config,
        } => {
            let cfg = Config::load(&CliOverrides {
                host,
                port,
                data_dir,
                config,
            })?;
            crs::init_logging(&cfg.log_level, cfg.log_format);
            rt.block_on(crs::server::serve(cfg))
        }
        Command::MockUpstream { listen, no_record } => {
            crs::init_logging("info", crs::config::LogFormat::Text);
            rt.block_on(async move {
                let mock = crs::mock::MockUpstream::start_on(&listen).await?;
                if no_record {
                    mock.state
                        .record
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                tracing::info!(url = %mock.url(), "mock upstream listening");
                tokio::signal::ctrl_c().await?;
                Ok(())
            })
        }
    }
}
