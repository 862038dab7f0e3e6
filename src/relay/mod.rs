//! Client-facing routes. A relay request flows through the phases of DESIGN.md in one pass:
//! ingress (peek model/stream) -> authorize -> schedule -> forward -> respond (tap usage) ->
//! account (one ledger event).

pub mod apistats;
pub mod chat;
pub mod engine;
pub mod gemini;
pub mod images;
pub mod info;
pub mod ingress;
mod keytest;
pub mod messages;
pub mod openai;
mod stream;

use chrono::Utc;
use salvo::prelude::*;

use crate::limits::{KeyEntry, Service, models};
use crate::state::AppState;
use crate::usage::{TokenUsage, UsageEvent};

/// Claude Code's route, `POST {/api,/claude,}/v1/messages`, carries nearly all of a relay's
/// traffic. The router tries its routes in order and each try costs an allocation, so the
/// server mounts this one before every other.
pub fn messages_router() -> Router {
    let mut r = Router::new();
    for prefix in ["v1", "api/v1", "claude/v1"] {
        r = r.push(Router::with_path(format!("{prefix}/messages")).post(messages::messages));
    }
    r
}

/// `/api`, `/claude` and the bare host all serve the Anthropic routes (`messages_router` has
/// their Messages route).
pub fn router() -> Router {
    let mut r = Router::new()
        .push(Router::with_path("health").get(info::health))
        .push(apistats::router())
        .push(
            Router::with_path("apiStats")
                .push(Router::with_path("api-key/test").post(keytest::test_claude))
                .push(Router::with_path("api-key/test-gemini").post(keytest::test_gemini))
                .push(Router::with_path("api-key/test-openai").post(keytest::test_openai))
                .push(Router::with_path("service-rates").get(keytest::service_rates)),
        )
        .push(openai::router())
        // v1's `/gemini/messages`: OpenAI Chat Completions on Gemini accounts (v1
        // src/routes/geminiRoutes.js, the same handler as its chat routes); before the Gemini
        // router, whose `/gemini/{target}` would take it.
        .push(Router::with_path("gemini/messages").post(chat::gemini_chat_completions))
        .push(gemini::router())
        .push(Router::with_path("api/event_logging/batch").post(info::event_logging))
        .push(Router::with_path("api/v1/chat/completions").post(chat::chat_completions))
        .push(Router::with_path("api/v1/completions").post(chat::completions))
        .push(Router::with_path("openai/v1/chat/completions").post(chat::openai_chat_completions))
        .push(Router::with_path("openai/images/generations").post(images::generations))
        .push(Router::with_path("openai/v1/images/generations").post(images::generations))
        .push(
            Router::with_path("openai/gemini")
                .push(Router::with_path("v1/chat/completions").post(chat::gemini_chat_completions))
                .push(Router::with_path("v1/models").get(chat::gemini_models))
                .push(Router::with_path("models").get(chat::gemini_models))
                .push(Router::with_path("v1/models/{model}").get(chat::gemini_models)),
        )
        .push(
            Router::with_path("openai/claude/v1")
                .push(Router::with_path("chat/completions").post(chat::chat_completions))
                .push(Router::with_path("completions").post(chat::completions))
                .push(Router::with_path("models").get(info::models))
                .push(Router::with_path("models/{model}").get(info::model)),
        );
    // v1's other spellings of the Anthropic routes: `/api/claude/v1/messages`,
    // `/claude/claude/v1/messages`, `{prefix}/health`, organisation usage (the key's usage) and
    // Claude Code's telemetry under every prefix. `antigravity/api` and `gemini-cli/api` send
    // Messages to Gemini accounts (converted) and serve the informational routes.
    for prefix in ["api", "claude", "antigravity/api", "gemini-cli/api"] {
        let mut p = Router::with_path(prefix)
            .push(Router::with_path("health").get(info::health))
            .push(Router::with_path("api/event_logging/batch").post(info::event_logging))
            .push(Router::with_path("v1/organizations/{org_id}/usage").get(info::usage));
        if matches!(prefix, "api" | "claude") {
            p = p.push(Router::with_path("claude/v1/messages").post(messages::messages));
        } else {
            p = p
                .push(Router::with_path("v1/messages").post(messages::gemini_messages))
                .push(Router::with_path("claude/v1/messages").post(messages::gemini_messages))
                .push(
                    Router::with_path("v1/messages/count_tokens")
                        .post(messages::gemini_count_tokens),
                )
                .push(Router::with_path("v1/models").get(info::models))
                .push(Router::with_path("v1/key-info").get(info::key_info))
                .push(Router::with_path("v1/usage").get(info::usage))
                .push(Router::with_path("v1/me").get(info::me));
        }
        r = r.push(p);
    }
    r = r
        .push(Router::with_path("openai/v1/completions").post(chat::completions))
        .push(Router::with_path("azure/health").get(info::health))
        .push(Router::with_path("azure/usage").get(info::usage))
        .push(Router::with_path("gemini/usage").get(info::usage))
        .push(Router::with_path("gemini/key-info").get(info::key_info));
    for prefix in ["api/v1", "claude/v1", "v1"] {
        r = r.push(
            Router::with_path(prefix)
                .push(Router::with_path("messages/count_tokens").post(messages::count_tokens))
                .push(Router::with_path("models").get(info::models))
                .push(Router::with_path("key-info").get(info::key_info))
                .push(Router::with_path("usage").get(info::usage))
                .push(Router::with_path("me").get(info::me)),
        );
    }
    r
}

