//! OpenAI Chat Completions on Claude accounts: `/api/v1/chat/completions` and
//! `/openai/claude/v1/chat/completions`, and legacy Completions on `.../v1/completions` (v1's routes for chat-style clients such as Cherry
//! Studio or anything built on the OpenAI SDK). The request is converted to Anthropic
//! Messages (`convert::chat`), scheduled like any Claude request, and the answer converted
//! back; key policy, limits, stickiness and usage apply as to native requests.

use salvo::http::StatusCode;
use salvo::prelude::*;

use super::engine::{self, Call, write_error};
use super::ingress::{Ingress, ingress};
use crate::convert::chat;
use crate::limits::{ClientFormat, Service};
use crate::model::Platform;
use crate::providers::Op;
use crate::providers::gemini::Method;
use crate::state::state;
use crate::web::json;
use serde_json::json;

#[handler]
pub async fn chat_completions(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    handle(req, depot, res, chat::request).await
}

/// Legacy Completions (`prompt` in, `text_completion` out) through the same conversion.
#[handler]
pub async fn completions(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    handle(req, depot, res, chat::completions_request).await
}

/// `/openai/v1/chat/completions` (and `/completions`): the backend follows the model. Claude
/// models go to Claude accounts as Anthropic Messages (the key needs the Claude permission as
/// well); every other model to OpenAI Responses accounts as a Responses request.
#[handler]
pub async fn openai_chat_completions(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(ing) = admit(&st, req, res, Service::OpenAI).await else {
        return;
    };
    let model = ing.peek.model.to_ascii_lowercase();
    let (convert, service, op, platforms): (Convert, _, _, &'static [Platform]) =
        if crate::limits::models::is_claude(&model) {
            (
                chat::request,
                Service::Claude,
                Op::Messages,
                super::messages::platforms(Op::Messages),
            )
        } else if model.starts_with("gemini") {
            (
                chat::gemini_request,
                Service::Gemini,
                GEMINI_OP,
                super::gemini::gemini_platforms(),
            )
        } else {
            (
                chat::responses_request,
                Service::OpenAI,
                Op::Responses { compact: false },
                super::openai::OPENAI,
            )
        };
    if !crate::limits::permits(&ing.adm.key.rec, service) {
        return crate::limits::Rejection::Permission(service).write(ClientFormat::OpenAI, res);
    }
    serve(st, req, res, ing, convert, service, op, platforms).await
}

/// Ingress for a chat route: OpenAI's format, metered.
async fn admit(
    st: &std::sync::Arc<crate::state::AppState>,
    req: &mut Request,
    res: &mut Response,
    service: Service,
) -> Option<Ingress> {
    ingress(st, req, res, ClientFormat::OpenAI, service, true, None).await
}

type Convert = fn(&[u8]) -> Result<(Vec<u8>, chat::Chat), crate::convert::Invalid>;

/// Gemini's op; `serve` picks the streaming method when the request streams.
const GEMINI_OP: Op = Op::Gemini {
    method: Method::GenerateContent,
    v1: false,
};

/// `/openai/gemini/v1/chat/completions`: Chat Completions on Gemini accounts.
#[handler]
pub async fn gemini_chat_completions(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(ing) = admit(&st, req, res, Service::Gemini).await else {
        return;
    };
    let platforms = super::gemini::gemini_platforms();
    serve(
        st,
        req,
        res,
        ing,
        chat::gemini_request,
        Service::Gemini,
        GEMINI_OP,
        platforms,
    )
    .await
}

/// The Gemini models in OpenAI's list shape (`/openai/gemini/v1/models`, `/openai/gemini/models`).
#[handler]
pub async fn gemini_models(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    if let Err(e) = st.authenticate(req) {
        return crate::limits::Rejection::Auth(e).write(ClientFormat::OpenAI, res);
    }
    let wanted = req.param::<String>("model");
    let model = |m: &str| json!({"id": m, "object": "model", "created": 0, "owned_by": "google"});
    match wanted {
        None => json(
            res,
            StatusCode::OK,
            &json!({"object": "list", "data": super::gemini::MODELS.iter().map(|m| model(m)).collect::<Vec<_>>()}),
        ),
        Some(w) if super::gemini::MODELS.contains(&w.as_str()) => {
            json(res, StatusCode::OK, &model(&w))
        }
        Some(w) => write_error(
            res,
            ClientFormat::OpenAI,
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &format!("The model '{w}' does not exist"),
        ),
    }
}

async fn handle(req: &mut Request, depot: &mut Depot, res: &mut Response, convert: Convert) {
    let st = state(depot);
    let Some(ing) = admit(&st, req, res, Service::Claude).await else {
        return;
    };
    let platforms = super::messages::platforms(Op::Messages);
    serve(
        st,
        req,
        res,
        ing,
        convert,
        Service::Claude,
        Op::Messages,
        platforms,
    )
    .await
}

/// Convert the request, then relay it like a native one with the answer converted back.
#[allow(clippy::too_many_arguments)]
async fn serve(
    st: std::sync::Arc<crate::state::AppState>,
    req: &Request,
    res: &mut Response,
    ing: Ingress,
    convert: Convert,
    service: Service,
    op: Op,
    platforms: &'static [Platform],
) {
    let Ingress {
        adm,
        body,
        peek,
        started,
    } = ing;
    let (converted, chat) = match convert(&body) {
        Ok(c) => c,
        Err(e) => {
            return write_error(
                res,
                ClientFormat::OpenAI,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e.0,
            );
        }
    };
    let op = match op {
        Op::Gemini { v1, .. } if chat.stream => Op::Gemini {
            method: Method::StreamGenerateContent,
            v1,
        },
        other => other,
    };
    let call = Call {
        binding: adm.key.rec.binding_for(platforms),
        adm,
        service,
        format: ClientFormat::OpenAI,
        op,
        platforms,
        session: peek.session,
        model: peek.model,
        body: converted.into(),
        stream: chat.stream,
        client_headers: req.headers().clone(),
        query: None,
        started,
        convert: Some(crate::convert::Conversion::Chat(chat)),
    };
    engine::run(st, call, res).await
}
