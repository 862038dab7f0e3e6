//! Google's Code Assist API (`https://cloudcode-pa.googleapis.com/v1internal:{method}`), the
//! API the Gemini CLI speaks when signed in with a Google account. It carries the Gemini wire
//! format wrapped:
//!
//! - request: `{"model", "project", "user_prompt_id"?, "request": <a Gemini request body>}`
//!   (v1 src/services/geminiAccountService.js `generateContent` / `generateContentStream`;
//!   the Gemini CLI's `packages/core/src/code_assist/converter.ts`);
//! - answer: `{"response": <a Gemini answer>, ...}`, and for `streamGenerateContent?alt=sse`
//!   the same object in every `data:` line;
//! - errors: Google's `{"error": {"code", "message", "status"}}`.
//!
//! `wrap`, `unwrap_body` and `Unwrap` (a stream stage) turn it into the standard Gemini format,
//! so everything built on that format (the Gemini routes, the Chat Completions conversion)
//! works unchanged on Code Assist accounts.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::StreamTap;
use super::sse::MAX_LINE;
use crate::model::Account;
use crate::usage::TokenUsage;

pub const DEFAULT_BASE: &str = "https://cloudcode-pa.googleapis.com";
pub const VERSION: &str = "v1internal";

/// The Gemini CLI's Google OAuth client (an installed application: its secret is public), as
/// v1 uses it (v1 src/services/geminiAccountService.js `OAUTH_CLIENT_ID`, `OAUTH_SCOPES`,
/// the redirect to `codeassist.google.com/authcode`, which shows the code to paste).
pub mod oauth {
    pub const CLIENT_ID: &str =
        "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com";
    pub const CLIENT_SECRET: &str = "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";
    pub const SCOPES: &str = "https://www.googleapis.com/auth/cloud-platform";
    pub const REDIRECT_URI: &str = "https://codeassist.google.com/authcode";
}

/// The client metadata Code Assist's setup calls carry (v1 `loadCodeAssist`, `setupUser`).
pub fn client_metadata(project: Option<&str>) -> Value {
    let mut m = json!({"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"});
    if let Some(p) = project {
        m["duetProject"] = json!(p);
    }
    m
}

/// The tier to onboard a user to, from a `loadCodeAssist` answer: the current one, else the
/// default allowed one, else the legacy tier (v1 `getOnboardTier`).
pub fn onboard_tier(load: &Value) -> String {
    let id = |t: &Value| t.get("id").and_then(Value::as_str).map(str::to_owned);
    load.get("currentTier")
        .and_then(id)
        .or_else(|| {
            load.get("allowedTiers")
                .and_then(Value::as_array)
                .and_then(|ts| {
                    ts.iter()
                        .find(|t| t.get("isDefault").and_then(Value::as_bool) == Some(true))
                })
                .and_then(id)
        })
        .unwrap_or_else(|| "legacy-tier".into())
}

/// The `v1internal` methods crs serves (v1's geminiRoutes: the Gemini CLI's own routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    LoadCodeAssist,
    OnboardUser,
    CountTokens,
    GenerateContent,
    StreamGenerateContent,
    ListExperiments,
    RetrieveUserQuota,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::LoadCodeAssist,
        Method::OnboardUser,
        Method::CountTokens,
        Method::GenerateContent,
        Method::StreamGenerateContent,
        Method::ListExperiments,
        Method::RetrieveUserQuota,
    ];

    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::LoadCodeAssist => "loadCodeAssist",
            Method::OnboardUser => "onboardUser",
            Method::CountTokens => "countTokens",
            Method::GenerateContent => "generateContent",
            Method::StreamGenerateContent => "streamGenerateContent",
            Method::ListExperiments => "listExperiments",
            Method::RetrieveUserQuota => "retrieveUserQuota",
        }
    }

    /// Generation: billed, and served with the account's project.
    pub fn generates(self) -> bool {
        matches!(
            self,
            Method::GenerateContent | Method::StreamGenerateContent
        )
    }

    /// The Code Assist method serving a standard Gemini method.
    pub fn of_gemini(m: super::gemini::Method) -> Method {
        match m {
            super::gemini::Method::GenerateContent => Method::GenerateContent,
            super::gemini::Method::StreamGenerateContent => Method::StreamGenerateContent,
            super::gemini::Method::CountTokens => Method::CountTokens,
        }
    }
}

