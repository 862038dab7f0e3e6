//! Google in the mock, for Gemini OAuth accounts: the OAuth token endpoint (`POST /token`,
//! form-encoded authorization-code with PKCE and refresh-token grants, the Gemini CLI's
//! client) and Code Assist (`POST /v1internal:{method}`): `loadCodeAssist`, `onboardUser` (a
//! long-running operation that is done after `MockState::onboard_pending` unfinished
//! answers), `generateContent`, `streamGenerateContent?alt=sse` (every `data:` line a
//! `{"response": ...}` object), `countTokens`, `listExperiments`, `retrieveUserQuota`. Code
//! Assist wants a Bearer token (issued tokens are accepted) and answers errors in Google's
//! `{"error": {"code", "message", "status"}}`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use salvo::http::HeaderValue;
use salvo::prelude::*;
use serde_json::{Value, json};

use super::gemini::{answer, count, gemini_error, stream_chunks};
use super::oauth::{accept_issued, oauth_error, pkce_code_ok, token_request};
use super::stream::sse_body;
use super::{MockState, check_and_record, directives, form, request_id, take_scripted};
use crate::providers::codeassist::oauth as google;

/// The project the mock's onboarding creates.
pub const MOCK_PROJECT: &str = "mock-project-1";

pub fn routes(state: &Arc<MockState>) -> Router {
    Router::new()
        .push(Router::with_path("token").post(Token(state.clone())))
        .push(Router::with_path("{target}").post(CodeAssist(state.clone())))
}

struct Token(Arc<MockState>);

#[salvo::async_trait]
impl Handler for Token {
    async fn handle(
        &self,
        req: &mut Request,
        _d: &mut Depot,
        res: &mut Response,
        _c: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let body = token_request(state, req).await;
        let f = form(&body);
        let s = |k: &str| super::form_field(&f, k);
        if s("client_id") != google::CLIENT_ID || s("client_secret") != google::CLIENT_SECRET {
            return oauth_error(
                res,
                401,
                "invalid_client",
                "The OAuth client was not found.",
            );
        }
        let n = request_id(state);
        let authorization_code = match s("grant_type") {
            "authorization_code" => {
                if s("redirect_uri") != google::REDIRECT_URI
                    || !pkce_code_ok(s("code"), s("code_verifier"))
                {
                    return oauth_error(res, 400, "invalid_grant", "Malformed auth code.");
                }
                true
            }
            "refresh_token" => {
                if state.oauth_fail_refresh.load(Ordering::Relaxed)
                    || !s("refresh_token").starts_with("1//mock-")
                {
                    return oauth_error(
                        res,
                        400,
                        "invalid_grant",
                        "Token has been expired or revoked.",
                    );
                }
                false
            }
            _ => return oauth_error(res, 400, "unsupported_grant_type", "Invalid grant_type."),
        };
        let access = format!("ya29.mock-{n}");
        accept_issued(state, &access);
        let mut out = json!({
            "access_token": access,
            "expires_in": state.oauth_expires_in.load(Ordering::Relaxed),
            "scope": google::SCOPES,
            "token_type": "Bearer",
        });
        // Google sends a refresh token with the first grant only.
        if authorization_code {
            out["refresh_token"] = json!(format!("1//mock-{n}"));
        }
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        let _ = res.write_body(out.to_string());
    }
}

struct CodeAssist(Arc<MockState>);

