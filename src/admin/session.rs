//! Admin sessions over HTTP: the `/admin/*` guard, login, logout, password change and the
//! current user (`/web/auth/*`). Tokens and password checks are `auth::admin`'s, login
//! throttling `auth::login`'s.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use salvo::http::{HeaderValue, StatusCode, header};
use salvo::prelude::*;
use serde::Deserialize;

use crate::auth::admin::{AdminUser, admin_token, issue_token, revoke_token, verify_token};
use crate::auth::login::{Attempt, GateError};
use crate::crypto::{hash_password, verify_password};
use crate::model::Admin;
use crate::state::{AppState, state};
use crate::store::Table;
use crate::web::{blocking, json, json_body, v1_error};

fn verify(st: &AppState, token: &str) -> Option<Admin> {
    verify_token(&st.store, &st.secrets.session_key, token)
}

/// Guards `/admin/*`.
pub struct AdminAuth;

#[salvo::async_trait]
impl Handler for AdminAuth {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let st = state(depot);
        if admin_token(req).is_none() {
            v1_error(
                res,
                StatusCode::UNAUTHORIZED,
                "Missing admin token",
                "Please provide an admin token",
            );
            ctrl.skip_rest();
            return;
        }
        match admin_of(&st, req).await {
            Some(name) => {
                depot.insert_typed(AdminUser(name));
                ctrl.call_next(req, depot, res).await;
            }
            None => {
                v1_error(
                    res,
                    StatusCode::UNAUTHORIZED,
                    "Invalid admin token",
                    "Invalid or expired admin session",
                );
                ctrl.skip_rest();
            }
        }
    }
}

/// The admin a request's token belongs to: a valid session, or the operator token of the run
/// file (`operator`).
pub async fn admin_of(st: &Arc<AppState>, req: &Request) -> Option<String> {
    let token = admin_token(req)?;
    if crate::crypto::constant_time_eq(token.as_bytes(), st.operator_token.as_bytes()) {
        return Some("operator".into());
    }
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || verify(&st2, &token))
        .await
        .ok()
        .flatten()
        .map(|a| a.username)
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// The client's address: the TCP peer, or with `trust_proxy` (crs behind a reverse proxy) the
/// last `X-Forwarded-For` entry, the one the proxy appended.
fn client_ip(req: &Request, trust_proxy: bool) -> IpAddr {
    let peer = req
        .remote_addr()
        .ip()
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if !trust_proxy {
        return peer;
    }
    req.headers()
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|s| {
            let s = s.trim();
            s.parse::<IpAddr>()
                .ok()
                .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        })
        .unwrap_or(peer)
}

