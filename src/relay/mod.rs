//! Client-facing routes. A relay request flows through the phases of DESIGN.md in one pass:
//! ingress (peek model/stream) -> authorize -> schedule -> forward -> respond (tap usage) ->
//! account (one ledger event).

pub mod info;
pub mod messages;
mod stream;

use salvo::prelude::*;

/// `/api`, `/claude` and the bare host all serve the Anthropic routes.
pub fn router() -> Router {
    let mut r = Router::new()
        .push(Router::with_path("health").get(info::health))
        .push(Router::with_path("api/event_logging/batch").post(info::event_logging));
    for prefix in ["api/v1", "claude/v1", "v1"] {
        r = r.push(
            Router::with_path(prefix)
                .push(Router::with_path("messages").post(messages::messages))
                .push(Router::with_path("messages/count_tokens").post(messages::count_tokens))
                .push(Router::with_path("models").get(info::models))
                .push(Router::with_path("key-info").get(info::key_info))
                .push(Router::with_path("usage").get(info::usage))
                .push(Router::with_path("me").get(info::me)),
        );
    }
    r
}
