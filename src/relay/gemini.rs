//! Gemini routes: `/gemini/v1beta/models/{model}:{method}` and `/gemini/v1/...`, served by
//! Gemini API-key accounts. The key may come as `x-goog-api-key`, `?key=` or a bearer token.

use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::json;

use super::engine::{self, Call, write_error};
use super::ingress::{Ingress, ingress};
use crate::limits::{ClientFormat, Rejection, Service};
use crate::model::Platform;
use crate::providers::Op;
use crate::providers::gemini::Method;
use crate::state::state;
use crate::web::json;

/// Gemini routes are served by the account types of the Gemini service.
pub fn gemini_platforms() -> &'static [Platform] {
    Platform::serving(Service::Gemini)
}

async fn generate(req: &mut Request, depot: &mut Depot, res: &mut Response, use_v1: bool) {
    let st = state(depot);
    let target = req.param::<String>("target").unwrap_or_default();
    let Some((model, method)) = target
        .rsplit_once(':')
        .and_then(|(m, x)| Method::parse(x).map(|x| (m.to_owned(), x)))
    else {
        return write_error(
            res,
            ClientFormat::Gemini,
            StatusCode::NOT_FOUND,
            "not_found_error",
            &format!(
                "Unknown method in {target:?}: use generateContent, streamGenerateContent or countTokens"
            ),
        );
    };
    let metered = method != Method::CountTokens;
    let Some(Ingress {
        adm,
        body,
        peek,
        started,
    }) = ingress(
        &st,
        req,
        res,
        ClientFormat::Gemini,
        Service::Gemini,
        metered,
        Some(model),
    )
    .await
    else {
        return;
    };
    let call = Call {
        binding: adm.key.rec.binding_for(gemini_platforms()),
        adm,
        service: Service::Gemini,
        format: ClientFormat::Gemini,
        op: Op::Gemini { method, v1: use_v1 },
        platforms: gemini_platforms(),
        session: peek.session,
        model: peek.model,
        body,
        stream: method == Method::StreamGenerateContent,
        client_headers: req.headers().clone(),
        query: None,
        started,
        convert: None,
    };
    engine::run(st, call, res).await
}

#[handler]
async fn v1beta(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    generate(req, depot, res, false).await
}

#[handler]
async fn v1(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    generate(req, depot, res, true).await
}

pub const MODELS: &[&str] = &[
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
];

#[handler]
async fn list_models(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    if let Err(e) = st.authenticate(req) {
        return Rejection::Auth(e).write(ClientFormat::Gemini, res);
    }
    let models: Vec<_> = MODELS
        .iter()
        .map(|m| json!({"name": format!("models/{m}"), "displayName": m,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]}))
        .collect();
    json(res, StatusCode::OK, &json!({"models": models}));
}

pub fn router() -> Router {
    Router::with_path("gemini")
        .push(Router::with_path("v1beta/models").get(list_models))
        .push(Router::with_path("v1/models").get(list_models))
        .push(Router::with_path("v1beta/models/{target}").post(v1beta))
        .push(Router::with_path("v1/models/{target}").post(v1))
}
