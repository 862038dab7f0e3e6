//! Zero-downtime upgrade (SIGUSR2, `crs upgrade`, systemd's reload): the running server starts
//! the binary now on disk with the same arguments and hands it the listening socket (an
//! inherited descriptor named by `CRS_LISTEN_FD`) and the data directory, waits for it to say
//! it is ready (a pipe named by `CRS_READY_FD`), then stops accepting, lets its requests and
//! streams finish and exits. Both processes accept on the one socket meanwhile, so no
//! connection is refused.
//!
//! The store takes one process at a time (redb's lock), so the old process commits what its
//! ledger holds and closes the store before the new one opens it; usage of the requests it
//! still finishes goes to a handoff file (`usage-handoff-{pid}.jsonl`) that the new process
//! folds in. If the new binary does not become ready in time (or exits), the old one reopens
//! the store, takes the handed-over usage back and keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::state::AppState;

pub const READY_FD_ENV: &str = "CRS_READY_FD";
/// Set in the new process: the pid of the one handing over (the store is waited for).
pub const UPGRADE_FROM_ENV: &str = "CRS_UPGRADE_FROM";
/// How long the new process may take to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the old process lets requests and streams finish after the handover.
pub const DRAIN_GRACE: Duration = Duration::from_secs(600);

static EXE: OnceLock<PathBuf> = OnceLock::new();

/// Remember the path of the running binary, first thing in `main`: once the file is replaced,
/// `/proc/self/exe` names the deleted one, and an upgrade wants the new one at the same path.
pub fn remember_exe() {
    if let Ok(p) = std::env::current_exe() {
        let _ = EXE.set(p);
    }
}

fn exe() -> Result<PathBuf> {
    match EXE.get() {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe().context("finding the crs binary"),
    }
}

/// Whether this process was started by an upgrade.
pub fn is_upgrade_child() -> bool {
    std::env::var_os(UPGRADE_FROM_ENV).is_some()
}

/// The handoff file of process `pid` in `data_dir`.
pub fn handoff_file(data_dir: &Path, pid: u32) -> PathBuf {
    data_dir.join(format!("usage-handoff-{pid}.jsonl"))
}

/// A started new process and the read end of its readiness pipe.
#[cfg(unix)]
pub struct Started {
    pub child: std::process::Child,
    ready: std::os::fd::OwnedFd,
}

/// Start the binary on disk with this process's arguments, the listening socket `listen_fd`
/// and a readiness pipe.
#[cfg(unix)]
pub fn start_new(listen_fd: std::os::fd::OwnedFd) -> Result<Started> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors (close-on-exec) on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating the readiness pipe");
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The child inherits the write end: clear its close-on-exec flag.
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFD, 0) };
    let child = std::process::Command::new(exe()?)
        .args(std::env::args_os().skip(1))
        .env(
            crate::listener::LISTEN_FD_ENV,
            listen_fd.as_raw_fd().to_string(),
        )
        .env(READY_FD_ENV, write.as_raw_fd().to_string())
        .env(UPGRADE_FROM_ENV, std::process::id().to_string())
        .spawn()
        .context("starting the new binary")?;
    // The child has its copies now; the parent's go.
    drop(write);
    drop(listen_fd);
    Ok(Started { child, ready: read })
}

#[cfg(unix)]
impl Started {
    /// True when the new process reported ready within `timeout`; otherwise it is killed.
    pub async fn wait_ready(mut self, timeout: Duration) -> bool {
        let ready = self.ready;
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut f = std::fs::File::from(ready);
            let mut b = [0u8; 1];
            matches!(f.read(&mut b), Ok(1))
        });
        let ok = matches!(tokio::time::timeout(timeout, read).await, Ok(Ok(true)));
        if !ok {
            let _ = self.child.kill();
            let _ = tokio::task::spawn_blocking(move || self.child.wait()).await;
        } else {
            // Reaped by a thread, so it never lingers as a zombie of this process.
            std::thread::spawn(move || self.child.wait());
        }
        ok
    }
}

/// In a process started by an upgrade: tell the old one (and systemd) this one serves.
pub fn signal_ready() {
    #[cfg(unix)]
    if let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<std::os::fd::RawFd>().ok())
    {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        // SAFETY: the parent passed this pipe's write end for this process to own.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let _ = f.write_all(b"1");
    }
    let pid = std::process::id();
    notify_systemd(&format!("MAINPID={pid}\nREADY=1"));
}

/// Send a message to systemd's notification socket, when there is one (`Type=notify`).
pub fn notify_systemd(msg: &str) {
    #[cfg(target_os = "linux")]
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name),
            None => SocketAddr::from_pathname(Path::new(&path)),
        };
        let sent = UnixDatagram::unbound()
            .and_then(|s| addr.and_then(|a| s.send_to_addr(msg.as_bytes(), &a)));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "notifying systemd failed");
        }
    }
}

/// Fold in the usage that processes before this one handed over (complete handoff files),
/// now and every 2 s while the state lives.
pub fn spawn_handoff_intake(state: &Arc<AppState>) {
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let Some(st) = weak.upgrade() else { return };
            let dir = st.config.data_dir.clone();
            let found = tokio::task::spawn_blocking(move || take_handoffs(&dir))
                .await
                .unwrap_or_default();
            if !found.is_empty() {
                tracing::info!(
                    events = found.len(),
                    "usage handed over by the previous process"
                );
            }
            for ev in found {
                st.ledger.record(ev);
            }
        }
    });
}

fn take_handoffs(dir: &Path) -> Vec<crate::usage::UsageEvent> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("usage-handoff-") && name.ends_with(".jsonl") {
            let path = e.path();
            match crate::usage::ledger::read_spill(&path) {
                Ok(evs) => {
                    out.extend(evs);
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "reading a usage handoff file failed")
                }
            }
        }
    }
    out
}

/// The new process waits for the store the old one is closing.
pub fn open_store_when_free(path: &Path, cache_bytes: usize) -> Result<Arc<crate::store::Store>> {
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        match crate::store::Store::open_with_cache(path, cache_bytes) {
            Err(e) if crate::store::backup::is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}
