//! The streaming pump: upstream bytes go to the client (unchanged, or converted by the tap for
//! formats that need it) while a tap reads usage.
//!
//! The pump is the client body itself: the server polls it, and it polls the upstream
//! response, so a stream costs no task and no channel of its own. Each upstream chunk goes
//! through the tap at once. When the client goes away the server drops the body; `Drop` then
//! takes whatever had already arrived upstream without waiting for more, drops the upstream
//! response (which cancels the upstream request) and reports the outcome, so a client that
//! hangs up after the upstream finished is billed in full.
//!
//! Writes are coalesced without delay. The upstream connection hands its body over one
//! decoded chunk at a time (HTTP/1.1 chunked encoding: one chunk per SSE event, as
//! Anthropic and the OpenAI APIs send them), and the server writes to the socket whenever the
//! body has nothing more to give, so chunks that arrived in one read would otherwise cost a
//! write (and a wake-up of the client) each. After a chunk the pump lets the connection take
//! its turn (twice), and sends everything it had already read together; when nothing more has
//! arrived, what it holds goes out at once. Before the answer's head goes out the engine lets
//! the pump gather what arrived with it (`gather_ready`), so the head and the first events
//! leave together. No timer is involved: an event that arrives alone is passed on after two
//! scheduler turns, and at most `MAX_HOLD_BYTES` are ever held.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
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

/// Bytes held back at most while more chunks that had already arrived are gathered.
const MAX_HOLD_BYTES: usize = 64 * 1024;

/// Scheduler turns given to the upstream connection after a chunk before what is held goes out.
const TURNS: u8 = 2;

/// Output held for the next write: the first chunk as it came, later ones appended to a copy.
#[derive(Default)]
enum Held {
    #[default]
    Empty,
    One(Bytes),
    Joined(BytesMut),
}

/// The client body of a streamed answer (see the module documentation).
pub struct Pump<F: FnOnce(StreamOutcome) + Send + Unpin + 'static> {
    up: Option<Upstream>,
    tap: Option<Box<dyn StreamTap>>,
    on_done: Option<F>,
    /// Fires when the upstream has sent nothing for `idle_timeout`; reset by every chunk.
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    /// Output gathered for the next write.
    held: Held,
    /// Turns the pump still gives the connection before it sends what it holds: reset by
    /// every chunk.
    turns: u8,
    /// The upstream is over (with its error, if any) but held output goes first.
    ended: Option<Option<String>>,
}

pub fn pump<F: FnOnce(StreamOutcome) + Send + Unpin + 'static>(
    resp: reqwest::Response,
    idle_timeout: Duration,
    tap: Box<dyn StreamTap>,
    on_done: F,
) -> Pump<F> {
    pump_stream(Box::pin(resp.bytes_stream()), idle_timeout, tap, on_done)
}

