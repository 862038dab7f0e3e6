//! Operational events (an account taken out of rotation, ...) published by the layers that
//! see them and consumed off the request path (the notifier sends them to webhooks). A
//! broadcast channel: publishing never blocks and costs nothing without subscribers; a slow
//! subscriber loses the oldest events, never slows the publisher.

use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An account's stored status changed (`unauthorized`, `blocked`, `refresh_failed`, ...).
    AccountStatus {
        account_id: String,
        status: String,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(256).0,
        }
    }
}

impl Events {
    pub fn publish(&self, e: Event) {
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
