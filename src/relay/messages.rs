//! Anthropic Messages routes: `POST …/v1/messages` and `…/v1/messages/count_tokens`, served by
//! Claude subscription, Claude Console and Bedrock accounts, and by CCR accounts for models
//! written `ccr,<model>`.

use salvo::prelude::*;

use super::engine::{self, Call};
use super::ingress::{Ingress, ingress};
use crate::limits::{ClientFormat, Service};
use crate::model::Platform;
use crate::providers::Op;
use crate::state::state;

/// The account types that serve Claude routes, and those of them that count tokens. CCR
/// accounts are not among them: they take only models written `ccr,<model>` (v1's routing
/// for Claude Code Router), see `ccr_model`.
pub fn platforms(op: Op) -> &'static [Platform] {
    static ALL: std::sync::LazyLock<[Vec<Platform>; 2]> = std::sync::LazyLock::new(|| {
        let claude = || {
            Platform::serving(Service::Claude)
                .iter()
                .copied()
                .filter(|p| *p != Platform::Ccr)
        };
        [
            claude().collect(),
            claude().filter(|p| p.spec().count_tokens).collect(),
        ]
    });
    &ALL[usize::from(op == Op::CountTokens)]
}

/// A model written `ccr,<model>`: the model for a CCR account (v1 routes these to CCR
/// accounts and sends the name without the prefix).
fn ccr_model(model: &str) -> Option<&str> {
    model
        .strip_prefix("ccr,")
        .map(str::trim)
        .filter(|m| !m.is_empty())
}

async fn handle(req: &mut Request, depot: &mut Depot, res: &mut Response, op: Op) {
    let st = state(depot);
    let metered = op == Op::Messages;
    let Some(Ingress {
        adm,
        body,
        peek,
        started,
    }) = ingress(
        &st,
        req,
        res,
        ClientFormat::Anthropic,
        Service::Claude,
        metered,
        None,
    )
    .await
    else {
        return;
    };
    let (platforms, model, body): (&'static [Platform], String, _) = match ccr_model(&peek.model) {
        Some(m) => (
            &[Platform::Ccr],
            m.to_owned(),
            crate::providers::with_model(&body, &peek.model, m),
        ),
        None => (platforms(op), peek.model, body),
    };
    let call = Call {
        binding: adm.key.rec.binding_for(platforms),
        adm,
        service: Service::Claude,
        format: ClientFormat::Anthropic,
        op,
        platforms,
        session: peek.session,
        model,
        body,
        stream: peek.stream,
        client_headers: req.headers().clone(),
        query: super::ingress::upstream_query(req.uri().query()),
        started,
        convert: None,
    };
    engine::run(st, call, res).await
}

#[handler]
pub async fn messages(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    handle(req, depot, res, Op::Messages).await
}

#[handler]
pub async fn count_tokens(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    handle(req, depot, res, Op::CountTokens).await
}
