//! OpenAI wire formats: Responses (Codex) and Chat Completions, for OpenAI, Azure OpenAI and
//! Droid upstreams. Usage is normalised like every provider: `input_tokens` without the cached
//! part, cached tokens as cache reads, counted once.

use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;

use super::Op;
use super::StreamTap;
use super::sse::DataLines;
use crate::model::Account;
use crate::usage::TokenUsage;

fn join(base: &str, default_base: &str, v1_path: &str) -> String {
    let b = base.trim().trim_end_matches('/');
    let b = if b.is_empty() { default_base } else { b };
    if b.ends_with(v1_path) {
        b.to_owned()
    } else if b.ends_with("/v1") {
        format!("{b}{v1_path}")
    } else {
        format!("{b}/v1{v1_path}")
    }
}

/// `{base}/v1/responses` (a base ending in `/v1` or the full endpoint also work).
pub fn responses_url(base: &str, compact: bool) -> String {
    let u = join(base, "https://api.openai.com", "/responses");
    if compact { format!("{u}/compact") } else { u }
}

pub fn chat_url(base: &str) -> String {
    join(base, "https://api.openai.com", "/chat/completions")
}

/// Azure: deployments for chat, the resource-level Responses API for responses.
pub fn azure_url(a: &Account, op: Op, model: &str) -> anyhow::Result<String> {
    let ep = a.api_url.trim().trim_end_matches('/');
    if ep.is_empty() {
        anyhow::bail!("the Azure account has no azureEndpoint");
    }
    match op {
        Op::ChatCompletions | Op::Embeddings => {
            let deployment = if a.deployment_name.is_empty() {
                model
            } else {
                a.deployment_name.as_str()
            };
            let ver = if a.api_version.is_empty() {
                "2024-10-21"
            } else {
                a.api_version.as_str()
            };
            // The deployment may be the client's model name: one segment, encoded.
            let deployment = super::request::encode_segment(deployment);
            let ver = super::request::encode_segment(ver);
            let what = if op == Op::Embeddings {
                "embeddings"
            } else {
                "chat/completions"
            };
            Ok(format!(
                "{ep}/openai/deployments/{deployment}/{what}?api-version={ver}"
            ))
        }
        Op::Responses { compact } => {
            let ver = if a.api_version.is_empty() {
                "2025-04-01-preview"
            } else {
                a.api_version.as_str()
            };
            let c = if compact { "/compact" } else { "" };
            let ver = super::request::encode_segment(ver);
            Ok(format!("{ep}/openai/responses{c}?api-version={ver}"))
        }
        _ => anyhow::bail!("an Azure OpenAI account cannot serve this request"),
    }
}