fn pump_stream<F: FnOnce(StreamOutcome) + Send + Unpin + 'static>(
    up: Upstream,
    idle_timeout: Duration,
    tap: Box<dyn StreamTap>,
    on_done: F,
) -> Pump<F> {
    Pump {
        up: Some(up),
        tap: Some(tap),
        on_done: Some(on_done),
        idle: Box::pin(tokio::time::sleep(idle_timeout)),
        idle_timeout,
        held: Held::Empty,
        turns: 0,
        ended: None,
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

    fn held_len(&self) -> usize {
        match &self.held {
            Held::Empty => 0,
            Held::One(b) => b.len(),
            Held::Joined(b) => b.len(),
        }
    }

    /// Add client output to what is held (the first chunk is kept as it is, without a copy).
    fn hold(&mut self, out: Bytes) {
        if out.is_empty() {
            return;
        }
        self.held = match std::mem::take(&mut self.held) {
            Held::Empty => Held::One(out),
            Held::One(first) => {
                let mut buf = BytesMut::with_capacity(first.len() + out.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&out);
                Held::Joined(buf)
            }
            Held::Joined(mut buf) => {
                buf.extend_from_slice(&out);
                Held::Joined(buf)
            }
        };
    }

    /// Take in what the upstream has already sent, without waiting for the network: called
    /// before the answer's head goes out, so the head and the first events leave in one
    /// write. What it gathers is sent on the first poll.
    pub async fn gather_ready(&mut self) {
        self.turns = TURNS;
        std::future::poll_fn(|cx| self.poll_fill(cx)).await;
        self.turns = 0;
    }

    /// Take in upstream chunks until the upstream ends, the hold is full, or nothing more has
    /// come after the connection had its turns. Pending only while it gives those turns.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.ended.is_some() || self.held_len() >= MAX_HOLD_BYTES {
                return Poll::Ready(());
            }
            let Some(up) = self.up.as_mut() else {
                return Poll::Ready(());
            };
            match up.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.take(chunk),
                Poll::Ready(Some(Err(e))) => {
                    self.ended = Some(Some(format!("upstream stream failed: {e}")));
                }
                Poll::Ready(None) => self.ended = Some(None),
                Poll::Pending if self.turns > 0 => {
                    // The connection may already have read more than it has handed over:
                    // let it take its turn, then gather what it has.
                    self.turns -= 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Ready(()),
            }
        }
    }

    /// An upstream chunk: through the tap, held for the next write.
    fn take(&mut self, chunk: Bytes) {
        self.idle.as_mut().reset(Instant::now() + self.idle_timeout);
        let tap = self.tap.as_mut().expect("present until finished");
        let out = tap.feed(&chunk).unwrap_or(chunk);
        self.hold(out);
        self.turns = TURNS;
    }

    /// Everything held, as one write.
    fn release(&mut self) -> Option<Bytes> {
        self.turns = 0;
        match std::mem::take(&mut self.held) {
            Held::Empty => None,
            Held::One(b) => Some(b),
            Held::Joined(buf) => Some(buf.freeze()),
        }
    }
}

