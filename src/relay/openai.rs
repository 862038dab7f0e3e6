//! OpenAI-format routes: `/openai/responses` (+ `/v1`, `/compact`) for Codex and the OpenAI
//! SDKs, `/azure/*` for Azure OpenAI accounts, `/droid/*` for Droid accounts.

use salvo::prelude::*;
use serde_json::json;

use super::engine::{self, Call};
use super::ingress::{Ingress, ingress};
use crate::limits::{ClientFormat, Rejection, Service};
use crate::model::Platform;
use crate::providers::Op;
use crate::state::state;
use crate::web::json;

#[derive(Clone, Copy)]
struct Route {
    op: Op,
    format: ClientFormat,
    service: Service,
    platforms: &'static [Platform],
}

async fn handle(req: &mut Request, depot: &mut Depot, res: &mut Response, r: Route) {
    let st = state(depot);
    let Some(Ingress {
        adm,
        body,
        peek,
        started,
    }) = ingress(&st, req, res, r.format, r.service, true, None).await
    else {
        return;
    };
    let binding = adm.key.rec.binding_for(r.platforms);
    let call = Call {
        binding,
        adm,
        service: r.service,
        format: r.format,
        op: r.op,
        platforms: r.platforms,
        session: peek.session,
        model: peek.model,
        body,
        stream: peek.stream,
        client_headers: req.headers().clone(),
        query: None,
        started,
        convert: None,
    };
    engine::run(st, call, res).await
}

/// The account types that speak OpenAI Responses: API-key Responses accounts and ChatGPT
/// (Codex OAuth) accounts serve the same routes, as in v1 (`unifiedOpenAIScheduler` picks
/// among both).
pub(crate) const OPENAI: &[Platform] = &[Platform::OpenAIResponses, Platform::OpenAI];
const AZURE: &[Platform] = &[Platform::AzureOpenAI];
const DROID: &[Platform] = &[Platform::Droid];

macro_rules! route {
    ($name:ident, $op:expr, $format:expr, $service:expr, $platforms:expr) => {
        #[handler]
        pub async fn $name(req: &mut Request, depot: &mut Depot, res: &mut Response) {
            handle(
                req,
                depot,
                res,
                Route {
                    op: $op,
                    format: $format,
                    service: $service,
                    platforms: $platforms,
                },
            )
            .await
        }
    };
}

route!(
    responses,
    Op::Responses { compact: false },
    ClientFormat::OpenAI,
    Service::OpenAI,
    OPENAI
);
route!(
    responses_compact,
    Op::Responses { compact: true },
    ClientFormat::OpenAI,
    Service::OpenAI,
    OPENAI
);
route!(
    azure_chat,
    Op::ChatCompletions,
    ClientFormat::OpenAI,
    Service::OpenAI,
    AZURE
);
route!(
    azure_embeddings,
    Op::Embeddings,
    ClientFormat::OpenAI,
    Service::OpenAI,
    AZURE
);
route!(
    azure_responses,
    Op::Responses { compact: false },
    ClientFormat::OpenAI,
    Service::OpenAI,
    AZURE
);
route!(
    droid_messages,
    Op::Messages,
    ClientFormat::Anthropic,
    Service::Droid,
    DROID
);
route!(
    droid_responses,
    Op::Responses { compact: false },
    ClientFormat::OpenAI,
    Service::Droid,
    DROID
);
route!(
    droid_chat,
    Op::ChatCompletions,
    ClientFormat::OpenAI,
    Service::Droid,
    DROID
);

const OPENAI_MODELS: &[&str] = &[
    "gpt-5",
    "gpt-5-codex",
    "gpt-5-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "o3",
    "o4-mini",
];

/// `GET /openai/v1/models`: the models Codex and OpenAI clients may ask for.
#[handler]
pub async fn models(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    if let Err(e) = st.authenticate(req) {
        return Rejection::Auth(e).write(ClientFormat::OpenAI, res);
    }
    let data: Vec<_> = OPENAI_MODELS
        .iter()
        .map(
            |m| json!({"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "openai"}),
        )
        .collect();
    json(
        res,
        salvo::http::StatusCode::OK,
        &json!({"object": "list", "data": data}),
    );
}

pub fn router() -> Router {
    let mut r = Router::new();
    for p in ["openai", "openai/v1"] {
        r = r.push(
            Router::with_path(p)
                .push(Router::with_path("responses").post(responses))
                .push(Router::with_path("responses/compact").post(responses_compact)),
        );
    }
    r.push(Router::with_path("openai/v1/models").get(models))
        .push(Router::with_path("openai/models").get(models))
        .push(Router::with_path("openai/usage").get(super::info::usage))
        .push(Router::with_path("openai/key-info").get(super::info::key_info))
        .push(Router::with_path("azure/chat/completions").post(azure_chat))
        .push(Router::with_path("azure/responses").post(azure_responses))
        .push(Router::with_path("azure/embeddings").post(azure_embeddings))
        .push(Router::with_path("droid/claude/v1/messages").post(droid_messages))
        .push(Router::with_path("droid/openai/v1/responses").post(droid_responses))
        .push(Router::with_path("droid/openai/responses").post(droid_responses))
        .push(Router::with_path("droid/comm/v1/chat/completions").post(droid_chat))
}
