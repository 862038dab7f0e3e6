//! The account test: one tiny request straight to the account's upstream, bypassing the
//! scheduler, so it shows whether the credential, endpoint and proxy work. Admins run it from
//! the UI; the health loop (`accounts::health`) runs it on a schedule and to bring accounts
//! back into rotation. Every result goes into the account's short test history.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use reqwest::header::HeaderMap;
use serde::Serialize;

use super::{AccountRt, Accounts, upstream_request};
use crate::providers::{Outgoing, error_message};

/// The longest a test may take.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Results kept per account.
pub const HISTORY: usize = 20;

/// Why a test ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Manual,
    Scheduled,
    Recovery,
}

/// One test result. `success`, `latencyMs`, `timestamp`, `error` and `message` are the fields
/// of v1's test history entries; the rest are crs's.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    pub ok: bool,
    pub success: bool,
    /// The upstream's HTTP status (0: no answer).
    pub status: u16,
    pub latency_ms: u64,
    pub model: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub trigger: Trigger,
}

/// The last `HISTORY` test results of an account, newest first (in memory).
#[derive(Debug, Default)]
pub struct History(Mutex<VecDeque<TestResult>>);

impl History {
    pub fn push(&self, r: TestResult) {
        let mut h = self.0.lock();
        h.push_front(r);
        h.truncate(HISTORY);
    }

    pub fn list(&self) -> Vec<TestResult> {
        self.0.lock().iter().cloned().collect()
    }
}

/// The upstream model for `model` on `acc` (the account's mapping; unmapped when it has none).
fn upstream_model(acc: &AccountRt, model: &str) -> String {
    let m = &acc.rec.supported_models;
    m.get(model)
        .or_else(|| {
            m.iter()
                .find(|(from, _)| from.eq_ignore_ascii_case(model))
                .map(|(_, to)| to)
        })
        .cloned()
        .unwrap_or_else(|| model.to_owned())
}

/// Test `acc` with `model` (the account type's probe model when None) and record the result
/// in its history.
pub async fn run(
    accounts: &Arc<Accounts>,
    acc: &AccountRt,
    model: Option<&str>,
    trigger: Trigger,
) -> TestResult {
    let kind = acc.kind();
    let model = model
        .filter(|m| !m.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| kind.probe_model(&acc.rec));
    let (op, body) = kind.probe(&acc.rec, &model);
    let body = Bytes::from(body.to_string());
    let upstream = upstream_model(acc, &model);
    let headers = HeaderMap::new();
    let started = Instant::now();
    let out = Outgoing {
        op,
        body: &body,
        model: &model,
        upstream_model: &upstream,
        stream: false,
        headers: &headers,
        query: None,
        session: None,
    };
    let (status, message) = match upstream_request(accounts, acc, &out).await {
        Err(e) => (0, format!("cannot build the request: {e}")),
        Ok((rb, _lane)) => match tokio::time::timeout(TIMEOUT, rb.send()).await {
            Ok(Ok(r)) => {
                let status = r.status().as_u16();
                let body = r.bytes().await.unwrap_or_default();
                let message = if (200..300).contains(&status) {
                    "The upstream answered".to_owned()
                } else {
                    error_message(&body).unwrap_or_else(|| {
                        String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
                    })
                };
                (status, message)
            }
            Ok(Err(e)) => (0, format!("request failed: {e}")),
            Err(_) => (0, format!("timed out after {} s", TIMEOUT.as_secs())),
        },
    };
    let ok = (200..300).contains(&status);
    let r = TestResult {
        ok,
        success: ok,
        status,
        latency_ms: started.elapsed().as_millis() as u64,
        model,
        error: (!ok).then(|| message.clone()),
        message,
        timestamp: Utc::now(),
        trigger,
    };
    acc.rt.tests.push(r.clone());
    r
}
