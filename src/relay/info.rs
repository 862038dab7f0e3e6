//! Informational client routes: health, models, key info, usage, me.

use std::sync::Arc;

use chrono::Utc;
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::json;

use crate::limits::KeyEntry;
use crate::state::state;
use crate::usage::query::{UsageTotals, key_usage};
use crate::web::blocking;
use crate::web::json;

/// Models listed to clients. The shape satisfies both the Anthropic SDK (`type`,
/// `display_name`, `created_at`, `has_more`) and OpenAI-style readers (`object`, `owned_by`).
const MODELS: &[(&str, &str, &str)] = &[
    (
        "claude-opus-4-1-20250805",
        "Claude Opus 4.1",
        "2025-08-05T00:00:00Z",
    ),
    (
        "claude-opus-4-20250514",
        "Claude Opus 4",
        "2025-05-14T00:00:00Z",
    ),
    (
        "claude-sonnet-4-5-20250929",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
    ),
    (
        "claude-sonnet-4-20250514",
        "Claude Sonnet 4",
        "2025-05-14T00:00:00Z",
    ),
    (
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-01T00:00:00Z",
    ),
    (
        "claude-3-5-haiku-20241022",
        "Claude Haiku 3.5",
        "2024-10-22T00:00:00Z",
    ),
];

#[handler]
pub async fn health(depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let st2 = st.clone();
    let store_ok = blocking(move || Ok(st2.store.ping()))
        .await
        .unwrap_or(false);
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        res,
        status,
        &json!({
            "status": if store_ok { "healthy" } else { "unhealthy" },
            "service": "crs",
            "version": env!("CARGO_PKG_VERSION"),
            "timestamp": Utc::now(),
            "uptime": st.started_at.elapsed().as_secs_f64(),
            "components": {
                "store": {"status": if store_ok { "healthy" } else { "unhealthy" }},
                "accounts": {"total": st.accounts.load().accounts.len()},
            }
        }),
    );
}

/// Claude Code posts telemetry here; accept and drop it.
#[handler]
pub async fn event_logging(res: &mut Response) {
    json(res, StatusCode::OK, &json!({"success": true}));
}

fn model_json(id: &str, name: &str, created: &str) -> serde_json::Value {
    let ts = chrono::DateTime::parse_from_rfc3339(created)
        .map(|d| d.timestamp())
        .unwrap_or(0);
    json!({"id": id, "type": "model", "object": "model", "display_name": name, "created_at": created, "created": ts, "owned_by": "anthropic"})
}

/// The listed models the key may use (its model restriction applied).
fn models_for(
    key: &KeyEntry,
) -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)> + '_ {
    let k = &key.rec;
    MODELS.iter().filter(move |(id, _, _)| {
        !(k.enable_model_restriction
            && crate::limits::models::refused(id, &k.restricted_models, k.model_restriction_mode))
    })
}

#[handler]
pub async fn models(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let key = match st.authenticate(req) {
        Ok(k) => k,
        Err(e) => return e.write(res),
    };
    let data: Vec<_> = models_for(&key)
        .map(|(id, name, created)| model_json(id, name, created))
        .collect();
    let first = data.first().map(|m| m["id"].clone());
    let last = data.last().map(|m| m["id"].clone());
    json(
        res,
        StatusCode::OK,
        &json!({"object": "list", "data": data, "has_more": false, "first_id": first, "last_id": last}),
    );
}

/// One model (`GET .../models/{model}`), if it is listed and the key may use it.
#[handler]
pub async fn model(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let key = match st.authenticate(req) {
        Ok(k) => k,
        Err(e) => return e.write(res),
    };
    let wanted = req.param::<String>("model").unwrap_or_default();
    match models_for(&key).find(|(id, _, _)| *id == wanted) {
        Some((id, name, created)) => json(res, StatusCode::OK, &model_json(id, name, created)),
        None => crate::web::raw_json(
            res,
            StatusCode::NOT_FOUND,
            crate::providers::error_body(
                crate::limits::ClientFormat::OpenAI,
                404,
                "invalid_request_error",
                &format!("The model '{wanted}' does not exist or this key may not use it"),
            ),
        ),
    }
}

/// The calling key and its usage totals (after a ledger flush), or the error reply written.
async fn key_with_usage(
    req: &Request,
    depot: &Depot,
    res: &mut Response,
    what: &str,
) -> Option<(Arc<KeyEntry>, UsageTotals)> {
    let st = state(depot);
    let key = match st.authenticate(req) {
        Ok(k) => k,
        Err(e) => {
            e.write(res);
            return None;
        }
    };
    st.ledger.flush().await;
    let id = key.rec.id.clone();
    match blocking(move || key_usage(&st.store, &st.clock, &id)).await {
        Ok(u) => Some((key, u)),
        Err(e) => {
            crate::web::internal_error(res, what, e);
            None
        }
    }
}

#[handler]
pub async fn key_info(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let Some((key, u)) = key_with_usage(req, depot, res, "Failed to get key info").await else {
        return;
    };
    json(
        res,
        StatusCode::OK,
        &json!({
            "keyInfo": {"id": key.rec.id, "name": key.rec.name, "tokenLimit": key.rec.token_limit, "usage": u.to_json()},
            "timestamp": Utc::now(),
        }),
    );
}

#[handler]
pub async fn usage(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let Some((key, u)) = key_with_usage(req, depot, res, "Failed to get usage stats").await else {
        return;
    };
    json(
        res,
        StatusCode::OK,
        &json!({
            "usage": u.to_json(),
            "limits": {"tokens": key.rec.token_limit, "requests": key.rec.rate_limit_requests},
            "timestamp": Utc::now(),
        }),
    );
}

#[handler]
pub async fn me(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let key = match st.authenticate(req) {
        Ok(k) => k,
        Err(e) => return e.write(res),
    };
    let name = if key.rec.name.is_empty() {
        "API User".to_owned()
    } else {
        key.rec.name.clone()
    };
    json(
        res,
        StatusCode::OK,
        &json!({"id": format!("user_{}", key.rec.id), "type": "user", "display_name": name, "created_at": key.rec.created_at}),
    );
}
