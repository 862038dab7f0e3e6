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
use crate::providers::Op;
use crate::state::state;

#[handler]
pub async fn chat_completions(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    handle(req, depot, res, chat::request).await
}

/// Legacy Completions (`prompt` in, `text_completion` out) through the same conversion.
#[handler]
pub async fn completions(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    handle(req, depot, res, chat::completions_request).await
}

type Convert = fn(&[u8]) -> Result<(Vec<u8>, chat::Chat), crate::convert::Invalid>;

async fn handle(req: &mut Request, depot: &mut Depot, res: &mut Response, convert: Convert) {
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
        ClientFormat::OpenAI,
        Service::Claude,
        true,
        None,
    )
    .await
    else {
        return;
    };
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
    let platforms = super::messages::platforms(Op::Messages);
    let call = Call {
        binding: adm.key.rec.binding_for(platforms),
        adm,
        service: Service::Claude,
        format: ClientFormat::OpenAI,
        op: Op::Messages,
        platforms,
        session: peek.session,
        model: peek.model,
        body: converted.into(),
        stream: chat.stream,
        client_headers: req.headers().clone(),
        query: None,
        started,
        convert: Some(chat),
    };
    engine::run(st, call, res).await
}
