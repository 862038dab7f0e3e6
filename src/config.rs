//! Runtime configuration: defaults, an optional TOML file, then environment, then CLI flags.
//!
//! Environment names follow v1 where v1 had one (`HOST`, `PORT`, `TIMEZONE_OFFSET`,
//! `ENCRYPTION_KEY`, `ADMIN_USERNAME`, `ADMIN_PASSWORD`, `API_KEY_PREFIX`); crs-only settings
//! use a `CRS_` prefix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Settings as they can appear in `config.toml`. Every field is optional; env and flags win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FileConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub timezone_offset: Option<f64>,
    pub encryption_key: Option<String>,
    pub admin_username: Option<String>,
    pub admin_password: Option<String>,
    pub api_key_prefix: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub upstream_timeout_secs: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub admin_session_hours: Option<u64>,
    pub ledger_flush_ms: Option<u64>,
    pub sticky_session_ttl_hours: Option<f64>,
    pub max_body_mb: Option<usize>,
    pub max_inflight_body_mb: Option<usize>,
    pub max_upstream_body_mb: Option<usize>,
    pub store_cache_mb: Option<usize>,
    pub upstream_idle_connections: Option<usize>,
    pub upstream_idle_secs: Option<u64>,
    pub trust_proxy: Option<bool>,
    pub metrics_allow: Option<Vec<String>>,
    pub pricing_url: Option<String>,
    pub log_dir: Option<PathBuf>,
    pub upstream_ca_file: Option<PathBuf>,
    pub log_max_size: Option<String>,
    pub log_max_files: Option<usize>,
    pub max_connections: Option<usize>,
    pub serving_threads: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub body_min_rate: Option<u64>,
    pub throttle_secs: Option<usize>,
    pub window_threshold_percent: Option<usize>,
    pub gpt_model_for_claude: Option<String>,
    pub gpt_model_for_haiku: Option<String>,
    pub usage_poll_secs: Option<u64>,
    pub recovery_base_secs: Option<u64>,
    pub recovery_max_secs: Option<u64>,
}

/// Values given on the command line (already merged with their env fallbacks by clap).
#[derive(Debug, Default, Clone)]
pub struct CliOverrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

/// Anthropic's OAuth endpoints for Claude subscription accounts (configurable for tests).
pub const CLAUDE_OAUTH_AUTHORIZE_URL: &str = "https://claude.ai/oauth/authorize";
/// WorkOS, which issues Factory's (Droid) tokens: `{base}/user_management/authenticate`.
pub const DROID_WORKOS_URL: &str = "https://api.workos.com";
pub const CLAUDE_OAUTH_TOKEN_URL: &str = "https://console.anthropic.com/v1/oauth/token";
/// Google's OAuth endpoints and the Code Assist API for Gemini OAuth accounts (v1
/// src/services/geminiAccountService.js: google-auth-library's defaults and
/// `CODE_ASSIST_ENDPOINT`).
pub const GEMINI_OAUTH_AUTHORIZE_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
pub const GEMINI_OAUTH_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub const GEMINI_CODE_ASSIST_URL: &str = "https://cloudcode-pa.googleapis.com";
/// OpenAI's auth server for ChatGPT (Codex) accounts: `/oauth/authorize` and `/oauth/token`
/// under it (v1 src/routes/admin/openaiAccounts.js, `OPENAI_CONFIG.BASE_URL`).
pub const OPENAI_OAUTH_BASE_URL: &str = "https://auth.openai.com";

