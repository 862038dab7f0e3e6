//! Notifications to webhooks, with v1's configuration (`/admin/webhook/*`): account status
//! changes (from `accounts`' event channel), accounts rate limited and recovered, account daily
//! quotas and key cost limits (daily, total, weekly, five hours) past 80% and reached, failing
//! usage commits. Off the request path: a task receives the events, another looks at the
//! account and key snapshots every few seconds; each delivery runs on a task of its own, with
//! retries and exponential backoff.

pub mod channels;
mod smtp;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::crypto::Secrets;
use crate::events::Event;
use crate::state::AppState;
use crate::store::{Store, Table};

/// The settings row that holds the configuration.
const SETTING: &str = "webhookConfig";
/// Share of an account's daily quota past which `quotaWarning` is sent (once a day).
const QUOTA_WARN: f64 = 0.8;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RetrySettings {
    pub max_retries: u32,
    /// Milliseconds before the first retry; doubled for each further one.
    pub retry_delay: u64,
    /// Milliseconds per attempt.
    pub timeout: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_retries: 3,
            retry_delay: 1000,
            timeout: 10_000,
        }
    }
}

/// One destination, with v1's fields (those of other types stay empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Platform {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub url: String,
    pub enabled: bool,
    pub secret: String,
    pub enable_sign: bool,
    pub device_key: String,
    pub server_url: String,
    pub level: String,
    pub sound: String,
    pub group: String,
    pub bot_token: String,
    /// A number or `@channel`, as v1.
    pub chat_id: Value,
    pub parse_mode: String,
    pub api_url: String,
    /// smtp: server, port (default 465 with `secure`, else 587), implicit TLS, login, sender,
    /// recipients (comma-separated).
    pub host: String,
    pub port: u16,
    pub secure: bool,
    pub user: String,
    pub pass: String,
    pub from: String,
    pub to: String,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Fields this version does not model, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WebhookConfig {
    pub enabled: bool,
    pub platforms: Vec<Platform>,
    /// Notice kind -> sent or not (a kind not listed is sent).
    pub notification_types: BTreeMap<String, bool>,
    pub retry_settings: RetrySettings,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            enabled: false,
            platforms: Vec::new(),
            notification_types: [
                "accountAnomaly",
                "rateLimitRecovery",
                "quotaWarning",
                "systemError",
                "securityAlert",
                "test",
            ]
            .iter()
            .map(|k| ((*k).to_owned(), true))
            .collect(),
            retry_settings: RetrySettings::default(),
            created_at: None,
            updated_at: None,
        }
    }
}

/// Check a platform as v1 does; the message names what is wrong.
pub fn validate(p: &Platform) -> Result<(), String> {
    if !channels::TYPES.contains(&p.kind.as_str()) {
        return Err(format!("unsupported platform type {:?}", p.kind));
    }
    match p.kind.as_str() {
        "bark" if p.device_key.is_empty() => Err("bark needs deviceKey".into()),
        "telegram" if p.bot_token.is_empty() || p.chat_id.is_null() => {
            Err("telegram needs botToken and chatId".into())
        }
        "dingtalk" | "feishu" if p.enable_sign && p.secret.is_empty() => {
            Err("signing needs a secret".into())
        }
        "smtp" if p.host.is_empty() || p.from.is_empty() || p.to.is_empty() => {
            Err("smtp needs host, from and to".into())
        }
        "bark" | "telegram" | "smtp" => Ok(()),
        _ => match reqwest::Url::parse(&p.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
            _ => Err(format!("invalid webhook url {:?}", p.url)),
        },
    }
}

/// The fields of a platform that are secrets: encrypted at rest, like upstream credentials.
fn secret_fields(p: &mut Platform) -> [&mut String; 3] {
    [&mut p.secret, &mut p.bot_token, &mut p.pass]
}

