//! `crs import` / `crs export` against the v1.1.314 fixture (shared/fixtures/crs-v1), loaded
//! into a real redis-server started on a free port. Without redis-server the tests skip,
//! unless CRS_E2E_REQUIRED=1 (scripts/test.sh), where they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::client;
use crs::config::Config;
use crs::crypto::Secrets;
use crs::migrate::dump::{self, V1Key, V1Value};
use crs::migrate::{ExportOptions, ImportOptions, Report, Source, Target};
use crs::model::{Account, AccountGroup, Admin, ApiKey, dollars_to_picos, picos_to_dollars};
use crs::store::{Store, Table};
use crs::usage::Counters;
use serde_json::{Value, json};

const ENC_KEY: &str = "crs-fixture-a-encryption-key-32c";
const ADMIN: (&str, &str) = ("fixture_admin_a", "FixtureA-Admin-Pass-2024");

const K1: &str = "3ecd74bd-1e3d-40e2-abc9-b3751611e4b4";
const K2: &str = "b3b7b39c-4257-4888-9ef8-5db21a800658";
const K3: &str = "99903ebc-32d3-4bc4-a8e1-6c6fd727ac92";
const K4: &str = "fc4de60b-1820-463c-9816-75d54d4701eb";
const K5: &str = "7e78b8f3-ee32-44a9-b273-e30aad5e006f";
const K6: &str = "5d3c71bc-8d0b-4eee-a89a-8eb92bbfbb69";
const CC1: &str = "8db6ad03-6f1a-42a7-89fe-a6f310280957";
const CC2: &str = "986b9d02-51b9-4cb0-bba4-bb23f0546c53";
const OR1: &str = "1e22d2c8-4cef-4340-98c0-146449fe34d4";
const OA1: &str = "6f46f9f4-fb57-48ed-acce-06f62e6de75a";
const G1: &str = "467e63e4-eba3-4981-a834-7f49af5ae2c8";

/// (id, plaintext key)
const PLAINTEXT: [(&str, &str); 6] = [
    (
        K1,
        "cr_824ac134d15d10fdd4bbe6cb6e089d23396eb382521fa94b28bca5477d1ff010",
    ),
    (
        K2,
        "cr_87b2dd13bf48593ecc3c2580d95cbbba8796866460fc4c6c497a39a367685472",
    ),
    (
        K3,
        "cr_1bc16cccc2ae8405124848666d16de91750882c44a127d1db2657a770b8646c4",
    ),
    (
        K4,
        "cr_ae819d3d360e2c617fcb0a19fc8159d1240a341cc4fb066214e7df6716b3920a",
    ),
    (
        K5,
        "cr_6fabe939ad602433cbd5ba1d7bae0419bc5f774d4eb6eec1abd958472a778eb0",
    ),
    (
        K6,
        "cr_323f90e0dc3077fcd9fee6524156970649279cc271ecf56bd080a64670da272e",
    ),
];

/// README: per key (requests, in, out, cache create, cache read, CRS cost total).
const KEY_TOTALS: [(&str, [u64; 5], f64); 6] = [
    (K1, [4, 460, 86, 10, 30], 0.0051439),
    (K2, [6, 1370, 207, 50, 160], 0.010803),
    (K3, [2, 14000, 700, 1000, 3000], 0.05715000000000001),
    (K4, [3, 1230, 153, 30, 200], 0.004579),
    (K5, [4, 2020, 262, 0, 200], 0.0057495),
    (K6, [2, 1410, 161, 0, 0], 0.0049975),
];

const ACCOUNT_TOTALS: [(&str, [u64; 5]); 3] = [
    (CC1, [12, 16900, 1090, 1090, 3290]),
    (CC2, [4, 1360, 176, 0, 0]),
    (OR1, [5, 2230, 303, 0, 300]),
];

const MODEL_TOTALS: [(&str, [u64; 5]); 6] = [
    ("claude-3-5-haiku-20241022", [3, 1050, 135, 30, 30]),
    ("claude-opus-4-1-20250805", [2, 350, 55, 0, 0]),
    ("claude-sonnet-4-20250514", [1, 500, 60, 0, 0]),
    ("claude-sonnet-4-5-20250929", [10, 16360, 1016, 1060, 3260]),
    ("gpt-4.1", [1, 200, 40, 0, 100]),
    ("gpt-5", [4, 2030, 263, 0, 200]),
];

const GLOBAL_TOTAL: [u64; 5] = [21, 20490, 1569, 1090, 3590];

