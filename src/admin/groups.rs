//! `/admin/account-groups`: named sets of accounts of one platform family. A key bound to
//! `group:{id}` is served by the group's members only.

use chrono::Utc;
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::{Value, json};

use super::blocking;
use super::fields::{self, Body};
use crate::model::{AccountGroup, ApiKey, Binding, BindingField};
use crate::state::state;
use crate::store::Table;
use crate::web::{json, json_body};

const FAMILIES: &[&str] = &["claude", "openai", "gemini", "droid"];

fn bad(res: &mut Response, msg: impl Into<String>) {
    json(res, StatusCode::BAD_REQUEST, &json!({"error": msg.into()}));
}

fn not_found(res: &mut Response) {
    json(
        res,
        StatusCode::NOT_FOUND,
        &json!({"error": "Group not found"}),
    );
}

fn internal(res: &mut Response, e: anyhow::Error) {
    tracing::error!(error = %e, "account group operation failed");
    json(
        res,
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"error": "Account group operation failed"}),
    );
}

pub fn router() -> Router {
    Router::with_path("account-groups")
        .get(list)
        .post(create)
        .push(
            Router::with_path("{id}")
                .get(get)
                .put(update)
                .delete(delete)
                .push(Router::with_path("members").get(members).post(add_member))
                .push(Router::with_path("members/{account}").delete(remove_member)),
        )
}

fn view(g: &AccountGroup) -> Value {
    json!({"id": g.id, "name": g.name, "platform": g.platform, "description": g.description,
           "members": g.members, "memberCount": g.members.len(), "createdAt": g.created_at, "updatedAt": g.updated_at})
}

fn apply(g: &mut AccountGroup, b: &Body, creating: bool) -> Result<(), String> {
    if let Some(v) = fields::string(b, "name", 100)? {
        g.name = v;
    }
    if g.name.is_empty() {
        return Err("name is required".into());
    }
    if let Some(v) = fields::choice(b, "platform", FAMILIES)? {
        if !creating && v != g.platform && !g.members.is_empty() {
            return Err("a group's platform cannot change while it has members".into());
        }
        g.platform = v;
    }
    if g.platform.is_empty() {
        return Err(format!("platform is required ({})", FAMILIES.join(", ")));
    }
    if let Some(v) = fields::string(b, "description", 500)? {
        g.description = v;
    }
    Ok(())
}

async fn load(id: &str, st: &std::sync::Arc<crate::state::AppState>) -> Option<AccountGroup> {
    let st = st.clone();
    let id = id.to_owned();
    blocking(move || st.store.get::<AccountGroup>(Table::Groups, &id))
        .await
        .ok()
        .flatten()
}

async fn save(st: &std::sync::Arc<crate::state::AppState>, g: AccountGroup) -> anyhow::Result<()> {
    let st = st.clone();
    blocking(move || {
        st.store.put(Table::Groups, &g.id, &g)?;
        st.reload_accounts()
    })
    .await
}

#[handler]
async fn list(depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let mut groups: Vec<AccountGroup> = st.accounts.load().groups.values().cloned().collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "data": groups.iter().map(view).collect::<Vec<_>>()}),
    );
}

#[handler]
async fn create(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(b) = json_body::<Body>(req, res, 64 * 1024).await else {
        return;
    };
    let mut g = AccountGroup {
        id: uuid::Uuid::new_v4().to_string(),
        created_at: Some(Utc::now()),
        updated_at: Some(Utc::now()),
        ..Default::default()
    };
    if let Err(e) = apply(&mut g, &b, true) {
        return bad(res, e);
    }
    let _l = st.admin_lock.lock().await;
    match save(&st, g.clone()).await {
        Ok(()) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": view(&g)}),
        ),
        Err(e) => internal(res, e),
    }
}

#[handler]
async fn get(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    match load(&req.param::<String>("id").unwrap_or_default(), &st).await {
        Some(g) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": view(&g)}),
        ),
        None => not_found(res),
    }
}

#[handler]
async fn update(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let Some(b) = json_body::<Body>(req, res, 64 * 1024).await else {
        return;
    };
    let _l = st.admin_lock.lock().await;
    let Some(mut g) = load(&id, &st).await else {
        return not_found(res);
    };
    if let Err(e) = apply(&mut g, &b, false) {
        return bad(res, e);
    }
    g.updated_at = Some(Utc::now());
    match save(&st, g.clone()).await {
        Ok(()) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": view(&g)}),
        ),
        Err(e) => internal(res, e),
    }
}

#[handler]
async fn delete(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let _l = st.admin_lock.lock().await;
    if load(&id, &st).await.is_none() {
        return not_found(res);
    }
    // Refuse while keys are bound to the group: they would silently lose their accounts.
    let binding = Binding::Group(id.clone());
    let bound: Vec<String> = st
        .keys
        .load()
        .by_id
        .values()
        .filter(|e| !e.rec.is_deleted)
        .filter(|e| {
            let k: &ApiKey = &e.rec;
            BindingField::ALL.iter().any(|f| *k.binding(*f) == binding)
        })
        .map(|e| e.rec.name.clone())
        .collect();
    if !bound.is_empty() {
        return bad(
            res,
            format!("the group is still bound to API keys: {}", bound.join(", ")),
        );
    }
    let st2 = st.clone();
    match blocking(move || {
        st2.store.delete(Table::Groups, &id)?;
        st2.reload_accounts()
    })
    .await
    {
        Ok(()) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "message": "Group deleted"}),
        ),
        Err(e) => internal(res, e),
    }
}

#[handler]
async fn members(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(g) = load(&req.param::<String>("id").unwrap_or_default(), &st).await else {
        return not_found(res);
    };
    let pool = st.accounts.load();
    let items: Vec<Value> = g
        .members
        .iter()
        .filter_map(|m| pool.by_id.get(m))
        .map(|a| json!({"id": a.rec.id, "name": a.rec.name, "platform": a.rec.platform.as_str(), "status": a.rec.status}))
        .collect();
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "data": items}),
    );
}

#[handler]
async fn add_member(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let Some(b) = json_body::<Body>(req, res, 64 * 1024).await else {
        return;
    };
    let Some(acc) = b
        .get("accountId")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return bad(res, "accountId is required");
    };
    let _l = st.admin_lock.lock().await;
    let Some(mut g) = load(&id, &st).await else {
        return not_found(res);
    };
    let Some(a) = st.accounts.load().by_id.get(&acc).cloned() else {
        return bad(res, "no such account");
    };
    if a.rec.platform.group_family() != g.platform {
        return bad(
            res,
            format!(
                "a {} account cannot join a {} group",
                a.rec.platform.as_str(),
                g.platform
            ),
        );
    }
    if !g.members.contains(&acc) {
        g.members.push(acc);
        g.updated_at = Some(Utc::now());
    }
    match save(&st, g.clone()).await {
        Ok(()) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": view(&g)}),
        ),
        Err(e) => internal(res, e),
    }
}

#[handler]
async fn remove_member(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let acc = req.param::<String>("account").unwrap_or_default();
    let _l = st.admin_lock.lock().await;
    let Some(mut g) = load(&id, &st).await else {
        return not_found(res);
    };
    g.members.retain(|m| *m != acc);
    g.updated_at = Some(Utc::now());
    match save(&st, g.clone()).await {
        Ok(()) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": view(&g)}),
        ),
        Err(e) => internal(res, e),
    }
}