/// The Google Cloud project an account's requests go with: its configured `projectId`, else
/// the `tempProjectId` onboarding found (v1's names, kept in the account's `extra` fields).
pub fn account_project(rec: &Account) -> Option<&str> {
    ["projectId", "tempProjectId"]
        .iter()
        .filter_map(|f| rec.extra.get(*f).and_then(|v| v.as_str()))
        .map(str::trim)
        .find(|p| !p.is_empty())
}

/// `{base}/v1internal:{method}` (`?alt=sse` for streams). An empty base is Google's.
pub fn url(base: &str, method: Method) -> String {
    let b = base.trim().trim_end_matches('/');
    let b = if b.is_empty() { DEFAULT_BASE } else { b };
    let b = b.trim_end_matches(VERSION).trim_end_matches('/');
    let alt = if method == Method::StreamGenerateContent {
        "?alt=sse"
    } else {
        ""
    };
    format!("{b}/{VERSION}:{}{alt}", method.as_str())
}

/// A standard Gemini request body for `model`, wrapped for Code Assist. `countTokens` takes
/// `{"request": {"model": "models/<m>", "contents"}}` (v1's `countTokens`); generation takes
/// `{"model", "project", "request"}`. None when the body is not a JSON object.
pub fn wrap(body: &[u8], method: Method, model: &str, project: Option<&str>) -> Option<Bytes> {
    let mut inner: Map<String, Value> = serde_json::from_slice(body).ok()?;
    let out = if method == Method::CountTokens {
        inner.insert("model".into(), json!(format!("models/{model}")));
        inner.retain(|k, _| k == "model" || k == "contents");
        json!({"request": inner})
    } else {
        let mut o = Map::new();
        o.insert("model".into(), json!(model));
        if let Some(p) = project.filter(|p| !p.is_empty()) {
            o.insert("project".into(), json!(p));
        }
        o.insert("request".into(), Value::Object(inner));
        Value::Object(o)
    };
    serde_json::to_vec(&out).ok().map(Bytes::from)
}

/// Set `field` of a client's Code Assist body to the account's project (v1 prefers the
/// account's project over the client's). The body unchanged when there is none or it is not
/// a JSON object.
pub fn with_project(body: &Bytes, field: &str, project: Option<&str>) -> Bytes {
    let Some(p) = project.filter(|p| !p.is_empty()) else {
        return body.clone();
    };
    match serde_json::from_slice::<Map<String, Value>>(body) {
        Ok(mut m) => {
            m.insert(field.into(), json!(p));
            serde_json::to_vec(&m)
                .map(Bytes::from)
                .unwrap_or_else(|_| body.clone())
        }
        Err(_) => body.clone(),
    }
}

/// The `response` inside a Code Assist answer; anything else as it came.
pub fn unwrap_body(body: &[u8]) -> Option<Bytes> {
    let mut v: Map<String, Value> = serde_json::from_slice(body).ok()?;
    match v.remove("response") {
        Some(r @ Value::Object(_)) => serde_json::to_vec(&r).ok().map(Bytes::from),
        _ => None,
    }
}

/// Usage of a Code Assist answer (its `response`'s `usageMetadata`).
pub fn usage_from_body(body: &[u8]) -> Option<(TokenUsage, Option<String>)> {
    super::gemini::usage_from_body(&unwrap_body(body)?)
}

/// A stream stage in front of a Gemini tap: each complete `data:` line of a Code Assist
/// stream is unwrapped before the tap underneath sees it. `rewrite`: the client gets the
/// unwrapped stream (whatever the tap underneath makes of it); otherwise the client gets the
/// upstream's bytes unchanged and the stage only lets the tap read them.
pub struct Unwrap {
    inner: Box<dyn StreamTap>,
    rewrite: bool,
    partial: Vec<u8>,
    skipping: bool,
}

