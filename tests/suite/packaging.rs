//! packaging/: the systemd unit passes `systemd-analyze verify`; the install script fetches a
//! release from a file:// URL, refuses an asset whose sha256 does not match, and installs the
//! binary and the unit.
//!
//! scripts/test.sh installs systemd (for `systemd-analyze`) and sets CRS_E2E_REQUIRED=1, so a
//! missing tool fails there; a bare `cargo test` skips with a message.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cli::BIN;

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var("CRS_E2E_REQUIRED").as_deref() == Ok("1") {
        panic!("{tool} is missing: run scripts/test.sh, which installs it");
    }
    eprintln!("skipping: {tool} is not installed (scripts/test.sh installs it)");
    false
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        return;
    }
    let unit = std::fs::read_to_string(repo("packaging/systemd/crs.service")).unwrap();
    for needed in [
        "User=crs",
        "StateDirectory=crs",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.contains(needed), "{needed}");
    }
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crs.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/crs", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => panic!("no release asset for {other}"),
    }
}

/// A release directory as the release workflow publishes it.
fn release(dir: &Path, sums_of: &[u8]) {
    let asset = format!("crs-linux-{}", arch());
    std::fs::copy(BIN, dir.join(&asset)).unwrap();
    std::fs::copy(
        repo("packaging/systemd/crs.service"),
        dir.join("crs.service"),
    )
    .unwrap();
    let sum = hex::encode(Sha256::digest(sums_of));
    std::fs::write(
        dir.join("SHA256SUMS"),
        format!("{sum}  {asset}\n0000  crs-linux-other\n"),
    )
    .unwrap();
}

fn install(base: &Path, root: &Path) -> std::process::Output {
    Command::new("sh")
        .arg(repo("packaging/install.sh"))
        .arg("--base-url")
        .arg(format!("file://{}", base.display()))
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

#[test]
fn the_install_script_checks_the_sha256_and_installs_the_binary_and_unit() {
    if !have("curl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (good, bad) = (tmp.path().join("good"), tmp.path().join("bad"));
    std::fs::create_dir_all(&good).unwrap();
    std::fs::create_dir_all(&bad).unwrap();
    release(&good, &std::fs::read(BIN).unwrap());
    release(&bad, b"something else");

    let root = tmp.path().join("root");
    let out = install(&bad, &root);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{out:?}"
    );
    assert!(
        !root.join("usr/local/bin/crs").exists(),
        "nothing installed"
    );

    let out = install(&good, &root);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sha256 ok"));
    let bin = root.join("usr/local/bin/crs");
    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/crs.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/crs serve"));
    assert!(root.join("etc/crs/crs.env").exists());
}
