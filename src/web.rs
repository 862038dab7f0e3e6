//! Small HTTP helpers shared by the admin API and the relay: JSON replies, body reading with
//! limits, blocking store calls. Nothing of the server's state: any layer may use these.

use std::time::Duration;

use futures_util::StreamExt;
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

/// How long a request's body may take to arrive, put in the request's extensions by the server
/// for every route: `timeout` from `started` (when the headers were in), plus one second per
/// `min_rate` bytes received (0: none), so a large body that keeps coming is not cut off while
/// one that stalls or trickles is. Without it (unit tests of handlers) bodies have no deadline.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    pub started: tokio::time::Instant,
    pub timeout: Duration,
    pub min_rate: u64,
}

impl BodyPace {
    /// The deadline for the rest of the body once `received` bytes are in.
    pub fn deadline(&self, received: usize) -> tokio::time::Instant {
        let earned = match self.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_millis((received as u64).saturating_mul(1000) / rate),
        };
        self.started + self.timeout + earned
    }
}

/// Read the whole request body, or say why not.
pub async fn read_body(req: &mut Request, max: usize) -> Result<bytes::Bytes, BodyError> {
    let Some(pace) = req.extensions().get::<BodyPace>().copied() else {
        return read_unpaced(req, max).await;
    };
    if salvo::http::Body::size_hint(req.body()).lower() > max as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut body = req.take_body();
    // The usual body is one frame, kept as it is; a second frame starts a copy.
    let mut first: Option<bytes::Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    let mut received = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(pace.deadline(received), body.next()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry no body bytes.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len();
        if received > max {
            // What is left stays in the request, to be discarded after the answer.
            req.replace_body(body);
            return Err(BodyError::TooLarge);
        }
        match (&mut joined, first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(head)) => {
                let mut buf = bytes::BytesMut::with_capacity(received);
                buf.extend_from_slice(&head);
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
        }
    }
    let bytes = match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    };
    // Put it back, so a later read of the same request gets the same bytes.
    req.replace_body(bytes.clone().into());
    Ok(bytes)
}

