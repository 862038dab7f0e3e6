//! Usage, pricing and statistics: exact to the token and the pico-dollar.

use std::collections::HashMap;

use crate::common::*;
use crs::model::picos_to_dollars;
use crs::usage::TokenUsage;
use crs::usage::pricing::Pricing;
use reqwest::Method;
use serde_json::{Value, json};

const MODELS: [&str; 3] = [
    "claude-sonnet-4-5-20250929",
    "claude-3-5-haiku-20241022",
    "claude-opus-4-1-20250805",
];

#[derive(Default, Clone, Copy, Debug, PartialEq)]
struct Sum {
    requests: u64,
    input: u64,
    output: u64,
    cc: u64,
    cr: u64,
    /// Pico-dollars.
    cost: i64,
}

impl Sum {
    fn add(&mut self, u: &TokenUsage, cost: i64) {
        self.requests += 1;
        self.input += u.input_tokens;
        self.output += u.output_tokens;
        self.cc += u.cache_create_tokens;
        self.cr += u.cache_read_tokens;
        self.cost += cost;
    }
    fn check(&self, v: &Value, what: &str) {
        assert_eq!(v["requests"], self.requests, "{what} requests");
        assert_eq!(v["inputTokens"], self.input, "{what} input");
        assert_eq!(v["outputTokens"], self.output, "{what} output");
        assert_eq!(v["cacheCreateTokens"], self.cc, "{what} cache create");
        assert_eq!(v["cacheReadTokens"], self.cr, "{what} cache read");
        assert_eq!(
            v["cost"].as_f64().unwrap(),
            picos_to_dollars(self.cost),
            "{what} cost: the exact sum, shown in dollars"
        );
    }
}

/// 240 concurrent stream and non-stream requests over 4 keys and 3 models, with cache writes
/// (5m and 1h) and reads: usage equals what the mock served, cost equals the price table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mixed_requests_are_exact_to_the_token_and_pico_dollar() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let mut keys = Vec::new();
    for i in 0..4 {
        keys.push(env.create_key(json!({"name": format!("k{i}")})).await);
    }
    let pricing = Pricing::embedded();
    let mut per_key: HashMap<String, Sum> = HashMap::new();
    let mut per_model: HashMap<&str, Sum> = HashMap::new();
    let mut global = Sum::default();
    let mut tasks = Vec::new();
    for i in 0..240u64 {
        let (id, key) = &keys[(i % 4) as usize];
        let model = MODELS[(i % 3) as usize];
        let (input, output, cc, cr, cc1h) = (
            100 + i * 7,
            10 + i % 50,
            (i % 5) * 300,
            (i % 4) * 1000,
            (i % 5) * 100,
        );
        let usage = TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cache_create_tokens: cc,
            cache_read_tokens: cr,
            ephemeral_5m_tokens: cc - cc1h.min(cc),
            ephemeral_1h_tokens: cc1h.min(cc),
        };
        let cost = pricing.cost(model, &usage).picos;
        assert!(cost > 0);
        per_key.entry(id.clone()).or_default().add(&usage, cost);
        per_model.entry(model).or_default().add(&usage, cost);
        global.add(&usage, cost);
        let req = env.messages(
            key,
            msg_body(
                model,
                i % 2 == 0,
                &format!("mock:usage={input},{output},{cc},{cr},{cc1h} mock:chunks=5"),
            ),
        );
        tasks.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let served = env.mock.state.served_total();
    assert_eq!(served.input_tokens, global.input);
    assert_eq!(served.cache_read_tokens, global.cr);

    for (id, key) in &keys {
        let u = env.usage(key).await;
        per_key[id].check(&u["usage"]["total"], "key total");
        per_key[id].check(&u["usage"]["daily"], "key daily");
    }
    let (_, v) = env
        .admin(
            Method::GET,
            "/admin/usage-breakdown?by=model&period=today",
            None,
        )
        .await;
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r["priceSource"] == "exact" || r["priceSource"] == "normalized")
    );
    for row in rows {
        let m = row["id"].as_str().unwrap();
        per_model[m].check(row, m);
    }
    let (_, d) = env.admin(Method::GET, "/admin/dashboard", None).await;
    global.check(&d["data"]["today"], "global today");
    global.check(&d["data"]["total"], "global total");
    // The cost ranking is ordered by cost.
    let (_, v) = env
        .admin(
            Method::GET,
            "/admin/usage-breakdown?by=key&period=all",
            None,
        )
        .await;
    let costs: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cost"].as_f64().unwrap())
        .collect();
    assert_eq!(costs.len(), 4);
    assert!(costs.windows(2).all(|w| w[0] >= w[1]), "{costs:?}");
    env.stop().await;
}