#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Offset of the accounting time zone from UTC, in minutes (v1's TIMEZONE_OFFSET is hours).
    pub tz_offset_minutes: i32,
    /// v1's ENCRYPTION_KEY: the secret appended to a key before hashing. When unset, crs
    /// generates one into the data directory on first start.
    pub encryption_key: Option<String>,
    pub admin_username: Option<String>,
    pub admin_password: Option<String>,
    pub api_key_prefix: String,
    pub log_level: String,
    pub log_format: LogFormat,
    /// Total time allowed for an upstream response to start (headers received).
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub admin_session: Duration,
    pub ledger_flush: Duration,
    pub max_body_bytes: usize,
    /// All client request bodies held in memory at once, across keys (a request waits briefly
    /// for room, then gets 503).
    pub max_inflight_body_bytes: usize,
    /// The largest non-stream upstream answer read (a larger one is a 502).
    pub max_upstream_body_bytes: usize,
    /// The store's page cache (redb's default is 1 GiB, which a long-running server fills with
    /// every usage bucket it ever touched).
    pub store_cache_bytes: usize,
    /// Idle keep-alive connections kept per upstream host at most (each holds ~100 KiB). The
    /// pool keeps what demand opened, so a busy relay reuses connections instead of opening
    /// new ones (a TLS handshake each); `upstream_idle` releases them once traffic stops.
    pub upstream_idle_connections: usize,
    /// How long an idle upstream connection is kept.
    pub upstream_idle: Duration,
    /// PEM certificates trusted for upstream HTTPS besides the system's (a private gateway's
    /// CA, or the CA of a proxy that inspects TLS).
    pub upstream_ca_file: Option<PathBuf>,
    /// Client connections open at once; more wait in the listen backlog. `None`: sized from
    /// the open-file limit (`listener::default_max_connections`).
    pub max_connections: Option<usize>,
    /// Threads serving connections, each with a single-threaded runtime of its own
    /// (`runtime`); one a core by default. 0: connections run on the main runtime's
    /// work-stealing workers instead.
    pub serving_threads: usize,
    /// Time for a client to send a request's headers (and to start the next request on an
    /// idle keep-alive connection).
    pub header_timeout: Duration,
    /// Time for a request body to arrive, counted from its headers...
    pub body_timeout: Duration,
    /// ...plus one second per this many bytes received (0: no extension), so large bodies
    /// that keep coming at this rate are not cut off.
    pub body_min_rate: u64,
    /// How long a session keeps its account (v1's STICKY_SESSION_TTL_HOURS).
    pub sticky_ttl: Duration,
    /// Attempts per request across accounts before the error reaches the client.
    pub max_attempts: u32,
    /// Seconds an account sits out after a 429 that says nothing about when it ends.
    pub throttle_secs: u32,
    /// Subscription accounts whose binding usage window is at least this full (percent) take no
    /// new sessions while another account has room.
    pub window_threshold_percent: u32,
    /// The OpenAI model a Claude request runs on when it reaches an OpenAI Responses account
    /// whose model mapping does not name it (Claude Code on a GPT account); Haiku requests
    /// (Claude Code's small background tasks) take the second.
    pub gpt_model_for_claude: String,
    pub gpt_model_for_haiku: String,
    /// The longest an OAuth token endpoint may take to answer.
    pub oauth_timeout: Duration,
    /// Claude OAuth endpoints (overridable for testing and for regional mirrors).
    pub claude_oauth_token_url: String,
    pub claude_oauth_authorize_url: String,
    /// Gemini OAuth: Google's endpoints and the Code Assist base (overridable for testing).
    pub gemini_oauth_token_url: String,
    pub gemini_oauth_authorize_url: String,
    pub gemini_code_assist_url: String,
    /// Between polls of a Code Assist `onboardUser` operation (v1 waits 5 s, 12 times).
    pub gemini_onboard_poll: Duration,
    /// OpenAI's auth server for ChatGPT accounts (overridable for testing).
    pub openai_oauth_base_url: String,
    /// WorkOS user-management base URL Droid accounts refresh their tokens at (v1
    /// droidAccountService.js `oauthTokenUrl`, workosOAuthHelper.js), overridable for tests.
    pub droid_workos_url: String,
    /// crs runs behind a reverse proxy: the client address of an admin login (for throttling
    /// and the log) is the last `X-Forwarded-For` entry, the one the proxy appended, instead of
    /// the TCP peer (the proxy itself). Off by default: a client could put any address there.
    pub trust_proxy: bool,
    /// Admin login throttling and the bound on concurrent password checks.
    pub login: LoginLimits,
    /// Addresses (TCP peers) that may read `/metrics` without an admin token.
    pub metrics_allow: Vec<AddrRange>,
    /// A LiteLLM-format pricing table fetched at start and then daily (off when `None`).
    pub pricing_url: Option<String>,
    /// Log files beside stderr: `crs.log` in this directory, rotated (off when `None`).
    pub log_dir: Option<PathBuf>,
    /// Size at which the log file is rotated, in bytes (v1's `LOG_MAX_SIZE`).
    pub log_max_bytes: u64,
    /// Rotated log files kept, besides the current one (v1's `LOG_MAX_FILES`).
    pub log_max_files: usize,
    /// Account health in the background (`accounts::usage_poll`, `accounts::health`).
    pub health: HealthConfig,
}

