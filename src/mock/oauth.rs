//! Anthropic's OAuth endpoints in the mock: the token endpoint (authorization-code with PKCE,
//! and refresh-token grants; issued access tokens are accepted by the mock's Messages API) and
//! the subscription usage endpoint `GET /api/oauth/usage`; WorkOS's refresh grant for Droid.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use salvo::http::{HeaderValue, StatusCode};
use salvo::prelude::*;
use serde_json::json;

use super::{MockState, anthropic_error, check_and_record, request_id};

pub fn routes(state: &Arc<MockState>) -> Router {
    Router::new()
        .push(Router::with_path("v1/oauth/token").post(Token(state.clone())))
        .push(Router::with_path("api/oauth/usage").get(Usage(state.clone())))
        .push(Router::with_path("user_management/authenticate").post(WorkOs(state.clone(), false)))
        .push(
            Router::with_path("user_management/authorize/device").post(WorkOs(state.clone(), true)),
        )
}

/// The usage answer for a token nobody scripted: little used, windows resetting in 5 hours and
/// 7 days. The shape is the endpoint's (`accounts::windows` documents it): utilisation in
/// percent, RFC 3339 reset times, `null` for windows that do not apply.
pub fn default_usage(now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    let at = |h: i64| (now + chrono::Duration::hours(h)).to_rfc3339();
    json!({
        "five_hour": {"utilization": 3.0, "resets_at": at(5)},
        "seven_day": {"utilization": 1.0, "resets_at": at(24 * 7)},
        "seven_day_oauth_apps": null,
        "seven_day_opus": null,
        "seven_day_sonnet": {"utilization": 0.0, "resets_at": at(24 * 7)},
        "extra_usage": {"is_enabled": false, "monthly_limit": null, "used_credits": null, "utilization": null},
    })
}

/// `GET /api/oauth/usage`: a Bearer token the mock accepts and the OAuth beta flag, as the
/// real endpoint requires (v1 sends `anthropic-beta: oauth-2025-04-20` with it); refusals are
/// 401s in Anthropic's error format.
struct Usage(Arc<MockState>);

#[salvo::async_trait]
impl Handler for Usage {
    async fn handle(
        &self,
        req: &mut Request,
        _d: &mut Depot,
        res: &mut Response,
        _c: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let token = super::bearer(req).unwrap_or("").to_owned();
        if !check_and_record(state, req, &bytes::Bytes::new(), res, anthropic_error) {
            return;
        }
        let beta = req
            .headers()
            .get_all("anthropic-beta")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|f| f.trim() == "oauth-2025-04-20");
        // Anthropic's answer to a Bearer token without the OAuth beta flag, as reported in
        // anthropics/claude-code issues #5983 and #6131.
        if token.is_empty() || !beta {
            return anthropic_error(res, 401, "OAuth authentication is currently not supported.");
        }
        let forced = state.oauth_usage_forced.lock().clone();
        if let Some(f) = forced {
            return anthropic_error(res, f.status, &f.message);
        }
        let body = state
            .oauth_usage
            .lock()
            .get(&token)
            .cloned()
            .unwrap_or_else(|| default_usage(chrono::Utc::now()));
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        let rid = request_id(state);
        res.headers_mut()
            .insert("request-id", HeaderValue::from_str(&rid).expect("ascii"));
        let _ = res.write_body(body.to_string());
    }
}

/// A token request's grant as an OAuth server with PKCE checks it: an authorization code of
/// the form `code-<challenge>` is accepted only with the verifier that hashes to that
/// challenge and the client's redirect; a refresh token only when it looks like one the
/// server issued (`refresh_prefix`) and refreshes are not scripted to fail. Errors are
/// (error, description) as RFC 6749 names them.
pub(crate) fn check_grant(
    state: &MockState,
    get: impl Fn(&str) -> String,
    redirect_uri: &str,
    refresh_prefix: &str,
) -> Result<(), (&'static str, &'static str)> {
    match get("grant_type").as_str() {
        "authorization_code" => {
            if get("redirect_uri") != redirect_uri
                || !pkce_code_ok(&get("code"), &get("code_verifier"))
            {
                return Err(("invalid_grant", "Invalid authorization code or verifier"));
            }
        }
        "refresh_token" => {
            if state.oauth_fail_refresh.load(Ordering::Relaxed)
                || !get("refresh_token").starts_with(refresh_prefix)
            {
                return Err(("invalid_grant", "Refresh token is invalid or revoked"));
            }
        }
        _ => return Err(("unsupported_grant_type", "grant_type not supported")),
    }
    Ok(())
}

/// An OAuth error answer (RFC 6749 section 5.2).
pub(crate) fn oauth_error(res: &mut Response, status: u16, error: &str, desc: &str) {
    res.status_code(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST));
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    let _ = res.write_body(json!({"error": error, "error_description": desc}).to_string());
}

/// A token endpoint request's body, recorded (with its headers) in `seen`.
pub(crate) async fn token_request(state: &MockState, req: &mut Request) -> bytes::Bytes {
    let body = req
        .payload_with_max_size(1024 * 1024)
        .await
        .cloned()
        .unwrap_or_default();
    super::record(state, req, &body);
    body
}

/// Does the request carry a form (`application/x-www-form-urlencoded`)?
pub(crate) fn is_form(req: &Request) -> bool {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
}

