//! The streaming pump: upstream bytes go to the client (unchanged, or converted by the tap for
//! formats that need it) while a tap reads usage.
//!
//! A task owns the upstream response and writes chunks into a small channel that is the client
//! body. When the client goes away the channel closes, the task stops reading and drops the
//! upstream response (which cancels the upstream request); bytes that had already arrived are
//! still tapped, so a client that hangs up after the upstream finished is billed in full.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;

use crate::providers::StreamTap;

/// What the pump saw, handed to `on_done` once the stream is over.
pub struct StreamOutcome {
    pub tap: Box<dyn StreamTap>,
    pub client_gone: bool,
    pub upstream_error: Option<String>,
}

pub fn pump(
    resp: reqwest::Response,
    idle_timeout: Duration,
    mut tap: Box<dyn StreamTap>,
    on_done: impl FnOnce(StreamOutcome) + Send + 'static,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    tokio::spawn(async move {
        let mut up = resp.bytes_stream();
        let mut client_gone = false;
        let mut upstream_error = None;
        loop {
            let next = tokio::select! {
                biased;
                _ = tx.closed() => { client_gone = true; break; }
                n = tokio::time::timeout(idle_timeout, up.next()) => n,
            };
            match next {
                Ok(Some(Ok(chunk))) => {
                    let out = tap.feed(&chunk).unwrap_or(chunk);
                    if !out.is_empty() && tx.send(out).await.is_err() {
                        client_gone = true;
                        break;
                    }
                }
                Ok(Some(Err(e))) => {
                    upstream_error = Some(format!("upstream stream failed: {e}"));
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    upstream_error = Some(format!(
                        "upstream sent nothing for {}s",
                        idle_timeout.as_secs()
                    ));
                    break;
                }
            }
        }
        if client_gone {
            // Take whatever already arrived without waiting for more.
            while let Some(Some(Ok(chunk))) = up.next().now_or_never() {
                tap.feed(&chunk);
            }
        } else if let Some(msg) = &upstream_error
            && !tap.finished()
        {
            // End the stream with a well-formed error event the client can parse.
            let mut ev = Vec::new();
            if tap.mid_line() {
                ev.extend_from_slice(b"\n\n");
            }
            ev.extend_from_slice(&tap.error_event(msg));
            let _ = tx.send(Bytes::from(ev)).await;
        }
        drop(up);
        on_done(StreamOutcome {
            tap,
            client_gone,
            upstream_error,
        });
    });
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}
