//! Gemini `generateContent` / `streamGenerateContent` / `countTokens`. Usage from
//! `usageMetadata`: input without the cached part, cached tokens as cache reads, thinking
//! tokens as output.

use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;

use super::StreamTap;
use super::sse::DataLines;
use crate::usage::TokenUsage;

pub const DEFAULT_BASE: &str = "https://generativelanguage.googleapis.com";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    GenerateContent,
    StreamGenerateContent,
    CountTokens,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "generateContent" => Some(Method::GenerateContent),
            "streamGenerateContent" => Some(Method::StreamGenerateContent),
            "countTokens" => Some(Method::CountTokens),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::GenerateContent => "generateContent",
            Method::StreamGenerateContent => "streamGenerateContent",
            Method::CountTokens => "countTokens",
        }
    }
}

pub fn url(base: &str, v1: bool, model: &str, method: Method) -> String {
    let b = base.trim().trim_end_matches('/');
    let b = if b.is_empty() { DEFAULT_BASE } else { b };
    let ver = if v1 { "v1" } else { "v1beta" };
    let b = b.trim_end_matches("/v1beta").trim_end_matches("/v1");
    let alt = if method == Method::StreamGenerateContent {
        "?alt=sse"
    } else {
        ""
    };
    // The model comes from the client's path: one segment, encoded, whatever it holds.
    let model = super::request::encode_segment(model);
    format!("{b}/{ver}/models/{model}:{}{alt}", method.as_str())
}

pub fn grpc_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 | 529 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

pub fn error_body(code: u16, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message, "status": grpc_status(code)}})
        .to_string()
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(default, rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    candidates_token_count: u64,
    cached_content_token_count: u64,
    thoughts_token_count: u64,
}

