//! Small HTTP helpers shared by the admin API and the relay: JSON replies, body reading with
//! limits, blocking store calls. Nothing of the server's state: any layer may use these.

use salvo::http::{HeaderValue, StatusCode, header};
use salvo::prelude::*;
use serde::Serialize;

/// Run a blocking store operation off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("store task failed: {e}"))?
}

/// Write a JSON body with a status.
pub fn json<T: Serialize>(res: &mut Response, status: StatusCode, body: &T) {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    raw_json(res, status, bytes);
}

pub fn raw_json(res: &mut Response, status: StatusCode, bytes: impl Into<bytes::Bytes>) {
    res.status_code(status);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let _ = res.write_body(bytes.into());
}

/// v1's common error shape: `{"error": title, "message": detail}`.
pub fn v1_error(res: &mut Response, status: StatusCode, title: &str, message: &str) {
    json(
        res,
        status,
        &serde_json::json!({"error": title, "message": message}),
    );
}

/// Read the whole request body, or say why not.
pub async fn read_body(req: &mut Request, max: usize) -> Result<bytes::Bytes, BodyError> {
    match req.payload_with_max_size(max).await {
        Ok(b) => Ok(b.clone()),
        Err(e) => {
            let text = e.to_string();
            if text.contains("size") || text.contains("large") || text.contains("limit") {
                Err(BodyError::TooLarge)
            } else {
                Err(BodyError::Read(text))
            }
        }
    }
}

#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    Read(String),
}

/// Parse a JSON body into `T`, answering v1-style 400s for bad input.
pub async fn json_body<T: serde::de::DeserializeOwned>(
    req: &mut Request,
    res: &mut Response,
    max: usize,
) -> Option<T> {
    let bytes = match read_body(req, max).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            v1_error(
                res,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
                "Request body is too large",
            );
            return None;
        }
        Err(BodyError::Read(e)) => {
            v1_error(res, StatusCode::BAD_REQUEST, "Invalid request", &e);
            return None;
        }
    };
    let bytes = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        bytes::Bytes::from_static(b"{}")
    } else {
        bytes
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            v1_error(
                res,
                StatusCode::BAD_REQUEST,
                "Invalid request",
                &format!("Request body is not valid JSON for this endpoint: {e}"),
            );
            None
        }
    }
}

/// The first value of a header, as text.
pub fn header_str<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Admin-style 400: `{"error": message}` (v1's validation replies).
pub fn bad_request(res: &mut Response, msg: impl Into<String>) {
    json(
        res,
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": msg.into()}),
    );
}

/// 404 with `{"error": what}`.
pub fn not_found(res: &mut Response, what: &str) {
    json(
        res,
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": what}),
    );
}

/// 500: the cause goes to the log, the client gets `what` and a generic message.
pub fn internal_error(res: &mut Response, what: &str, e: anyhow::Error) {
    tracing::error!(error = %e, "{what}");
    json(
        res,
        StatusCode::INTERNAL_SERVER_ERROR,
        &serde_json::json!({"error": what, "message": "Internal server error"}),
    );
}