/// A client-given user name as it goes into the log: at most 64 characters, control
/// characters replaced.
fn log_name(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn retry_after(res: &mut Response, wait: Duration) {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
}

/// `POST /web/auth/login`. Throttled per client address and user name (`auth::login`); every
/// attempt is logged with both, never with the password.
#[handler]
pub async fn login(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let client = client_ip(req, st.config.trust_proxy);
    let Some(body) = json_body::<LoginBody>(req, res, 64 * 1024).await else {
        tracing::warn!(client = %client, reason = "bad request", "admin login failed");
        return;
    };
    let username = log_name(&body.username);
    if body.username.is_empty() || body.password.is_empty() {
        tracing::warn!(username = %username, client = %client, reason = "missing credentials", "admin login failed");
        v1_error(
            res,
            StatusCode::BAD_REQUEST,
            "Missing credentials",
            "Username and password are required",
        );
        return;
    }
    let attempt = st
        .logins
        .attempt(st.store.clone(), client, body.username, body.password)
        .await;
    let (reason, locked) = match attempt {
        Ok(Attempt::Valid(admin)) => {
            match issue_token(
                &st.secrets.session_key,
                st.config.admin_session.as_secs(),
                &admin,
            ) {
                Ok(token) => {
                    tracing::info!(username = %admin.username, client = %client, "admin logged in");
                    json(
                        res,
                        StatusCode::OK,
                        &serde_json::json!({
                            "success": true,
                            "token": token,
                            "expiresIn": st.config.admin_session.as_millis() as u64,
                            "username": admin.username,
                        }),
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, username = %admin.username, client = %client, "issuing admin token failed");
                    v1_error(
                        res,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Login failed",
                        "Internal server error",
                    );
                }
            }
            return;
        }
        Ok(Attempt::UnknownUser { locked }) => ("unknown user", locked),
        Ok(Attempt::WrongPassword { locked }) => ("wrong password", locked),
        Ok(Attempt::Throttled(wait)) => {
            tracing::warn!(
                username = %username,
                client = %client,
                reason = "throttled",
                retry_after_secs = wait.as_secs_f64().ceil() as u64,
                "admin login failed"
            );
            // v1's answer when its login rate limiter trips (src/routes/web.js).
            retry_after(res, wait);
            v1_error(
                res,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "Too many admin login attempts. Please try again later.",
            );
            return;
        }
        Ok(Attempt::Busy) => {
            tracing::warn!(username = %username, client = %client, reason = "busy", "admin login failed");
            retry_after(res, Duration::from_secs(1));
            v1_error(
                res,
                StatusCode::SERVICE_UNAVAILABLE,
                "Service busy",
                "Too many sign-in attempts are being checked. Please try again in a moment.",
            );
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, username = %username, client = %client, "admin login failed on the store");
            v1_error(
                res,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Login failed",
                "Internal server error",
            );
            return;
        }
    };
    match locked {
        Some(lock) => tracing::warn!(
            username = %username,
            client = %client,
            reason,
            locked_secs = lock.as_secs_f64().ceil() as u64,
            "admin login failed"
        ),
        None => {
            tracing::warn!(username = %username, client = %client, reason, "admin login failed")
        }
    }
    v1_error(
        res,
        StatusCode::UNAUTHORIZED,
        "Invalid credentials",
        "Invalid username or password",
    );
}

