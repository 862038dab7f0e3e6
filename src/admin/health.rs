//! Account health in the admin API, at v1's paths: the usage windows of Claude OAuth accounts
//! (`GET /admin/claude-accounts/usage`, plus crs's on-demand
//! `POST /admin/claude-accounts/{id}/usage/refresh`), and account tests for every account type
//! (`{id}/test-sync`, `{id}/test-history`, `{id}/test-config`, `batch-test-history`). The work
//! is `accounts::usage_poll`'s and `accounts::probe`'s.

use std::sync::Arc;

use chrono::Utc;
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::{Value, json};

use super::fields::{self, Body};
use crate::accounts::probe::{self, Trigger};
use crate::accounts::{AccountRt, cron, usage_poll};
use crate::model::{Platform, TestSchedule};
use crate::state::{AppState, state};
use crate::web::{bad_request, json, json_body};

/// Routes under `/admin/claude-accounts` (pushed before the account routes, whose `{id}` would
/// take `usage`).
pub fn usage_router() -> Router {
    Router::with_path("claude-accounts")
        .push(Router::with_path("usage").get(usage))
        .push(Router::with_path("{id}/usage/refresh").post(usage_refresh))
}

/// Test routes of one account type (pushed before its account routes).
pub fn test_routes(p: Platform) -> Router {
    Router::with_path(p.admin_path())
        .push(Router::with_path("batch-test-history").post(Tests(p, TestAction::BatchHistory)))
        .push(
            Router::with_path("{id}")
                .push(Router::with_path("test-sync").post(Tests(p, TestAction::Sync)))
                .push(Router::with_path("test-history").get(Tests(p, TestAction::History)))
                .push(
                    Router::with_path("test-config")
                        .get(Tests(p, TestAction::GetConfig))
                        .put(Tests(p, TestAction::PutConfig)),
                ),
        )
}

fn claude_account(st: &AppState, id: &str) -> Option<Arc<AccountRt>> {
    account(st, Platform::Claude, id)
}

fn account(st: &AppState, p: Platform, id: &str) -> Option<Arc<AccountRt>> {
    st.accounts
        .load()
        .by_id
        .get(id)
        .filter(|a| a.rec.platform == p)
        .cloned()
}

/// The windows of an account as `GET /admin/claude-accounts/usage` and the account view show
/// them: v1's snapshot, or null without readings (v1: accounts it does not poll).
pub fn usage_windows(acc: &AccountRt) -> Value {
    let s = acc.rt.windows.snapshot();
    if s.is_empty() {
        Value::Null
    } else {
        s.to_v1_json(Utc::now().timestamp_millis())
    }
}

/// A ChatGPT account's windows in v1's `codexUsage` shape (null before the first answer).
pub fn codex_usage(acc: &AccountRt) -> Value {
    let s = acc.rt.windows.snapshot();
    if s.is_empty() {
        Value::Null
    } else {
        s.to_codex_json(Utc::now().timestamp_millis())
    }
}

/// `GET /admin/claude-accounts/usage[?refresh=true]`: `{accountId: snapshot | null}` for every
/// Claude account. Like v1, windows older than the poll interval (300 s by default) are polled
/// first; `refresh=true` polls every pollable account.
#[handler]
async fn usage(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let force = req.query::<String>("refresh").as_deref() == Some("true");
    let max_age_ms = match st.config.health.usage_poll.as_millis() as i64 {
        0 => 300_000,
        n => n,
    };
    let now_ms = Utc::now().timestamp_millis();
    let accs: Vec<Arc<AccountRt>> = st
        .accounts
        .load()
        .of_platform(Platform::Claude)
        .cloned()
        .collect();
    let stale: Vec<Arc<AccountRt>> = accs
        .iter()
        .filter(|a| usage_poll::pollable(a))
        .filter(|a| force || now_ms - a.rt.windows.snapshot().updated_ms >= max_age_ms)
        .cloned()
        .collect();
    usage_poll::poll_all(&st.accounts, stale).await;
    let data: serde_json::Map<String, Value> = accs
        .iter()
        .map(|a| (a.rec.id.clone(), usage_windows(a)))
        .collect();
    json(res, StatusCode::OK, &json!({"success": true, "data": data}));
}

/// `POST /admin/claude-accounts/{id}/usage/refresh`: poll one account now.
#[handler]
async fn usage_refresh(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let Some(acc) = claude_account(&st, &id) else {
        return crate::web::not_found(res, "Account not found");
    };
    let outcome = usage_poll::poll(&st.accounts, &acc).await;
    json(
        res,
        StatusCode::OK,
        &json!({"success": outcome.is_ok(), "message": outcome.err(), "data": usage_windows(&acc)}),
    );
}

/// v1's default test config.
fn default_schedule(acc: &AccountRt) -> TestSchedule {
    TestSchedule {
        enabled: false,
        cron_expression: "0 8 * * *".into(),
        model: acc.kind().probe_model(&acc.rec),
    }
}

