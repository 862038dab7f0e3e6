//! Gemini routes: `/gemini/v1beta/models/{model}:{method}` and `/gemini/v1/...`, served by
//! Gemini API-key and Gemini OAuth (Code Assist) accounts, and the Gemini CLI's Google-login
//! routes `/gemini/v1internal:{method}` (and `v1beta/models/{model}:{loadCodeAssist,
//! onboardUser,listExperiments}`), passed through to Code Assist on Gemini OAuth accounts
//! with the account's token and project (v1 src/routes/geminiRoutes.js,
//! standardGeminiRoutes.js). The key may come as `x-goog-api-key`, `?key=` or a bearer token.

use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::json;

use super::engine::{self, Call, write_error};
use super::ingress::{Ingress, ingress};
use crate::limits::{ClientFormat, Rejection, Service};
use crate::model::Platform;
use crate::providers::Op;
use crate::providers::codeassist::Method as Internal;
use crate::providers::gemini::Method;
use crate::state::state;
use crate::web::json;

/// Gemini routes are served by the account types of the Gemini service.
pub fn gemini_platforms() -> &'static [Platform] {
    Platform::serving(Service::Gemini)
}

async fn generate(req: &mut Request, depot: &mut Depot, res: &mut Response, use_v1: bool) {
    let target = req.param::<String>("target").unwrap_or_default();
    if let Some((m, x)) = target.rsplit_once(':')
        && let Some(x) = Internal::parse(x).filter(|x| {
            matches!(
                x,
                Internal::LoadCodeAssist | Internal::OnboardUser | Internal::ListExperiments
            )
        })
    {
        return internal(req, depot, res, x, Some(m.to_owned())).await;
    }
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
    let op = Op::Gemini { method, v1: use_v1 };
    relay(req, depot, res, op, gemini_platforms(), Some(model)).await
}

/// Ingress, admission, then the engine: one Gemini-format request on `platforms` (billed when
/// the call has usage, streamed when its method streams).
async fn relay(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
    op: Op,
    platforms: &'static [Platform],
    model: Option<String>,
) {
    let (metered, stream) = (op.has_usage(), op.gemini_streams());
    let st = state(depot);
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
        model,
    )
    .await
    else {
        return;
    };
    let call = Call {
        binding: adm.key.rec.binding_for(platforms),
        adm,
        service: Service::Gemini,
        format: ClientFormat::Gemini,
        op,
        platforms,
        session: peek.session,
        model: peek.model,
        body,
        stream,
        client_headers: req.headers().clone(),
        query: None,
        started,
        convert: None,
    };
    engine::run(st, call, res).await
}

/// The model v1 assumes for Code Assist calls that name none.
const INTERNAL_DEFAULT_MODEL: &str = "gemini-2.5-flash";

/// A Code Assist call in its own format, on a Gemini OAuth account. Generation names its
/// model in the body and is billed; the other calls go to the account the key would use.
async fn internal(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
    method: Internal,
    path_model: Option<String>,
) {
    let model = match (method.generates(), path_model) {
        (true, _) => None,
        (false, m) => Some(m.unwrap_or_else(|| INTERNAL_DEFAULT_MODEL.to_owned())),
    };
    const OAUTH: &[Platform] = &[Platform::Gemini];
    relay(req, depot, res, Op::CodeAssist { method }, OAUTH, model).await
}

/// `/gemini/v1internal:{method}`.
#[handler]
async fn v1internal(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let target = req.param::<String>("target").unwrap_or_default();
    match target.strip_prefix("v1internal:").and_then(Internal::parse) {
        Some(m) => internal(req, depot, res, m, None).await,
        None => write_error(
            res,
            ClientFormat::Gemini,
            StatusCode::NOT_FOUND,
            "not_found_error",
            &format!("Unknown route {target:?}"),
        ),
    }
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
        .push(Router::with_path("{target}").post(v1internal))
}