/// `POST /web/auth/logout` (v1's route and answer): ends the presented session for good, also
/// across restarts. Answers success without a valid token too, as v1 does.
#[handler]
pub async fn logout(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let client = client_ip(req, st.config.trust_proxy);
    if let Some(token) = admin_token(req) {
        let st2 = st.clone();
        match blocking(move || revoke_token(&st2.store, &st2.secrets.session_key, &token)).await {
            Ok(Some(username)) => {
                tracing::info!(username = %username, client = %client, "admin logged out")
            }
            Ok(None) => {
                tracing::debug!(client = %client, "logout with a token that is not a live session")
            }
            Err(e) => {
                tracing::error!(error = %e, client = %client, "admin logout failed on the store");
                v1_error(
                    res,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Logout failed",
                    "Internal server error",
                );
                return;
            }
        }
    }
    json(
        res,
        StatusCode::OK,
        &serde_json::json!({"success": true, "message": "Logout successful"}),
    );
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangePassword {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

/// `POST /web/auth/change-password`: needs a valid session; ends every session on success.
#[handler]
pub async fn change_password(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(token) = admin_token(req) else {
        v1_error(
            res,
            StatusCode::UNAUTHORIZED,
            "No token provided",
            "Authentication required",
        );
        return;
    };
    let Some(body) = json_body::<ChangePassword>(req, res, 64 * 1024).await else {
        return;
    };
    if body.current_password.is_empty() || body.new_password.is_empty() {
        v1_error(
            res,
            StatusCode::BAD_REQUEST,
            "Missing required fields",
            "Current password and new password are required",
        );
        return;
    }
    if body.new_password.chars().count() < 8 {
        v1_error(
            res,
            StatusCode::BAD_REQUEST,
            "Password too short",
            "New password must be at least 8 characters long",
        );
        return;
    }
    let st2: Arc<AppState> = st.clone();
    let r = st
        .logins
        .hash_work(move || -> Result<Result<String, &'static str>> {
            let Some(mut admin) = verify(&st2, &token) else {
                return Ok(Err("session"));
            };
            if !verify_password(&body.current_password, &admin.password_hash) {
                return Ok(Err("password"));
            }
            admin.password_hash = hash_password(&body.new_password);
            admin.token_version = admin.token_version.wrapping_add(1);
            admin.updated_at = Some(Utc::now());
            st2.store.put(Table::Admins, &admin.username, &admin)?;
            Ok(Ok(admin.username))
        })
        .await;
    match r {
        Ok(Ok(Ok(username))) => {
            tracing::info!(username = %username, "admin password changed");
            json(
                res,
                StatusCode::OK,
                &serde_json::json!({"success": true, "message": "Password changed successfully. Please login again.", "newUsername": username}),
            );
        }
        Ok(Ok(Err("password"))) => v1_error(
            res,
            StatusCode::UNAUTHORIZED,
            "Invalid current password",
            "Current password is incorrect",
        ),
        Ok(Ok(Err(_))) => v1_error(
            res,
            StatusCode::UNAUTHORIZED,
            "Invalid token",
            "Session expired or invalid",
        ),
        Err(GateError::Busy) => {
            retry_after(res, Duration::from_secs(1));
            v1_error(
                res,
                StatusCode::SERVICE_UNAVAILABLE,
                "Service busy",
                "Too many password checks are running. Please try again in a moment.",
            );
        }
        _ => v1_error(
            res,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Change password failed",
            "Internal server error",
        ),
    }
}

/// `GET /web/auth/user`.
#[handler]
pub async fn current_user(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(token) = admin_token(req) else {
        v1_error(
            res,
            StatusCode::UNAUTHORIZED,
            "No token provided",
            "Authentication required",
        );
        return;
    };
    let admin = tokio::task::spawn_blocking(move || verify(&st, &token))
        .await
        .ok()
        .flatten();
    match admin {
        Some(a) => json(
            res,
            StatusCode::OK,
            &serde_json::json!({"success": true, "user": {"username": a.username, "lastLoginAt": a.last_login_at}}),
        ),
        None => v1_error(
            res,
            StatusCode::UNAUTHORIZED,
            "Invalid token",
            "Session expired or invalid",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, forwarded: &[&str]) -> Request {
        let mut req = Request::new();
        *req.remote_addr_mut() = peer.parse::<SocketAddr>().unwrap().into();
        for f in forwarded {
            req.headers_mut()
                .append("x-forwarded-for", HeaderValue::from_str(f).unwrap());
        }
        req
    }

    #[test]
    fn the_client_address_is_the_peer_unless_a_proxy_is_trusted() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let req = request("10.0.0.9:4000", &["203.0.113.7"]);
        assert_eq!(client_ip(&req, false), ip("10.0.0.9"));
        assert_eq!(client_ip(&req, true), ip("203.0.113.7"));
        // The proxy appends what it saw: the last entry counts, not what the client wrote.
        let req = request(
            "10.0.0.9:4000",
            &["1.1.1.1, 198.51.100.2", "203.0.113.7:5555"],
        );
        assert_eq!(client_ip(&req, true), ip("203.0.113.7"));
        let req = request("[2001:db8::1]:4000", &["1.1.1.1, [2001:db8::7]:80"]);
        assert_eq!(client_ip(&req, true), ip("2001:db8::7"));
        // Nothing usable: the peer.
        for bad in [&["not an address"][..], &[]] {
            let req = request("10.0.0.9:4000", bad);
            assert_eq!(client_ip(&req, true), ip("10.0.0.9"));
        }
    }

    #[test]
    fn user_names_are_bounded_and_control_free_in_the_log() {
        assert_eq!(log_name("root"), "root");
        assert_eq!(log_name("a\nb\u{1b}[31m"), "a?b?[31m");
        assert_eq!(log_name(&"x".repeat(10_000)).chars().count(), 64);
    }
}