/// README: per key and model (requests, in, out, cc, cr) and realCostMicro.
const KEY_MODEL: [(&str, &str, [u64; 5], i64); 15] = [
    (K1, "claude-3-5-haiku-20241022", [1, 120, 22, 0, 30], 186),
    (K1, "claude-opus-4-1-20250805", [1, 130, 23, 0, 0], 3675),
    (K1, "claude-sonnet-4-5-20250929", [2, 210, 41, 10, 0], 1283),
    (K2, "claude-opus-4-1-20250805", [1, 220, 32, 0, 0], 5700),
    (K2, "claude-sonnet-4-5-20250929", [3, 640, 94, 50, 60], 3536),
    (K2, "gpt-4.1", [1, 200, 40, 0, 100], 770),
    (K2, "gpt-5", [1, 310, 41, 0, 0], 798),
    (
        K3,
        "claude-sonnet-4-5-20250929",
        [2, 14000, 700, 1000, 3000],
        57150,
    ),
    (K4, "claude-3-5-haiku-20241022", [1, 420, 52, 30, 0], 574),
    (
        K4,
        "claude-sonnet-4-5-20250929",
        [2, 810, 101, 0, 200],
        4005,
    ),
    (K5, "claude-3-5-haiku-20241022", [1, 510, 61, 0, 0], 652),
    (K5, "claude-sonnet-4-20250514", [1, 500, 60, 0, 0], 2400),
    (K5, "gpt-5", [2, 1010, 141, 0, 200], 2697),
    (K6, "claude-sonnet-4-5-20250929", [1, 700, 80, 0, 0], 3300),
    (K6, "gpt-5", [1, 710, 81, 0, 0], 1698),
];

/// The v1 keyspace: `CRS_V1_FIXTURE`, else `shared/` beside the checkout.
fn fixture_path() -> PathBuf {
    let path = std::env::var_os("CRS_V1_FIXTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/crs-v1/redis-dump.json")
        });
    assert!(
        path.is_file(),
        "v1 fixture not found at {} (set CRS_V1_FIXTURE)",
        path.display()
    );
    path
}

fn fixture_keys() -> Vec<V1Key> {
    let mut keys = Vec::new();
    dump::read_json_file(&fixture_path(), &mut |k| {
        keys.push(k);
        Ok(())
    })
    .expect("the v1 fixture reads");
    keys
}

/// A redis-server on a free port, without persistence; killed on drop.
pub(crate) struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub(crate) fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn redis() -> Option<Redis> {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CRS_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("redis-server is not installed (scripts/test.sh installs it)");
        }
        eprintln!("skipping: redis-server is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(Redis {
        child,
        port,
        _dir: dir,
    })
}

/// Load the fixture into `url`, with its types and (remaining) TTLs.
async fn load_fixture(url: &str) {
    crs::migrate::redis_io::write_all(url, &fixture_keys(), false)
        .await
        .expect("loading the fixture into redis");
}

fn import_opts(dir: &Path) -> ImportOptions {
    ImportOptions {
        data_dir: dir.to_owned(),
        encryption_key: ENC_KEY.into(),
        dry_run: false,
        merge: false,
        progress: false,
    }
}

fn export_opts(dir: &Path) -> ExportOptions {
    ExportOptions {
        data_dir: dir.to_owned(),
        encryption_key: None,
        tz_offset_minutes: 480,
        merge: false,
        progress: false,
    }
}

fn open(dir: &Path) -> (Secrets, std::sync::Arc<Store>) {
    let (s, _) = Secrets::load_or_create(&dir.join("secrets.json"), None).unwrap();
    (s, Store::open(&dir.join("crs.redb")).unwrap())
}

fn five(c: &Counters) -> [u64; 5] {
    [
        c.requests,
        c.input_tokens,
        c.output_tokens,
        c.cache_create_tokens,
        c.cache_read_tokens,
    ]
}

fn n(r: &Report, section: &BTreeMap<String, u64>, what: &str) -> u64 {
    let _ = r;
    section.get(what).copied().unwrap_or(0)
}