/// The mock's authorisation codes are "code-<challenge>": good only with the verifier that
/// hashes to the challenge, as a real PKCE server checks.
pub(crate) fn pkce_code_ok(code: &str, verifier: &str) -> bool {
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
    code == format!("code-{challenge}")
}

/// An issued access token works on the mock's APIs (when they check credentials at all).
pub(crate) fn accept_issued(state: &MockState, access: &str) {
    let mut keys = state.accepted_keys.lock();
    if !keys.is_empty() {
        keys.push(access.to_owned());
    }
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
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return oauth_error(res, 400, "invalid_request", "body must be JSON");
        };
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
        if s("client_id") != crate::providers::anthropic::oauth::CLIENT_ID {
            return oauth_error(res, 401, "invalid_client", "unknown client");
        }
        let n = request_id(state);
        if let Err((error, desc)) = check_grant(
            state,
            |k| s(k).to_owned(),
            crate::providers::anthropic::oauth::REDIRECT_URI,
            "sk-ant-ort01-",
        ) {
            return oauth_error(res, 400, error, desc);
        }
        let access = format!("sk-ant-oat01-mock-{n}");
        let refresh = format!("sk-ant-ort01-mock-{n}");
        accept_issued(state, &access);
        let setup = v.get("expires_in").is_some();
        let mut out = json!({
            "token_type": "Bearer",
            "access_token": access,
            "expires_in": if setup { 31_536_000 } else { state.oauth_expires_in.load(Ordering::Relaxed) },
            "scope": if setup { "user:inference" } else { "user:inference user:profile" },
            "account": {"uuid": "00000000-0000-4000-8000-000000000001", "email_address": "mock@example.invalid"},
        });
        if !setup {
            out["refresh_token"] = json!(refresh);
        }
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        let _ = res.write_body(out.to_string());
    }
}

/// Refresh tokens the WorkOS mock accepts start with this (it issues them so too).
pub const WORKOS_REFRESH_PREFIX: &str = "workos-rt-";

/// WorkOS `POST /user_management/authenticate` with the refresh grant, as Factory's CLI (and
/// v1 droidAccountService.js `_refreshTokensWithWorkOS`) calls it: a form body with
/// `grant_type=refresh_token`, `refresh_token`, `client_id` and optionally `organization_id`.
/// The answer carries no lifetime (v1 assumes 8 hours); errors are OAuth error bodies. The
/// device-code grant of the authorisation flow is answered here too (`true`: the device
/// authorisation endpoint).
struct WorkOs(Arc<MockState>, bool);

#[salvo::async_trait]
impl Handler for WorkOs {
    async fn handle(
        &self,
        req: &mut Request,
        _d: &mut Depot,
        res: &mut Response,
        _c: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let body = token_request(state, req).await;
        if !is_form(req) {
            return oauth_error(res, 400, "invalid_request", "expected a form body");
        }
        let fields = super::form(&body);
        let field = |k: &str| -> String { super::form_field(&fields, k).to_owned() };
        if field("client_id") != crate::providers::droid::WORKOS_CLIENT_ID {
            return oauth_error(res, 401, "invalid_client", "Invalid client ID.");
        }
        if self.1 {
            return device_code(state, res);
        }
        if field("grant_type") == "urn:ietf:params:oauth:grant-type:device_code" {
            // Approved by the (imaginary) user after the first poll.
            let mut devices = state.workos_devices.lock();
            match devices.get_mut(&field("device_code")) {
                None => {
                    return oauth_error(res, 400, "expired_token", "The device code has expired.");
                }
                Some(n) if *n == 0 => {
                    *n += 1;
                    return oauth_error(
                        res,
                        400,
                        "authorization_pending",
                        "Authorization is pending.",
                    );
                }
                Some(_) => {}
            }
        } else if field("grant_type") != "refresh_token" {
            return oauth_error(
                res,
                400,
                "unsupported_grant_type",
                "grant_type not supported",
            );
        }
        if field("grant_type") == "refresh_token"
            && (state.oauth_fail_refresh.load(Ordering::Relaxed)
                || !field("refresh_token").starts_with(WORKOS_REFRESH_PREFIX))
        {
            return oauth_error(res, 400, "invalid_grant", "Session has already ended.");
        }
        let n = request_id(state);
        let access = format!("workos-at-mock-{n}");
        accept_issued(state, &access);
        let org = Some(field("organization_id"))
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| "org_01MOCK".into());
        let out = json!({
            "user": {"object": "user", "id": "user_01MOCK", "email": "droid@example.invalid", "first_name": "Mock", "last_name": "User"},
            "organization_id": org,
            "access_token": access,
            "refresh_token": format!("{WORKOS_REFRESH_PREFIX}mock-{n}"),
            "authentication_method": "GoogleOAuth",
        });
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        let _ = res.write_body(out.to_string());
    }
}

/// WorkOS `POST /user_management/authorize/device` (a form with `client_id`): a device code
/// and the user code to confirm, as v1's workosOAuthHelper.js reads them.
fn device_code(state: &MockState, res: &mut Response) {
    let n = request_id(state);
    let code = format!("device-{n}");
    state.workos_devices.lock().insert(code.clone(), 0);
    let out = json!({
        "device_code": code,
        "user_code": "MOCK-CODE",
        "verification_uri": "https://auth.factory.ai/device",
        "verification_uri_complete": "https://auth.factory.ai/device?user_code=MOCK-CODE",
        "expires_in": 300,
        "interval": 1,
    });
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    let _ = res.write_body(out.to_string());
}
