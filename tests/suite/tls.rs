//! Upstreams over HTTPS: a private CA trusted through `upstream_ca_file`, HTTP/2 negotiated by
//! ALPN as with Anthropic's API, and a certificate nobody vouched for refused.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::tls::test_certs;
use crate::common::*;
use crs::mock::MockUpstream;
use serde_json::json;

/// An HTTPS mock that accepts the test's upstream key, and the CA file that vouches for it.
async fn https_mock(dir: &std::path::Path) -> (MockUpstream, std::path::PathBuf) {
    let certs = test_certs();
    let ca_file = dir.join("gateway-ca.pem");
    std::fs::write(&ca_file, &certs.ca).unwrap();
    let m = MockUpstream::start_tls_on("127.0.0.1:0", certs.cert.as_bytes(), certs.key.as_bytes())
        .await
        .unwrap();
    m.state.accepted_keys.lock().push(UPSTREAM_KEY.into());
    (m, ca_file)
}

#[tokio::test]
async fn a_storm_of_streams_right_after_the_start_shares_http2_connections() {
    let certs_dir = tempfile::tempdir().unwrap();
    let (tls_mock, ca_file) = https_mock(certs_dir.path()).await;
    let env = Env::start_with(|c| c.upstream_ca_file = Some(ca_file)).await;
    let threads = crs::runtime::cores() as u64;
    env.create_account(json!({"apiUrl": tls_mock.url()})).await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    // 40 streams at once before crs knows what the upstream speaks.
    let streams = (0..40).map(|_| {
        let r = env.messages(
            &key,
            msg_body("claude-sonnet-4-5-20250929", true, "mock:chunks=5"),
        );
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let events = sse_events(&r.text().await.unwrap());
            assert_eq!(events.last().unwrap().0, "message_stop");
        }
    });
    futures_util::future::join_all(streams).await;
    assert_eq!(hits(&tls_mock, "/v1/messages"), 40);
    // The first connection shows the upstream speaks HTTP/2; the others waited for it and
    // then share one connection a serving thread. Without that, each stream that found no
    // connection opened its own.
    let opened = tls_mock.state.tls_connections.load(Ordering::Relaxed);
    assert!(
        (1..=1 + threads.max(1)).contains(&opened),
        "{opened} TLS connections for 40 streams"
    );
    env.stop().await;
}

#[tokio::test]
async fn an_upstream_signed_by_the_configured_ca_answers_over_http2() {
    let certs_dir = tempfile::tempdir().unwrap();
    let (tls_mock, ca_file) = https_mock(certs_dir.path()).await;
    let env = Env::start_with(|c| c.upstream_ca_file = Some(ca_file)).await;
    env.create_account(json!({"apiUrl": tls_mock.url()})).await;
    let (key_id, key) = env.create_key(json!({"name": "k"})).await;

    let r = env
        .messages(
            &key,
            msg_body("claude-sonnet-4-5-20250929", true, "mock:usage=30,7,0,0"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_events(&r.text().await.unwrap());
    assert_eq!(events.last().unwrap().0, "message_stop");
    assert_eq!(
        last_seen(&tls_mock, "/v1/messages").version,
        salvo::http::Version::HTTP_2
    );
    let r = env
        .messages(
            &key,
            msg_body("claude-sonnet-4-5-20250929", false, "mock:usage=11,5,0,0"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["usage"]["output_tokens"],
        5
    );
    let t = env.key_totals(&key_id).await;
    assert_eq!((t.input_tokens, t.output_tokens), (41, 12));

    // More streams at once than one HTTP/2 lane carries: a second lane (a second
    // connection) opens, and every stream completes.
    let lanes = || env.crs.as_ref().unwrap().state.accounts.http.lanes_opened();
    assert_eq!(lanes(), 1);
    let n = crs::providers::http::LANE_REQUESTS + 6;
    let slow = msg_body(
        "claude-sonnet-4-5-20250929",
        true,
        "mock:chunks=4 mock:delay_ms=150",
    );
    let streams = (0..n).map(|_| {
        let req = env.messages(&key, slow.clone());
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    });
    let bodies = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(streams),
    )
    .await
    .expect("the streams end");
    assert!(bodies.iter().all(|b| b.contains("message_stop")));
    assert_eq!(lanes(), 2);
    // Once idle, the second lane closes (the server does this every 5 s with the pool's idle
    // time); the first stays.
    let http = &env.crs.as_ref().unwrap().state.accounts.http;
    assert_eq!(http.retire_idle(Duration::from_secs(3600)), 0);
    assert_eq!(http.retire_idle(Duration::ZERO), 1);
    assert_eq!(lanes(), 1);
    env.stop().await;
}

#[tokio::test]
async fn an_upstream_certificate_no_trusted_ca_signed_is_refused() {
    let certs_dir = tempfile::tempdir().unwrap();
    let (tls_mock, _) = https_mock(certs_dir.path()).await;
    let env = Env::start().await;
    env.create_account(json!({"apiUrl": tls_mock.url()})).await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connect error"),
        "{v}"
    );
    assert_eq!(hits(&tls_mock, "/v1/messages"), 0);
    env.stop().await;
}

#[tokio::test]
async fn a_ca_file_without_certificates_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    for file in [not_pem, dir.path().join("missing.pem")] {
        let mut cfg = test_config(dir.path());
        cfg.upstream_ca_file = Some(file.clone());
        let err = match crs::server::start(cfg).await {
            Ok(_) => panic!("crs started with {}", file.display()),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(&file.display().to_string()), "{err}");
    }
}
