//! v1's "test my key" routes on the self-service page: `POST /apiStats/api-key/test`
//! (Claude), `/test-gemini` and `/test-openai`. The holder sends the key, a model, a prompt and
//! an output size; crs sends one streamed request to itself with that key, through the same
//! route a client would use (so key policy, scheduling and usage apply as to any request),
//! and streams back what v1's page reads: `test_start`, `content` pieces, `test_complete`
//! with `success` (and `error`).
//!
//! Shapes and checks follow v1 src/routes/apiStats.js (the key length check, the permission
//! check, the `maxTokens` allow-list, the target routes and their payloads).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use salvo::http::{HeaderValue, StatusCode, header};
use salvo::prelude::*;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::limits::Service;
use crate::providers::sse::DataLines;
use crate::state::{AppState, state};
use crate::web::{json, json_body};

/// The service a test route checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Claude,
    Gemini,
    OpenAI,
}

impl Kind {
    fn default_model(self) -> &'static str {
        match self {
            Kind::Claude => "claude-sonnet-4-5-20250929",
            Kind::Gemini => "gemini-2.5-pro",
            Kind::OpenAI => "gpt-5",
        }
    }

    /// The text a streamed answer event carries, in this service's format.
    fn text(self, ev: &Value) -> Option<&str> {
        match self {
            Kind::Claude => (ev["type"] == "content_block_delta"
                && ev["delta"]["type"] == "text_delta")
                .then(|| ev["delta"]["text"].as_str())
                .flatten(),
            Kind::Gemini => ev
                .pointer("/candidates/0/content/parts")
                .and_then(Value::as_array)
                .and_then(|p| {
                    p.iter()
                        .find(|x| x.get("thought").and_then(Value::as_bool) != Some(true))
                })
                .and_then(|x| x.get("text"))
                .and_then(Value::as_str),
            Kind::OpenAI => (ev["type"] == "response.output_text.delta")
                .then(|| ev["delta"].as_str())
                .flatten(),
        }
    }

    /// An error the stream itself reports.
    fn stream_error(self, ev: &Value) -> Option<String> {
        let failed = match self {
            Kind::Claude => ev["type"] == "error",
            Kind::Gemini => ev.get("error").is_some(),
            Kind::OpenAI => ev["type"] == "response.failed" || ev["type"] == "error",
        };
        failed.then(|| error_message(ev).unwrap_or_else(|| "The upstream failed".into()))
    }
}

/// v1's allow-list of output sizes; anything else is 1,000.
fn max_tokens(v: Option<&Value>) -> u64 {
    const ALLOWED: [u64; 5] = [100, 500, 1000, 2000, 4096];
    v.and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .filter(|n| ALLOWED.contains(n))
        .unwrap_or(1000)
}

/// The message of an error body in any of the three formats.
fn error_message(v: &Value) -> Option<String> {
    [
        "/error/message",
        "/response/error/message",
        "/message",
        "/error",
    ]
    .iter()
    .find_map(|p| v.pointer(p).and_then(Value::as_str))
    .map(str::to_owned)
}

fn refuse(res: &mut Response, status: StatusCode, error: &str, message: &str) {
    json(res, status, &json!({"error": error, "message": message}));
}

/// A client for requests to this server itself: loopback, no proxy from the environment.
static SELF_CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("a plain HTTP client builds")
});

/// The request a test sends to this server: path, body, extra headers.
fn test_request(
    kind: Kind,
    model: &str,
    prompt: &str,
    max_tokens: u64,
) -> (String, Value, Vec<(&'static str, &'static str)>) {
    match kind {
        Kind::Claude => (
            "/api/v1/messages?beta=true".into(),
            json!({"model": model, "max_tokens": max_tokens, "stream": true,
                "messages": [{"role": "user", "content": prompt}]}),
            vec![
                ("x-app", "claude-code"),
                ("anthropic-version", "2023-06-01"),
                (
                    "anthropic-beta",
                    "claude-code-20250219,interleaved-thinking-2025-05-14",
                ),
            ],
        ),
        Kind::Gemini => (
            format!(
                "/gemini/v1/models/{}:streamGenerateContent?alt=sse",
                crate::providers::encode_segment(model)
            ),
            json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                "generationConfig": {"maxOutputTokens": max_tokens}}),
            vec![],
        ),
        Kind::OpenAI => (
            "/openai/responses".into(),
            json!({"model": model, "stream": true, "max_output_tokens": max_tokens, "store": false,
                "input": [{"role": "user", "content": [{"type": "input_text", "text": prompt}]}]}),
            vec![("user-agent", "codex_cli_rs/1.0.0")],
        ),
    }
}