/// 240 small requests through the relay, each costing a fraction of a micro-dollar more than
/// a whole number (Haiku 3.5: 7 in, 1 out, 3 cache reads = 9.84 micro-dollars): every total
/// is price x summed tokens exactly, in the store and in what the APIs show. Rounded per
/// request, as crs used to record them, they came to $0.0024 instead of $0.0023616.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_requests_add_up_to_price_times_tokens() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (id, key) = env
        .create_key(json!({"name": "small", "serviceRates": {"claude": 1.1}}))
        .await;
    let model = "claude-3-5-haiku-20241022";
    let n = 240;
    let mut tasks = Vec::new();
    for i in 0..n {
        let req = env.messages(
            &key,
            msg_body(model, i % 2 == 0, "mock:usage=7,1,0,3 mock:chunks=2"),
        );
        tasks.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }));
        if tasks.len() == 16 {
            for t in tasks.drain(..) {
                t.await.unwrap();
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let p = Pricing::embedded().price(model).unwrap().base;
    let exact = n * (7 * p.input + p.output + 3 * p.cache_read);
    assert_eq!(exact, 2_361_600_000, "$0.0023616");
    // The rate applies to each request's exact cost, rounded once to the pico-dollar.
    let rated = n * 10_824_000;

    let u = env.usage(&key).await;
    for period in ["total", "daily"] {
        assert_eq!(
            u["usage"][period]["cost"].as_f64().unwrap(),
            0.00259776,
            "{period}"
        );
    }
    let (_, d) = env.admin(Method::GET, "/admin/dashboard", None).await;
    assert_eq!(d["data"]["today"]["realCost"], 0.0023616);
    let dir = env.stop().await;
    let store = crs::store::Store::open(&dir.path().join("crs.redb")).unwrap();
    for b in [
        "t|g".to_owned(),
        format!("t|k|{id}"),
        format!("t|m|{model}"),
        format!("t|km|{id}|{model}"),
    ] {
        let c = store.usage_get(&b).unwrap().unwrap();
        assert_eq!(c.requests, n as u64, "{b}");
        assert_eq!(
            (c.real_cost_picos, c.rated_cost_picos),
            (exact, rated),
            "{b}"
        );
    }
    let r = &store.records_for_key(&id, 1).unwrap()[0];
    assert_eq!(
        (r.real_cost_picos, r.rated_cost_picos),
        (9_840_000, 10_824_000)
    );
}

#[tokio::test]
async fn dashboard_trends_errors_and_records() {
    let env = Env::start().await;
    let acc = env.create_account(json!({"name": "main"})).await;
    let (id, key) = env.create_key(json!({"name": "rec"})).await;
    for i in 0..3 {
        let r = env
            .messages(
                &key,
                msg_body(
                    "claude-3-5-haiku-20241022",
                    i == 1,
                    "mock:usage=1000,100,0,0",
                ),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let r = env
        .messages(
            &key,
            msg_body("claude-3-5-haiku-20241022", false, "mock:status=529"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 529);

    let (s, d) = env.admin(Method::GET, "/admin/dashboard", None).await;
    assert_eq!(s, 200);
    let d = &d["data"];
    assert_eq!(d["today"]["requests"], 3);
    assert_eq!(d["today"]["errors"], 1);
    assert_eq!(d["errorRate"], 0.25);
    assert_eq!(d["overview"]["totalApiKeys"], 1);
    assert_eq!(d["overview"]["activeAccounts"], 1);
    assert_eq!(d["topKeys"][0]["keyId"], id.as_str());
    assert_eq!(d["topKeys"][0]["name"], "rec");
    assert_eq!(d["models"][0]["model"], "claude-3-5-haiku-20241022");
    assert_eq!(d["accounts"][0]["id"], acc.as_str());
    assert_eq!(d["accounts"][0]["errors"], 1);
    assert!(d["realtime"]["rpm"].as_f64().unwrap() > 0.0);
    // Haiku 3.5: 1000 in x $0.8/M + 100 out x $4/M = $0.0012 per request.
    assert_eq!(d["today"]["cost"], 0.0036);

    for (q, n) in [
        ("granularity=day&days=7", 7),
        ("granularity=hour&days=1", 24),
    ] {
        let (_, v) = env
            .admin(Method::GET, &format!("/admin/usage-trend?{q}"), None)
            .await;
        let rows = v["data"].as_array().unwrap();
        assert_eq!(rows.len(), n, "{q}");
        assert_eq!(
            rows.last().unwrap()["requests"],
            3,
            "{q}: the newest period holds today's requests"
        );
        assert_eq!(rows[0]["requests"], 0);
    }
    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/usage-trend?days=3&keyId={id}"),
            None,
        )
        .await;
    assert_eq!(v["data"][2]["outputTokens"], 300);
    let (s, _) = env
        .admin(Method::GET, "/admin/usage-trend?granularity=week", None)
        .await;
    assert_eq!(s, 400);

    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/api-keys/{id}/records?limit=10"),
            None,
        )
        .await;
    let recs = v["data"].as_array().unwrap();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0]["status"], 529, "newest first");
    assert_eq!(recs[1]["model"], "claude-3-5-haiku-20241022");
    assert_eq!(recs[1]["accountName"], "main");
    assert_eq!(recs[1]["inputTokens"], 1000);
    assert_eq!(recs[1]["cost"], 0.0012);
    assert!(recs[1]["latencyMs"].is_u64());
    assert_eq!(recs[2]["stream"], true);
    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/usage-records?accountId={acc}"),
            None,
        )
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 4);
    env.stop().await;
}

