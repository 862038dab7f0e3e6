//! `/admin/pricing`: the price table's source and size, and a reload without a restart
//! (`POST /admin/pricing/reload`; `?remote=true` fetches the configured `pricing_url` first).

use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::json;

use crate::state::state;
use crate::web::{json, v1_error};

#[handler]
pub async fn status(depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "data": st.pricing.status(), "remoteUrl": st.config.pricing_url}),
    );
}

#[handler]
pub async fn reload(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    if req.query::<bool>("remote").unwrap_or(false) {
        let Some(url) = st.config.pricing_url.clone() else {
            return v1_error(
                res,
                StatusCode::BAD_REQUEST,
                "No remote table",
                "pricing_url (CRS_PRICING_URL) is not configured",
            );
        };
        if let Err(e) = st.pricing.fetch_remote(&remote_client(), &url).await {
            return v1_error(
                res,
                StatusCode::BAD_GATEWAY,
                "Remote pricing failed",
                &format!("{e:#}"),
            );
        }
    }
    let st2 = st.clone();
    match crate::web::blocking(move || st2.pricing.reload()).await {
        Ok(s) => json(res, StatusCode::OK, &json!({"success": true, "data": s})),
        Err(e) => v1_error(
            res,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Pricing not reloaded",
            &format!("{e:#}"),
        ),
    }
}

/// The client for the remote price table.
pub fn remote_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}
