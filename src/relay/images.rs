//! v1's images bridge: `POST /openai/images/generations` and `/openai/v1/images/generations`
//! (OpenAI's Images API) on ChatGPT (Codex OAuth) accounts. The request is converted to a
//! Codex Responses request that calls the `image_generation` tool (`convert::images`),
//! scheduled like any OpenAI request among the key's ChatGPT accounts, and the answer
//! converted back; key policy, limits and usage apply as to native requests. API-key
//! Responses accounts cannot serve it (v1 refuses them too).

use salvo::http::StatusCode;
use salvo::prelude::*;

use super::engine::{self, Call, write_error};
use super::ingress::{Ingress, ingress};
use crate::convert::{Conversion, images};
use crate::limits::{ClientFormat, Service};
use crate::model::Platform;
use crate::providers::Op;
use crate::state::state;

const PLATFORMS: &[Platform] = &[Platform::OpenAI];

#[handler]
pub async fn generations(req: &mut Request, depot: &mut Depot, res: &mut Response) {
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
        Service::OpenAI,
        true,
        None,
    )
    .await
    else {
        return;
    };
    let (converted, im) = match images::request(&body) {
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
    let call = Call {
        binding: adm.key.rec.binding_for(PLATFORMS),
        adm,
        service: Service::OpenAI,
        format: ClientFormat::OpenAI,
        op: Op::Responses { compact: false },
        platforms: PLATFORMS,
        session: peek.session,
        model: images::MAIN_MODEL.to_owned(),
        body: converted.into(),
        stream: true,
        client_headers: req.headers().clone(),
        query: None,
        started,
        convert: Some(Conversion::Images(im)),
    };
    engine::run(st, call, res).await
}