#[salvo::async_trait]
impl Handler for CodeAssist {
    async fn handle(
        &self,
        req: &mut Request,
        _d: &mut Depot,
        res: &mut Response,
        _c: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let target = req.param::<String>("target").unwrap_or_default();
        let Some(method) = target.strip_prefix("v1internal:").map(str::to_owned) else {
            return gemini_error(res, 404, "Not found.");
        };
        let body = req
            .payload_with_max_size(256 * 1024 * 1024)
            .await
            .cloned()
            .unwrap_or_default();
        if !check_and_record(state, req, &body, res, gemini_error) {
            return;
        }
        let bearer = super::bearer(req).unwrap_or("").to_owned();
        if bearer.is_empty() {
            return gemini_error(
                res,
                401,
                "Request is missing required authentication credential. Expected OAuth 2 access token.",
            );
        }
        if let Some(s) = take_scripted(state, &bearer) {
            return gemini_error(res, s.status, &s.message);
        }
        let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(&body) else {
            return gemini_error(res, 400, "Invalid JSON payload received.");
        };
        let d = directives(&body);
        if let Some(s) = d.status.filter(|s| *s >= 400) {
            return gemini_error(res, s, "Mock upstream error");
        }
        let ok = |res: &mut Response, v: Value| {
            res.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            let _ = res.write_body(v.to_string());
        };
        let generation = matches!(method.as_str(), "generateContent" | "streamGenerateContent");
        let request = v.get("request").and_then(Value::as_object);
        if generation
            && (v
                .get("project")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
                || request.and_then(|r| r.get("contents")).is_none())
        {
            return gemini_error(
                res,
                400,
                "Invalid project or request: a Code Assist request is {model, project, request: {contents}}.",
            );
        }
        let model = v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("gemini-2.5-flash")
            .to_owned();
        let u = d.usage_or_size(&body);
        match method.as_str() {
            "loadCodeAssist" => {
                let tier = json!({"id": "free-tier", "name": "Gemini Code Assist for individuals", "isDefault": true,
                    "userDefinedCloudaicompanionProject": false});
                let asked = v.get("cloudaicompanionProject").and_then(Value::as_str);
                let onboarded = state.onboarded.load(Ordering::Relaxed);
                let mut out = json!({"allowedTiers": [tier]});
                if let Some(p) = asked.or(onboarded.then_some(MOCK_PROJECT)) {
                    out["currentTier"] = tier;
                    out["cloudaicompanionProject"] = json!(p);
                }
                ok(res, out)
            }
            "onboardUser" => {
                if v.get("tierId")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    return gemini_error(res, 400, "tierId is required.");
                }
                let pending = state.onboard_pending.load(Ordering::Relaxed);
                if pending > 0 {
                    state.onboard_pending.store(pending - 1, Ordering::Relaxed);
                    return ok(
                        res,
                        json!({"name": "operations/onboard-mock", "done": false}),
                    );
                }
                state.onboarded.store(true, Ordering::Relaxed);
                ok(
                    res,
                    json!({"name": "operations/onboard-mock", "done": true, "response": {
                    "@type": "type.googleapis.com/google.internal.cloud.code.v1internal.OnboardUserResponse",
                    "cloudaicompanionProject": {"id": MOCK_PROJECT, "name": MOCK_PROJECT}}}),
                )
            }
            "countTokens" => ok(res, count(&u)),
            "listExperiments" => ok(res, json!({"experimentIds": [], "flags": []})),
            "retrieveUserQuota" => ok(
                res,
                json!({"buckets": [{"modelId": "gemini-2.5-pro", "tokenType": "REQUESTS",
                "remainingFraction": 1.0, "resetTime": (chrono::Utc::now() + chrono::Duration::hours(24)).to_rfc3339()}]}),
            ),
            "generateContent" => {
                state.served.lock().push(u);
                ok(
                    res,
                    json!({"response": answer(&model, &u), "traceId": request_id(state)}),
                )
            }
            "streamGenerateContent" => {
                let trace = request_id(state);
                let events = stream_chunks(&model, &u, &d)
                    .into_iter()
                    .map(|c| {
                        Bytes::from(format!(
                            "data: {}\r\n\r\n",
                            json!({"response": c, "traceId": trace})
                        ))
                    })
                    .collect();
                if !d.cut {
                    state.served.lock().push(u);
                }
                sse_body(state, res, events, &d, "text/event-stream");
            }
            _ => gemini_error(res, 404, "Method not found."),
        }
    }
}