pub fn error_body(kind: &str, message: &str) -> String {
    let t = match kind {
        "overloaded_error" | "api_error" => "server_error",
        "rate_limit_error" => "rate_limit_exceeded",
        other => other,
    };
    serde_json::json!({"error": {"message": message, "type": t, "param": null, "code": null}})
        .to_string()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Details {
    cached_tokens: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponsesUsage {
    input_tokens: u64,
    output_tokens: u64,
    input_tokens_details: Option<Details>,
}

impl ResponsesUsage {
    fn normalise(&self) -> TokenUsage {
        let cached = self
            .input_tokens_details
            .as_ref()
            .map_or(0, |d| d.cached_tokens)
            .min(self.input_tokens);
        TokenUsage {
            input_tokens: self.input_tokens - cached,
            output_tokens: self.output_tokens,
            cache_read_tokens: cached,
            ..Default::default()
        }
    }
}

#[derive(Deserialize)]
struct ResponseObj {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

pub fn responses_usage_from_body(body: &[u8]) -> Option<(TokenUsage, Option<String>)> {
    let r: ResponseObj = serde_json::from_slice(body).ok()?;
    Some((r.usage?.normalise(), r.model))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    prompt_tokens_details: Option<Details>,
}

impl ChatUsage {
    fn normalise(&self) -> TokenUsage {
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .map_or(0, |d| d.cached_tokens)
            .min(self.prompt_tokens);
        TokenUsage {
            input_tokens: self.prompt_tokens - cached,
            output_tokens: self.completion_tokens,
            cache_read_tokens: cached,
            ..Default::default()
        }
    }
}

#[derive(Deserialize)]
struct ChatObj {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<ChatUsage>,
}

pub fn chat_usage_from_body(body: &[u8]) -> Option<(TokenUsage, Option<String>)> {
    let r: ChatObj = serde_json::from_slice(body).ok()?;
    Some((r.usage?.normalise(), r.model))
}

/// Responses API stream: usage and model from `response.completed`.
#[derive(Default)]
pub struct ResponsesTap {
    lines: DataLines,
    usage: TokenUsage,
    model: Option<String>,
    started: bool,
    finished: bool,
}

#[derive(Deserialize)]
struct ResponsesEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    response: Option<ResponseObj>,
}

impl ResponsesTap {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StreamTap for ResponsesTap {
    fn feed(&mut self, chunk: &Bytes) -> Option<Bytes> {
        let (usage, model, started, finished) = (
            &mut self.usage,
            &mut self.model,
            &mut self.started,
            &mut self.finished,
        );
        self.lines.feed(chunk, |d| {
            *started = true;
            // Only lifecycle events carry usage; text deltas are skipped without parsing.
            if memmem::find(d, b"\"response.").is_none()
                || memmem::find(d, b"\"response.output").is_some()
            {
                return;
            }
            let Ok(ev) = serde_json::from_slice::<ResponsesEvent>(d) else {
                return;
            };
            if let Some(r) = ev.response {
                if r.model.is_some() {
                    *model = r.model;
                }
                if let Some(u) = r.usage {
                    *usage = u.normalise();
                }
            }
            if matches!(
                ev.kind.as_str(),
                "response.completed" | "response.failed" | "response.incomplete"
            ) {
                *finished = true;
            }
        });
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
        let ev = serde_json::json!({"type": "response.failed", "response": {"status": "failed",
            "error": {"code": "server_error", "message": message}}});
        Bytes::from(format!("event: response.failed\ndata: {ev}\n\n"))
    }
}

/// Chat Completions stream: usage from the final chunk (`stream_options.include_usage`).
#[derive(Default)]
pub struct ChatTap {
    lines: DataLines,
    usage: TokenUsage,
    model: Option<String>,
    started: bool,
    finished: bool,
}

impl ChatTap {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StreamTap for ChatTap {
    fn feed(&mut self, chunk: &Bytes) -> Option<Bytes> {
        let (usage, model, started, finished) = (
            &mut self.usage,
            &mut self.model,
            &mut self.started,
            &mut self.finished,
        );
        self.lines.feed(chunk, |d| {
            *started = true;
            if d == b"[DONE]" {
                *finished = true;
                return;
            }
            if memmem::find(d, b"\"usage\"").is_none() && model.is_some() {
                return;
            }
            if let Ok(c) = serde_json::from_slice::<ChatObj>(d) {
                if model.is_none() {
                    *model = c.model;
                }
                if let Some(u) = c.usage {
                    *usage = u.normalise();
                }
            }
        });
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
        Bytes::from(format!("data: {}\n\n", error_body("api_error", message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            responses_url("http://127.0.0.1:18080/v1", false),
            "http://127.0.0.1:18080/v1/responses"
        );
        assert_eq!(
            responses_url("https://api.openai.com", true),
            "https://api.openai.com/v1/responses/compact"
        );
        assert_eq!(
            responses_url("", false),
            "https://api.openai.com/v1/responses"
        );
        assert_eq!(
            responses_url("http://h/v1/responses/", false),
            "http://h/v1/responses"
        );
        assert_eq!(chat_url("http://h"), "http://h/v1/chat/completions");
        let a = Account {
            api_url: "https://r.openai.azure.com/".into(),
            deployment_name: "gpt4o".into(),
            ..Default::default()
        };
        assert_eq!(
            azure_url(&a, Op::ChatCompletions, "gpt-4o").unwrap(),
            "https://r.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            azure_url(&a, Op::Responses { compact: false }, "gpt-4o").unwrap(),
            "https://r.openai.azure.com/openai/responses?api-version=2025-04-01-preview"
        );
    }

    #[test]
    fn responses_usage_excludes_cached_once() {
        let body = br#"{"id":"resp_1","object":"response","model":"gpt-4.1","usage":{"input_tokens":300,"input_tokens_details":{"cached_tokens":100},"output_tokens":40,"total_tokens":340}}"#;
        let (u, m) = responses_usage_from_body(body).unwrap();
        assert_eq!(
            (u.input_tokens, u.cache_read_tokens, u.output_tokens),
            (200, 100, 40)
        );
        assert_eq!(m.as_deref(), Some("gpt-4.1"));
    }

    #[test]
    fn responses_stream_tap() {
        let s = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"model\":\"gpt-5\",\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi \\\"response.completed\\\"\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"model\":\"gpt-5-2025\",\"usage\":{\"input_tokens\":310,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens\":41}}}\n\n"
        );
        for n in [1, 7, 1000] {
            let mut t = ResponsesTap::new();
            for c in s.as_bytes().chunks(n) {
                assert!(t.feed(&Bytes::copy_from_slice(c)).is_none());
            }
            assert!(t.started() && t.finished());
            assert_eq!(t.usage().input_tokens, 300);
            assert_eq!(t.usage().cache_read_tokens, 10);
            assert_eq!(t.usage().output_tokens, 41);
            assert_eq!(t.model(), Some("gpt-5-2025"));
        }
    }

    #[test]
    fn chat_stream_tap() {
        let s = "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":20}}}\n\ndata: [DONE]\n\n";
        let mut t = ChatTap::new();
        t.feed(&Bytes::from_static(s.as_bytes()));
        assert!(t.finished());
        assert_eq!(
            (
                t.usage().input_tokens,
                t.usage().cache_read_tokens,
                t.usage().output_tokens
            ),
            (30, 20, 5)
        );
    }

    mod props {
        use super::*;
        use crate::providers::tap_props::*;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        /// Input (with the cached part), output, cached.
        type Reported = (u64, u64, Option<u64>);

        fn reported() -> impl Strategy<Value = Reported> {
            (tokens(), tokens(), prop::option::of(tokens()))
        }

        fn normalised((input, output, cached): Reported) -> TokenUsage {
            let cached = cached.unwrap_or(0).min(input);
            TokenUsage {
                input_tokens: input - cached,
                output_tokens: output,
                cache_read_tokens: cached,
                ..Default::default()
            }
        }

        fn usage_json((input, output, cached): Reported, names: [&str; 3]) -> Value {
            let mut u = json!({names[0]: input, names[1]: output});
            if let Some(c) = cached {
                u[names[2]] = json!({"cached_tokens": c});
            }
            u
        }

        const RESPONSES: [&str; 3] = ["input_tokens", "output_tokens", "input_tokens_details"];
        const CHAT: [&str; 3] = [
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
        ];

        #[derive(Debug, Clone)]
        enum Rev {
            /// A lifecycle event: created, in_progress, completed, failed, incomplete.
            Life(&'static str, Option<String>, Option<Reported>),
            Delta(String),
        }

        fn rev() -> impl Strategy<Value = Rev> {
            let kind = prop::sample::select(vec![
                "response.created",
                "response.in_progress",
                "response.completed",
                "response.failed",
                "response.incomplete",
            ]);
            prop_oneof![
                1 => (kind, prop::option::of(text()), prop::option::of(reported()))
                    .prop_map(|(k, m, u)| Rev::Life(k, m, u)),
                2 => text().prop_map(Rev::Delta),
            ]
        }

        fn encode_rev(e: &Rev) -> (Option<&str>, Vec<u8>) {
            match e {
                Rev::Life(kind, model, usage) => {
                    let mut r = json!({"id": "resp_1", "object": "response", "usage": null});
                    if let Some(m) = model {
                        r["model"] = json!(m);
                    }
                    if let Some(u) = usage {
                        r["usage"] = usage_json(*u, RESPONSES);
                    }
                    (
                        Some(*kind),
                        json!({"type": kind, "response": r})
                            .to_string()
                            .into_bytes(),
                    )
                }
                Rev::Delta(t) => (
                    Some("response.output_text.delta"),
                    json!({"type": "response.output_text.delta", "delta": t})
                        .to_string()
                        .into_bytes(),
                ),
            }
        }

        #[derive(Debug, Clone)]
        enum Cev {
            Chunk(Option<String>, String, Option<Reported>),
            Done,
        }

        fn cev() -> impl Strategy<Value = Cev> {
            prop_oneof![
                4 => (prop::option::of(text()), text(), prop::option::of(reported()))
                    .prop_map(|(m, t, u)| Cev::Chunk(m, t, u)),
                1 => Just(Cev::Done),
            ]
        }

        fn encode_cev(e: &Cev) -> (Option<&str>, Vec<u8>) {
            match e {
                Cev::Chunk(model, t, usage) => {
                    let mut c = json!({"id": "c", "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {"content": t}}]});
                    if let Some(m) = model {
                        c["model"] = json!(m);
                    }
                    if let Some(u) = usage {
                        c["usage"] = usage_json(*u, CHAT);
                    }
                    (None, c.to_string().into_bytes())
                }
                Cev::Done => (None, b"[DONE]".to_vec()),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn responses_stream_taps_the_same_in_any_chunking(
                evs in prop::collection::vec(rev(), 0..10),
                f in framing(),
                cuts in cuts(),
            ) {
                let bytes = sse(&evs.iter().map(encode_rev).collect::<Vec<_>>(), f);
                let seen = same_in_any_chunking(|| Box::new(ResponsesTap::new()), &bytes, &cuts)?;
                prop_assert_eq!(&seen.out, &bytes);
                let life = || evs.iter().filter_map(|e| match e {
                    Rev::Life(k, m, u) => Some((*k, m, u)),
                    Rev::Delta(_) => None,
                });
                let usage = life().filter_map(|(_, _, u)| *u).next_back().map(normalised);
                prop_assert_eq!(seen.usage, usage.unwrap_or_default());
                prop_assert_eq!(seen.model, life().filter_map(|(_, m, _)| m.clone()).next_back());
                prop_assert_eq!(seen.started, !evs.is_empty());
                prop_assert_eq!(
                    seen.finished,
                    life().any(|(k, ..)| matches!(k, "response.completed" | "response.failed" | "response.incomplete"))
                );
            }

            #[test]
            fn chat_stream_taps_the_same_in_any_chunking(
                evs in prop::collection::vec(cev(), 0..10),
                f in framing(),
                cuts in cuts(),
            ) {
                let bytes = sse(&evs.iter().map(encode_cev).collect::<Vec<_>>(), f);
                let seen = same_in_any_chunking(|| Box::new(ChatTap::new()), &bytes, &cuts)?;
                prop_assert_eq!(&seen.out, &bytes);
                let chunks = || evs.iter().filter_map(|e| match e {
                    Cev::Chunk(m, _, u) => Some((m, u)),
                    Cev::Done => None,
                });
                let usage = chunks().filter_map(|(_, u)| *u).next_back().map(normalised);
                prop_assert_eq!(seen.usage, usage.unwrap_or_default());
                // The model of the first chunk that names one.
                prop_assert_eq!(seen.model, chunks().find_map(|(m, _)| m.clone()));
                prop_assert_eq!(seen.started, !evs.is_empty());
                prop_assert_eq!(seen.finished, evs.iter().any(|e| matches!(e, Cev::Done)));
            }

            #[test]
            fn garbage_never_breaks_the_taps(bytes in garbage(), cuts in cuts()) {
                same_in_any_chunking(|| Box::new(ResponsesTap::new()), &bytes, &cuts)?;
                same_in_any_chunking(|| Box::new(ChatTap::new()), &bytes, &cuts)?;
                let _ = responses_usage_from_body(&bytes);
                let _ = chat_usage_from_body(&bytes);
            }

            #[test]
            fn body_usage_counts_cached_once(u in reported(), model in prop::option::of(text())) {
                let mut r = json!({"object": "response", "usage": usage_json(u, RESPONSES)});
                let mut c = json!({"object": "chat.completion", "usage": usage_json(u, CHAT)});
                if let Some(m) = &model {
                    r["model"] = json!(m);
                    c["model"] = json!(m);
                }
                let want = normalised(u);
                let (got, m) = responses_usage_from_body(r.to_string().as_bytes()).unwrap();
                prop_assert_eq!((got, m.as_ref()), (want, model.as_ref()));
                let (got, m) = chat_usage_from_body(c.to_string().as_bytes()).unwrap();
                prop_assert_eq!((got, m.as_ref()), (want, model.as_ref()));
            }
        }
    }
}
