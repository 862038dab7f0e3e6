//! Admin sessions over HTTP: the `/admin/*` guard, login, password change and the current
//! user (`/web/auth/*`). Tokens and password checks are `auth::admin`'s.

use std::sync::Arc;

use anyhow::Result;
use chrono::Utc;
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde::Deserialize;

use crate::auth::admin::{AdminUser, DUMMY_HASH, admin_token, issue_token, verify_token};
use crate::crypto::{hash_password, verify_password};
use crate::model::Admin;
use crate::state::{AppState, state};
use crate::store::Table;
use crate::web::{json, json_body, v1_error};

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
        let Some(token) = admin_token(req) else {
            v1_error(
                res,
                StatusCode::UNAUTHORIZED,
                "Missing admin token",
                "Please provide an admin token",
            );
            ctrl.skip_rest();
            return;
        };
        let st2 = st.clone();
        let admin = tokio::task::spawn_blocking(move || verify(&st2, &token))
            .await
            .ok()
            .flatten();
        match admin {
            Some(a) => {
                depot.insert_typed(AdminUser(a.username));
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

#[derive(Deserialize)]
struct LoginBody {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[handler]
pub async fn login(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(body) = json_body::<LoginBody>(req, res, 64 * 1024).await else {
        return;
    };
    if body.username.is_empty() || body.password.is_empty() {
        v1_error(
            res,
            StatusCode::BAD_REQUEST,
            "Missing credentials",
            "Username and password are required",
        );
        return;
    }
    let st2 = st.clone();
    let outcome = tokio::task::spawn_blocking(move || -> Result<Option<Admin>> {
        let Some(mut admin) = st2.store.get::<Admin>(Table::Admins, &body.username)? else {
            // Spend the same time as a real check so usernames cannot be probed by timing.
            let _ = verify_password(&body.password, DUMMY_HASH);
            return Ok(None);
        };
        if !verify_password(&body.password, &admin.password_hash) {
            return Ok(None);
        }
        if crate::crypto::is_bcrypt(&admin.password_hash) {
            // An imported v1 hash: accepted once, replaced by argon2 now.
            admin.password_hash = hash_password(&body.password);
            tracing::info!(username = %admin.username, "imported v1 admin password rehashed with argon2");
        }
        admin.last_login_at = Some(Utc::now());
        st2.store.put(Table::Admins, &admin.username, &admin)?;
        Ok(Some(admin))
    })
    .await;
    match outcome {
        Ok(Ok(Some(admin))) => match issue_token(
            &st.secrets.session_key,
            st.config.admin_session.as_secs(),
            &admin,
        ) {
            Ok(token) => {
                tracing::info!(username = %admin.username, "admin logged in");
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
                tracing::error!(error = %e, "issuing admin token failed");
                v1_error(
                    res,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Login failed",
                    "Internal server error",
                );
            }
        },
        Ok(Ok(None)) => {
            tracing::warn!("admin login failed");
            v1_error(
                res,
                StatusCode::UNAUTHORIZED,
                "Invalid credentials",
                "Invalid username or password",
            );
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "admin login failed on the store");
            v1_error(
                res,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Login failed",
                "Internal server error",
            );
        }
        Err(_) => v1_error(
            res,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login failed",
            "Internal server error",
        ),
    }
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
    let r = tokio::task::spawn_blocking(move || -> Result<Result<String, &'static str>> {
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
