//! Operator commands on a data directory: `crs admin reset-password`, `crs keys`,
//! `crs accounts list`, `crs status`, `crs check`, `crs backup`, `crs restore`.
//!
//! A running server holds the store (redb takes one process): commands that need the store
//! open it exclusively and, when a server holds it, either talk to that server (`status`,
//! `backup`) through the run file it leaves in the data directory (`crs.run.json`: its pid, its
//! address and an operator token that works as an admin session), or stop with `EXIT_BUSY`.

pub mod backup;
pub mod check;
pub mod commands;
pub mod records;
pub mod status;

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::crypto::Secrets;
use crate::store::Store;
use crate::store::backup::is_busy;

/// Exit codes of the operator commands (clap's usage errors are 2).
pub const EXIT_FAILURE: i32 = 1;
/// The data directory is held by a running server (or, for online commands, none answers).
pub const EXIT_BUSY: i32 = 3;
/// `crs check` found records that do not parse or secrets that do not decrypt.
pub const EXIT_PROBLEMS: i32 = 4;
/// What was asked for does not exist (a key, an admin, a data directory).
pub const EXIT_NOT_FOUND: i32 = 5;

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

pub fn fail(code: i32, message: impl Into<String>) -> anyhow::Error {
    Failure {
        code,
        message: message.into(),
    }
    .into()
}

/// The exit code for an error of an operator command.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Failure>().map(|f| f.code))
        .unwrap_or(EXIT_FAILURE)
}

/// The file a running server leaves in its data directory.
pub const RUN_FILE: &str = "crs.run.json";

/// What a running server tells local operator commands about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    pub pid: u32,
    /// Base URL, reachable from this host.
    pub url: String,
    pub version: String,
    /// Accepted as an admin session by that server while it runs.
    pub token: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The last upgrade this server tried and gave up on (it kept serving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_failed: Option<UpgradeFailure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeFailure {
    pub at: chrono::DateTime<chrono::Utc>,
    pub error: String,
}

impl RunInfo {
    pub fn write(&self, data_dir: &Path) -> Result<()> {
        crate::crypto::write_private(&data_dir.join(RUN_FILE), &serde_json::to_vec_pretty(self)?)
    }

    /// The run file of a server that is still alive, if any.
    pub fn read(data_dir: &Path) -> Option<RunInfo> {
        let bytes = std::fs::read(data_dir.join(RUN_FILE)).ok()?;
        let info: RunInfo = serde_json::from_slice(&bytes).ok()?;
        pid_alive(info.pid).then_some(info)
    }

    /// Remove the run file if it is this process's.
    pub fn remove(data_dir: &Path) {
        let path = data_dir.join(RUN_FILE);
        if let Ok(bytes) = std::fs::read(&path)
            && let Ok(info) = serde_json::from_slice::<RunInfo>(&bytes)
            && info.pid == std::process::id()
        {
            let _ = std::fs::remove_file(path);
        }
    }

    /// An HTTP client for this server's admin API.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }
}

fn pid_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// A data directory opened by an operator command.
pub struct DataDir {
    pub config: Config,
    pub store: Arc<Store>,
}

impl DataDir {
    /// Open an existing data directory's store for exclusive use. A store held by a running
    /// server is `EXIT_BUSY`; a directory without a store is `EXIT_NOT_FOUND`.
    pub fn open(config: Config) -> Result<DataDir> {
        match Self::try_open(config)? {
            Ok(d) => Ok(d),
            Err((config, run)) => Err(busy(&config.data_dir, run.as_ref())),
        }
    }

    /// Like `open`, but a store held by a server gives back the configuration and the
    /// server's run file (when it left one) instead of failing.
    pub fn try_open(config: Config) -> Result<Result<DataDir, (Config, Option<RunInfo>)>> {
        let db = config.db_path();
        if !db.exists() {
            return Err(fail(
                EXIT_NOT_FOUND,
                format!(
                    "no crs data directory at {} (no crs.redb); pass --data-dir",
                    config.data_dir.display()
                ),
            ));
        }
        match Store::open(&db) {
            Ok(store) => Ok(Ok(DataDir { config, store })),
            Err(e) if is_busy(&e) => {
                let run = RunInfo::read(&config.data_dir);
                Ok(Err((config, run)))
            }
            Err(e) => Err(e),
        }
    }

    pub fn secrets(&self) -> Result<Secrets> {
        load_secrets(&self.config)
    }

    pub fn clock(&self) -> crate::usage::Clock {
        crate::usage::Clock::new(self.config.tz_offset_minutes)
    }
}

/// The secrets of an existing data directory (never created here).
pub fn load_secrets(config: &Config) -> Result<Secrets> {
    let path = config.secrets_path();
    if !path.exists() {
        return Err(fail(
            EXIT_NOT_FOUND,
            format!("{} is missing", path.display()),
        ));
    }
    Ok(Secrets::load_or_create(&path, config.encryption_key.as_deref())?.0)
}

/// The error for a data directory a server holds.
pub fn busy(dir: &Path, run: Option<&RunInfo>) -> anyhow::Error {
    let who = match run {
        Some(r) => format!("a running crs (pid {}, {})", r.pid, r.url),
        None => "another process".to_owned(),
    };
    fail(
        EXIT_BUSY,
        format!(
            "{} is in use by {who}; stop it first (this command needs the data directory to itself)",
            dir.display()
        ),
    )
}

/// Print `value` as JSON, or the text `render` makes of it.
pub fn print<T: Serialize>(value: &T, json: bool, render: impl FnOnce(&T) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", render(value));
    }
    Ok(())
}