impl UsageMetadata {
    fn normalise(&self) -> TokenUsage {
        let cached = self.cached_content_token_count.min(self.prompt_token_count);
        TokenUsage {
            input_tokens: self.prompt_token_count - cached,
            // Counts are the upstream's word: a sum past u64 saturates, never panics or wraps.
            output_tokens: self
                .candidates_token_count
                .saturating_add(self.thoughts_token_count),
            cache_read_tokens: cached,
            ..Default::default()
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk {
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
}

pub fn usage_from_body(body: &[u8]) -> Option<(TokenUsage, Option<String>)> {
    let c: Chunk = serde_json::from_slice(body).ok()?;
    Some((c.usage_metadata?.normalise(), c.model_version))
}

/// `alt=sse` stream: each chunk may repeat `usageMetadata`; the last one is final.
#[derive(Default)]
pub struct GeminiTap {
    lines: DataLines,
    usage: TokenUsage,
    model: Option<String>,
    started: bool,
    finished: bool,
}

impl GeminiTap {
    pub fn new() -> Self {
        Self::default()
    }

    fn data(&mut self, d: &[u8]) {
        self.started = true;
        if memmem::find(d, b"finishReason").is_some() {
            self.finished = true;
        }
        if memmem::find(d, b"usageMetadata").is_none() {
            return;
        }
        if let Ok(c) = serde_json::from_slice::<Chunk>(d) {
            if let Some(u) = c.usage_metadata {
                self.usage = u.normalise();
            }
            if c.model_version.is_some() {
                self.model = c.model_version;
            }
        }
    }
}

impl StreamTap for GeminiTap {
    fn feed(&mut self, chunk: &Bytes) -> Option<Bytes> {
        let mut lines = std::mem::take(&mut self.lines);
        lines.feed(chunk, |d| self.data(d));
        self.lines = lines;
        None
    }
    fn usage(&self) -> TokenUsage {
        self.usage
    }
    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    fn started(&self) -> bool {
        self.started
    }
    fn finished(&self) -> bool {
        self.finished
    }
    fn mid_line(&self) -> bool {
        self.lines.mid_line()
    }
    fn error_event(&self, message: &str) -> Bytes {
        Bytes::from(format!("data: {}\r\n\r\n", error_body(500, message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            url("", false, "gemini-2.5-pro", Method::StreamGenerateContent),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            url("http://h/v1beta/", true, "m", Method::CountTokens),
            "http://h/v1/models/m:countTokens"
        );
    }

    #[test]
    fn usage_counts_cached_once_and_thoughts_as_output() {
        let body = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":50,"cachedContentTokenCount":400,"thoughtsTokenCount":25,"totalTokenCount":1075},"modelVersion":"gemini-2.5-pro"}"#;
        let (u, m) = usage_from_body(body).unwrap();
        assert_eq!(
            (u.input_tokens, u.cache_read_tokens, u.output_tokens),
            (600, 400, 75)
        );
        assert_eq!(m.as_deref(), Some("gemini-2.5-pro"));
    }

    #[test]
    fn stream_tap_keeps_the_last_usage() {
        let s = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":1}}\r\n\r\ndata: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":7,\"cachedContentTokenCount\":4},\"modelVersion\":\"gemini-2.5-flash\"}\r\n\r\n";
        for n in [1, 5, 1000] {
            let mut t = GeminiTap::new();
            for c in s.as_bytes().chunks(n) {
                t.feed(&Bytes::copy_from_slice(c));
            }
            assert!(t.finished());
            assert_eq!(
                (
                    t.usage().input_tokens,
                    t.usage().cache_read_tokens,
                    t.usage().output_tokens
                ),
                (6, 4, 7)
            );
            assert_eq!(t.model(), Some("gemini-2.5-flash"));
        }
    }

    mod props {
        use super::*;
        use crate::providers::tap_props::*;
        use proptest::prelude::*;
        use serde_json::json;

        /// prompt (with the cached part), candidates, cached, thoughts.
        type Reported = [u64; 4];

        #[derive(Debug, Clone)]
        struct Chunk {
            text: String,
            finish: bool,
            usage: Option<Reported>,
            model: Option<String>,
        }

        /// Text without the words the tap looks for.
        fn plain() -> impl Strategy<Value = String> {
            prop_oneof!["[a-zA-Z0-9 .\"\\\\-]{0,16}", any::<String>()]
        }

        fn chunk() -> impl Strategy<Value = Chunk> {
            (
                plain(),
                any::<bool>(),
                prop::option::of(prop::array::uniform4(tokens())),
                prop::option::of(plain()),
            )
                .prop_map(|(text, finish, usage, model)| Chunk {
                    text,
                    finish,
                    usage,
                    model,
                })
        }

        fn normalised([prompt, candidates, cached, thoughts]: Reported) -> TokenUsage {
            let cached = cached.min(prompt);
            TokenUsage {
                input_tokens: prompt - cached,
                output_tokens: candidates.saturating_add(thoughts),
                cache_read_tokens: cached,
                ..Default::default()
            }
        }

        fn encode(c: &Chunk) -> (Option<&'static str>, Vec<u8>) {
            let mut cand =
                json!({"content": {"parts": [{"text": c.text}], "role": "model"}, "index": 0});
            if c.finish {
                cand["finishReason"] = json!("STOP");
            }
            let mut v = json!({"candidates": [cand]});
            if let Some([p, o, cached, t]) = c.usage {
                v["usageMetadata"] = json!({"promptTokenCount": p, "candidatesTokenCount": o,
                    "cachedContentTokenCount": cached, "thoughtsTokenCount": t});
            }
            if let Some(m) = &c.model {
                v["modelVersion"] = json!(m);
            }
            (None, v.to_string().into_bytes())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn stream_taps_the_same_in_any_chunking(
                chunks in prop::collection::vec(chunk(), 0..10),
                f in framing(),
                cuts in cuts(),
            ) {
                let bytes = sse(&chunks.iter().map(encode).collect::<Vec<_>>(), f);
                let seen = same_in_any_chunking(|| Box::new(GeminiTap::new()), &bytes, &cuts)?;
                prop_assert_eq!(&seen.out, &bytes);
                let with_usage = || chunks.iter().filter(|c| c.usage.is_some());
                let usage = with_usage().filter_map(|c| c.usage).next_back().map(normalised);
                prop_assert_eq!(seen.usage, usage.unwrap_or_default());
                prop_assert_eq!(seen.model, with_usage().filter_map(|c| c.model.clone()).next_back());
                prop_assert_eq!(seen.started, !chunks.is_empty());
                prop_assert_eq!(seen.finished, chunks.iter().any(|c| c.finish));
            }

            #[test]
            fn garbage_never_breaks_the_tap(bytes in garbage(), cuts in cuts()) {
                same_in_any_chunking(|| Box::new(GeminiTap::new()), &bytes, &cuts)?;
                let _ = usage_from_body(&bytes);
            }

            #[test]
            fn body_usage_from_any_counts(u in prop::array::uniform4(tokens())) {
                let c = Chunk { text: String::new(), finish: true, usage: Some(u), model: None };
                let (_, body) = encode(&c);
                let (got, model) = usage_from_body(&body).unwrap();
                prop_assert_eq!(got, normalised(u));
                prop_assert_eq!(model, None);
            }
        }
    }
}
