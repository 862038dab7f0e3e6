//! The one SSE line splitter every stream tap uses: bytes in, in any chunking; the payload of
//! each complete `data:` line out. Lines may end in `\n` or `\r\n`; a line split across
//! chunks is joined before it is handed on. Bytes are only read, never changed.

/// The longest line a tap reads. A longer one still reaches the client unchanged; the tap
/// only stops holding it (memory stays bounded whatever an upstream sends) and skips it.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// Splits a byte stream into the payloads of its `data:` lines.
#[derive(Default, Debug)]
pub struct DataLines {
    /// An incomplete line carried over from the previous chunk.
    partial: Vec<u8>,
    /// The current line outgrew `MAX_LINE`: skip it up to its newline.
    skipping: bool,
}

impl DataLines {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one chunk; `on_data` gets each complete `data:` payload (leading spaces trimmed).
    pub fn feed(&mut self, chunk: &[u8], mut on_data: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let line = &rest[..nl];
            if self.skipping {
                self.skipping = false;
            } else if self.partial.is_empty() {
                data_of(line, &mut on_data);
            } else {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(line);
                data_of(&joined, &mut on_data);
                // Keep the allocation for the next split line.
                joined.clear();
                self.partial = joined;
            }
            rest = &rest[nl + 1..];
        }
        if self.skipping {
            return;
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            self.partial = Vec::new();
            self.skipping = true;
            return;
        }
        self.partial.extend_from_slice(rest);
    }

    /// The bytes so far end in the middle of a line.
    pub fn mid_line(&self) -> bool {
        !self.partial.is_empty() || self.skipping
    }
}

fn data_of(line: &[u8], on_data: &mut impl FnMut(&[u8])) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(d) = line.strip_prefix(b"data:") {
        on_data(d.trim_ascii_start());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> (Vec<String>, bool) {
        let mut lines = DataLines::new();
        let mut out = Vec::new();
        for c in chunks {
            lines.feed(c, |d| out.push(String::from_utf8(d.to_vec()).unwrap()));
        }
        (out, lines.mid_line())
    }

    #[test]
    fn payloads_in_any_chunking() {
        let stream = b"event: a\ndata: {\"x\":1}\r\n\ndata:{\"y\":2}\n: comment\ndata: tail";
        let (whole, mid) = collect(&[stream]);
        assert_eq!(whole, vec!["{\"x\":1}", "{\"y\":2}"]);
        assert!(mid, "the unterminated last line is held back");
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(collect(&[a, b]).0, whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(collect(&bytes).0, whole);
    }

    #[test]
    fn an_endless_line_is_skipped_not_held() {
        let mut lines = DataLines::new();
        let mut out = Vec::new();
        let big = vec![b'x'; 1024 * 1024];
        lines.feed(b"data: ", |d| out.push(d.to_vec()));
        for _ in 0..(MAX_LINE / big.len() + 2) {
            lines.feed(&big, |d| out.push(d.to_vec()));
        }
        assert!(
            lines.partial.capacity() <= MAX_LINE,
            "the tap held the whole line"
        );
        assert!(lines.mid_line());
        lines.feed(b"xx\ndata: {\"ok\":1}\n", |d| out.push(d.to_vec()));
        assert_eq!(out, vec![b"{\"ok\":1}".to_vec()]);
        assert!(!lines.mid_line());
    }

    #[test]
    fn nothing_but_data_lines() {
        let (out, mid) = collect(&[b"event: ping\nid: 3\nretry: 10\n\n"]);
        assert!(out.is_empty());
        assert!(!mid);
    }

    mod props {
        use super::*;
        use crate::providers::tap_props::{cuts, garbage, split};
        use proptest::prelude::*;

        /// The payloads of the complete `data:` lines of `bytes`, read line by line.
        fn reference(bytes: &[u8]) -> (Vec<Vec<u8>>, bool) {
            let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
            let tail = lines.pop().unwrap_or_default();
            let data = lines
                .into_iter()
                .filter_map(|l| {
                    let l = l.strip_suffix(b"\r").unwrap_or(l);
                    l.strip_prefix(b"data:")
                        .map(|d| d.trim_ascii_start().to_vec())
                })
                .collect();
            (data, !tail.is_empty())
        }

        fn lines() -> impl Strategy<Value = Vec<u8>> {
            let line = prop_oneof![
                "(data|event|id|:)?: ?[a-z{}\" \r]{0,12}".prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 0..16),
            ];
            prop::collection::vec(
                (line, prop::sample::select(vec![&b"\n"[..], b"\r\n", b""])),
                0..16,
            )
            .prop_map(|ls| {
                ls.into_iter()
                    .flat_map(|(l, e)| [l, e.to_vec()].concat())
                    .collect()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn payloads_in_any_chunking(
                bytes in prop_oneof![lines(), garbage()],
                cuts in cuts(),
            ) {
                let mut dl = DataLines::new();
                let mut got = Vec::new();
                for c in split(&bytes, &cuts) {
                    dl.feed(&c, |d| got.push(d.to_vec()));
                }
                prop_assert_eq!((got, dl.mid_line()), reference(&bytes));
            }
        }
    }
}
