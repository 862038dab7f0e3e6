//! "Test this account": one tiny request straight to the account's upstream, bypassing the
//! scheduler, so an admin sees at once whether the credential, endpoint and proxy work.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use salvo::http::HeaderMap;
use serde::Serialize;

use crate::accounts::AccountRt;
use crate::accounts::upstream_request;
use crate::providers::{Outgoing, error_message};
use crate::state::AppState;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    pub ok: bool,
    pub status: u16,
    pub latency_ms: u64,
    pub model: String,
    pub message: String,
}

pub async fn run(st: &Arc<AppState>, acc: &AccountRt, model: Option<&str>) -> TestResult {
    let kind = acc.kind();
    let model = model
        .map(str::to_owned)
        .unwrap_or_else(|| kind.probe_model(&acc.rec));
    let (op, body) = kind.probe(&acc.rec, &model);
    let body = Bytes::from(body.to_string());
    let upstream_model = crate::scheduler::map_model(acc, &model).unwrap_or(model.clone());
    let headers = HeaderMap::new();
    let started = Instant::now();
    let out = Outgoing {
        op,
        body: &body,
        model: &model,
        upstream_model: &upstream_model,
        stream: false,
        headers: &headers,
        query: None,
        session: None,
    };
    let result = match upstream_request(&st.accounts, acc, &out).await {
        Ok(rb) => tokio::time::timeout(std::time::Duration::from_secs(60), rb.send()).await,
        Err(e) => {
            return TestResult {
                ok: false,
                status: 0,
                latency_ms: 0,
                model,
                message: format!("cannot build the request: {e}"),
            };
        }
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(Ok(r)) => {
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap_or_default();
            let ok = (200..300).contains(&status);
            let message = if ok {
                "The upstream answered".to_owned()
            } else {
                error_message(&body).unwrap_or_else(|| {
                    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
                })
            };
            TestResult {
                ok,
                status,
                latency_ms,
                model,
                message,
            }
        }
        Ok(Err(e)) => TestResult {
            ok: false,
            status: 0,
            latency_ms,
            model,
            message: format!("request failed: {e}"),
        },
        Err(_) => TestResult {
            ok: false,
            status: 0,
            latency_ms,
            model,
            message: "timed out after 60 s".into(),
        },
    }
}
