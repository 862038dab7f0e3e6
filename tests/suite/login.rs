//! Admin sign-in defences: throttling per address and user name, the bound on concurrent
//! password checks, and sign-out revoking the session (the login log: `tests/login_log.rs`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

/// A client whose connections leave from `127.0.0.{last}` (any 127/8 address is local on
/// Linux), so crs sees a different client address.
fn client_from(last: u8) -> reqwest::Client {
    crs::init_tls();
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .build()
        .unwrap()
}

fn state(env: &Env) -> &crs::state::AppState {
    &env.crs.as_ref().unwrap().state
}

fn short_locks(c: &mut crs::config::Config) {
    c.login.base_delay = Duration::from_secs(1);
    c.login.address_max_delay = Duration::from_secs(4);
    c.login.user_max_delay = Duration::from_secs(2);
}

const THROTTLED: &str = "Too many admin login attempts. Please try again later.";

#[tokio::test]
async fn repeated_wrong_passwords_get_429_then_the_right_one_works_after_the_delay() {
    let env = Env::start_with(short_locks).await;
    let http = &env.http;
    for _ in 0..5 {
        let (s, _, v) = try_login(http, &env, ADMIN_USER, "wrong-guess").await;
        assert_eq!(s, 401, "{v}");
    }
    // Locked: even the right password is not checked now.
    let (s, retry, v) = try_login(http, &env, ADMIN_USER, ADMIN_PASS).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(
        v,
        json!({"error": "Too many requests", "message": THROTTLED})
    );
    let retry = retry.expect("retry-after on a 429");
    assert!((1..=4).contains(&retry), "retry-after {retry}");

    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (s, _, v) = try_login(http, &env, ADMIN_USER, ADMIN_PASS).await;
    assert_eq!(s, 200, "{v}");
    // The success cleared the failures: a typo now is a plain 401, not another lock.
    let (s, _, _) = try_login(http, &env, ADMIN_USER, "one-typo").await;
    assert_eq!(s, 401);
    let (s, _, _) = try_login(http, &env, ADMIN_USER, ADMIN_PASS).await;
    assert_eq!(s, 200);
    env.stop().await;
}

#[tokio::test]
async fn throttling_is_per_address_and_per_user_name() {
    // Locks long enough to outlast the password checks of this test.
    let env = Env::start_with(|c| {
        c.login.base_delay = Duration::from_secs(10);
        c.login.address_max_delay = Duration::from_secs(60);
        c.login.user_max_delay = Duration::from_secs(10);
    })
    .await;
    let (one, two, three, four) = (
        client_from(1),
        client_from(2),
        client_from(3),
        client_from(4),
    );

    // Five failures from one address, each with another name: the address is locked...
    for i in 0..5 {
        let (s, _, _) = try_login(&one, &env, &format!("nobody-{i}"), "guess").await;
        assert_eq!(s, 401);
    }
    let (s, retry, _) = try_login(&one, &env, ADMIN_USER, ADMIN_PASS).await;
    assert_eq!(s, 429);
    assert!(retry.is_some());
    // ...and another address is not.
    let (s, _, v) = try_login(&two, &env, ADMIN_USER, ADMIN_PASS).await;
    assert_eq!(s, 200, "{v}");
    // That success cleared its own address and the name, not the address that failed.
    let (s, _, _) = try_login(&one, &env, ADMIN_USER, ADMIN_PASS).await;
    assert_eq!(s, 429);

    // Guesses at one name from several addresses lock the name for a fresh address...
    for (i, http) in [&three, &four, &three, &four, &three]
        .into_iter()
        .enumerate()
    {
        let (s, _, v) = try_login(http, &env, ADMIN_USER, &format!("guess-{i}")).await;
        assert_eq!(s, 401, "{v}");
    }
    let five = client_from(5);
    let (s, retry, v) = try_login(&five, &env, ADMIN_USER, ADMIN_PASS).await;
    assert_eq!(s, 429, "{v}");
    let retry = retry.unwrap();
    assert!(retry <= 10, "a name's lock is capped: {retry}");
    // ...but not for an address that has signed in as it.
    let (s, _, v) = try_login(&two, &env, ADMIN_USER, ADMIN_PASS).await;
    assert_eq!(s, 200, "{v}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_run_at_most_two_password_checks_at_once() {
    let env = Env::start_with(|c| {
        // No throttling in the way: only the gate limits these.
        c.login.free_failures = 1_000;
        c.login.hash_permits = 2;
        c.login.hash_queue = 64;
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let http = env.http.clone();
        let url = env.url("/web/auth/login");
        let user = if i % 2 == 0 {
            ADMIN_USER.to_owned()
        } else {
            format!("ghost-{i}")
        };
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .json(&json!({"username": user, "password": "wrong"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    let peak = state(&env).logins.peak_checks();
    assert!(
        (1..=2).contains(&peak),
        "{peak} password checks ran at once"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_beyond_the_queue_get_503() {
    let env = Env::start_with(|c| {
        c.login.free_failures = 1_000;
        c.login.hash_permits = 1;
        c.login.hash_queue = 0;
    })
    .await;
    // With one check at a time and no queue, a burst cannot all be checked.
    let mut busy = None;
    for _round in 0..3 {
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let http = env.http.clone();
            let url = env.url("/web/auth/login");
            tasks.push(tokio::spawn(async move {
                let r = http
                    .post(url)
                    .json(&json!({"username": ADMIN_USER, "password": "wrong"}))
                    .send()
                    .await
                    .unwrap();
                let retry = r.headers().get("retry-after").cloned();
                (r.status().as_u16(), retry, r.json::<Value>().await.unwrap())
            }));
        }
        for t in tasks {
            let (s, retry, v) = t.await.unwrap();
            match s {
                401 => {}
                503 => busy = Some((retry, v)),
                other => panic!("{other}: {v}"),
            }
        }
        if busy.is_some() {
            break;
        }
    }
    let (retry, v) = busy.expect("some logins were turned away");
    assert_eq!(retry.unwrap(), "1");
    assert_eq!(v["error"], "Service busy");
    assert!(v["message"].as_str().unwrap().contains("try again"));
    assert_eq!(state(&env).logins.peak_checks(), 1);
    env.stop().await;
}

#[tokio::test]
async fn logout_revokes_the_session_on_admin_routes_and_current_user_also_after_restart() {
    let mut env = Env::start().await;
    let other = env.login(ADMIN_USER, ADMIN_PASS).await.unwrap();
    let token = env.token.clone();
    let status = |path: &'static str, token: String| {
        let http = env.http.clone();
        let url = env.url(path);
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/admin/api-keys", token.clone()).await, 200);
    assert_eq!(status("/web/auth/user", token.clone()).await, 200);

    let r = env
        .http
        .post(env.url("/web/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"success": true, "message": "Logout successful"})
    );
    assert_eq!(status("/admin/api-keys", token.clone()).await, 401);
    assert_eq!(status("/web/auth/user", token.clone()).await, 401);
    // Only that session ended.
    assert_eq!(status("/admin/api-keys", other.clone()).await, 200);
    // v1 answers a logout without a (valid) token with success too.
    let r = env
        .http
        .post(env.url("/web/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .http
        .post(env.url("/web/auth/logout"))
        .bearer_auth("forged.token.value")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    env.restart().await;
    let status = |path: &'static str, token: String| {
        let http = env.http.clone();
        let url = env.url(path);
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/admin/api-keys", token.clone()).await, 401);
    assert_eq!(status("/web/auth/user", token).await, 401);
    assert_eq!(status("/admin/api-keys", other).await, 200);
    env.stop().await;
}