/// The model recorded for failed requests whose model the price table does not know.
pub const UNKNOWN_MODEL: &str = "unknown";

/// What the relay knows about a request when it is over.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub status: u16,
    pub started: std::time::Instant,
    pub stream: bool,
}

/// Account one answered request: price it, send it to the ledger, count it in the key's
/// meters. `model` is the model the upstream answered with; the usage is the upstream's word,
/// capped (`TokenUsage::bounded`).
pub fn record_usage(
    st: &AppState,
    key: &KeyEntry,
    service: Service,
    account_id: &str,
    model: String,
    usage: TokenUsage,
    outcome: Outcome,
) {
    let usage = usage.bounded();
    let cost = st.pricing.cost(&model, &usage);
    if matches!(cost.matched, crate::usage::pricing::PriceMatch::Unknown) {
        tracing::warn!(model = %model, "no price known for model; recorded at zero cost");
    }
    let rate = key
        .rec
        .service_rates
        .get(service.as_str())
        .copied()
        .unwrap_or(1.0);
    // The rate applies to the exact cost; the rated cost is rounded to a pico-dollar once.
    let rated = crate::usage::pricing::apply_rate(cost.picos, rate);
    let now = Utc::now();
    if let Some(acc) = st.accounts.load().by_id.get(account_id) {
        // The account's daily quota counts what the upstream charged (real cost).
        acc.rt.add_cost(
            crate::limits::meter::local_day(now, st.clock.offset()),
            cost.picos,
        );
    }
    key.rt.meter.lock().on_usage(
        &key.rec,
        now,
        st.clock.offset(),
        usage.all_tokens(),
        rated,
        models::is_claude(&model),
    );
    st.realtime
        .add(now.timestamp_millis(), usage.all_tokens(), true);
    st.ledger.record(UsageEvent {
        key_id: key.rec.id.clone(),
        account_id: account_id.to_owned(),
        model,
        at: now,
        usage,
        real_cost_picos: cost.picos,
        rated_cost_picos: rated,
        status: outcome.status,
        latency_ms: outcome.started.elapsed().as_millis().min(u32::MAX as u128) as u32,
        stream: outcome.stream,
    });
}

/// Account a request the upstream answered with an error: a request record and the error
/// counters, no tokens.
pub fn record_failure(
    st: &AppState,
    key: &KeyEntry,
    account_id: &str,
    model: String,
    outcome: Outcome,
) {
    // A failed request's model is the client's word for it: one the price table does not
    // know is recorded as "unknown", so made-up names cannot grow the usage buckets.
    let model = if st.pricing.lookup(&model).1.is_unknown() {
        UNKNOWN_MODEL.to_owned()
    } else {
        model
    };
    let now = Utc::now();
    st.realtime.add(now.timestamp_millis(), 0, false);
    st.ledger.record(UsageEvent {
        key_id: key.rec.id.clone(),
        account_id: account_id.to_owned(),
        model,
        at: now,
        usage: TokenUsage::default(),
        real_cost_picos: 0,
        rated_cost_picos: 0,
        status: if (200..300).contains(&outcome.status) {
            502
        } else {
            outcome.status
        },
        latency_ms: outcome.started.elapsed().as_millis().min(u32::MAX as u128) as u32,
        stream: outcome.stream,
    });
}
