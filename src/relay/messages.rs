//! Anthropic Messages routes: `POST …/v1/messages` and `…/v1/messages/count_tokens`, served by
//! Claude subscription, Claude Console and Bedrock accounts, by CCR accounts for models
//! written `ccr,<model>`, by OpenAI Responses accounts for keys bound to one (converted), and
//! by Gemini accounts under v1's vendor prefixes `/gemini-cli/api` and `/antigravity/api`
//! (converted).

use salvo::http::StatusCode;
use salvo::prelude::*;

use super::engine::{self, Call};
use super::ingress::{Ingress, ingress};
use crate::convert::Conversion;
use crate::convert::messages::{self as conv, Target};
use crate::limits::{ClientFormat, Service};
use crate::model::{Binding, Platform, Prefix};
use crate::providers::Op;
use crate::providers::gemini::Method;
use crate::state::{AppState, state};
use crate::web::json;

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

/// Where a Messages request's upstream speaks another format: the conversion, the account
/// types that serve it, the binding that chose them, the service whose permission and rates
/// apply.
struct Converted {
    target: Target,
    platforms: &'static [Platform],
    binding: Binding,
    service: Service,
}

/// A Messages request goes to OpenAI Responses accounts when the key's Claude binding names
/// one (`claudeAccountId: "responses:<id>"`, v1's prefix style, or the id of such an account)
/// or an account group of the `openai` family. Claude Code then runs on a GPT account.
fn binds_to_gpt(st: &AppState, binding: &Binding) -> bool {
    match binding {
        Binding::None => false,
        Binding::Account { prefix, .. } if *prefix == Prefix::Responses => true,
        Binding::Account { id, .. } => st
            .accounts
            .load()
            .by_id
            .get(id)
            .is_some_and(|a| super::openai::OPENAI.contains(&a.rec.platform)),
        Binding::Group(g) => st
            .accounts
            .load()
            .groups
            .get(g)
            .is_some_and(|g| g.platform == "openai"),
    }
}

/// v1's vendor prefixes: `/gemini-cli/api` and `/antigravity/api` send Anthropic Messages to
/// Gemini accounts (v1 src/app.js marks the request with `_anthropicVendor`, and
/// src/routes/api.js requires the key's Gemini permission and converts to Gemini).
fn gemini_vendor(key: &crate::model::ApiKey) -> Converted {
    let platforms = super::gemini::gemini_platforms();
    Converted {
        target: Target::Gemini,
        platforms,
        binding: key.binding_for(platforms),
        service: Service::Gemini,
    }
}

async fn handle(req: &mut Request, depot: &mut Depot, res: &mut Response, op: Op, vendor: bool) {
    let st = state(depot);
    let metered = op == Op::Messages;
    let service = if vendor {
        Service::Gemini
    } else {
        Service::Claude
    };
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
        service,
        metered,
        None,
    )
    .await
    else {
        return;
    };
    let ccr = ccr_model(&peek.model);
    // The key's Claude binding, found once: it picks the conversion and the account.
    let binding = match ccr {
        Some(_) => Binding::None,
        None if vendor => Binding::None,
        None => adm.key.rec.binding_for(platforms(op)),
    };
    let converted = if vendor {
        Some(gemini_vendor(&adm.key.rec))
    } else if binds_to_gpt(&st, &binding) {
        Some(Converted {
            target: Target::Responses,
            platforms: super::openai::OPENAI,
            binding: binding.clone(),
            service: Service::Claude,
        })
    } else {
        None
    };
    if let Some(c) = converted {
        return convert(
            st,
            req,
            res,
            op,
            c,
            Ingress {
                adm,
                body,
                peek,
                started,
            },
        )
        .await;
    }
    let (platforms, model, body): (&'static [Platform], String, _) = match ccr {
        Some(m) => (
            &[Platform::Ccr],
            m.to_owned(),
            crate::providers::with_model(&body, &peek.model, m),
        ),
        None => (platforms(op), peek.model, body),
    };
    let call = Call {
        binding,
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

/// A Messages request on accounts of another wire format: `count_tokens` is answered here with
/// an estimate (neither upstream counts Anthropic requests); messages are converted, relayed
/// like native ones, and the answer converted back.
async fn convert(
    st: std::sync::Arc<AppState>,
    req: &Request,
    res: &mut Response,
    op: Op,
    c: Converted,
    ing: Ingress,
) {
    let Ingress {
        adm,
        body,
        peek,
        started,
    } = ing;
    if op == Op::CountTokens {
        return match conv::estimate_tokens(&body) {
            Ok(n) => json(res, StatusCode::OK, &serde_json::json!({"input_tokens": n})),
            Err(e) => bad_request(res, &e.0),
        };
    }
    let conversion = match c.target {
        Target::Responses => conv::responses_request(&body),
        Target::Gemini => conv::gemini_request(&body),
    };
    let (converted, msgs) = match conversion {
        Ok(c) => c,
        Err(e) => return bad_request(res, &e.0),
    };
    let op = match c.target {
        Target::Responses => Op::Responses { compact: false },
        Target::Gemini => Op::Gemini {
            method: if msgs.stream {
                Method::StreamGenerateContent
            } else {
                Method::GenerateContent
            },
            v1: false,
        },
    };
    let call = Call {
        binding: c.binding,
        adm,
        service: c.service,
        format: ClientFormat::Anthropic,
        op,
        platforms: c.platforms,
        session: peek.session,
        model: peek.model,
        body: converted.into(),
        stream: msgs.stream,
        client_headers: req.headers().clone(),
        query: None,
        started,
        convert: Some(Conversion::Messages(msgs)),
    };
    engine::run(st, call, res).await
}

fn bad_request(res: &mut Response, message: &str) {
    engine::write_error(
        res,
        ClientFormat::Anthropic,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
    )
}

#[handler]
pub async fn messages(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    handle(req, depot, res, Op::Messages, false).await
}

#[handler]
pub async fn count_tokens(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    handle(req, depot, res, Op::CountTokens, false).await
}

/// `/gemini-cli/api/v1/messages` and `/antigravity/api/v1/messages` (and `claude/v1/messages`
/// under them): Anthropic Messages on Gemini accounts.
#[handler]
pub async fn gemini_messages(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    handle(req, depot, res, Op::Messages, true).await
}

#[handler]
pub async fn gemini_count_tokens(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    handle(req, depot, res, Op::CountTokens, true).await
}