async fn read_unpaced(req: &mut Request, max: usize) -> Result<bytes::Bytes, BodyError> {
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

/// Read and throw away what is left of a request body that was answered without being read
/// (refused before it), for at most `max` bytes and `time`. Most HTTP clients send the whole
/// body before they read the answer: closing the connection on a body still arriving would
/// reset it under them, and they would see a broken connection instead of the answer.
pub fn discard_body(body: salvo::http::ReqBody, max: usize, time: std::time::Duration) {
    use futures_util::StreamExt;
    use salvo::http::Body;
    // A body held in memory (`read_body` puts what it read back as one) has nothing left on
    // the connection: no task, no timer.
    if matches!(body, salvo::http::ReqBody::Once(_)) || body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let mut body = body;
        let mut read = 0usize;
        let drain = async {
            while let Some(Ok(frame)) = body.next().await {
                read += frame.data_ref().map_or(0, |d| d.len());
                if read > max {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(time, drain).await;
    });
}

#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    /// The body did not arrive by its `BodyPace` deadline.
    Timeout,
    Read(String),
}

/// End the connection after this response (HTTP/1; HTTP/2 has no such header). For a request
/// whose body was not read to its end: the connection cannot carry another request.
pub fn close_connection(req: &Request, res: &mut Response) {
    if req.version() <= salvo::http::Version::HTTP_11 {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
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
        Err(BodyError::Timeout) => {
            v1_error(
                res,
                StatusCode::REQUEST_TIMEOUT,
                "Request timeout",
                "The request body did not arrive in time",
            );
            close_connection(req, res);
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use salvo::http::ReqBody;
    use salvo::http::body::Frame;

    /// A request whose body is `chunks`, then (when `stall`) nothing more, ever.
    fn request(chunks: &[&'static str], stall: bool, timeout: Duration) -> Request {
        let frames: Vec<Result<Frame<Bytes>, salvo::BoxedError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        let stream = futures_util::stream::iter(frames);
        let inner: std::pin::Pin<
            Box<dyn salvo::http::Body<Data = Bytes, Error = salvo::BoxedError> + Send + Sync>,
        > = if stall {
            Box::pin(http_body_util::StreamBody::new(
                stream.chain(futures_util::stream::pending()),
            ))
        } else {
            Box::pin(http_body_util::StreamBody::new(stream))
        };
        let mut req = Request::new();
        req.replace_body(ReqBody::Boxed {
            inner,
            fuse_config: None,
        });
        req.extensions_mut().insert(BodyPace {
            started: tokio::time::Instant::now(),
            timeout,
            min_rate: 0,
        });
        req
    }

    #[test]
    fn the_deadline_grows_with_the_bytes_received() {
        let pace = BodyPace {
            started: tokio::time::Instant::now(),
            timeout: Duration::from_secs(30),
            min_rate: 1000,
        };
        assert_eq!(pace.deadline(0), pace.started + Duration::from_secs(30));
        assert_eq!(
            pace.deadline(5),
            pace.started + Duration::from_millis(30_005)
        );
        assert_eq!(
            pace.deadline(60_000),
            pace.started + Duration::from_secs(90)
        );
        let fixed = BodyPace {
            min_rate: 0,
            ..pace
        };
        assert_eq!(
            fixed.deadline(1 << 30),
            pace.started + Duration::from_secs(30)
        );
    }

    #[tokio::test]
    async fn a_body_in_frames_is_read_whole_and_can_be_read_again() {
        let mut req = request(&["{\"a\":", "1", "}"], false, Duration::from_secs(60));
        assert_eq!(read_body(&mut req, 1024).await.unwrap(), "{\"a\":1}");
        assert_eq!(read_body(&mut req, 1024).await.unwrap(), "{\"a\":1}");
        let mut req = request(&["one frame"], false, Duration::from_secs(60));
        assert_eq!(read_body(&mut req, 1024).await.unwrap(), "one frame");
        let mut req = request(&[], false, Duration::from_secs(60));
        assert_eq!(read_body(&mut req, 1024).await.unwrap(), "");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_too_large() {
        let mut req = request(&["12345", "67890"], true, Duration::from_secs(60));
        assert!(matches!(
            read_body(&mut req, 8).await,
            Err(BodyError::TooLarge)
        ));
    }

    #[tokio::test]
    async fn a_body_that_stops_coming_times_out() {
        let mut req = request(&["{\"use"], true, Duration::from_millis(20));
        assert!(matches!(
            read_body(&mut req, 1024).await,
            Err(BodyError::Timeout)
        ));
    }

    #[tokio::test]
    async fn a_timed_out_json_body_is_a_408_that_closes_the_connection() {
        let mut req = request(&["{\"use"], true, Duration::from_millis(20));
        let mut res = Response::new();
        let v: Option<serde_json::Value> = json_body(&mut req, &mut res, 1024).await;
        assert!(v.is_none());
        assert_eq!(res.status_code, Some(StatusCode::REQUEST_TIMEOUT));
        assert_eq!(res.headers().get(header::CONNECTION).unwrap(), "close");
    }

    #[tokio::test]
    async fn only_a_body_still_on_the_connection_is_drained_by_a_task() {
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        // What `read_body` leaves behind: the bytes it read, in memory.
        let mut req = request(&["{\"model\":\"x\"}"], false, Duration::from_secs(60));
        let bytes = read_body(&mut req, 1024).await.unwrap();
        assert_eq!(&bytes[..], b"{\"model\":\"x\"}");
        discard_body(req.take_body(), 1024, Duration::from_secs(10));
        discard_body(ReqBody::None, 1024, Duration::from_secs(10));
        assert_eq!(tasks(), 0);
        // A body refused before it was read is still arriving: drained, then let go.
        let mut req = request(&["12345"], true, Duration::from_secs(60));
        discard_body(req.take_body(), 1024, Duration::from_millis(30));
        assert_eq!(tasks(), 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tasks() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the drain never ended"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
