//! Streaming bodies of the mock: events sent one by one (optionally slowly, or cut half way),
//! with a guard that records whether the receiver read to the end.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use salvo::http::HeaderValue;
use salvo::prelude::*;

use super::{Directives, MockState};

pub(crate) struct StreamGuard {
    state: Arc<MockState>,
    done: bool,
    /// Bytes sent so far (kept only when recording).
    sent: Option<Vec<u8>>,
}

impl StreamGuard {
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.done {
            if let Some(sent) = self.sent.take() {
                self.state.sent_streams.lock().push(Bytes::from(sent));
            }
            self.state.streams_completed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.state.streams_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Send `events` as the response body, honouring the `delay_ms` and `cut` directives.
pub(crate) fn sse_body(
    state: &Arc<MockState>,
    res: &mut Response,
    events: Vec<Bytes>,
    d: &Directives,
    content_type: &'static str,
) {
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    res.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    let guard = StreamGuard {
        state: state.clone(),
        done: false,
        sent: state.record.load(Ordering::Relaxed).then(Vec::new),
    };
    let cut_at = if d.cut { Some(events.len() / 2) } else { None };
    let delay = Duration::from_millis(d.delay_ms);
    let s = futures_util::stream::unfold(
        (events.into_iter().enumerate(), guard),
        move |(mut it, mut guard)| async move {
            let (i, e) = match it.next() {
                Some(x) => x,
                None => {
                    guard.finish();
                    return None;
                }
            };
            if Some(i) == cut_at {
                guard.done = true;
                return Some((
                    Err(std::io::Error::other("mock cut the stream")),
                    (it, guard),
                ));
            }
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(sent) = guard.sent.as_mut() {
                sent.extend_from_slice(&e);
            }
            Some((Ok::<_, std::io::Error>(e), (it, guard)))
        },
    );
    res.stream(s);
}
