//! Operator endpoints: `GET /admin/status` (what `crs status` shows) and `GET /admin/backup`
//! (a consistent copy of the store, streamed; `crs backup` adds the data directory's files).

use std::io::Read;

use salvo::http::{HeaderValue, StatusCode, header};
use salvo::prelude::*;

use super::blocking;
use crate::ops::status::{ServerInfo, collect};
use crate::state::state;
use crate::web::{json, v1_error};

fn failed(res: &mut Response, what: &str, e: anyhow::Error) {
    tracing::error!(error = %e, "{what}");
    v1_error(
        res,
        StatusCode::INTERNAL_SERVER_ERROR,
        what,
        "Internal server error",
    );
}

#[handler]
pub async fn status(depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    st.ledger.flush().await;
    let st2 = st.clone();
    let r = blocking(move || {
        collect(
            &st2.store,
            st2.clock,
            &st2.config.data_dir.display().to_string(),
        )
    })
    .await;
    let mut s = match r {
        Ok(s) => s,
        Err(e) => return failed(res, "Status failed", e),
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    s.server = Some(ServerInfo {
        pid: std::process::id(),
        url: String::new(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: st.started_at.elapsed().as_secs(),
        cooling_down: st
            .accounts
            .load()
            .accounts
            .iter()
            .filter(|a| a.rt.cooling(now_ms))
            .count(),
    });
    json(res, StatusCode::OK, &s);
}

/// The copy is written to a file in the data directory, which is unlinked once open, and
/// streamed from there in chunks.
#[handler]
pub async fn backup(depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    st.ledger.flush().await;
    let st2 = st.clone();
    let file = blocking(move || {
        let tmp = st2
            .config
            .data_dir
            .join(format!(".backup-{}.redb", uuid::Uuid::new_v4()));
        let made = st2.store.snapshot_to(&tmp).and_then(|stats| {
            let f = std::fs::File::open(&tmp)?;
            Ok((f, stats))
        });
        let _ = std::fs::remove_file(&tmp);
        made
    })
    .await;
    let (file, stats) = match file {
        Ok(f) => f,
        Err(e) => return failed(res, "Backup failed", e),
    };
    tracing::info!(rows = stats.rows, tables = stats.tables, "store copy sent");
    res.status_code(StatusCode::OK);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    res.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"crs-backup.redb\""),
    );
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let r = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((buf, file))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match r {
            Ok((buf, _)) if buf.is_empty() => None,
            Ok((buf, file)) => Some((Ok(bytes::Bytes::from(buf)), Some(file))),
            Err(e) => Some((Err(e), None)),
        }
    });
    res.stream(chunks);
}
