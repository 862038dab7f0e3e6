//! The streaming pump: upstream bytes go to the client (unchanged, or converted by the tap for
//! formats that need it) while a tap reads usage.
//!
//! The pump is the client body itself: the server polls it, and it polls the upstream
//! response, so a stream costs no task and no channel of its own. Each upstream chunk goes
//! through the tap and straight out. When the client goes away the server drops the body;
//! `Drop` then takes whatever had already arrived upstream without waiting for more, drops the
//! upstream response (which cancels the upstream request) and reports the outcome, so a
//! client that hangs up after the upstream finished is billed in full.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::providers::StreamTap;

/// What the pump saw, handed to `on_done` once the stream is over.
pub struct StreamOutcome {
    pub tap: Box<dyn StreamTap>,
    pub client_gone: bool,
    pub upstream_error: Option<String>,
}

type Upstream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The client body of a streamed answer (see the module documentation).
pub struct Pump<F: FnOnce(StreamOutcome) + Send + Unpin + 'static> {
    up: Option<Upstream>,
    tap: Option<Box<dyn StreamTap>>,
    on_done: Option<F>,
    /// Fires when the upstream has sent nothing for `idle_timeout`; reset by every chunk.
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
}

pub fn pump<F: FnOnce(StreamOutcome) + Send + Unpin + 'static>(
    resp: reqwest::Response,
    idle_timeout: Duration,
    tap: Box<dyn StreamTap>,
    on_done: F,
) -> Pump<F> {
    Pump {
        up: Some(Box::pin(resp.bytes_stream())),
        tap: Some(tap),
        on_done: Some(on_done),
        idle: Box::pin(tokio::time::sleep(idle_timeout)),
        idle_timeout,
    }
}

impl<F: FnOnce(StreamOutcome) + Send + Unpin + 'static> Pump<F> {
    /// The stream is over: drop the upstream response and report. `None` once reported.
    fn finish(&mut self, client_gone: bool, upstream_error: Option<String>) {
        let (Some(tap), Some(on_done)) = (self.tap.take(), self.on_done.take()) else {
            return;
        };
        self.up = None;
        on_done(StreamOutcome {
            tap,
            client_gone,
            upstream_error,
        });
    }

    /// The upstream ended, cleanly or not. A failure before the answer was complete ends the
    /// client's stream with a well-formed error event in its dialect.
    fn end(
        &mut self,
        upstream_error: Option<String>,
    ) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let tail = match (&upstream_error, &self.tap) {
            (Some(msg), Some(tap)) if !tap.finished() => {
                let mut ev = Vec::new();
                if tap.mid_line() {
                    ev.extend_from_slice(b"\n\n");
                }
                ev.extend_from_slice(&tap.error_event(msg));
                Some(Bytes::from(ev))
            }
            _ => None,
        };
        self.finish(false, upstream_error);
        Poll::Ready(tail.map(Ok))
    }
}

impl<F: FnOnce(StreamOutcome) + Send + Unpin + 'static> Stream for Pump<F> {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(up) = this.up.as_mut() else {
                return Poll::Ready(None);
            };
            match up.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.idle.as_mut().reset(Instant::now() + this.idle_timeout);
                    let tap = this.tap.as_mut().expect("present until finished");
                    let out = tap.feed(&chunk).unwrap_or(chunk);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return this.end(Some(format!("upstream stream failed: {e}")));
                }
                Poll::Ready(None) => return this.end(None),
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        let msg =
                            format!("upstream sent nothing for {}s", this.idle_timeout.as_secs());
                        return this.end(Some(msg));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<F: FnOnce(StreamOutcome) + Send + Unpin + 'static> Drop for Pump<F> {
    fn drop(&mut self) {
        if self.on_done.is_none() {
            return;
        }
        // The client went away before the end: take whatever already arrived without waiting
        // for more, then cancel the upstream request by dropping it.
        if let (Some(up), Some(tap)) = (self.up.as_mut(), self.tap.as_mut()) {
            while let Some(Some(Ok(chunk))) = up.next().now_or_never() {
                tap.feed(&chunk);
            }
        }
        self.finish(true, None);
    }
}
