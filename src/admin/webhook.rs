//! `/admin/webhook/*` with v1's paths and shapes: the configuration, platforms (add, update,
//! delete, toggle), a test of one platform and a test notification to all.

use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::{Value, json};

use crate::notify::{self, Notice, Platform, WebhookConfig};
use crate::state::{AppState, state};
use crate::web::{blocking, json, json_body, v1_error};

const MAX_BODY: usize = 256 * 1024;

pub fn router() -> Router {
    Router::with_path("webhook")
        .push(
            Router::with_path("config")
                .get(get_config)
                .post(save_config),
        )
        .push(
            Router::with_path("platforms").post(add_platform).push(
                Router::with_path("{id}")
                    .put(update_platform)
                    .delete(delete_platform)
                    .push(Router::with_path("toggle").post(toggle_platform)),
            ),
        )
        .push(Router::with_path("test").post(test_platform))
        .push(Router::with_path("test-notification").post(test_notification))
}

/// Reads the configuration (for `blocking`).
fn load_config(
    st: &std::sync::Arc<AppState>,
) -> impl FnOnce() -> anyhow::Result<WebhookConfig> + Send + 'static {
    let (store, secrets) = (st.store.clone(), st.secrets.clone());
    move || notify::load(&store, &secrets)
}

fn failed(res: &mut Response, status: StatusCode, message: &str) {
    v1_error(res, status, "Webhook request failed", message);
}

/// Read the configuration, let `f` change it (an `Err` is a 400 with its message, `Ok(None)` a
/// 404), validate and store it, under the admin lock. Returns `f`'s value.
async fn modify<T: Send + 'static>(
    st: &std::sync::Arc<AppState>,
    res: &mut Response,
    f: impl FnOnce(&mut WebhookConfig) -> Result<Option<T>, String> + Send + 'static,
) -> Option<T> {
    let _g = st.admin_lock.lock().await;
    let (store, secrets) = (st.store.clone(), st.secrets.clone());
    let r = blocking(move || {
        let mut c = notify::load(&store, &secrets)?;
        let out = match f(&mut c) {
            Ok(Some(v)) => v,
            other => return Ok(other.map(|_| None)),
        };
        if let Some(e) = c.platforms.iter().find_map(|p| notify::validate(p).err()) {
            return Ok(Err(e));
        }
        notify::save(&store, &secrets, &mut c)?;
        Ok(Ok(Some(out)))
    })
    .await;
    match r {
        Ok(Ok(Some(v))) => Some(v),
        Ok(Ok(None)) => {
            failed(res, StatusCode::NOT_FOUND, "webhook platform not found");
            None
        }
        Ok(Err(e)) => {
            failed(res, StatusCode::BAD_REQUEST, &e);
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "saving the webhook configuration failed");
            failed(
                res,
                StatusCode::INTERNAL_SERVER_ERROR,
                "saving the webhook configuration failed",
            );
            None
        }
    }
}

#[handler]
async fn get_config(depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    match blocking(load_config(&st)).await {
        Ok(c) => json(res, StatusCode::OK, &json!({"success": true, "config": c})),
        Err(e) => {
            tracing::error!(error = %e, "reading the webhook configuration failed");
            failed(
                res,
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the webhook configuration failed",
            )
        }
    }
}

#[handler]
async fn save_config(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(mut new) = json_body::<WebhookConfig>(req, res, MAX_BODY).await else {
        return;
    };
    for p in &mut new.platforms {
        if p.id.is_empty() {
            p.id = uuid::Uuid::new_v4().to_string();
        }
    }
    if modify(&st, res, move |c| {
        let created = c.created_at;
        *c = new;
        c.created_at = created;
        Ok(Some(()))
    })
    .await
    .is_some()
    {
        let c = blocking(load_config(&st)).await.unwrap_or_default();
        json(
            res,
            StatusCode::OK,
            &json!({"success": true, "message": "Webhook configuration saved", "config": c}),
        );
    }
}

