//! The admin API under `/admin`, with v1's paths and JSON shapes. Every handler here runs
//! behind `AdminAuth`. Writes go to the store first, then the in-memory snapshot is rebuilt.

pub mod accounts;
pub mod droid;
pub mod fields;
pub mod groups;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod ops;
pub mod pricing;
pub mod session;
pub mod settings;
pub mod stats;
pub mod webhook;

use salvo::prelude::*;

use session::AdminAuth;

pub fn router() -> Router {
    let mut r = Router::with_path("admin")
        .hoop(AdminAuth)
        .push(
            Router::with_path("api-keys")
                .get(keys::list)
                .post(keys::create)
                .push(Router::with_path("deleted").get(keys::list_deleted))
                .push(
                    Router::with_path("{id}")
                        .get(keys::get)
                        .put(keys::update)
                        .delete(keys::delete)
                        .push(Router::with_path("restore").post(keys::restore))
                        .push(Router::with_path("records").get(stats::key_records)),
                ),
        )
        .push(Router::with_path("status").get(ops::status))
        .push(
            Router::with_path("pricing")
                .get(pricing::status)
                .push(Router::with_path("reload").post(pricing::reload)),
        )
        .push(Router::with_path("backup").get(ops::backup))
        .push(Router::with_path("dashboard").get(stats::dashboard))
        .push(Router::with_path("usage-trend").get(stats::usage_trend))
        .push(Router::with_path("usage-breakdown").get(stats::usage_breakdown))
        .push(Router::with_path("usage-records").get(stats::usage_records))
        .push(groups::router())
        .push(Router::with_path("account-types").get(account_types))
        .push(
            Router::with_path("settings")
                .get(settings::get)
                .put(settings::put),
        )
        .push(webhook::router())
        .push(oauth::router())
        .push(oauth::gemini_router())
        .push(oauth::droid_router())
        .push(health::usage_router());
    for p in crate::model::Platform::ALL {
        r = r.push(health::test_routes(p)).push(accounts::routes(p));
    }
    r
}

pub use crate::web::blocking;

/// `GET /admin/account-types`: the upstream account types this server offers, with their
/// admin paths, so a UI need not probe.
#[salvo::handler]
async fn account_types(res: &mut salvo::Response) {
    let types: Vec<serde_json::Value> = crate::model::Platform::ALL
        .iter()
        .map(|p| {
            let s = p.spec();
            serde_json::json!({"platform": s.name, "label": s.label, "path": format!("/admin/{}", s.admin_path), "group": s.group_family, "services": s.services.iter().map(|x| x.as_str()).collect::<Vec<_>>()})
        })
        .collect();
    crate::web::json(
        res,
        salvo::http::StatusCode::OK,
        &serde_json::json!({"success": true, "data": types}),
    );
}