fn event(v: Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

async fn run(req: &mut Request, depot: &mut Depot, res: &mut Response, kind: Kind) {
    let st = state(depot);
    let Some(b) = json_body::<Map<String, Value>>(req, res, 64 * 1024).await else {
        return;
    };
    let key = b.get("apiKey").and_then(Value::as_str).unwrap_or("");
    if key.is_empty() {
        return refuse(
            res,
            StatusCode::BAD_REQUEST,
            "API Key is required",
            "Please provide your API Key",
        );
    }
    let entry = match super::apistats::find_by_key(&st, key) {
        Ok(e) => e,
        Err("Invalid API key format") => {
            return refuse(
                res,
                StatusCode::BAD_REQUEST,
                "Invalid API key format",
                "API key format is invalid",
            );
        }
        Err(reason) => return refuse(res, StatusCode::UNAUTHORIZED, "Invalid API key", reason),
    };
    let needs = match kind {
        Kind::Claude => None,
        Kind::Gemini => Some((Service::Gemini, "Gemini")),
        Kind::OpenAI => Some((Service::OpenAI, "OpenAI")),
    };
    if let Some((service, name)) = needs
        && !crate::limits::permits(&entry.rec, service)
    {
        return refuse(
            res,
            StatusCode::FORBIDDEN,
            "Permission denied",
            &format!("This API key does not have {name} permission"),
        );
    }
    let model = b
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(kind.default_model())
        .to_owned();
    if !crate::limits::models::valid_name(&model) {
        return refuse(
            res,
            StatusCode::BAD_REQUEST,
            "Invalid model",
            "The model name is not valid",
        );
    }
    let prompt = b
        .get("prompt")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or("hi")
        .to_owned();
    let Some(base) = st.self_url.get().cloned() else {
        return refuse(
            res,
            StatusCode::SERVICE_UNAVAILABLE,
            "Test failed",
            "The server is not listening yet",
        );
    };
    tracing::info!(key_id = %entry.rec.id, key = %entry.rec.name, model = %model, test = ?kind, "key test started");
    let (path, payload, headers) =
        test_request(kind, &model, &prompt, max_tokens(b.get("maxTokens")));
    let mut rb = SELF_CLIENT
        .post(format!("{base}{path}"))
        .header("x-api-key", key)
        .timeout(Duration::from_secs(60))
        .json(&payload);
    for (k, v) in headers {
        rb = rb.header(k, v);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(relay_test(kind, rb, tx));
    res.status_code(StatusCode::OK);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res.stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
}

/// Send the test request and turn its answer into v1's test events.
async fn relay_test(kind: Kind, rb: reqwest::RequestBuilder, tx: mpsc::Sender<Bytes>) {
    let _ = tx
        .send(event(
            json!({"type": "test_start", "message": "Test started"}),
        ))
        .await;
    let done = |success: bool, error: Option<String>| {
        let mut v = json!({"type": "test_complete", "success": success});
        if let Some(e) = error {
            v["error"] = json!(e);
        }
        event(v)
    };
    let mut up = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            let _ = tx
                .send(done(false, Some(format!("request failed: {e}"))))
                .await;
            return;
        }
    };
    let status = up.status();
    if !status.is_success() {
        let mut body = Vec::new();
        while let Ok(Some(c)) = up.chunk().await {
            body.extend_from_slice(&c);
            if body.len() > 64 * 1024 {
                break;
            }
        }
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| error_message(&v))
            .unwrap_or_else(|| format!("API Error: {}", status.as_u16()));
        let _ = tx.send(done(false, Some(message))).await;
        return;
    }
    let mut lines = DataLines::new();
    let mut failure: Option<String> = None;
    loop {
        match up.chunk().await {
            Ok(Some(c)) => {
                let mut out = Vec::new();
                lines.feed(&c, |data| {
                    let Ok(ev) = serde_json::from_slice::<Value>(data) else {
                        return;
                    };
                    if let Some(t) = kind.text(&ev).filter(|t| !t.is_empty()) {
                        out.push(event(json!({"type": "content", "text": t})));
                    } else if let Some(e) = kind.stream_error(&ev) {
                        failure = Some(e);
                    }
                });
                for b in out {
                    if tx.send(b).await.is_err() {
                        // The page went away: dropping the answer cancels the request.
                        return;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                failure = Some(format!("the answer was cut off: {e}"));
                break;
            }
        }
    }
    let _ = tx.send(done(failure.is_none(), failure)).await;
}

#[handler]
pub async fn test_claude(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    run(req, depot, res, Kind::Claude).await
}

#[handler]
pub async fn test_gemini(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    run(req, depot, res, Kind::Gemini).await
}

#[handler]
pub async fn test_openai(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    run(req, depot, res, Kind::OpenAI).await
}

/// The services v1's rates name (v1 src/services/serviceRatesService.js, `getDefaultRates`).
const RATED_SERVICES: [&str; 8] = [
    "claude", "codex", "gemini", "droid", "grok", "bedrock", "azure", "ccr",
];

/// `GET /apiStats/service-rates` in v1's shape (`baseService`, `rates`, `modelRates`). crs has
/// no server-wide rates: every service costs 1x its price unless a key has its own
/// `serviceRates`, which this shows when the request carries the key (`x-api-key` or
/// `Authorization: Bearer`).
#[handler]
pub async fn service_rates(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st: Arc<AppState> = state(depot);
    let key_rates = crate::auth::extract_key(req)
        .and_then(|k| super::apistats::find_by_key(&st, k).ok())
        .map(|e| e.rec.service_rates.clone())
        .unwrap_or_default();
    let rates: Map<String, Value> = RATED_SERVICES
        .iter()
        .map(|s| {
            // crs names v1's `codex` service `openai`.
            let crs_name = if *s == "codex" { "openai" } else { s };
            let rate = key_rates
                .get(*s)
                .or_else(|| key_rates.get(crs_name))
                .copied()
                .unwrap_or(1.0);
            ((*s).to_owned(), json!(rate))
        })
        .collect();
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "data": {"baseService": "claude", "rates": rates,
            "modelRates": {}, "updatedAt": null, "updatedBy": null}}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_v1s_allow_list() {
        assert_eq!(max_tokens(Some(&json!(500))), 500);
        assert_eq!(max_tokens(Some(&json!("4096"))), 4096);
        assert_eq!(max_tokens(Some(&json!(123))), 1000);
        assert_eq!(max_tokens(Some(&json!(-1))), 1000);
        assert_eq!(max_tokens(None), 1000);
    }

    #[test]
    fn each_format_yields_its_text_and_errors() {
        let claude = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}});
        assert_eq!(Kind::Claude.text(&claude), Some("Hi"));
        assert_eq!(Kind::OpenAI.text(&claude), None);
        let gemini = json!({"candidates": [{"content": {"parts": [{"text": "t", "thought": true}, {"text": "Yo"}]}}]});
        assert_eq!(Kind::Gemini.text(&gemini), Some("Yo"));
        let openai = json!({"type": "response.output_text.delta", "delta": "Hey"});
        assert_eq!(Kind::OpenAI.text(&openai), Some("Hey"));
        let err = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        assert_eq!(
            Kind::Claude.stream_error(&err).as_deref(),
            Some("Overloaded")
        );
        assert_eq!(Kind::Claude.stream_error(&claude), None);
    }
}
