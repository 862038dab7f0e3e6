//! Per-account proxies: HTTP and SOCKS5 (with credentials) carry the upstream traffic,
//! including OAuth token refreshes.

use std::sync::Arc;

use crate::common::*;
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a test proxy saw: one entry per tunnelled connection ("host:port", user).
type Log = Arc<Mutex<Vec<(String, String)>>>;

async fn pipe(a: TcpStream, b: TcpStream) {
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let _ = tokio::join!(
        tokio::io::copy(&mut ar, &mut bw),
        tokio::io::copy(&mut br, &mut aw)
    );
}

/// A minimal HTTP forward proxy: absolute-form requests, the rest of the connection piped to
/// the first request's target.
async fn http_proxy() -> (String, Log) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log: Log = Default::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let log = log2.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let first = text.lines().next().unwrap_or("").to_owned();
                let mut parts = first.split(' ');
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let auth = text
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("proxy-authorization: ")
                            .or_else(|| l.strip_prefix("Proxy-Authorization: "))
                    })
                    .unwrap_or("")
                    .to_owned();
                let rest = target.strip_prefix("http://").unwrap_or(target);
                let (hostport, path) = rest
                    .split_once('/')
                    .map(|(h, p)| (h, format!("/{p}")))
                    .unwrap_or((rest, "/".into()));
                log.lock().push((hostport.to_owned(), auth));
                let Ok(mut up) = TcpStream::connect(hostport).await else {
                    return;
                };
                let new_first = format!("{method} {path} HTTP/1.1");
                let rewritten = text.replacen(&first, &new_first, 1);
                let _ = up.write_all(rewritten.as_bytes()).await;
                pipe(c, up).await;
            });
        }
    });
    (format!("{}", addr.port()), log)
}

/// A minimal SOCKS5 server with username/password authentication.
async fn socks5_proxy(user: &'static str, pass: &'static str) -> (String, Log) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log: Log = Default::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let log = log2.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 2];
                c.read_exact(&mut b).await.ok()?;
                let mut methods = vec![0u8; b[1] as usize];
                c.read_exact(&mut methods).await.ok()?;
                if !methods.contains(&2) {
                    c.write_all(&[5, 0xff]).await.ok()?;
                    return None;
                }
                c.write_all(&[5, 2]).await.ok()?;
                let mut v = [0u8; 2];
                c.read_exact(&mut v).await.ok()?;
                let mut u = vec![0u8; v[1] as usize];
                c.read_exact(&mut u).await.ok()?;
                let mut pl = [0u8; 1];
                c.read_exact(&mut pl).await.ok()?;
                let mut p = vec![0u8; pl[0] as usize];
                c.read_exact(&mut p).await.ok()?;
                let ok = u == user.as_bytes() && p == pass.as_bytes();
                c.write_all(&[1, if ok { 0 } else { 1 }]).await.ok()?;
                if !ok {
                    return None;
                }
                let mut req = [0u8; 4];
                c.read_exact(&mut req).await.ok()?;
                let host = match req[3] {
                    1 => {
                        let mut a = [0u8; 4];
                        c.read_exact(&mut a).await.ok()?;
                        std::net::Ipv4Addr::from(a).to_string()
                    }
                    3 => {
                        let mut n = [0u8; 1];
                        c.read_exact(&mut n).await.ok()?;
                        let mut h = vec![0u8; n[0] as usize];
                        c.read_exact(&mut h).await.ok()?;
                        String::from_utf8(h).ok()?
                    }
                    _ => return None,
                };
                let mut port = [0u8; 2];
                c.read_exact(&mut port).await.ok()?;
                let target = format!("{host}:{}", u16::from_be_bytes(port));
                log.lock()
                    .push((target.clone(), String::from_utf8_lossy(&u).into_owned()));
                let up = TcpStream::connect(&target).await.ok()?;
                c.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.ok()?;
                pipe(c, up).await;
                Some(())
            });
        }
    });
    (format!("{}", addr.port()), log)
}

#[tokio::test]
async fn http_and_socks5_proxies_carry_account_traffic() {
    let env = Env::start().await;
    let (http_port, http_log) = http_proxy().await;
    let (socks_port, socks_log) = socks5_proxy("pu", "p@ss:word").await;
    let mock_hostport = env.mock.url().trim_start_matches("http://").to_owned();
    env.create(
        "claude-console-accounts",
        json!({"name": "via-http", "apiUrl": env.mock.url(), "apiKey": UPSTREAM_KEY, "priority": 10,
               "proxy": {"type": "http", "host": "127.0.0.1", "port": http_port.parse::<u16>().unwrap()}}),
    )
    .await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let r = env
        .messages(
            &key,
            msg_body("claude-sonnet-4-5-20250929", true, "via http"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("message_stop"));
    assert_eq!(http_log.lock()[0].0, mock_hostport);

    let sid = env
        .create(
            "openai-responses-accounts",
            json!({"name": "via-socks", "baseApi": format!("{}/v1", env.mock.url()), "apiKey": UPSTREAM_KEY,
                   "proxy": {"type": "socks5", "host": "127.0.0.1", "port": socks_port, "username": "pu", "password": "p@ss:word"}}),
        )
        .await;
    let r = env
        .http
        .post(env.url("/openai/v1/responses"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-5", "input": "via socks"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        socks_log.lock()[0],
        (mock_hostport.clone(), "pu".to_owned())
    );
    // The proxy password is stored encrypted and never shown.
    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/openai-responses-accounts/{sid}"),
            None,
        )
        .await;
    assert!(!v.to_string().contains("p@ss:word"));
    assert_eq!(v["data"]["proxy"]["hasPassword"], true);
    env.stop().await;
}

#[tokio::test]
async fn oauth_refresh_goes_through_the_account_proxy() {
    let mock = extra_mock().await;
    let token_url = format!("{}/v1/oauth/token", mock.url());
    let env = Env::start_with(|c| c.claude_oauth_token_url = token_url.clone()).await;
    let (port, log) = http_proxy().await;
    let soon = chrono::Utc::now().timestamp_millis() + 10_000;
    env.create(
        "claude-accounts",
        json!({"name": "max", "apiUrl": mock.url(),
               "claudeAiOauth": {"accessToken": "sk-ant-oat01-a", "refreshToken": "sk-ant-ort01-a", "expiresAt": soon},
               "proxy": {"type": "http", "host": "127.0.0.1", "port": port.parse::<u16>().unwrap()}}),
    )
    .await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        mock.state
            .seen
            .lock()
            .iter()
            .any(|s| s.path == "/v1/oauth/token")
    );
    let mock_hostport = mock.url().trim_start_matches("http://").to_owned();
    assert!(!log.lock().is_empty());
    assert!(
        log.lock().iter().all(|(t, _)| *t == mock_hostport),
        "token refresh and request both via the proxy"
    );
    env.stop().await;
}