/// The configuration, its secrets decrypted.
pub fn load(store: &Store, secrets: &Secrets) -> Result<WebhookConfig> {
    let mut c = store
        .get::<WebhookConfig>(Table::Settings, SETTING)?
        .unwrap_or_default();
    for p in &mut c.platforms {
        for f in secret_fields(p) {
            if f.starts_with(crate::crypto::ENC_PREFIX) {
                match secrets.decrypt(f) {
                    Ok(plain) => *f = plain,
                    Err(e) => tracing::warn!(error = %e, "a webhook secret does not decrypt"),
                }
            }
        }
    }
    Ok(c)
}

/// Store the configuration, its secrets encrypted.
pub fn save(store: &Store, secrets: &Secrets, c: &mut WebhookConfig) -> Result<()> {
    let now = Utc::now();
    c.created_at.get_or_insert(now);
    c.updated_at = Some(now);
    let mut stored = c.clone();
    for p in &mut stored.platforms {
        for f in secret_fields(p) {
            if !f.is_empty() && !f.starts_with(crate::crypto::ENC_PREFIX) {
                *f = secrets.encrypt(f);
            }
        }
    }
    store.put(Table::Settings, SETTING, &stored)
}

/// What is sent.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The notification type (`accountAnomaly`, `rateLimitRecovery`, `quotaWarning`,
    /// `systemError`, `test`).
    pub kind: String,
    pub title: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
    pub timestamp: DateTime<Utc>,
}

impl Notice {
    pub fn new(kind: &str, title: impl Into<String>, message: impl Into<String>) -> Notice {
        Notice {
            kind: kind.into(),
            title: title.into(),
            message: message.into(),
            fields: Vec::new(),
            timestamp: Utc::now(),
        }
    }

    pub fn field(mut self, k: &str, v: impl Into<String>) -> Notice {
        self.fields.push((k.into(), v.into()));
        self
    }

    /// The custom platform's JSON body.
    pub fn json(&self) -> Value {
        let data: serde_json::Map<String, Value> = self
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({"type": self.kind, "title": self.title, "message": self.message,
               "data": data, "timestamp": self.timestamp.to_rfc3339(), "service": "crs"})
    }
}

/// Deliver to one platform with retries and backoff; the last error if every attempt failed.
pub async fn deliver(
    client: &reqwest::Client,
    p: &Platform,
    n: &Notice,
    r: &RetrySettings,
) -> Result<(), String> {
    let mut delay = Duration::from_millis(r.retry_delay.max(1));
    let timeout = Duration::from_millis(r.timeout.clamp(100, 120_000));
    let mut attempt = 0;
    loop {
        match channels::send_once(client, p, n, timeout).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= r.max_retries.min(10) => return Err(format!("{e:#}")),
            Err(e) => {
                tracing::debug!(platform = %p.kind, attempt, error = %format!("{e:#}"), "webhook delivery failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(300));
                attempt += 1;
            }
        }
    }
}