impl Unwrap {
    pub fn new(inner: Box<dyn StreamTap>, rewrite: bool) -> Self {
        Unwrap {
            inner,
            rewrite,
            partial: Vec::new(),
            skipping: false,
        }
    }

    fn line(&self, line: &[u8], out: &mut Vec<u8>) {
        let (body, end): (&[u8], &[u8]) = match line.strip_suffix(b"\r\n") {
            Some(b) => (b, b"\r\n"),
            None => (line.strip_suffix(b"\n").unwrap_or(line), b"\n"),
        };
        if let Some(d) = body.strip_prefix(b"data:")
            && let Some(inner) = unwrap_body(d.trim_ascii())
        {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&inner);
            out.extend_from_slice(end);
            return;
        }
        out.extend_from_slice(line);
    }
}

impl StreamTap for Unwrap {
    fn feed(&mut self, chunk: &Bytes) -> Option<Bytes> {
        let mut out = Vec::with_capacity(chunk.len());
        let mut rest: &[u8] = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let line = &rest[..=nl];
            if self.skipping {
                // A line past MAX_LINE goes on as it came.
                self.skipping = false;
                out.extend_from_slice(line);
            } else if self.partial.is_empty() {
                self.line(line, &mut out);
            } else {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(line);
                self.line(&joined, &mut out);
            }
            rest = &rest[nl + 1..];
        }
        if self.skipping {
            out.extend_from_slice(rest);
        } else if self.partial.len() + rest.len() > MAX_LINE {
            out.append(&mut self.partial);
            out.extend_from_slice(rest);
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(rest);
        }
        let out = Bytes::from(out);
        let seen = self.inner.feed(&out);
        if self.rewrite {
            Some(seen.unwrap_or(out))
        } else {
            None
        }
    }
    fn usage(&self) -> TokenUsage {
        self.inner.usage()
    }
    fn model(&self) -> Option<&str> {
        self.inner.model()
    }
    fn started(&self) -> bool {
        self.inner.started()
    }
    fn finished(&self) -> bool {
        self.inner.finished()
    }
    fn mid_line(&self) -> bool {
        if self.rewrite {
            self.inner.mid_line()
        } else {
            !self.partial.is_empty() || self.skipping
        }
    }
    fn error_event(&self, message: &str) -> Bytes {
        self.inner.error_event(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::gemini::GeminiTap;

    #[test]
    fn urls() {
        assert_eq!(
            url("", Method::StreamGenerateContent),
            "https://cloudcode-pa.googleapis.com/v1internal:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            url("http://h:1/v1internal/", Method::LoadCodeAssist),
            "http://h:1/v1internal:loadCodeAssist"
        );
        assert_eq!(
            Method::parse("retrieveUserQuota"),
            Some(Method::RetrieveUserQuota)
        );
        assert_eq!(Method::parse("nope"), None);
    }

    #[test]
    fn wrapping_and_unwrapping() {
        let body = br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":8}}"#;
        let w: Value = serde_json::from_slice(
            &wrap(body, Method::GenerateContent, "gemini-2.5-pro", Some("p-1")).unwrap(),
        )
        .unwrap();
        assert_eq!(w["model"], "gemini-2.5-pro");
        assert_eq!(w["project"], "p-1");
        assert_eq!(w["request"]["generationConfig"]["maxOutputTokens"], 8);
        let c: Value = serde_json::from_slice(
            &wrap(body, Method::CountTokens, "gemini-2.5-pro", Some("p-1")).unwrap(),
        )
        .unwrap();
        assert_eq!(c["request"]["model"], "models/gemini-2.5-pro");
        assert!(c["request"].get("generationConfig").is_none());
        assert!(wrap(b"[1]", Method::GenerateContent, "m", None).is_none());

        let answer = br#"{"response":{"candidates":[],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":2}},"traceId":"t"}"#;
        let u: Value = serde_json::from_slice(&unwrap_body(answer).unwrap()).unwrap();
        assert_eq!(u["usageMetadata"]["promptTokenCount"], 9);
        let (usage, _) = usage_from_body(answer).unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens), (9, 2));
        assert!(unwrap_body(br#"{"error":{"code":400}}"#).is_none());
    }

    const STREAM: &str = "data: {\"response\":{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}}\r\n\r\ndata: {\"response\":{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":7},\"modelVersion\":\"gemini-2.5-flash\"}}\r\n\r\n";

    #[test]
    fn stream_stage_unwraps_every_data_line_in_any_chunking() {
        let want = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\ndata: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":7},\"modelVersion\":\"gemini-2.5-flash\"}\r\n\r\n";
        for n in [1, 3, 7, 1000] {
            let mut t = Unwrap::new(Box::new(GeminiTap::new()), true);
            let mut out = Vec::new();
            for c in STREAM.as_bytes().chunks(n) {
                out.extend_from_slice(&t.feed(&Bytes::copy_from_slice(c)).unwrap());
            }
            assert_eq!(String::from_utf8(out).unwrap(), want, "chunks of {n}");
            assert!(t.finished());
            assert_eq!((t.usage().input_tokens, t.usage().output_tokens), (10, 7));
            assert_eq!(t.model(), Some("gemini-2.5-flash"));
        }
    }

    #[test]
    fn observing_stage_passes_the_bytes_and_reads_usage() {
        let mut t = Unwrap::new(Box::new(GeminiTap::new()), false);
        for c in STREAM.as_bytes().chunks(5) {
            assert!(t.feed(&Bytes::copy_from_slice(c)).is_none());
        }
        assert!(t.finished() && !t.mid_line());
        assert_eq!((t.usage().input_tokens, t.usage().output_tokens), (10, 7));
    }

    mod props {
        use super::*;
        use crate::providers::tap_props::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Wrapped Gemini chunks, unwrapped in any chunking, are what the upstream would
            /// have sent without the wrapping; the tap underneath reads the same usage.
            #[test]
            fn unwrapping_is_the_same_in_any_chunking(
                texts in prop::collection::vec(text(), 1..6),
                usage in prop::array::uniform2(tokens()),
                f in framing(),
                cuts in cuts(),
            ) {
                let chunk = |i: usize, t: &str| {
                    let mut c = json!({"candidates": [{"content": {"parts": [{"text": t}]}}]});
                    if i + 1 == texts.len() {
                        c["usageMetadata"] = json!({"promptTokenCount": usage[0], "candidatesTokenCount": usage[1]});
                    }
                    c
                };
                let plain: Vec<_> = texts.iter().enumerate().map(|(i, t)| (None, chunk(i, t).to_string().into_bytes())).collect();
                let wrapped: Vec<_> = texts.iter().enumerate().map(|(i, t)| (None, json!({"response": chunk(i, t), "traceId": "x"}).to_string().into_bytes())).collect();
                // The stage writes `data: ` back with one space.
                let f = Framing { space: true, ..f };
                let (plain, wrapped) = (sse(&plain, f), sse(&wrapped, f));
                let seen = same_in_any_chunking(|| Box::new(Unwrap::new(Box::new(GeminiTap::new()), true)), &wrapped, &cuts)?;
                prop_assert_eq!(&seen.out, &plain);
                prop_assert_eq!((seen.usage.input_tokens, seen.usage.output_tokens), (usage[0], usage[1]));
                let observed = same_in_any_chunking(|| Box::new(Unwrap::new(Box::new(GeminiTap::new()), false)), &wrapped, &cuts)?;
                prop_assert_eq!(&observed.out, &wrapped);
                prop_assert_eq!(observed.usage, seen.usage);
            }

            #[test]
            fn garbage_never_breaks_the_stage(bytes in garbage(), cuts in cuts()) {
                for rewrite in [true, false] {
                    same_in_any_chunking(|| Box::new(Unwrap::new(Box::new(GeminiTap::new()), rewrite)), &bytes, &cuts)?;
                }
                let _ = unwrap_body(&bytes);
                let _ = wrap(&bytes, Method::GenerateContent, "m", Some("p"));
            }
        }
    }
}