/// Import from a real Redis holding the fixture, then serve: keys authenticate, usage and
/// limits continue, decrypted secrets reach the upstream, the v1 admin logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_redis_then_serve() {
    let Some(redis) = redis() else { return };
    let url = redis.url(0);
    load_fixture(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let r = crs::migrate::import(&Source::Redis(url.clone()), &import_opts(dir.path()))
        .await
        .expect("import");

    // The report, section by section.
    assert_eq!(r.keys, 285);
    assert_eq!(n(&r, &r.imported, "api keys"), 6);
    assert_eq!(n(&r, &r.imported, "api keys (of which soft-deleted)"), 1);
    assert_eq!(n(&r, &r.imported, "accounts: claude-console"), 2);
    assert_eq!(n(&r, &r.imported, "accounts: openai-responses"), 1);
    assert_eq!(n(&r, &r.imported, "accounts: claude (OAuth)"), 1);
    assert_eq!(n(&r, &r.imported, "account groups"), 1);
    assert_eq!(n(&r, &r.imported, "request records"), 21);
    assert_eq!(n(&r, &r.imported, "sticky sessions"), 13);
    assert_eq!(n(&r, &r.imported, "admin (v1 credentials, bcrypt)"), 1);
    assert_eq!(n(&r, &r.dropped, "rate_limit:*"), 4);
    assert_eq!(n(&r, &r.dropped, "session:*"), 2);
    assert_eq!(n(&r, &r.rebuilt, "apikey:hash_map"), 1);
    assert_eq!(n(&r, &r.rebuilt, "cost_rank:*"), 4);
    assert_eq!(n(&r, &r.kept_verbatim, "billing:events"), 1);
    assert!(r.not_understood.is_empty(), "{:?}", r.not_understood);
    let text = r.render();
    for s in [
        "Imported",
        "Rebuilt",
        "Dropped",
        "Kept verbatim",
        "billing:events",
    ] {
        assert!(text.contains(s), "{s} missing from:\n{text}");
    }

    // Usage as the store holds it: accounts, models (all-time, derived from key-models),
    // global, key-models with v1's micro-dollar costs (in pico-dollars).
    {
        let (secrets, store) = open(dir.path());
        for (acc, want) in ACCOUNT_TOTALS {
            let c = store.usage_get(&format!("t|a|{acc}")).unwrap().unwrap();
            assert_eq!(five(&c), want, "account {acc}");
        }
        for (model, want) in MODEL_TOTALS {
            let c = store.usage_get(&format!("t|m|{model}")).unwrap().unwrap();
            assert_eq!(five(&c), want, "model {model}");
            let d = store
                .usage_get(&format!("d:2026-11-22|m|{model}"))
                .unwrap()
                .unwrap();
            assert_eq!(five(&d), want, "model {model} on the day");
        }
        let g = store.usage_get("t|g").unwrap().unwrap();
        assert_eq!(five(&g), GLOBAL_TOTAL);
        assert_eq!(
            five(&store.usage_get("h:2026-11-22T11|g").unwrap().unwrap()),
            GLOBAL_TOTAL,
            "hourly global, derived from the keys' hours"
        );
        let mut claude_total = 0;
        for (k, model, want, micro) in KEY_MODEL {
            for period in ["t", "d:2026-11-22", "h:2026-11-22T11"] {
                let c = store
                    .usage_get(&format!("{period}|km|{k}|{model}"))
                    .unwrap()
                    .unwrap();
                assert_eq!(five(&c), want, "{period} {k} {model}");
                let picos = micro * 1_000_000;
                assert_eq!((c.real_cost_picos, c.rated_cost_picos), (picos, picos));
            }
            if k == K3 {
                claude_total += micro;
            }
        }
        assert_eq!(claude_total, 57150);
        // Key buckets carry rated cost (the cost strings, read exactly) for the limit meters.
        for (k, _, cost) in KEY_TOTALS {
            for period in ["t", "d:2026-11-22", "h:2026-11-22T11", "m:2026-11"] {
                let c = store
                    .usage_get(&format!("{period}|k|{k}"))
                    .unwrap()
                    .unwrap();
                assert_eq!(c.rated_cost_picos, dollars_to_picos(cost), "{period} {k}");
            }
        }

        // Secrets: decrypted from v1, re-encrypted with crs's key.
        let acc = |id: &str| store.get::<Account>(Table::Accounts, id).unwrap().unwrap();
        let cc1 = acc(CC1);
        assert!(cc1.api_key.starts_with("enc1:"));
        assert_eq!(
            secrets.decrypt(&cc1.api_key).unwrap(),
            "sk-ant-api03-fixtureA-console-primary-0001"
        );
        assert_eq!(cc1.priority, 10);
        assert_eq!(
            cc1.supported_models["claude-sonnet-4-20250514"],
            "claude-sonnet-4-5-20250929"
        );
        let cc2 = acc(CC2);
        assert_eq!(cc2.proxy, None, "proxy cleared in v1");
        assert_eq!(cc2.daily_quota_micros, 100_000_000);
        let oa1 = acc(OA1);
        assert_eq!(oa1.platform, crs::model::Platform::Claude);
        assert_eq!(
            secrets.decrypt(&oa1.access_token).unwrap(),
            "sk-ant-oat01-fixtureA-ACCESS-token-0004"
        );
        assert_eq!(
            secrets.decrypt(&oa1.refresh_token).unwrap(),
            "sk-ant-ort01-fixtureA-REFRESH-token-0004"
        );
        assert_eq!(
            secrets.decrypt(&oa1.email).unwrap(),
            "oauth-a@fixture.invalid"
        );
        assert_eq!(
            secrets.decrypt(&oa1.password).unwrap(),
            "fixture-a-oauth-login-password"
        );
        assert_eq!(oa1.expires_at, 1830297600000);
        assert_eq!(oa1.scopes, "user:inference");
        assert_eq!(oa1.account_type, "group");
        let p = oa1.proxy.clone().unwrap();
        assert_eq!(
            (p.kind.as_str(), p.host.as_str(), p.port),
            ("http", "127.0.0.1", 3128)
        );
        assert_eq!(p.username, "fixture-a-oauth-proxy-user");
        assert_eq!(
            secrets.decrypt(&p.password).unwrap(),
            "fixture-a-oauth-proxy-pass"
        );
        let or1 = acc(OR1);
        assert_eq!(
            secrets.decrypt(&or1.api_key).unwrap(),
            "sk-proj-fixtureA-openai-responses-0003"
        );
        assert_eq!(or1.extra.get("totalUsedTokens"), Some(&json!("2833")));

        let g: AccountGroup = store.get(Table::Groups, G1).unwrap().unwrap();
        assert_eq!(g.members, vec![OA1.to_owned()]);
        let k5: ApiKey = store.get(Table::ApiKeys, K5).unwrap().unwrap();
        assert_eq!(k5.claude_console_account_id.to_string(), CC2);
        assert_eq!(k5.openai_account_id.to_string(), format!("responses:{OR1}"));
        let k3: ApiKey = store.get(Table::ApiKeys, K3).unwrap().unwrap();
        assert_eq!(k3.total_cost_limit_micros, 50_000);
        assert_eq!(k3.restricted_models, vec!["claude-opus-4-1-20250805"]);

        let sticky: BTreeMap<String, Value> = store
            .load_raw(Table::Sticky)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_slice(&v).unwrap()))
            .collect();
        assert_eq!(
            sticky["1f0e9d8c-7b6a-4958-8372-a4000000000a"]["accountId"],
            CC1
        );
        assert_eq!(
            sticky["h:02bbcc55bfa589bb7eb8da09c0b93565"]["accountId"],
            CC1
        );
        assert!(
            sticky.contains_key(
                "v1o:c8209b18ffd5eb8d5cd20643a5d54b09401b62e4943f0094a6fee56b1c8cdd1f"
            )
        );
        let recs = store.records_for_key(K1, 100).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].model, "claude-opus-4-1-20250805", "newest first");
        assert_eq!(
            (recs[0].real_cost_picos, recs[0].status, recs[0].stream),
            (3_675_000_000, 200, true)
        );
        let admin: Admin = store.get(Table::Admins, ADMIN.0).unwrap().unwrap();
        assert!(admin.password_hash.starts_with("$2a$"));
    }

    // Serve the imported directory.
    crs::init_tls();
    let mock = crs::mock::MockUpstream::start().await.unwrap();
    for k in [
        "sk-ant-api03-fixtureA-console-primary-0001",
        "sk-ant-api03-fixtureA-console-secondary-0002",
        "sk-proj-fixtureA-openai-responses-0003",
    ] {
        mock.state.accepted_keys.lock().push(k.into());
    }
    let running = crs::server::start(Config::for_data_dir(dir.path()))
        .await
        .unwrap();
    let base = running.url();
    let http = client();

    // The v1 admin logs in with its v1 password; the hash becomes argon2.
    let login = |user: &'static str, pass: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            http.post(format!("{base}/web/auth/login"))
                .json(&json!({"username": user, "password": pass}))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(login(ADMIN.0, "wrong-password").await.status(), 401);
    let res = login(ADMIN.0, ADMIN.1).await;
    assert_eq!(res.status(), 200);
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored: Admin = running
        .state
        .store
        .get(Table::Admins, ADMIN.0)
        .unwrap()
        .unwrap();
    assert!(
        stored.password_hash.starts_with("$argon2"),
        "rehashed at login"
    );
    assert_eq!(
        login(ADMIN.0, ADMIN.1).await.status(),
        200,
        "and still logs in"
    );

    // Every live key authenticates with its usage; the soft-deleted one does not.
    for (id, key) in PLAINTEXT {
        let res = http
            .get(format!("{base}/api/v1/usage"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        if id == K6 {
            assert_eq!(status, 401, "{body}");
            assert_eq!(
                body,
                json!({"error": "Invalid API key", "message": "API key not found"})
            );
            continue;
        }
        assert_eq!(status, 200, "{id}: {body}");
        let (_, want, cost) = KEY_TOTALS.iter().find(|t| t.0 == id).unwrap();
        let t = &body["usage"]["total"];
        let got = [
            t["requests"].as_u64().unwrap(),
            t["inputTokens"].as_u64().unwrap(),
            t["outputTokens"].as_u64().unwrap(),
            t["cacheCreateTokens"].as_u64().unwrap(),
            t["cacheReadTokens"].as_u64().unwrap(),
        ];
        assert_eq!(&got, want, "{id}");
        assert_eq!(
            t["cost"].as_f64().unwrap(),
            picos_to_dollars(dollars_to_picos(*cost)),
            "{id}"
        );
    }

    // Limits continue: K3 is past its $0.05 total cost limit.
    let res = http
        .post(format!("{base}/api/v1/messages"))
        .header("x-api-key", PLAINTEXT[2].1)
        .header("anthropic-version", "2023-06-01")
        .json(&crate::common::msg_body(
            "claude-sonnet-4-20250514",
            false,
            "hi",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 402);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "total_cost_limit_exceeded", "{body}");

    // Decrypted secrets reach the upstream: repoint the accounts at the mock.
    let admin = |method: reqwest::Method, path: String, body: Value| {
        let http = http.clone();
        let base = base.clone();
        let token = token.clone();
        async move {
            let r = http
                .request(method, format!("{base}{path}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for id in [CC1, CC2] {
        let (s, v) = admin(
            reqwest::Method::PUT,
            format!("/admin/claude-console-accounts/{id}"),
            json!({"apiUrl": mock.url()}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = admin(
        reqwest::Method::PUT,
        format!("/admin/openai-responses-accounts/{OR1}"),
        json!({"baseApi": format!("{}/v1", mock.url())}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let last_header = |name: &str| -> Option<String> {
        mock.state.seen.lock().last().and_then(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        })
    };
    for (key, model, upstream_key) in [
        (
            PLAINTEXT[0].1,
            "claude-sonnet-4-20250514",
            "sk-ant-api03-fixtureA-console-primary-0001",
        ),
        (
            PLAINTEXT[1].1,
            "claude-sonnet-4-20250514",
            "sk-ant-api03-fixtureA-console-primary-0001",
        ),
        (
            PLAINTEXT[4].1,
            "claude-3-5-haiku-20241022",
            "sk-ant-api03-fixtureA-console-secondary-0002",
        ),
    ] {
        let res = http
            .post(format!("{base}/api/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&crate::common::msg_body(model, false, "hello"))
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert_eq!(status, 200, "{}", res.text().await.unwrap());
        assert_eq!(last_header("x-api-key").as_deref(), Some(upstream_key));
    }
    let res = http
        .post(format!("{base}/openai/v1/responses"))
        .header("authorization", format!("Bearer {}", PLAINTEXT[4].1))
        .json(&json!({"model": "gpt-5", "input": "hello"}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    assert_eq!(status, 200, "{}", res.text().await.unwrap());
    assert_eq!(
        last_header("authorization").as_deref(),
        Some("Bearer sk-proj-fixtureA-openai-responses-0003")
    );

    running.shutdown(Duration::from_secs(5)).await;
    mock.stop();
}

/// Accounts with their secrets decrypted (each data directory has its own crs key).
fn plain_accounts(s: &Secrets, store: &Store) -> Vec<Account> {
    let dec = |v: &mut String| {
        if !v.is_empty() {
            *v = s.decrypt(v).unwrap();
        }
    };
    let mut out: Vec<Account> = store.load_all(Table::Accounts).unwrap();
    for a in &mut out {
        for f in [
            &mut a.api_key,
            &mut a.access_token,
            &mut a.refresh_token,
            &mut a.email,
            &mut a.password,
            &mut a.aws_secret_access_key,
            &mut a.aws_session_token,
        ] {
            dec(f);
        }
        if let Some(p) = a.proxy.as_mut() {
            dec(&mut p.password);
        }
        for v in a.extra.values_mut() {
            if let Value::String(x) = v
                && x.starts_with("enc1:")
            {
                *x = s.decrypt(x).unwrap();
            }
        }
    }
    out
}

/// Everything a data directory holds, comparable across directories.
#[derive(Debug, PartialEq)]
struct Snapshot {
    keys: Vec<ApiKey>,
    accounts: Vec<Account>,
    groups: Vec<AccountGroup>,
    admins: Vec<Admin>,
    buckets: Vec<(String, Counters)>,
    records: Vec<(String, Vec<crs::usage::ledger::RequestRecord>)>,
    sticky: Vec<(String, Vec<u8>)>,
    raw: Vec<(String, Value)>,
}

fn snapshot(dir: &Path) -> Snapshot {
    let (s, store) = open(dir);
    let keys: Vec<ApiKey> = store.load_all(Table::ApiKeys).unwrap();
    let records = keys
        .iter()
        .map(|k| (k.id.clone(), store.records_for_key(&k.id, 1000).unwrap()))
        .collect();
    Snapshot {
        accounts: plain_accounts(&s, &store),
        groups: store.load_all(Table::Groups).unwrap(),
        admins: store.load_all(Table::Admins).unwrap(),
        buckets: store.usage_all().unwrap(),
        records,
        sticky: store.load_raw(Table::Sticky).unwrap(),
        raw: store
            .load_raw(Table::V1Raw)
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                let mut e: Value = serde_json::from_slice(&v).unwrap();
                // Relative to the read; the absolute expiry is compared.
                e.as_object_mut().unwrap().remove("ttl_ms");
                (k, e)
            })
            .collect(),
        keys,
    }
}

/// Compare two snapshots section by section, showing only the first difference.
fn assert_same(got: &Snapshot, want: &Snapshot, what: &str) {
    fn first<T: std::fmt::Debug + PartialEq>(what: &str, section: &str, a: &[T], b: &[T]) {
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x, y, "{what}: {section} differ");
        }
        assert_eq!(a.len(), b.len(), "{what}: number of {section}");
    }
    first(what, "keys", &got.keys, &want.keys);
    first(what, "accounts", &got.accounts, &want.accounts);
    first(what, "groups", &got.groups, &want.groups);
    first(what, "admins", &got.admins, &want.admins);
    first(what, "buckets", &got.buckets, &want.buckets);
    first(what, "records", &got.records, &want.records);
    // A live Redis counts TTLs down while it is read: expiries agree to within a second.
    let sticky = |s: &Snapshot| -> Vec<(String, String, i64)> {
        s.sticky
            .iter()
            .map(|(k, v)| {
                let e: Value = serde_json::from_slice(v).unwrap();
                let acc = e["accountId"].as_str().unwrap().to_owned();
                (k.clone(), acc, e["expiresAt"].as_i64().unwrap())
            })
            .collect()
    };
    let (a, b) = (sticky(got), sticky(want));
    assert_eq!(a.len(), b.len(), "{what}: number of sticky sessions");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.0, &x.1), (&y.0, &y.1), "{what}: sticky sessions differ");
        assert!(
            (x.2 - y.2).abs() < 1000,
            "{what}: sticky expiry {x:?} vs {y:?}"
        );
    }
    first(what, "verbatim keys", &got.raw, &want.raw);
}

/// v1 -> crs -> v1 (JSON, and Redis) -> crs loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_v1_loses_nothing() {
    let Some(redis) = redis() else { return };
    load_fixture(&redis.url(0)).await;
    let a = tempfile::tempdir().unwrap();
    crs::migrate::import(&Source::Redis(redis.url(0)), &import_opts(a.path()))
        .await
        .unwrap();
    let first = snapshot(a.path());
    assert_eq!(first.keys.len(), 6);
    assert_eq!(first.sticky.len(), 13);
    assert!(first.buckets.len() > 100);

    // To a JSON dump and back.
    let json_file = a.path().join("export.json");
    let r = crs::migrate::export(&Target::Json(json_file.clone()), &export_opts(a.path()))
        .await
        .unwrap();
    assert!(r.keys > 150, "{}", r.render());
    let b = tempfile::tempdir().unwrap();
    let r = crs::migrate::import(&Source::Json(json_file.clone()), &import_opts(b.path()))
        .await
        .unwrap();
    assert!(r.not_understood.is_empty(), "{:?}", r.not_understood);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_same(&snapshot(b.path()), &first, "through JSON");

    // To an empty Redis database (what v1 would run on) and back.
    let r = crs::migrate::export(&Target::Redis(redis.url(1)), &export_opts(a.path()))
        .await
        .unwrap();
    let written = r.keys;
    assert_eq!(
        crs::migrate::redis_io::dbsize(&redis.url(1)).await.unwrap(),
        written
    );
    let c = tempfile::tempdir().unwrap();
    crs::migrate::import(&Source::Redis(redis.url(1)), &import_opts(c.path()))
        .await
        .unwrap();
    assert_same(&snapshot(c.path()), &first, "through Redis");

    // What v1 needs to run on it.
    let mut v1: BTreeMap<String, V1Key> = BTreeMap::new();
    crs::migrate::redis_io::read_all(&redis.url(1), false, &mut |k| {
        v1.insert(k.name.clone(), k);
        Ok(())
    })
    .await
    .unwrap();
    let V1Value::Hash(hm) = &v1["apikey:hash_map"].value else {
        panic!("hash_map")
    };
    assert_eq!(hm.len(), 5, "the soft-deleted key stays out");
    assert!(hm.iter().any(|(h, id)| h
        == "5880fa813ff78adcf99006dd2afae80576b387131100f7d24e13703c63ac2d8b"
        && id == K1));
    let set = |name: &str| match &v1[name].value {
        V1Value::Set(s) => s.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(set("shared_claude_console_accounts"), vec![CC1, CC2]);
    assert_eq!(set("claude_console_account:index"), vec![CC1, CC2]);
    assert_eq!(set("claude:account:index"), vec![OA1]);
    assert_eq!(set("account_groups"), vec![G1]);
    assert_eq!(set(&format!("account_group_members:{G1}")), vec![OA1]);
    assert_eq!(
        set(&format!("account_groups_reverse:claude:{OA1}")),
        vec![G1]
    );
    assert!(set("usage:daily:index:2026-11-22").contains(&K1.to_owned()));
    let console = v1[&format!("claude_console_account:{CC1}")].hash().unwrap();
    let enc = &console.iter().find(|(f, _)| f == "apiKey").unwrap().1;
    let fixture_enc = "9cf68abdc888536094f4236f4e97678b:c87dbcbffdba00a0c351f50e1261faf2292db278b7c1bc84b44260791d28513e8bcf79817ccc6d5b62b5b66f95f9485f";
    assert_ne!(enc, fixture_enc, "fresh IV");
    assert_eq!(
        crs::migrate::v1crypto::V1Crypto::new(ENC_KEY)
            .decrypt("claude-console-salt", enc)
            .unwrap(),
        "sk-ant-api03-fixtureA-console-primary-0001"
    );
    assert_eq!(
        v1[&format!("usage:cost:total:{K3}")].string(),
        Some("0.05715")
    );
    assert_eq!(
        v1[&format!("usage:opus:total:{K3}")].string(),
        Some("0.05715")
    );
    assert!(v1.contains_key("billing:events"));
    assert!(v1.contains_key("session:admin_credentials"));
    assert!(v1[&format!("usage:daily:{K1}:2026-11-22")].ttl_ms > 0);
    assert_eq!(v1[&format!("usage:{K1}")].ttl_ms, -1);

    // A database that holds keys is refused.
    let e = crs::migrate::export(&Target::Redis(redis.url(1)), &export_opts(a.path()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--merge"), "{e}");
}

/// `--dry-run` writes nothing; a second import is refused without `--merge` and is
/// idempotent with it; a wrong ENCRYPTION_KEY is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_merge_and_wrong_key() {
    let Some(redis) = redis() else { return };
    let url = redis.url(0);
    load_fixture(&url).await;
    let src = Source::Redis(url.clone());
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("data");

    let mut opts = import_opts(&dir);
    opts.dry_run = true;
    let dry = crs::migrate::import(&src, &opts).await.unwrap();
    assert!(dry.dry_run);
    assert!(!dir.exists(), "a dry run creates nothing");
    assert!(dry.render().contains("dry run"));

    let real = crs::migrate::import(&src, &import_opts(&dir))
        .await
        .unwrap();
    assert_eq!(dry.imported, real.imported);
    let before = snapshot(&dir);

    let e = crs::migrate::import(&src, &import_opts(&dir))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--merge"), "{e}");
    let mut merge = import_opts(&dir);
    merge.merge = true;
    crs::migrate::import(&src, &merge).await.unwrap();
    let after = snapshot(&dir);
    assert_eq!(after.buckets, before.buckets, "buckets are set, not added");
    assert_same(&after, &before, "second import");

    let mut wrong = import_opts(&base.path().join("other"));
    wrong.encryption_key = "not-the-v1-key".into();
    let e = crs::migrate::import(&src, &wrong).await.unwrap_err();
    assert!(format!("{e:#}").contains("could not be decrypted"), "{e:#}");
}

/// The CLI: JSON report, and the key is required.
#[test]
fn cli_import_reports_json() {
    let bin = env!("CARGO_BIN_EXE_crs");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args(["import", "--dry-run", "--json", "--from-json"])
        .arg(fixture_path())
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .env("ENCRYPTION_KEY", ENC_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["imported"]["api keys"], 6);
    assert_eq!(r["dropped"]["rate_limit:*"], 4);
    assert_eq!(r["kept_verbatim"]["billing:events"], 1);
    let out = Command::new(bin)
        .args(["import", "--from-json"])
        .arg(fixture_path())
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .env_remove("ENCRYPTION_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ENCRYPTION_KEY"));
}

/// Data crs wrote itself (every account type, service rates, streamed and non-streamed usage,
/// sticky sessions) goes through v1's layout and back unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crs_data_round_trips_through_v1() {
    let env = crate::common::Env::start().await;
    env.create_account(json!({"priority": 5})).await;
    let proxy = json!({"type": "socks5", "host": "10.0.0.2", "port": 1080, "username": "u", "password": "pw"});
    for (path, body) in [
        (
            "bedrock-accounts",
            json!({"name": "aws", "region": "us-east-1", "accountType": "dedicated", "proxy": proxy,
                   "awsCredentials": {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "aws-secret", "sessionToken": "aws-token"}}),
        ),
        (
            "gemini-api-accounts",
            json!({"name": "gem", "apiKey": "AIza-example", "supportedModels": ["gemini-2.5-pro"], "accountType": "dedicated"}),
        ),
        (
            "azure-openai-accounts",
            json!({"name": "az", "azureEndpoint": "https://x.openai.azure.com", "apiKey": "az-key",
                   "deploymentName": "gpt-4o", "apiVersion": "2024-10-21", "accountType": "dedicated"}),
        ),
        (
            "openai-responses-accounts",
            json!({"name": "codex", "baseApi": "https://api.openai.com/v1", "apiKey": "sk-proj-x", "accountType": "dedicated"}),
        ),
        (
            "ccr-accounts",
            json!({"name": "ccr", "apiUrl": "https://ccr.example", "apiKey": "ccr-key", "accountType": "dedicated",
                   "supportedModels": {"a": "b"}}),
        ),
        (
            "claude-accounts",
            json!({"name": "max", "accountType": "dedicated",
                   "claudeAiOauth": {"accessToken": "sk-ant-oat01-x", "refreshToken": "sk-ant-ort01-y",
                                     "expiresAt": 4102444800000i64, "scopes": ["user:inference", "user:profile"]}}),
        ),
    ] {
        env.create(path, body).await;
    }
    let (_, key) = env
        .create_key(
            json!({"name": "alice", "serviceRates": {"claude": 2.0}, "dailyCostLimit": 5,
                           "fiveHourCostLimit": 1, "tags": ["t"], "modelRestrictionMode": "allow"}),
        )
        .await;
    for i in 0..3 {
        let res = env
            .messages(
                &key,
                crate::common::msg_body("claude-sonnet-4-5-20250929", i == 1, &format!("hi {i}")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
    }
    // Costs that are not whole micro-dollars (7 x $0.8/M + 3 x $0.08/M = 5.84 micro-dollars)
    // come back exactly.
    let res = env
        .messages(
            &key,
            crate::common::msg_body("claude-3-5-haiku-20241022", false, "mock:usage=7,0,0,3"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let dir = env.stop().await;
    let mut before = snapshot(dir.path());
    // v1 keeps times in milliseconds (JavaScript dates): compare at that precision.
    before.keys = to_ms(&before.keys);
    before.accounts = to_ms(&before.accounts);
    before.groups = to_ms(&before.groups);
    before.records = to_ms(&before.records);
    assert!(
        before
            .buckets
            .iter()
            .any(|(k, c)| k.starts_with("t|a|") && c.real_cost_picos > 0)
    );
    assert!(
        before
            .buckets
            .iter()
            .any(|(k, c)| k.starts_with("t|k|") && c.rated_cost_picos == 2 * c.real_cost_picos)
    );
    assert!(!before.sticky.is_empty());
    assert!(
        before
            .buckets
            .iter()
            .any(|(k, c)| k.starts_with("t|km|") && c.real_cost_picos == 5_840_000)
    );

    let secrets: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("secrets.json")).unwrap())
            .unwrap();
    let file = dir.path().join("v1.json");
    let r = crs::migrate::export(&Target::Json(file.clone()), &export_opts(dir.path()))
        .await
        .unwrap();
    assert!(
        r.warnings.iter().any(|w| w.contains("argon2")),
        "{:?}",
        r.warnings
    );
    let b = tempfile::tempdir().unwrap();
    let mut opts = import_opts(b.path());
    opts.encryption_key = secrets["key_hash_secret"].as_str().unwrap().into();
    let r = crs::migrate::import(&Source::Json(file), &opts)
        .await
        .unwrap();
    assert!(r.not_understood.is_empty(), "{:?}", r.not_understood);
    let mut after = snapshot(b.path());
    assert!(
        after.admins.is_empty(),
        "crs's argon2 admin is not v1's to take"
    );
    after.admins = before.admins.clone();
    assert_same(&after, &before, "crs -> v1 -> crs");
}

/// `v` with every RFC 3339 time cut to milliseconds.
fn to_ms<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    fn walk(v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s)
                    && s.contains('T')
                {
                    *s = t
                        .with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::Object(m) => m.values_mut().for_each(walk),
            _ => {}
        }
    }
    let mut j = serde_json::to_value(v).unwrap();
    walk(&mut j);
    serde_json::from_value(j).unwrap()
}