/// Send `n` to every enabled platform that takes its kind; waits for the outcome.
pub async fn send_all(
    client: &reqwest::Client,
    c: &WebhookConfig,
    n: &Notice,
) -> (usize, Vec<String>) {
    if !c.enabled || !c.notification_types.get(&n.kind).copied().unwrap_or(true) {
        return (0, Vec::new());
    }
    let sends = c
        .platforms
        .iter()
        .filter(|p| p.enabled)
        .map(|p| async move {
            deliver(client, p, n, &c.retry_settings)
                .await
                .map_err(|e| format!("{} ({}): {e}", p.name, p.kind))
        });
    let results = futures_util::future::join_all(sends).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let errors: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
    for e in &errors {
        tracing::warn!(error = %e, kind = %n.kind, "webhook notification not delivered");
    }
    (ok, errors)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// Load the configuration and send, on a task of its own.
fn dispatch(st: &Arc<AppState>, n: Notice) {
    let (store, secrets) = (st.store.clone(), st.secrets.clone());
    tokio::spawn(async move {
        let c = match crate::web::blocking(move || load(&store, &secrets)).await {
            Ok(c) => c,
            Err(e) => return tracing::warn!(error = %e, "reading the webhook configuration failed"),
        };
        send_all(&client(), &c, &n).await;
    });
}

/// A `systemError` notice (e.g. an upgrade that did not happen), sent off the caller's path.
pub fn system_error(st: &Arc<AppState>, title: &str, message: &str) {
    dispatch(
        st,
        Notice::new("systemError", format!("crs: {title}"), message),
    );
}

fn account_label(st: &AppState, id: &str) -> (String, String) {
    let pool = st.accounts.load();
    match pool.by_id.get(id) {
        Some(a) => (a.rec.name.clone(), a.rec.platform.spec().name.to_owned()),
        None => (id.to_owned(), String::new()),
    }
}

fn on_event(st: &Arc<AppState>, e: Event) {
    match e {
        Event::AccountStatus {
            account_id,
            status,
            reason,
        } => {
            let (name, platform) = account_label(st, &account_id);
            let n = Notice::new(
                "accountAnomaly",
                format!("crs: account {name} is {status}"),
                format!("Account {name} was taken out of rotation: {reason}"),
            )
            .field("accountId", account_id)
            .field("accountName", name)
            .field("platform", platform)
            .field("status", status)
            .field("reason", reason);
            dispatch(st, n);
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Cooling {
    #[default]
    None,
    /// Cooling at the last look, not reported yet.
    Seen,
    Reported,
}

/// What the watcher saw last time.
#[derive(Default)]
struct Seen {
    /// (key, limit) -> 1 once past `QUOTA_WARN` was sent, 2 once reached was sent; back to 0
    /// when the use drops below the warning (a new day, week or five hours).
    key_limits: HashMap<(String, &'static str), u8>,
    cooling: HashMap<String, Cooling>,
    /// account -> the day (number) its quota warning went out.
    quota_warned: HashMap<String, i32>,
    commit_failures: u64,
}

/// Compare the account snapshot (and the ledger) with the last look.
fn watch(st: &Arc<AppState>, seen: &mut Seen) {
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    let day = crate::limits::meter::local_day(now, st.clock.offset());
    let pool = st.accounts.load();
    for a in &pool.accounts {
        let id = &a.rec.id;
        // A cooldown is reported once it has lasted a whole look (so one an account status
        // change comes with, reported as that, is not reported twice), a recovery only after
        // a reported cooldown.
        let cooling = a.rt.cooldown(now_ms).filter(|_| !a.needs_attention());
        let state = seen.cooling.entry(id.clone()).or_default();
        match (&cooling, *state) {
            (Some(_), Cooling::None) => *state = Cooling::Seen,
            (Some((until, reason)), Cooling::Seen) => {
                *state = Cooling::Reported;
                dispatch(
                    st,
                    Notice::new(
                        "accountAnomaly",
                        format!("crs: account {} is rate limited", a.rec.name),
                        format!(
                            "Account {} is out of rotation until {}: {reason}",
                            a.rec.name,
                            DateTime::from_timestamp_millis(*until)
                                .unwrap_or(now)
                                .to_rfc3339()
                        ),
                    )
                    .field("accountId", id.clone())
                    .field("accountName", a.rec.name.clone())
                    .field("status", "rate_limited")
                    .field("reason", reason.clone()),
                );
            }
            (None, Cooling::Reported) => {
                *state = Cooling::None;
                dispatch(
                    st,
                    Notice::new(
                        "rateLimitRecovery",
                        format!("crs: account {} recovered", a.rec.name),
                        format!("Account {} is back in rotation", a.rec.name),
                    )
                    .field("accountId", id.clone())
                    .field("accountName", a.rec.name.clone())
                    .field("status", "active"),
                );
            }
            (None, _) => *state = Cooling::None,
            (Some(_), Cooling::Reported) => {}
        }
        let quota = a.rec.daily_quota_micros;
        if quota > 0 && seen.quota_warned.get(id) != Some(&day) {
            let spent = a.rt.cost_today(day) as f64 / 1e6;
            if spent >= quota as f64 * QUOTA_WARN {
                seen.quota_warned.insert(id.clone(), day);
                dispatch(
                    st,
                    Notice::new(
                        "quotaWarning",
                        format!(
                            "crs: account {} used {:.0}% of its daily quota",
                            a.rec.name,
                            spent / quota as f64 * 100.0
                        ),
                        format!(
                            "Account {} spent ${:.2} of ${:.2} today",
                            a.rec.name,
                            spent / 1e6,
                            quota as f64 / 1e6
                        ),
                    )
                    .field("accountId", id.clone())
                    .field("accountName", a.rec.name.clone()),
                );
            }
        }
    }
    watch_keys(st, seen, now);
    let failures = st.ledger.metrics.commit_failures();
    if failures > seen.commit_failures {
        dispatch(
            st,
            Notice::new(
                "systemError",
                "crs: usage commits are failing",
                format!(
                    "{} usage commit(s) failed; usage is kept in memory and retried",
                    failures - seen.commit_failures
                ),
            ),
        );
    }
    seen.commit_failures = failures;
}

/// Keys past `QUOTA_WARN` of a cost limit (`quotaWarning`), and keys at a limit, whose
/// requests are refused until it resets (`quotaWarning` too, `level: reached`).
fn watch_keys(st: &Arc<AppState>, seen: &mut Seen, now: DateTime<Utc>) {
    let off = st.clock.offset();
    let idx = st.keys.load();
    for e in idx.by_id.values() {
        let k = &e.rec;
        if k.is_deleted
            || (k.daily_cost_limit_micros
                | k.total_cost_limit_micros
                | k.weekly_opus_cost_limit_micros
                | k.five_hour_cost_limit_micros)
                == 0
        {
            continue;
        }
        let mut m = e.rt.meter.lock().clone();
        m.roll(k, now, off);
        for (limit, used, cap) in [
            ("daily", m.daily, k.daily_cost_limit_micros),
            ("total", m.total, k.total_cost_limit_micros),
            ("weekly", m.weekly_claude, k.weekly_opus_cost_limit_micros),
            (
                "fiveHour",
                m.five_hour_cost(),
                k.five_hour_cost_limit_micros,
            ),
        ] {
            if cap <= 0 {
                continue;
            }
            let share = used as f64 / crate::model::micros_to_picos(cap) as f64;
            let level = if share >= 1.0 {
                2
            } else if share >= QUOTA_WARN {
                1
            } else {
                0
            };
            let last = seen.key_limits.entry((k.id.clone(), limit)).or_default();
            if level > *last {
                let what = if level == 2 { "reached" } else { "warning" };
                dispatch(
                    st,
                    Notice::new(
                        "quotaWarning",
                        format!(
                            "crs: key {} {} its {limit} cost limit",
                            k.name,
                            if level == 2 { "reached" } else { "is near" }
                        ),
                        format!(
                            "Key {} used ${:.2} of its ${:.2} {limit} cost limit{}",
                            k.name,
                            crate::model::picos_to_dollars(used),
                            crate::model::micros_to_dollars(cap),
                            if level == 2 {
                                "; its requests are refused until it resets"
                            } else {
                                ""
                            }
                        ),
                    )
                    .field("keyId", k.id.clone())
                    .field("keyName", k.name.clone())
                    .field("limit", limit)
                    .field("level", what),
                );
            }
            *last = level;
        }
    }
}

/// How often the watcher looks.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Start the notifier tasks (they end with the state).
pub fn spawn(st: &Arc<AppState>) {
    let mut rx = st.accounts.events.subscribe();
    let weak = Arc::downgrade(st);
    tokio::spawn(async move {
        loop {
            let e = match rx.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(events = n, "notifier fell behind; events dropped");
                    continue;
                }
                Err(_) => return,
            };
            let Some(st) = weak.upgrade() else { return };
            on_event(&st, e);
        }
    });
    let weak = Arc::downgrade(st);
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            tick.tick().await;
            let Some(st) = weak.upgrade() else { return };
            watch(&st, &mut seen);
        }
    });
}