#[handler]
async fn add_platform(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(body) = json_body::<Value>(req, res, MAX_BODY).await else {
        return;
    };
    let mut p: Platform = match serde_json::from_value(body.clone()) {
        Ok(p) => p,
        Err(e) => return failed(res, StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if p.id.is_empty() {
        p.id = uuid::Uuid::new_v4().to_string();
    }
    p.enabled = body.get("enabled") != Some(&Value::Bool(false));
    p.created_at = Some(chrono::Utc::now());
    if let Some(p) = modify(&st, res, move |c| {
        c.platforms.push(p.clone());
        Ok(Some(p))
    })
    .await
    {
        tracing::info!(platform = %p.kind, id = %p.id, "webhook platform added");
        json(
            res,
            StatusCode::OK,
            &json!({"success": true, "message": "Webhook platform added", "platform": p}),
        );
    }
}

#[handler]
async fn update_platform(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let Some(Value::Object(updates)) = json_body::<Value>(req, res, MAX_BODY).await else {
        return failed(res, StatusCode::BAD_REQUEST, "expected a JSON object");
    };
    if let Some(p) = modify(&st, res, move |c| {
        let Some(p) = c.platforms.iter_mut().find(|p| p.id == id) else {
            return Ok(None);
        };
        let mut v = serde_json::to_value(&*p).map_err(|e| e.to_string())?;
        for (k, val) in updates {
            if k != "id" {
                v[k] = val;
            }
        }
        *p = serde_json::from_value(v).map_err(|e| e.to_string())?;
        p.updated_at = Some(chrono::Utc::now());
        Ok(Some(p.clone()))
    })
    .await
    {
        json(
            res,
            StatusCode::OK,
            &json!({"success": true, "message": "Webhook platform updated", "platform": p}),
        );
    }
}

#[handler]
async fn delete_platform(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    if modify(&st, res, move |c| {
        c.platforms.retain(|p| p.id != id);
        Ok(Some(()))
    })
    .await
    .is_some()
    {
        json(
            res,
            StatusCode::OK,
            &json!({"success": true, "message": "Webhook platform deleted"}),
        );
    }
}

#[handler]
async fn toggle_platform(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    if let Some(p) = modify(&st, res, move |c| {
        let Some(p) = c.platforms.iter_mut().find(|p| p.id == id) else {
            return Ok(None);
        };
        p.enabled = !p.enabled;
        p.updated_at = Some(chrono::Utc::now());
        Ok(Some(p.clone()))
    })
    .await
    {
        let state = if p.enabled { "enabled" } else { "disabled" };
        json(
            res,
            StatusCode::OK,
            &json!({"success": true, "message": format!("Webhook platform {state}"), "platform": p}),
        );
    }
}

fn test_notice(kind: &str) -> Notice {
    Notice::new(
        kind,
        "crs: test notification",
        "This is a test notification from crs: webhook notifications work.",
    )
}

/// `POST /admin/webhook/test`: send a test message to the platform in the body (not stored),
/// once, without retries.
#[handler]
async fn test_platform(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let _ = state(depot);
    let Some(mut p) = json_body::<Platform>(req, res, MAX_BODY).await else {
        return;
    };
    if p.kind.is_empty() {
        p.kind = "custom".into();
    }
    if let Err(e) = notify::validate(&p) {
        return failed(res, StatusCode::BAD_REQUEST, &e);
    }
    let retry = notify::RetrySettings {
        max_retries: 0,
        ..Default::default()
    };
    match notify::deliver(&notify::client(), &p, &test_notice("test"), &retry).await {
        Ok(()) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "message": "Webhook test succeeded"}),
        ),
        Err(e) => json(
            res,
            StatusCode::BAD_REQUEST,
            &json!({"success": false, "message": "Webhook test failed", "error": e}),
        ),
    }
}

/// `POST /admin/webhook/test-notification`: a test notice to every enabled platform.
#[handler]
async fn test_notification(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let body = json_body::<Value>(req, res, MAX_BODY)
        .await
        .unwrap_or(Value::Null);
    let kind = body["type"].as_str().unwrap_or("test").to_owned();
    let c = match blocking(load_config(&st)).await {
        Ok(c) => c,
        Err(_) => {
            return failed(
                res,
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the webhook configuration failed",
            );
        }
    };
    if !c.enabled {
        return json(
            res,
            StatusCode::BAD_REQUEST,
            &json!({"success": false, "message": "Webhook notifications are disabled; enable them first"}),
        );
    }
    let enabled = c.platforms.iter().filter(|p| p.enabled).count();
    if enabled == 0 {
        return json(
            res,
            StatusCode::BAD_REQUEST,
            &json!({"success": false, "message": "No enabled webhook platform; add and enable one first"}),
        );
    }
    let n = test_notice(&kind);
    let data = n.json();
    let (ok, errors) = notify::send_all(&notify::client(), &c, &n).await;
    let result = json!({"succeeded": ok, "failed": errors.len(), "errors": errors});
    if ok == 0 && errors.is_empty() {
        return json(
            res,
            StatusCode::BAD_REQUEST,
            &json!({"success": false, "message": format!("Notification type {kind:?} is turned off"), "result": result}),
        );
    }
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "message": format!("Test notification sent to {ok} of {enabled} platform(s)"), "data": data, "result": result}),
    );
}