impl<F: FnOnce(StreamOutcome) + Send + Unpin + 'static> Stream for Pump<F> {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(error) = this.ended.take() {
                if let Some(out) = this.release() {
                    this.ended = Some(error);
                    return Poll::Ready(Some(Ok(out)));
                }
                return this.end(error);
            }
            if this.up.is_none() {
                return Poll::Ready(None);
            }
            std::task::ready!(this.poll_fill(cx));
            if let Some(out) = this.release() {
                return Poll::Ready(Some(Ok(out)));
            }
            if this.ended.is_none() {
                // Nothing held and nothing arrived (the upstream has the waker).
                if this.idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let msg = format!("upstream sent nothing for {}s", this.idle_timeout.as_secs());
                this.ended = Some(Some(msg));
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
        // for more, then cancel the upstream request by dropping it. (Held output was fed to
        // the tap when it arrived.)
        if self.ended.is_none()
            && let (Some(up), Some(tap)) = (self.up.as_mut(), self.tap.as_mut())
        {
            while let Some(Some(Ok(chunk))) = up.next().now_or_never() {
                tap.feed(&chunk);
            }
        }
        let error = self.ended.take().flatten();
        self.finish(true, error);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::sync::mpsc;

    use super::*;
    use crate::usage::TokenUsage;

    /// Counts what it was fed; passes chunks through unchanged.
    struct Counting(Arc<AtomicUsize>);

    impl StreamTap for Counting {
        fn feed(&mut self, chunk: &Bytes) -> Option<Bytes> {
            self.0.fetch_add(chunk.len(), Ordering::Relaxed);
            None
        }
        fn usage(&self) -> TokenUsage {
            TokenUsage::default()
        }
        fn model(&self) -> Option<&str> {
            None
        }
        fn started(&self) -> bool {
            self.0.load(Ordering::Relaxed) > 0
        }
        fn finished(&self) -> bool {
            false
        }
        fn mid_line(&self) -> bool {
            false
        }
        fn error_event(&self, message: &str) -> Bytes {
            Bytes::from(format!("event: error\ndata: {message}\n\n"))
        }
    }

    /// Whether the client was gone when the pump reported, and how many bytes the tap saw.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Option<bool>>>, Arc<AtomicUsize>);

    impl Seen {
        fn client_gone(&self) -> Option<bool> {
            *self.0.lock().unwrap()
        }
        fn fed(&self) -> usize {
            self.1.load(Ordering::Relaxed)
        }
    }

    type Tx = mpsc::UnboundedSender<reqwest::Result<Bytes>>;

    fn pumped() -> (Tx, Pump<impl FnOnce(StreamOutcome) + Send + Unpin>, Seen) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rx = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let seen = Seen::default();
        let s2 = seen.clone();
        let p = pump_stream(
            Box::pin(rx),
            Duration::from_secs(60),
            Box::new(Counting(seen.1.clone())),
            move |out: StreamOutcome| {
                *s2.0.lock().unwrap() = Some(out.client_gone);
            },
        );
        (tx, p, seen)
    }

    fn event(i: usize) -> Bytes {
        Bytes::from(format!(
            "event: content_block_delta\ndata: {{\"i\":{i}}}\n\n"
        ))
    }

    #[tokio::test]
    async fn chunks_that_arrived_together_go_out_as_one_write() {
        let (tx, mut p, seen) = pumped();
        let want: Vec<u8> = (0..5).flat_map(|i| event(i).to_vec()).collect();
        for i in 0..5 {
            tx.send(Ok(event(i))).unwrap();
        }
        drop(tx);
        let first = p.next().await.unwrap().unwrap();
        assert_eq!(first, want);
        assert!(p.next().await.is_none());
        assert_eq!(seen.client_gone(), Some(false));
        assert_eq!(seen.fed(), want.len());
    }

    #[tokio::test]
    async fn a_lone_chunk_goes_out_without_waiting_for_more() {
        let (tx, mut p, _) = pumped();
        tx.send(Ok(event(1))).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), p.next())
            .await
            .expect("a chunk with nothing behind it is sent at once");
        assert_eq!(got.unwrap().unwrap(), event(1));
        // Nothing more has come: the pump waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), p.next())
                .await
                .is_err()
        );
        tx.send(Ok(event(2))).unwrap();
        assert_eq!(p.next().await.unwrap().unwrap(), event(2));
    }

    #[tokio::test]
    async fn what_came_with_the_head_is_gathered_before_it_goes_out() {
        let (tx, mut p, seen) = pumped();
        for i in 0..3 {
            tx.send(Ok(event(i))).unwrap();
        }
        p.gather_ready().await;
        assert_eq!(seen.fed(), (0..3).map(|i| event(i).len()).sum::<usize>());
        // Nothing more is there: gathering does not wait for the network.
        tokio::time::timeout(Duration::from_secs(5), p.gather_ready())
            .await
            .expect("gathering returns when nothing more has arrived");
        let want: Vec<u8> = (0..3).flat_map(|i| event(i).to_vec()).collect();
        assert_eq!(p.next().await.unwrap().unwrap(), want);
        tx.send(Ok(event(3))).unwrap();
        assert_eq!(p.next().await.unwrap().unwrap(), event(3));
    }

    #[tokio::test]
    async fn held_output_is_bounded_and_bytes_are_unchanged() {
        let (tx, mut p, seen) = pumped();
        let chunk = Bytes::from(vec![b'x'; 1000]);
        for _ in 0..300 {
            tx.send(Ok(chunk.clone())).unwrap();
        }
        drop(tx);
        let mut total = 0;
        while let Some(out) = p.next().await {
            let out = out.unwrap();
            assert!(out.len() < MAX_HOLD_BYTES + chunk.len(), "{}", out.len());
            assert!(out.iter().all(|b| *b == b'x'));
            total += out.len();
        }
        assert_eq!(total, 300_000);
        assert_eq!(seen.client_gone(), Some(false));
    }

    #[tokio::test]
    async fn a_client_that_leaves_is_reported_with_what_had_arrived() {
        let (tx, mut p, seen) = pumped();
        tx.send(Ok(event(1))).unwrap();
        assert_eq!(p.next().await.unwrap().unwrap(), event(1));
        tx.send(Ok(event(2))).unwrap();
        drop(p);
        // Billed for both events: the second had arrived when the client left.
        assert_eq!(seen.client_gone(), Some(true));
        assert_eq!(seen.fed(), event(1).len() + event(2).len());
        drop(tx);
    }
}