#[tokio::test]
async fn self_service_stats_need_the_key_not_just_its_id() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (id, key) = env
        .create_key(json!({"name": "self", "dailyCostLimit": 10, "rateLimitWindow": 60, "rateLimitRequests": 100}))
        .await;
    let (id2, key2) = env.create_key(json!({"name": "other"})).await;
    for (k, model) in [
        (&key, "claude-3-5-haiku-20241022"),
        (&key, "claude-sonnet-4-5-20250929"),
        (&key2, "claude-3-5-haiku-20241022"),
    ] {
        let r = env
            .messages(k, msg_body(model, false, "mock:usage=1000,100,0,0"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let post = |path: &str, body: Value| {
        env.http
            .post(env.url(&format!("/apiStats/api/{path}")))
            .json(&body)
            .send()
    };

    let r = post("get-key-id", json!({"apiKey": key})).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["data"]["id"], id.as_str());
    let r = post(
        "get-key-id",
        json!({"apiKey": format!("cr_{}", "1".repeat(64))}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);

    // The key id alone reads nothing.
    for path in ["user-stats", "user-model-stats"] {
        let r = post(path, json!({"apiId": id})).await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v.to_string().find("requests").is_none(),
            "{path} leaked usage: {v}"
        );
    }
    let r = post("batch-stats", json!({"apiIds": [id, id2]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = post("user-stats", json!({"apiKey": key})).await.unwrap();
    assert_eq!(r.status(), 200);
    let d = r.json::<Value>().await.unwrap()["data"].clone();
    assert_eq!(d["id"], id.as_str());
    assert_eq!(d["usage"]["total"]["requests"], 2);
    assert_eq!(d["usage"]["total"]["allTokens"], 2200);
    // Haiku 3.5 $0.0012 + Sonnet 4.5 (1000 x $3 + 100 x $15)/M = $0.0045.
    assert_eq!(d["usage"]["total"]["cost"], 0.0057);
    assert_eq!(d["usage"]["total"]["formattedCost"], "$0.0057");
    assert_eq!(d["limits"]["dailyCostLimit"], 10.0);
    assert_eq!(d["limits"]["currentDailyCost"], 0.0057);
    assert_eq!(d["limits"]["currentWindowRequests"], 2);
    assert_eq!(d["limits"]["rateLimitRequests"], 100);
    assert!(d["limits"]["windowRemainingSeconds"].as_i64().unwrap() > 3500);

    // The key in a header works too, and so does an id with an admin session.
    let r = env
        .http
        .post(env.url("/apiStats/api/user-stats"))
        .header("x-api-key", &key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .http
        .post(env.url("/apiStats/api/user-stats"))
        .bearer_auth(&env.token)
        .json(&json!({"apiId": id2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["data"]["name"], "other");

    for period in ["daily", "monthly", "alltime"] {
        let r = post("user-model-stats", json!({"apiKey": key, "period": period}))
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["period"], period);
        let rows = v["data"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{period}");
        let haiku = rows
            .iter()
            .find(|r| r["model"] == "claude-3-5-haiku-20241022")
            .unwrap();
        assert_eq!(haiku["requests"], 1);
        assert_eq!(haiku["costs"]["total"], 0.0012);
        assert_eq!(haiku["costs"]["input"], 0.0008);
        assert_eq!(haiku["costs"]["output"], 0.0004);
        assert_eq!(haiku["pricing"]["input"], 0.8);
        assert_ne!(haiku["priceSource"], "unknown");
    }

    let r = post("batch-stats", json!({"apiKeys": [key, key2]}))
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["aggregated"]["usage"]["requests"], 3);
    assert_eq!(v["data"]["individual"].as_array().unwrap().len(), 2);
    let r = post("batch-stats", json!({"apiKeys": vec![key.clone(); 31]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = post("user-trend", json!({"apiKey": key, "days": 7}))
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 7);
    assert_eq!(v["data"][6]["requests"], 2);
    env.stop().await;
}

#[tokio::test]
async fn unknown_models_are_priced_by_family_and_flagged() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "future"})).await;
    for m in ["claude-sonnet-9-20300101", "totally-new-model"] {
        let r = env
            .messages(&key, msg_body(m, false, "mock:usage=1000000,0,0,0"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let (_, v) = env
        .admin(
            Method::GET,
            "/admin/usage-breakdown?by=model&period=today",
            None,
        )
        .await;
    let rows = v["data"].as_array().unwrap();
    let sonnet = rows
        .iter()
        .find(|r| r["id"] == "claude-sonnet-9-20300101")
        .unwrap();
    assert_eq!(sonnet["priceSource"], "family");
    assert!(sonnet["pricedAs"].as_str().unwrap().contains("sonnet"));
    assert!(sonnet["cost"].as_f64().unwrap() > 0.0);
    let unknown = rows
        .iter()
        .find(|r| r["id"] == "totally-new-model")
        .unwrap();
    assert_eq!(unknown["priceSource"], "unknown");
    assert_eq!(unknown["cost"], 0.0);
    env.stop().await;
}

/// The data lines of v1's test-event stream.
fn test_events(text: &str) -> Vec<serde_json::Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// `/apiStats/api-key/test*`: the key holder's connectivity test goes through crs itself with
/// the key, streams v1's test events, and counts like any request of the key.
#[tokio::test]
async fn key_self_tests_run_through_the_relay() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    env.create(
        "openai-responses-accounts",
        json!({"name": "gpt", "baseApi": format!("{}/v1", env.mock.url()), "apiKey": UPSTREAM_KEY}),
    )
    .await;
    env.create(
        "gemini-api-accounts",
        json!({"name": "gemini", "baseUrl": env.mock.url(), "apiKey": UPSTREAM_KEY}),
    )
    .await;
    let (key_id, key) = env.create_key(json!({"name": "tester"})).await;
    for (route, upstream) in [
        ("test", "/v1/messages"),
        (
            "test-gemini",
            "/v1/models/gemini-2.5-pro:streamGenerateContent",
        ),
        ("test-openai", "/v1/responses"),
    ] {
        let r = env
            .http
            .post(env.url(&format!("/apiStats/api-key/{route}")))
            .json(&json!({"apiKey": key, "prompt": "hi mock:usage=5,3,0,0", "maxTokens": 100}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{route}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let evs = test_events(&r.text().await.unwrap());
        assert_eq!(evs[0]["type"], "test_start", "{route}: {evs:?}");
        let text: String = evs
            .iter()
            .filter(|e| e["type"] == "content")
            .map(|e| e["text"].as_str().unwrap())
            .collect();
        assert!(
            text.starts_with("Hello from the mock upstream."),
            "{route}: {evs:?}"
        );
        assert_eq!(
            evs.last().unwrap(),
            &json!({"type": "test_complete", "success": true}),
            "{route}"
        );
        let sent: serde_json::Value =
            serde_json::from_slice(&last_seen(&env.mock, upstream).body).unwrap();
        assert!(sent.to_string().contains("hi mock:usage=5,3,0,0"), "{sent}");
    }
    let t = env.key_totals(&key_id).await;
    assert_eq!(t.requests, 3);
    assert_eq!(t.output_tokens, 9);

    // An upstream refusal ends the test with success false and the reason.
    let r = env
        .http
        .post(env.url("/apiStats/api-key/test"))
        .json(&json!({"apiKey": key, "prompt": "fail mock:status=400"}))
        .send()
        .await
        .unwrap();
    let evs = test_events(&r.text().await.unwrap());
    let last = evs.last().unwrap();
    assert_eq!(last["success"], false, "{evs:?}");
    assert!(!last["error"].as_str().unwrap().is_empty());

    // Refusals before any request, in v1's shape.
    let (_, claude_only) = env
        .create_key(json!({"name": "claude-only", "permissions": "claude"}))
        .await;
    for (body, route, status) in [
        (json!({}), "test", 400),
        (json!({"apiKey": "short"}), "test", 400),
        (
            json!({"apiKey": "cr_0000000000000000000000000000000000000000000000000000000000000000"}),
            "test",
            401,
        ),
        (json!({"apiKey": claude_only}), "test-gemini", 403),
        (json!({"apiKey": claude_only}), "test-openai", 403),
        (
            json!({"apiKey": key, "model": "../../admin"}),
            "test-gemini",
            400,
        ),
    ] {
        let r = env
            .http
            .post(env.url(&format!("/apiStats/api-key/{route}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{route} {body}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["message"].is_string(), "{v}");
    }
    env.stop().await;
}

/// `/apiStats/service-rates` in v1's shape: 1x everywhere, or the key's own rates.
#[tokio::test]
async fn service_rates_show_what_is_applied() {
    let env = Env::start().await;
    let (_, key) = env
        .create_key(json!({"name": "rated", "serviceRates": {"claude": 1.5, "openai": 0.5}}))
        .await;
    let r = env
        .http
        .get(env.url("/apiStats/service-rates"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["data"]["baseService"], "claude");
    assert_eq!(v["data"]["rates"]["claude"], 1.0);
    assert_eq!(v["data"]["rates"]["gemini"], 1.0);
    let v: serde_json::Value = env
        .http
        .get(env.url("/apiStats/service-rates"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["rates"]["claude"], 1.5);
    assert_eq!(v["data"]["rates"]["codex"], 0.5);
    assert_eq!(v["data"]["rates"]["gemini"], 1.0);
    env.stop().await;
}
