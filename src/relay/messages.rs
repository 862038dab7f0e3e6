//! Anthropic Messages routes: `POST …/v1/messages` and `…/v1/messages/count_tokens`, served by
//! Claude subscription, Claude Console, Bedrock and CCR accounts.

use salvo::prelude::*;

use super::engine::{self, Call};
use super::ingress::{Ingress, ingress};
use crate::providers::Op;
use crate::limits::{ClientFormat, KeyEntry, Service};
use crate::model::Platform;
use crate::state::state;

pub const CLAUDE_PLATFORMS: &[Platform] = &[
    Platform::Claude,
    Platform::ClaudeConsole,
    Platform::Bedrock,
    Platform::Ccr,
];
/// Bedrock has no token counting.
const COUNT_PLATFORMS: &[Platform] = &[Platform::Claude, Platform::ClaudeConsole, Platform::Ccr];

/// The key's binding for Claude routes: subscription/group first, then console, then Bedrock.
fn binding(k: &KeyEntry) -> String {
    let r = &k.rec;
    [
        &r.claude_account_id,
        &r.claude_console_account_id,
        &r.bedrock_account_id,
    ]
    .into_iter()
    .find(|b| !b.is_empty())
    .cloned()
    .unwrap_or_default()
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
        binding: binding(&adm.key),
        adm,
        service: Service::Claude,
        format: ClientFormat::Anthropic,
        op,
        platforms: if op == Op::CountTokens {
            COUNT_PLATFORMS
        } else {
            CLAUDE_PLATFORMS
        },
        session: peek.session,
        model: peek.model,
        body,
        stream: peek.stream,
        client_headers: req.headers().clone(),
        query: req.uri().query().map(str::to_owned),
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