/// The test fields of an account's admin view: its schedule and recent results.
pub fn test_view(acc: &AccountRt) -> Value {
    json!({
        "testConfig": acc.rec.test_schedule.clone().unwrap_or_else(|| default_schedule(acc)),
        "testHistory": acc.rt.tests.list(),
    })
}

#[derive(Clone, Copy)]
enum TestAction {
    Sync,
    History,
    GetConfig,
    PutConfig,
    BatchHistory,
}

struct Tests(Platform, TestAction);

#[salvo::async_trait]
impl Handler for Tests {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let st = state(depot);
        let Tests(platform, action) = *self;
        let p = platform.as_str();
        if let TestAction::BatchHistory = action {
            let Some(body) = json_body::<Body>(req, res, 64 * 1024).await else {
                return;
            };
            let ids: Vec<String> = match body.get("accountIds") {
                Some(Value::Array(xs)) if !xs.is_empty() => xs
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .take(100)
                    .collect(),
                _ => return bad_request(res, "accountIds must be a non-empty array"),
            };
            // v1's shape: `{"{platform}:{accountId}": [the last 10 results]}`.
            let data: serde_json::Map<String, Value> = ids
                .into_iter()
                .filter_map(|id| {
                    let a = account(&st, platform, &id)?;
                    let mut h = a.rt.tests.list();
                    h.truncate(10);
                    Some((format!("{p}:{id}"), json!(h)))
                })
                .collect();
            return json(res, StatusCode::OK, &json!({"success": true, "data": data}));
        }
        let id = req.param::<String>("id").unwrap_or_default();
        let Some(acc) = account(&st, platform, &id) else {
            return crate::web::not_found(res, "Account not found");
        };
        match action {
            TestAction::Sync => {
                let body = json_body::<Body>(req, res, 64 * 1024)
                    .await
                    .unwrap_or_default();
                let model = fields::string(&body, "model", 256).ok().flatten();
                let r = probe::run(&st.accounts, &acc, model.as_deref(), Trigger::Manual).await;
                json(
                    res,
                    StatusCode::OK,
                    &json!({"success": true, "data": {"accountId": id, "platform": p, "result": r}}),
                );
            }
            TestAction::History => json(
                res,
                StatusCode::OK,
                &json!({"success": true, "data": {"accountId": id, "platform": p, "history": acc.rt.tests.list()}}),
            ),
            TestAction::GetConfig => {
                let config = acc
                    .rec
                    .test_schedule
                    .clone()
                    .unwrap_or_else(|| default_schedule(&acc));
                json(
                    res,
                    StatusCode::OK,
                    &json!({"success": true, "data": {"accountId": id, "platform": p, "config": config}}),
                );
            }
            TestAction::PutConfig => {
                let Some(body) = json_body::<Body>(req, res, 64 * 1024).await else {
                    return;
                };
                let sched = match schedule_from(&body, &acc) {
                    Ok(s) => s,
                    Err(e) => return bad_request(res, e),
                };
                let s2 = sched.clone();
                let r = st
                    .accounts
                    .update(&id, move |a| {
                        a.test_schedule = Some(s2);
                        Ok(true)
                    })
                    .await;
                match r {
                    Ok(Some(_)) => {
                        tracing::info!(account_id = %id, enabled = sched.enabled, cron = %sched.cron_expression, model = %sched.model, "account test schedule updated");
                        json(
                            res,
                            StatusCode::OK,
                            &json!({"success": true, "message": "Test config updated successfully", "data": {"accountId": id, "platform": p, "config": sched}}),
                        )
                    }
                    Ok(None) => crate::web::not_found(res, "Account not found"),
                    Err(e) => crate::web::internal_error(res, "Failed to update test config", e),
                }
            }
            TestAction::BatchHistory => {}
        }
    }
}

/// A test config from v1's body: `enabled` (boolean), `cronExpression` (required, valid),
/// `model` (optional, at most 256 characters).
fn schedule_from(b: &Body, acc: &AccountRt) -> Result<TestSchedule, String> {
    let Some(Value::Bool(enabled)) = b.get("enabled") else {
        return Err("enabled must be a boolean".into());
    };
    let cron_expression = match b.get("cronExpression") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => return Err("cronExpression is required and must be a string".into()),
    };
    cron::Cron::parse(&cron_expression).map_err(|e| {
        format!(
            "Invalid cron expression: {cron_expression} ({e}). Format: \"minute hour day month weekday\" (e.g. \"0 8 * * *\" for daily at 8:00)"
        )
    })?;
    let model = fields::string(b, "model", 256)?
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| acc.kind().probe_model(&acc.rec));
    Ok(TestSchedule {
        enabled: *enabled,
        cron_expression,
        model,
    })
}
