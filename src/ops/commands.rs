//! The operator commands as `main` runs them: open, act, print (text or `--json`).

use std::io::BufRead;
use std::path::Path;

use anyhow::Result;

use super::records::{self, render_accounts, render_keys};
use super::{DataDir, EXIT_BUSY, EXIT_FAILURE, EXIT_PROBLEMS, busy, fail, print};
use crate::config::Config;

/// `crs admin reset-password`.
pub fn reset_password(
    config: Config,
    username: Option<&str>,
    password_stdin: bool,
    json: bool,
) -> Result<()> {
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Some(line.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        None
    };
    let d = DataDir::open(config)?;
    let r = records::reset_password(&d, username, password)?;
    print(&r, json, |r| {
        let mut s = format!(
            "{} admin {:?}; every session of theirs has ended\n",
            if r.created {
                "created"
            } else {
                "reset the password of"
            },
            r.username
        );
        if let Some(p) = &r.password {
            s += &format!("new password (shown once): {p}\n");
        }
        s
    })
}

pub fn keys_list(config: Config, all: bool, json: bool) -> Result<()> {
    let d = DataDir::open(config)?;
    print(&records::list_keys(&d, all)?, json, render_keys)
}

pub fn keys_create(config: Config, name: &str, json: bool) -> Result<()> {
    let d = DataDir::open(config)?;
    let row = records::create_key(&d, name)?;
    print(&row, json, |r| {
        format!(
            "created key {:?} ({})\n{}\n",
            r.name,
            r.id,
            r.api_key.as_deref().unwrap_or_default()
        )
    })
}

pub fn keys_disable(config: Config, key: &str, json: bool) -> Result<()> {
    let d = DataDir::open(config)?;
    let row = records::disable_key(&d, key)?;
    print(&row, json, |r| {
        format!("disabled key {:?} ({})\n", r.name, r.id)
    })
}

pub fn accounts_list(config: Config, json: bool) -> Result<()> {
    let d = DataDir::open(config)?;
    print(&records::list_accounts(&d)?, json, render_accounts)
}

/// `crs status`: from the running server when there is one, else from the store.
pub async fn status(config: Config, json: bool) -> Result<()> {
    let s = match DataDir::try_open(config)? {
        Ok(d) => {
            let dir = d.config.data_dir.display().to_string();
            super::status::collect(&d.store, d.clock(), &dir)?
        }
        Err((config, Some(run))) => {
            let res = run.get("/admin/status").send().await.map_err(|e| {
                fail(
                    EXIT_BUSY,
                    format!("the running crs at {} does not answer: {e}", run.url),
                )
            })?;
            if !res.status().is_success() {
                return Err(fail(
                    EXIT_FAILURE,
                    format!("the running crs answered {}", res.status()),
                ));
            }
            let mut s: super::status::Status = res.json().await?;
            if let Some(server) = &mut s.server {
                server.url = run.url.clone();
            }
            s.data_dir = config.data_dir.display().to_string();
            s
        }
        Err((config, None)) => return Err(busy(&config.data_dir, None)),
    };
    print(&s, json, super::status::render)
}

/// `crs check`: exits with `EXIT_PROBLEMS` when something does not parse or decrypt.
pub fn check(config: Config, json: bool) -> Result<()> {
    let d = DataDir::open(config)?;
    let r = super::check::check(&d)?;
    print(&r, json, super::check::CheckReport::render)?;
    if r.ok() {
        Ok(())
    } else {
        Err(fail(
            EXIT_PROBLEMS,
            format!("{} problem(s) found", r.problems.len()),
        ))
    }
}

/// `crs backup`: online through the running server, else from the store.
pub async fn backup(config: Config, out: &Path, json: bool) -> Result<()> {
    let r = match DataDir::try_open(config)? {
        Ok(d) => super::backup::backup_offline(&d, out)?,
        Err((config, Some(run))) => super::backup::backup_online(&config, &run, out).await?,
        Err((config, None)) => return Err(busy(&config.data_dir, None)),
    };
    print(&r, json, super::backup::BackupReport::render)
}

pub fn restore(config: Config, from: &Path, force: bool, json: bool) -> Result<()> {
    let r = super::backup::restore(&config, from, force)?;
    print(&r, json, super::backup::RestoreReport::render)
}

/// `crs upgrade`: signal the server running on the data directory (SIGUSR2) and wait until a
/// new process has taken over (its run file names another pid).
pub async fn upgrade(config: Config, json: bool) -> Result<()> {
    let dir = &config.data_dir;
    let Some(old) = super::RunInfo::read(dir) else {
        return Err(fail(
            EXIT_BUSY,
            format!("no crs is running on {}", dir.display()),
        ));
    };
    let asked = chrono::Utc::now();
    #[cfg(unix)]
    // SAFETY: kill only sends a signal, to the pid the running server wrote.
    if unsafe { libc::kill(old.pid as libc::pid_t, libc::SIGUSR2) } != 0 {
        return Err(fail(
            EXIT_FAILURE,
            format!(
                "signalling crs (pid {}): {}",
                old.pid,
                std::io::Error::last_os_error()
            ),
        ));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(65);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Some(new) = super::RunInfo::read(dir) else {
            continue;
        };
        if new.pid == old.pid {
            match new.upgrade_failed {
                Some(f) if f.at >= asked => {
                    return Err(fail(
                        EXIT_FAILURE,
                        format!(
                            "the upgrade failed: {}; pid {} keeps serving",
                            f.error, old.pid
                        ),
                    ));
                }
                _ => continue,
            }
        }
        {
            let out = serde_json::json!({"oldPid": old.pid, "pid": new.pid, "version": new.version, "url": new.url});
            return print(&out, json, |_| {
                format!(
                    "upgraded: pid {} (crs {}) serves {}; pid {} finishes its requests and exits\n",
                    new.pid, new.version, new.url, old.pid
                )
            });
        }
    }
    Err(fail(
        EXIT_FAILURE,
        format!(
            "no new process took over; pid {} keeps serving (see its log)",
            old.pid
        ),
    ))
}