/// Background account health: usage-window polls of Claude OAuth accounts, recovery tests of
/// accounts out of rotation, scheduled account tests.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// How often the usage windows of Claude OAuth accounts in use are polled (zero: never,
    /// except on demand).
    pub usage_poll: Duration,
    /// First wait before an account out of rotation (`unauthorized`, `blocked`, `error`,
    /// `refresh_failed`) is tested again; it doubles after every failed test ... (zero: no
    /// automatic recovery)
    pub recovery_base: Duration,
    /// ... up to this.
    pub recovery_max: Duration,
    /// How often the health loop looks for due recovery and scheduled tests (not in
    /// `config.toml`; tests shorten it).
    pub tick: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            usage_poll: Duration::from_secs(300),
            recovery_base: Duration::from_secs(60),
            recovery_max: Duration::from_secs(3600),
            tick: Duration::from_secs(15),
        }
    }
}

/// An address range (`10.0.0.0/8`, `::1`, `192.168.1.20`) for allow-lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange {
    pub net: std::net::IpAddr,
    pub prefix: u8,
}

impl AddrRange {
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: std::net::IpAddr = addr
            .parse()
            .with_context(|| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .with_context(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(AddrRange { net, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let (a, b, bits) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// A size such as `10m`, `512k`, `1g` or a plain number of bytes (v1's `LOG_MAX_SIZE`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Admin login defences (`auth::login`). Not in `config.toml`: the defaults suit every
/// deployment; tests shorten the delays.
#[derive(Debug, Clone)]
pub struct LoginLimits {
    /// Failed logins an address or a user name may have before each further failure locks it.
    pub free_failures: u32,
    /// The first lock; every further failure doubles it.
    pub base_delay: Duration,
    /// The longest lock of a client address.
    pub address_max_delay: Duration,
    /// The longest lock of a user name: short, so guesses from many addresses cannot keep the
    /// real admin out for long.
    pub user_max_delay: Duration,
    /// Failures are forgotten after this long without one.
    pub quiet_reset: Duration,
    /// Password checks (argon2, 19 MiB each) running at once.
    pub hash_permits: usize,
    /// Logins waiting for a password check; more are answered 503.
    pub hash_queue: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            free_failures: 5,
            base_delay: Duration::from_secs(2),
            address_max_delay: Duration::from_secs(300),
            user_max_delay: Duration::from_secs(60),
            quiet_reset: Duration::from_secs(15 * 60),
            hash_permits: 2,
            hash_queue: 16,
        }
    }
}

/// The server's store page cache unless configured. The kernel's page cache already holds the
/// file, so a large cache of our own only doubles it: with 2 MiB a year of history for 100 keys
/// still answers every dashboard query in under 3 ms (examples/stats_bench.rs).
pub const DEFAULT_STORE_CACHE_MB: usize = 2;

/// Bytes per second a request body must average, beyond `body_timeout`, to keep arriving.
pub const DEFAULT_BODY_MIN_RATE: u64 = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Defaults suitable for tests: loopback, ephemeral port, the given data dir.
    pub fn for_data_dir(dir: impl Into<PathBuf>) -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 0,
            data_dir: dir.into(),
            tz_offset_minutes: 8 * 60,
            encryption_key: None,
            admin_username: None,
            admin_password: None,
            api_key_prefix: "cr_".into(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            upstream_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            admin_session: Duration::from_secs(24 * 3600),
            ledger_flush: Duration::from_millis(100),
            max_body_bytes: 64 * 1024 * 1024,
            max_inflight_body_bytes: 256 * 1024 * 1024,
            oauth_timeout: Duration::from_secs(30),
            max_upstream_body_bytes: 64 * 1024 * 1024,
            store_cache_bytes: DEFAULT_STORE_CACHE_MB * 1024 * 1024,
            upstream_idle_connections: 1024,
            upstream_idle: Duration::from_secs(30),
            upstream_ca_file: None,
            max_connections: None,
            serving_threads: crate::runtime::cores(),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            body_min_rate: DEFAULT_BODY_MIN_RATE,
            sticky_ttl: Duration::from_secs(3600),
            max_attempts: 3,
            throttle_secs: 30,
            window_threshold_percent: 95,
            gpt_model_for_claude: "gpt-5".into(),
            gpt_model_for_haiku: "gpt-5-mini".into(),
            claude_oauth_token_url: CLAUDE_OAUTH_TOKEN_URL.into(),
            claude_oauth_authorize_url: CLAUDE_OAUTH_AUTHORIZE_URL.into(),
            gemini_oauth_token_url: GEMINI_OAUTH_TOKEN_URL.into(),
            gemini_oauth_authorize_url: GEMINI_OAUTH_AUTHORIZE_URL.into(),
            gemini_code_assist_url: GEMINI_CODE_ASSIST_URL.into(),
            gemini_onboard_poll: Duration::from_secs(5),
            openai_oauth_base_url: OPENAI_OAUTH_BASE_URL.into(),
            droid_workos_url: DROID_WORKOS_URL.into(),
            trust_proxy: false,
            login: LoginLimits::default(),
            health: HealthConfig::default(),
            metrics_allow: Vec::new(),
            pricing_url: None,
            log_dir: None,
            log_max_bytes: 10 << 20,
            log_max_files: 5,
        }
    }

    /// Build the configuration from flags, the process environment and an optional file.
    pub fn load(cli: &CliOverrides) -> Result<Self> {
        Self::load_with_env(cli, &|k| std::env::var(k).ok())
    }

    pub fn load_with_env(cli: &CliOverrides, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let env_nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let data_dir_hint = cli
            .data_dir
            .clone()
            .or_else(|| env_nonempty("CRS_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("./data"));
        let config_path = cli
            .config
            .clone()
            .or_else(|| env_nonempty("CRS_CONFIG").map(PathBuf::from));
        let file = match &config_path {
            Some(p) => read_file_config(p)?,
            None => {
                let default = data_dir_hint.join("config.toml");
                if default.exists() {
                    read_file_config(&default)?
                } else {
                    FileConfig::default()
                }
            }
        };

        let mut c = Config::for_data_dir(
            cli.data_dir
                .clone()
                .or_else(|| env_nonempty("CRS_DATA_DIR").map(PathBuf::from))
                .or(file.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from("./data")),
        );
        c.host = cli
            .host
            .clone()
            .or_else(|| env_nonempty("HOST"))
            .or(file.host.clone())
            .unwrap_or(c.host);
        c.port = match cli.port {
            Some(p) => p,
            None => match env_nonempty("PORT") {
                Some(p) => p
                    .trim()
                    .parse()
                    .with_context(|| format!("PORT={p:?} is not a port number"))?,
                None => file.port.unwrap_or(3000),
            },
        };
        let tz_hours = match env_nonempty("TIMEZONE_OFFSET") {
            Some(v) => v
                .trim()
                .parse::<f64>()
                .with_context(|| format!("TIMEZONE_OFFSET={v:?} is not a number of hours"))?,
            None => file.timezone_offset.unwrap_or(8.0),
        };
        if !(-14.0..=14.0).contains(&tz_hours) {
            bail!("TIMEZONE_OFFSET={tz_hours} is outside -14..=14 hours");
        }
        c.tz_offset_minutes = (tz_hours * 60.0).round() as i32;
        c.encryption_key = env_nonempty("ENCRYPTION_KEY").or(file.encryption_key);
        c.admin_username = env_nonempty("ADMIN_USERNAME").or(file.admin_username);
        c.admin_password = env_nonempty("ADMIN_PASSWORD").or(file.admin_password);
        c.api_key_prefix = env_nonempty("API_KEY_PREFIX")
            .or(file.api_key_prefix)
            .unwrap_or(c.api_key_prefix);
        c.log_level = env_nonempty("LOG_LEVEL")
            .or(file.log_level)
            .unwrap_or(c.log_level);
        c.log_format = match env_nonempty("CRS_LOG_FORMAT")
            .or(file.log_format)
            .as_deref()
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("log format {other:?} is not one of text, json"),
        };
        let secs = |env_name: &str, file_val: Option<u64>, default: Duration| -> Result<Duration> {
            Ok(match env_nonempty(env_name) {
                Some(v) => Duration::from_secs(
                    v.trim()
                        .parse()
                        .with_context(|| format!("{env_name}={v:?} is not a number of seconds"))?,
                ),
                None => file_val.map(Duration::from_secs).unwrap_or(default),
            })
        };
        c.upstream_timeout = secs(
            "CRS_UPSTREAM_TIMEOUT_SECS",
            file.upstream_timeout_secs,
            c.upstream_timeout,
        )?;
        c.connect_timeout = secs(
            "CRS_CONNECT_TIMEOUT_SECS",
            file.connect_timeout_secs,
            c.connect_timeout,
        )?;
        c.upstream_idle = secs(
            "CRS_UPSTREAM_IDLE_SECS",
            file.upstream_idle_secs,
            c.upstream_idle,
        )?;
        c.admin_session = match file.admin_session_hours {
            Some(h) => Duration::from_secs(h * 3600),
            None => c.admin_session,
        };
        if let Some(ms) = file.ledger_flush_ms {
            c.ledger_flush = Duration::from_millis(ms.max(1));
        }
        let sticky_hours = match env_nonempty("STICKY_SESSION_TTL_HOURS") {
            Some(v) => Some(v.trim().parse::<f64>().with_context(|| {
                format!("STICKY_SESSION_TTL_HOURS={v:?} is not a number of hours")
            })?),
            None => file.sticky_session_ttl_hours,
        };
        if let Some(h) = sticky_hours {
            if !(h > 0.0 && h <= 24.0 * 365.0) {
                bail!("STICKY_SESSION_TTL_HOURS must be between 0 and 8760 hours");
            }
            c.sticky_ttl = Duration::from_secs_f64(h * 3600.0);
        }
        if let Some(u) = env_nonempty("CRS_CLAUDE_OAUTH_TOKEN_URL") {
            c.claude_oauth_token_url = u;
        }
        if let Some(u) = env_nonempty("CRS_CLAUDE_OAUTH_AUTHORIZE_URL") {
            c.claude_oauth_authorize_url = u;
        }
        for (var, slot) in [
            ("CRS_GEMINI_OAUTH_TOKEN_URL", &mut c.gemini_oauth_token_url),
            (
                "CRS_GEMINI_OAUTH_AUTHORIZE_URL",
                &mut c.gemini_oauth_authorize_url,
            ),
            ("CRS_GEMINI_CODE_ASSIST_URL", &mut c.gemini_code_assist_url),
        ] {
            if let Some(u) = env_nonempty(var) {
                *slot = u;
            }
        }
        if let Some(u) = env_nonempty("CRS_OPENAI_OAUTH_BASE_URL") {
            c.openai_oauth_base_url = u.trim_end_matches('/').to_owned();
        }
        if let Some(u) = env_nonempty("CRS_DROID_WORKOS_URL") {
            c.droid_workos_url = u;
        }
        if let Some(n) = env_nonempty("CRS_MAX_ATTEMPTS") {
            c.max_attempts = n
                .trim()
                .parse()
                .with_context(|| format!("CRS_MAX_ATTEMPTS={n:?} is not a number"))?;
        }
        if let Some(mb) = file.max_body_mb {
            c.max_body_bytes = mb.max(1) * 1024 * 1024;
        }
        // A count from env (winning) or the file; a value that is not a number names its variable.
        let count = |env_name: &str, file_val: Option<usize>| -> Result<Option<usize>> {
            match env_nonempty(env_name) {
                Some(v) => {
                    Ok(Some(v.trim().parse().with_context(|| {
                        format!("{env_name}={v:?} is not a number")
                    })?))
                }
                None => Ok(file_val),
            }
        };
        if let Some(secs) = count("CRS_OAUTH_TIMEOUT_SECS", None)? {
            c.oauth_timeout = Duration::from_secs(secs.max(1) as u64);
        }
        if let Some(mb) = count("CRS_MAX_INFLIGHT_BODY_MB", file.max_inflight_body_mb)? {
            c.max_inflight_body_bytes = mb.max(1) * 1024 * 1024;
        }
        if let Some(mb) = count("CRS_MAX_UPSTREAM_BODY_MB", file.max_upstream_body_mb)? {
            c.max_upstream_body_bytes = mb.max(1) * 1024 * 1024;
        }
        if let Some(mb) = count("CRS_STORE_CACHE_MB", file.store_cache_mb)? {
            c.store_cache_bytes = mb.max(1) * 1024 * 1024;
        }
        if let Some(n) = count(
            "CRS_UPSTREAM_IDLE_CONNECTIONS",
            file.upstream_idle_connections,
        )? {
            c.upstream_idle_connections = n;
        }
        c.trust_proxy = match env_nonempty("CRS_TRUST_PROXY") {
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => bail!("CRS_TRUST_PROXY={v:?} is not true or false"),
            },
            None => file.trust_proxy.unwrap_or(false),
        };
        if let Some(n) = count("CRS_THROTTLE_SECS", file.throttle_secs)? {
            c.throttle_secs = n.clamp(1, 3600) as u32;
        }
        if let Some(n) = count(
            "CRS_WINDOW_THRESHOLD_PERCENT",
            file.window_threshold_percent,
        )? {
            if !(1..=100).contains(&n) {
                bail!("CRS_WINDOW_THRESHOLD_PERCENT must be between 1 and 100");
            }
            c.window_threshold_percent = n as u32;
        }
        if let Some(n) = count("CRS_MAX_CONNECTIONS", file.max_connections)? {
            if n == 0 {
                bail!(
                    "CRS_MAX_CONNECTIONS must be at least 1 (unset it to size it from the open-file limit)"
                );
            }
            c.max_connections = Some(n);
        }
        if let Some(n) = count("CRS_SERVING_THREADS", file.serving_threads)? {
            c.serving_threads = n.min(256);
        }
        c.header_timeout = secs(
            "CRS_HEADER_TIMEOUT_SECS",
            file.header_timeout_secs,
            c.header_timeout,
        )?;
        c.body_timeout = secs(
            "CRS_BODY_TIMEOUT_SECS",
            file.body_timeout_secs,
            c.body_timeout,
        )?;
        for (name, d) in [
            ("CRS_HEADER_TIMEOUT_SECS", c.header_timeout),
            ("CRS_BODY_TIMEOUT_SECS", c.body_timeout),
        ] {
            if d.is_zero() {
                bail!("{name} must be at least 1 second");
            }
        }
        if let Some(n) = count("CRS_BODY_MIN_RATE", file.body_min_rate.map(|n| n as usize))? {
            c.body_min_rate = n as u64;
        }
        let h = &mut c.health;
        h.usage_poll = secs("CRS_USAGE_POLL_SECS", file.usage_poll_secs, h.usage_poll)?;
        h.recovery_base = secs(
            "CRS_RECOVERY_BASE_SECS",
            file.recovery_base_secs,
            h.recovery_base,
        )?;
        h.recovery_max = secs(
            "CRS_RECOVERY_MAX_SECS",
            file.recovery_max_secs,
            h.recovery_max,
        )?
        .max(h.recovery_base);
        let allow: Vec<String> = match env_nonempty("CRS_METRICS_ALLOW") {
            Some(v) => v.split(',').map(str::to_owned).collect(),
            None => file.metrics_allow.unwrap_or_default(),
        };
        c.metrics_allow = allow
            .iter()
            .filter(|a| !a.trim().is_empty())
            .map(|a| AddrRange::parse(a).context("CRS_METRICS_ALLOW / metrics_allow"))
            .collect::<Result<_>>()?;
        c.pricing_url = env_nonempty("CRS_PRICING_URL").or(file.pricing_url);
        if let Some(m) = env_nonempty("CRS_GPT_MODEL_FOR_CLAUDE").or(file.gpt_model_for_claude) {
            c.gpt_model_for_claude = m;
        }
        if let Some(m) = env_nonempty("CRS_GPT_MODEL_FOR_HAIKU").or(file.gpt_model_for_haiku) {
            c.gpt_model_for_haiku = m;
        }
        c.log_dir = env_nonempty("CRS_LOG_DIR")
            .map(PathBuf::from)
            .or(file.log_dir);
        c.upstream_ca_file = env_nonempty("CRS_UPSTREAM_CA_FILE")
            .map(PathBuf::from)
            .or(file.upstream_ca_file);
        if let Some(v) = env_nonempty("LOG_MAX_SIZE").or(file.log_max_size) {
            c.log_max_bytes = parse_size(&v)
                .filter(|n| *n > 0)
                .with_context(|| format!("LOG_MAX_SIZE={v:?} is not a size such as 10m"))?;
        }
        if let Some(n) = count("LOG_MAX_FILES", file.log_max_files)? {
            c.log_max_files = n;
        }
        Ok(c)
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("crs.redb")
    }

    pub fn secrets_path(&self) -> PathBuf {
        self.data_dir.join("secrets.json")
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(env: &[(&str, &str)], cli: CliOverrides) -> Result<Config> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with_env(&cli, &|k| map.get(k).cloned())
    }

    #[test]
    fn address_ranges_sizes_and_the_operations_settings() {
        let r = AddrRange::parse("10.0.0.0/8").unwrap();
        assert!(r.contains("10.1.2.3".parse().unwrap()));
        assert!(r.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        assert!(!r.contains("::1".parse().unwrap()));
        let one = AddrRange::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(
            AddrRange::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(AddrRange::parse("10.0.0.0/33").is_err());
        assert!(AddrRange::parse("host").is_err());
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("2048"), Some(2048));
        assert_eq!(parse_size("ten"), None);

        let c = load(
            &[
                ("CRS_METRICS_ALLOW", "127.0.0.1, 10.0.0.0/8"),
                ("LOG_MAX_SIZE", "1m"),
                ("LOG_MAX_FILES", "3"),
                ("CRS_LOG_DIR", "/var/log/crs"),
                ("CRS_UPSTREAM_CA_FILE", "/etc/crs/gateway-ca.pem"),
            ],
            CliOverrides::default(),
        )
        .unwrap();
        assert_eq!(
            c.upstream_ca_file,
            Some(PathBuf::from("/etc/crs/gateway-ca.pem"))
        );
        assert_eq!(c.metrics_allow.len(), 2);
        assert_eq!(c.log_max_bytes, 1 << 20);
        assert_eq!(c.log_max_files, 3);
        assert_eq!(c.log_dir, Some(PathBuf::from("/var/log/crs")));
        assert!(c.pricing_url.is_none());
        let bad = load(&[("CRS_METRICS_ALLOW", "nope")], CliOverrides::default());
        assert!(format!("{:#}", bad.unwrap_err()).contains("CRS_METRICS_ALLOW"));
    }

    #[test]
    fn defaults_match_v1() {
        let c = load(&[], CliOverrides::default()).unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 3000);
        assert_eq!(c.tz_offset_minutes, 480);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.api_key_prefix, "cr_");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "port = 4000\nhost = \"0.0.0.0\"\ntimezone_offset = -5\n",
        )
        .unwrap();
        let cli = CliOverrides {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = load(&[("PORT", "5000")], cli.clone()).unwrap();
        assert_eq!(c.port, 5000);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.tz_offset_minutes, -300);
        let c = load(
            &[("PORT", "5000")],
            CliOverrides {
                port: Some(6000),
                ..cli
            },
        )
        .unwrap();
        assert_eq!(c.port, 6000);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = load(&[("PORT", "abc")], CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("PORT"), "{e}");
        let e = load(&[("TIMEZONE_OFFSET", "99")], CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("TIMEZONE_OFFSET"), "{e}");
        let e = load(&[("CRS_STORE_CACHE_MB", "lots")], CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("CRS_STORE_CACHE_MB"), "{e}");
        let e = load(&[("CRS_TRUST_PROXY", "maybe")], CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("CRS_TRUST_PROXY"), "{e}");
    }

    #[test]
    fn proxy_headers_are_trusted_only_when_configured() {
        assert!(!load(&[], CliOverrides::default()).unwrap().trust_proxy);
        assert!(
            load(&[("CRS_TRUST_PROXY", "true")], CliOverrides::default())
                .unwrap()
                .trust_proxy
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "trust_proxy = true\n").unwrap();
        let cli = CliOverrides {
            config: Some(file),
            ..Default::default()
        };
        assert!(load(&[], cli.clone()).unwrap().trust_proxy);
        assert!(!load(&[("CRS_TRUST_PROXY", "0")], cli).unwrap().trust_proxy);
    }

    #[test]
    fn account_health_knobs_from_file_and_env() {
        let c = load(&[], CliOverrides::default()).unwrap();
        assert_eq!(c.health.usage_poll, Duration::from_secs(300));
        assert_eq!(c.health.recovery_base, Duration::from_secs(60));
        assert_eq!(c.health.recovery_max, Duration::from_secs(3600));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "usage_poll_secs = 600\nrecovery_base_secs = 30\nrecovery_max_secs = 10\n",
        )
        .unwrap();
        let cli = CliOverrides {
            config: Some(file),
            ..Default::default()
        };
        let c = load(&[("CRS_USAGE_POLL_SECS", "0")], cli).unwrap();
        assert_eq!(c.health.usage_poll, Duration::ZERO, "env wins");
        assert_eq!(c.health.recovery_base, Duration::from_secs(30));
        assert_eq!(
            c.health.recovery_max,
            Duration::from_secs(30),
            "never below the first wait"
        );
        let e = load(
            &[("CRS_RECOVERY_BASE_SECS", "soon")],
            CliOverrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("CRS_RECOVERY_BASE_SECS"), "{e}");
    }

    #[test]
    fn store_cache_is_bounded_by_default_and_configurable() {
        let c = load(&[], CliOverrides::default()).unwrap();
        assert_eq!(c.store_cache_bytes, DEFAULT_STORE_CACHE_MB << 20);
        let c = load(&[("CRS_STORE_CACHE_MB", "64")], CliOverrides::default()).unwrap();
        assert_eq!(c.store_cache_bytes, 64 << 20);
    }

    #[test]
    fn connection_limits_and_timeouts_from_file_and_env() {
        let c = load(&[], CliOverrides::default()).unwrap();
        assert_eq!(c.max_connections, None);
        assert_eq!(c.serving_threads, crate::runtime::cores());
        assert_eq!(c.header_timeout, Duration::from_secs(30));
        assert_eq!(c.body_timeout, Duration::from_secs(30));
        assert_eq!(c.body_min_rate, DEFAULT_BODY_MIN_RATE);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "max_connections = 100\nserving_threads = 3\nheader_timeout_secs = 5\nbody_timeout_secs = 7\nbody_min_rate = 0\n",
        )
        .unwrap();
        let cli = CliOverrides {
            config: Some(file),
            ..Default::default()
        };
        let c = load(&[("CRS_BODY_TIMEOUT_SECS", "9")], cli).unwrap();
        assert_eq!(c.max_connections, Some(100));
        assert_eq!(c.serving_threads, 3);
        assert_eq!(
            load(&[("CRS_SERVING_THREADS", "0")], CliOverrides::default())
                .unwrap()
                .serving_threads,
            0
        );
        assert_eq!(c.header_timeout, Duration::from_secs(5));
        assert_eq!(c.body_timeout, Duration::from_secs(9));
        assert_eq!(c.body_min_rate, 0);
        for (k, v) in [
            ("CRS_MAX_CONNECTIONS", "0"),
            ("CRS_MAX_CONNECTIONS", "many"),
            ("CRS_BODY_TIMEOUT_SECS", "0"),
            ("CRS_HEADER_TIMEOUT_SECS", "soon"),
        ] {
            let e = load(&[(k, v)], CliOverrides::default()).unwrap_err();
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "prot = 1\n").unwrap();
        let cli = CliOverrides {
            config: Some(file),
            ..Default::default()
        };
        assert!(load(&[], cli).is_err());
    }
}
