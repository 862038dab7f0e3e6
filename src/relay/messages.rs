//! Anthropic Messages routes: `POST …/v1/messages` and `…/v1/messages/count_tokens`, served by
//! Claude subscription, Claude Console, Bedrock and CCR accounts.

use salvo::prelude::*;

use super::engine::{self, Call};
use super::ingress::{Ingress, ingress};
use crate::limits::{ClientFormat, Service};
use crate::model::Platform;
use crate::providers::Op;
use crate::state::state;

/// The account types that serve Claude routes, and those of them that count tokens.
fn platforms(op: Op) -> &'static [Platform] {
    static COUNT: std::sync::LazyLock<Vec<Platform>> = std::sync::LazyLock::new(|| {
        Platform::serving(Service::Claude)
            .iter()
            .copied()
            .filter(|p| p.spec().count_tokens)
            .collect()
    });
    match op {
        Op::CountTokens => &COUNT,
        _ => Platform::serving(Service::Claude),
    }
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
    let call = Call {
        binding: adm.key.rec.binding_for(platforms(op)),
        adm,
        service: Service::Claude,
        format: ClientFormat::Anthropic,
        op,
        platforms: platforms(op),
        session: peek.session,
        model: peek.model,
        body,
        stream: peek.stream,
        client_headers: req.headers().clone(),
        query: super::ingress::upstream_query(req.uri().query()),
        started,
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
