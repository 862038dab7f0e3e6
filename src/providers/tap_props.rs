//! Shared pieces of the stream taps' property tests: a byte stream cut into chunks at arbitrary
//! points, SSE framing of event payloads, garbage, and what a tap reports after a stream.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;

use super::StreamTap;
use crate::usage::TokenUsage;

/// What a tap reported after a stream, and the bytes it passed on to the client.
#[derive(Debug, PartialEq)]
pub struct Seen {
    pub out: Vec<u8>,
    pub usage: TokenUsage,
    pub model: Option<String>,
    pub started: bool,
    pub finished: bool,
    pub mid_line: bool,
}

/// Feed `chunks` in order; a `None` from the tap passes the chunk on unchanged.
pub fn feed_all(tap: &mut dyn StreamTap, chunks: &[Bytes]) -> Seen {
    let mut out = Vec::new();
    for c in chunks {
        match tap.feed(c) {
            Some(b) => out.extend_from_slice(&b),
            None => out.extend_from_slice(c),
        }
    }
    Seen {
        out,
        usage: tap.usage(),
        model: tap.model().map(str::to_owned),
        started: tap.started(),
        finished: tap.finished(),
        mid_line: tap.mid_line(),
    }
}

/// Up to a dozen cut points (empty chunks included when two coincide).
pub fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..12)
}

/// `bytes` cut at `cuts`.
pub fn split(bytes: &[u8], cuts: &[Index]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut from = 0;
    for a in at {
        chunks.push(Bytes::copy_from_slice(&bytes[from..a]));
        from = a;
    }
    chunks.push(Bytes::copy_from_slice(&bytes[from..]));
    chunks
}

/// How an upstream frames its SSE lines.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    pub crlf: bool,
    /// `data: x` rather than `data:x`.
    pub space: bool,
    /// A comment line before some events (`: keep-alive`).
    pub comments: bool,
}

pub fn framing() -> impl Strategy<Value = Framing> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(crlf, space, comments)| Framing {
        crlf,
        space,
        comments,
    })
}

/// Events as SSE: an optional `event:` line, one `data:` line, a blank line.
pub fn sse(events: &[(Option<&str>, Vec<u8>)], f: Framing) -> Vec<u8> {
    let nl: &[u8] = if f.crlf { b"\r\n" } else { b"\n" };
    let mut out = Vec::new();
    for (i, (name, data)) in events.iter().enumerate() {
        if f.comments && i % 3 == 1 {
            out.extend_from_slice(b": keep-alive");
            out.extend_from_slice(nl);
        }
        if let Some(n) = name {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(nl);
        }
        out.extend_from_slice(if f.space { b"data: " } else { b"data:" });
        out.extend_from_slice(data);
        out.extend_from_slice(nl);
        out.extend_from_slice(nl);
    }
    out
}

/// Token counts as upstreams send them, from small to the largest a u64 holds.
pub fn tokens() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..100_000, 1 => any::<u64>(), 1 => Just(u64::MAX)]
}

/// Text for content and model names, with the words the taps look for and JSON's specials.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 .-]{0,16}",
        any::<String>(),
        prop::sample::select(vec![
            "\"message_stop\"",
            "data: {\"type\":\"message_stop\"}\n\n",
            "\"response.completed\"",
            "[DONE]",
            "\"usage\"",
            "finishReason",
            "usageMetadata",
            "\r\n\r\n",
            "\u{0}\u{feff}",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Bytes that are almost, or not at all, a stream.
pub fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::sample::select(vec![
            &b"data: "[..],
            b"data:",
            b"event: message_start\n",
            b"\n",
            b"\r\n",
            b"\r",
            b"{\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":",
            b"{\"type\":\"response.completed\",\"response\":",
            b"{\"usageMetadata\":{\"promptTokenCount\":",
            b"18446744073709551615",
            b"-1",
            b"[DONE]",
            b"}}}",
            b"\xff\xfe",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// The property every tap has: fed whole, cut at `cuts`, or one byte at a time, it reports the
/// same and passes on the same bytes. Returns what it reported for the whole stream.
pub fn same_in_any_chunking(
    make: impl Fn() -> Box<dyn StreamTap>,
    bytes: &[u8],
    cuts: &[Index],
) -> Result<Seen, TestCaseError> {
    let whole = feed_all(&mut *make(), &[Bytes::copy_from_slice(bytes)]);
    let split = feed_all(&mut *make(), &split(bytes, cuts));
    prop_assert_eq!(&split, &whole, "cut at {:?}", cuts);
    let bytewise: Vec<Bytes> = bytes
        .iter()
        .map(|b| Bytes::copy_from_slice(&[*b]))
        .collect();
    prop_assert_eq!(
        &feed_all(&mut *make(), &bytewise),
        &whole,
        "one byte at a time"
    );
    Ok(whole)
}
