use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crs::config::{CliOverrides, Config};

#[global_allocator]
static GLOBAL: crs::GlobalAllocator = mimalloc::MiMalloc;

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
    /// Import a v1 deployment (its Redis, or a JSON dump) into a data directory.
    Import {
        /// v1's Redis: redis://[user:pass@]host:port/db
        #[arg(
            long,
            value_name = "REDIS_URL",
            required_unless_present = "from_json",
            conflicts_with = "from_json"
        )]
        from: Option<String>,
        /// A JSON dump instead (the format `crs export --to-json` writes).
        #[arg(long, value_name = "FILE")]
        from_json: Option<PathBuf>,
        /// Data directory to import into.
        #[arg(long, env = "CRS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The v1 deployment's ENCRYPTION_KEY (decrypts account secrets; API keys are hashed with it).
        #[arg(long, env = "ENCRYPTION_KEY", hide_env_values = true)]
        encryption_key: Option<String>,
        /// Read and report only; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Import into a data directory that already holds keys, accounts or usage.
        #[arg(long)]
        merge: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export a data directory in v1's layout (to a Redis v1 can run on, or a JSON dump).
    Export {
        /// Target Redis: redis://[user:pass@]host:port/db (refused if it holds keys, unless --merge)
        #[arg(
            long,
            value_name = "REDIS_URL",
            required_unless_present = "to_json",
            conflicts_with = "to_json"
        )]
        to: Option<String>,
        /// Write a JSON dump instead.
        #[arg(long, value_name = "FILE")]
        to_json: Option<PathBuf>,
        /// Data directory to export.
        #[arg(long, env = "CRS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// v1's ENCRYPTION_KEY (default: the data directory's key-hash secret; must equal it).
        #[arg(long, env = "ENCRYPTION_KEY", hide_env_values = true)]
        encryption_key: Option<String>,
        /// Write into a Redis database that already holds keys (crs's keys replace theirs).
        #[arg(long)]
        merge: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Admin accounts (offline: stop the server first).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// API keys (offline: stop the server first).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Upstream accounts (offline: stop the server first).
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// What the data directory holds, and the server running on it (if any).
    Status {
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
        json: bool,
    },
    /// Read the whole store: every record parses, every secret decrypts (exit 4 if not).
    Check {
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent backup (one file, secrets included), from the running server if
    /// there is one.
    Backup {
        #[command(flatten)]
        dir: DirArgs,
        /// The backup file to write.
        #[arg(long, short)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Upgrade the running server without downtime: it starts the binary now on disk, hands
    /// it the listening socket and exits once its requests are done (same as SIGUSR2).
    Upgrade {
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a data directory (the server must be stopped).
    Restore {
        #[command(flatten)]
        dir: DirArgs,
        /// The backup file to read.
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing store (it is kept as crs.redb.before-restore).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run a mock upstream (Anthropic Messages API) for trying crs out and for benchmarks.
    #[command(hide = true)]
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: String,
        /// Keep no copy of requests (for benchmarks).
        #[arg(long)]
        no_record: bool,
        /// Also serve HTTPS here (HTTP/2 and HTTP/1.1 by ALPN), with `--tls-cert` and `--tls-key`.
        #[arg(long, requires_all = ["tls_cert", "tls_key"])]
        tls_listen: Option<String>,
        /// PEM certificate chain for `--tls-listen`.
        #[arg(long)]
        tls_cert: Option<PathBuf>,
        /// PEM private key for `--tls-listen`.
        #[arg(long)]
        tls_key: Option<PathBuf>,
    },
}

/// Where the data directory is (for the operator commands).
#[derive(clap::Args)]
struct DirArgs {
    /// Data directory.
    #[arg(long, env = "CRS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file (TOML). Default: <data-dir>/config.toml when it exists.
    #[arg(long, env = "CRS_CONFIG")]
    config: Option<PathBuf>,
}

impl DirArgs {
    fn load(self) -> anyhow::Result<Config> {
        let cfg = Config::load(&CliOverrides {
            data_dir: self.data_dir,
            config: self.config,
            ..Default::default()
        })?;
        crs::init_logging("warn", cfg.log_format);
        Ok(cfg)
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Set an admin's password (a random one unless --password-stdin) and end their sessions.
    ResetPassword {
        #[command(flatten)]
        dir: DirArgs,
        /// The admin (default: the only one).
        #[arg(long)]
        username: Option<String>,
        /// Read the new password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List API keys.
    List {
        #[command(flatten)]
        dir: DirArgs,
        /// Include deleted keys.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Create an API key without limits; the key is printed once.
    Create {
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Disable an API key (by id, or by name when only one key has it).
    Disable {
        #[command(flatten)]
        dir: DirArgs,
        key: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// List upstream accounts (no secrets).
    List {
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crs: {e:#}");
            std::process::ExitCode::from(crs::ops::exit_code(&e) as u8)
        }
    }
}

fn run() -> anyhow::Result<()> {
    use crs::ops::commands as ops;
    crs::upgrade::remember_exe();
    let cli = Cli::parse();
    crs::tune_allocator();
    crs::init_tls();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crs::on_worker_park)
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
            crs::init_server_logging(&cfg)?;
            rt.block_on(crs::server::serve(cfg))
        }
        Command::Import {
            from,
            from_json,
            data_dir,
            encryption_key,
            dry_run,
            merge,
            json,
        } => {
            let cfg = Config::load(&CliOverrides {
                data_dir,
                ..Default::default()
            })?;
            crs::init_logging("warn", cfg.log_format);
            let source = match (from, from_json) {
                (Some(url), _) => crs::migrate::Source::Redis(url),
                (None, Some(f)) => crs::migrate::Source::Json(f),
                (None, None) => anyhow::bail!("--from or --from-json is required"),
            };
            let opts = crs::migrate::ImportOptions {
                data_dir: cfg.data_dir.clone(),
                encryption_key: encryption_key.unwrap_or_default(),
                dry_run,
                merge,
                progress: true,
            };
            let report = rt.block_on(crs::migrate::import(&source, &opts))?;
            print_report(&report, json)
        }
        Command::Export {
            to,
            to_json,
            data_dir,
            encryption_key,
            merge,
            json,
        } => {
            let cfg = Config::load(&CliOverrides {
                data_dir,
                ..Default::default()
            })?;
            crs::init_logging("warn", cfg.log_format);
            let target = match (to, to_json) {
                (Some(url), _) => crs::migrate::Target::Redis(url),
                (None, Some(f)) => crs::migrate::Target::Json(f),
                (None, None) => anyhow::bail!("--to or --to-json is required"),
            };
            let opts = crs::migrate::ExportOptions {
                data_dir: cfg.data_dir.clone(),
                encryption_key,
                tz_offset_minutes: cfg.tz_offset_minutes,
                merge,
                progress: true,
            };
            let report = rt.block_on(crs::migrate::export(&target, &opts))?;
            print_report(&report, json)
        }
        Command::Admin {
            command:
                AdminCommand::ResetPassword {
                    dir,
                    username,
                    password_stdin,
                    json,
                },
        } => ops::reset_password(dir.load()?, username.as_deref(), password_stdin, json),
        Command::Keys { command } => match command {
            KeysCommand::List { dir, all, json } => ops::keys_list(dir.load()?, all, json),
            KeysCommand::Create { dir, name, json } => ops::keys_create(dir.load()?, &name, json),
            KeysCommand::Disable { dir, key, json } => ops::keys_disable(dir.load()?, &key, json),
        },
        Command::Accounts {
            command: AccountsCommand::List { dir, json },
        } => ops::accounts_list(dir.load()?, json),
        Command::Status { dir, json } => rt.block_on(ops::status(dir.load()?, json)),
        Command::Check { dir, json } => ops::check(dir.load()?, json),
        Command::Backup { dir, out, json } => rt.block_on(ops::backup(dir.load()?, &out, json)),
        Command::Upgrade { dir, json } => rt.block_on(ops::upgrade(dir.load()?, json)),
        Command::Restore {
            dir,
            from,
            force,
            json,
        } => ops::restore(dir.load()?, &from, force, json),
        Command::MockUpstream {
            listen,
            no_record,
            tls_listen,
            tls_cert,
            tls_key,
        } => {
            crs::init_logging("info", crs::config::LogFormat::Text);
            crs::init_tls();
            rt.block_on(async move {
                let mut mocks = vec![crs::mock::MockUpstream::start_on(&listen).await?];
                if let (Some(at), Some(cert), Some(key)) = (tls_listen, tls_cert, tls_key) {
                    let read = |p: &PathBuf| {
                        std::fs::read(p).with_context(|| format!("reading {}", p.display()))
                    };
                    mocks.push(
                        crs::mock::MockUpstream::start_tls_on(&at, &read(&cert)?, &read(&key)?)
                            .await?,
                    );
                }
                for mock in &mocks {
                    if no_record {
                        mock.state
                            .record
                            .store(false, std::sync::atomic::Ordering::Relaxed);
                    }
                    tracing::info!(url = %mock.url(), "mock upstream listening");
                }
                tokio::signal::ctrl_c().await?;
                Ok(())
            })
        }
    }
}

fn print_report(report: &crs::migrate::Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
