//! `/admin/settings`: runtime settings an admin can change without a restart.

use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::json;

use super::blocking;
use super::fields::Body;
use crate::state::state;
use crate::store::Table;
use crate::web::{json, json_body};

#[handler]
pub async fn get(depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "data": {
            "stickySessionTtlHours": st.sticky.ttl_ms() as f64 / 3_600_000.0,
            "stickySessions": st.sticky.len(),
            "timezoneOffsetMinutes": st.clock.offset().local_minus_utc() / 60,
            "version": env!("CARGO_PKG_VERSION"),
            "pricingModels": st.pricing.model_count(),
        }}),
    );
}

#[handler]
pub async fn put(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(b) = json_body::<Body>(req, res, 64 * 1024).await else {
        return;
    };
    let ttl = match b.get("stickySessionTtlHours").map(|v| v.as_f64()) {
        None => None,
        Some(Some(h)) if h > 0.0 && h <= 8760.0 => Some(h),
        Some(_) => {
            return json(
                res,
                StatusCode::BAD_REQUEST,
                &json!({"error": "stickySessionTtlHours must be a number of hours between 0 and 8760"}),
            );
        }
    };
    if let Some(h) = ttl {
        let st2 = st.clone();
        if let Err(e) =
            blocking(move || st2.store.put(Table::Settings, "stickySessionTtlHours", &h)).await
        {
            tracing::error!(error = %e, "saving settings failed");
            return json(
                res,
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "Saving settings failed"}),
            );
        }
        st.sticky.set_ttl_ms((h * 3_600_000.0) as i64);
        tracing::info!(hours = h, "sticky session TTL changed");
    }
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "data": {"stickySessionTtlHours": st.sticky.ttl_ms() as f64 / 3_600_000.0}}),
    );
}
