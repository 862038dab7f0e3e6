//! One notification to one platform: the request each platform wants (v1's set: WeCom,
//! DingTalk and Feishu with signing, Slack, Discord, Telegram, Bark, custom JSON; plus ntfy),
//! sent with a timeout; `smtp` mails (`super::smtp`).

use std::time::Duration;

use anyhow::{Result, bail};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Notice, Platform};

/// The platform types, as v1 names them (and `ntfy`, `smtp`).
pub const TYPES: &[&str] = &[
    "wechat_work",
    "dingtalk",
    "feishu",
    "slack",
    "discord",
    "telegram",
    "bark",
    "ntfy",
    "smtp",
    "custom",
];

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    m.update(msg);
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// DingTalk's signature: `base64(hmac_sha256(secret, "{ms}\n{secret}"))`, URL-encoded.
pub fn dingtalk_sign(secret: &str, ms: i64) -> String {
    let sig = hmac_b64(secret.as_bytes(), format!("{ms}\n{secret}").as_bytes());
    url_encode(&sig)
}

/// Feishu's signature: `base64(hmac_sha256(key = "{secs}\n{secret}", message = ""))`.
pub fn feishu_sign(secret: &str, secs: i64) -> String {
    hmac_b64(format!("{secs}\n{secret}").as_bytes(), b"")
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn signed(p: &Platform) -> bool {
    p.enable_sign && !p.secret.is_empty()
}

/// The text of a notice, for platforms that take plain text or Markdown.
fn text(n: &Notice) -> String {
    let mut t = format!("{}\n\n{}", n.title, n.message);
    for (k, v) in &n.fields {
        t += &format!("\n{k}: {v}");
    }
    t += &format!("\ntime: {}", n.timestamp.to_rfc3339());
    t
}

/// Build the request for `p`.
pub fn request(
    client: &reqwest::Client,
    p: &Platform,
    n: &Notice,
) -> Result<reqwest::RequestBuilder> {
    let now = chrono::Utc::now();
    let body_text = text(n);
    let rb = match p.kind.as_str() {
        "wechat_work" => client
            .post(&p.url)
            .json(&json!({"msgtype": "markdown", "markdown": {"content": body_text}})),
        "dingtalk" => {
            let mut url = p.url.clone();
            if signed(p) {
                let ms = now.timestamp_millis();
                let sep = if url.contains('?') { '&' } else { '?' };
                url = format!("{url}{sep}timestamp={ms}&sign={}", dingtalk_sign(&p.secret, ms));
            }
            client.post(url).json(
                &json!({"msgtype": "markdown", "markdown": {"title": n.title, "text": body_text}}),
            )
        }
        "feishu" => {
            let mut body = json!({"msg_type": "text", "content": {"text": body_text}});
            if signed(p) {
                let secs = now.timestamp();
                body["timestamp"] = Value::String(secs.to_string());
                body["sign"] = Value::String(feishu_sign(&p.secret, secs));
            }
            client.post(&p.url).json(&body)
        }
        "slack" => client.post(&p.url).json(&json!({"text": body_text})),
        "discord" => client.post(&p.url).json(&json!({"embeds": [{
            "title": n.title, "description": n.message,
            "fields": n.fields.iter().map(|(k, v)| json!({"name": k, "value": v, "inline": true})).collect::<Vec<_>>(),
            "timestamp": n.timestamp.to_rfc3339(),
        }]})),
        "telegram" => {
            if p.bot_token.is_empty() || p.chat_id.is_null() {
                bail!("telegram needs botToken and chatId");
            }
            let api = if p.api_url.is_empty() {
                "https://api.telegram.org"
            } else {
                p.api_url.trim_end_matches('/')
            };
            let mut body = json!({"chat_id": p.chat_id, "text": body_text});
            if !p.parse_mode.is_empty() {
                body["parse_mode"] = Value::String(p.parse_mode.clone());
            }
            client
                .post(format!("{api}/bot{}/sendMessage", p.bot_token))
                .json(&body)
        }
        "bark" => {
            if p.device_key.is_empty() {
                bail!("bark needs deviceKey");
            }
            let server = if p.server_url.is_empty() {
                "https://api.day.app/push"
            } else {
                p.server_url.as_str()
            };
            let mut body = json!({"device_key": p.device_key, "title": n.title, "body": body_text});
            for (k, v) in [("level", &p.level), ("sound", &p.sound), ("group", &p.group)] {
                if !v.is_empty() {
                    body[k] = Value::String(v.clone());
                }
            }
            client.post(server).json(&body)
        }
        "ntfy" => client
            .post(&p.url)
            .header("Title", n.title.clone())
            .header("Tags", n.kind.clone())
            .header(
                "Priority",
                if n.kind == "accountAnomaly" || n.kind == "systemError" {
                    "high"
                } else {
                    "default"
                },
            )
            .body(body_text),
        "custom" => client.post(&p.url).json(&n.json()),
        other => bail!("unknown platform type {other:?}"),
    };
    if !matches!(p.kind.as_str(), "telegram" | "bark") && p.url.is_empty() {
        bail!("{} needs a url", p.kind);
    }
    Ok(rb)
}

/// Send once: a 2xx answer (and, for WeCom, DingTalk, Feishu and Telegram, a body that does
/// not report an error) is a success.
pub async fn send_once(
    client: &reqwest::Client,
    p: &Platform,
    n: &Notice,
    timeout: Duration,
) -> Result<()> {
    if p.kind == "smtp" {
        return super::smtp::send(p, n, &text(n), timeout).await;
    }
    let res = request(client, p, n)?.timeout(timeout).send().await?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        );
    }
    if let Ok(v) = serde_json::from_str::<Value>(&body) {
        let code = v
            .get("errcode")
            .or_else(|| v.get("code"))
            .and_then(Value::as_i64);
        if matches!(code, Some(c) if c != 0) || v.get("ok") == Some(&Value::Bool(false)) {
            bail!(
                "the platform refused it: {}",
                body.chars().take(200).collect::<String>()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_platforms_recipes() {
        // Independent computations of the same recipes (HMAC-SHA256, base64).
        let d = dingtalk_sign("SEC123", 1_700_000_000_000);
        assert_eq!(
            d,
            url_encode(&hmac_b64(b"SEC123", b"1700000000000\nSEC123"))
        );
        assert!(!d.contains('+') && !d.contains('/') && !d.contains('='));
        let f = feishu_sign("s3cret", 1_700_000_000);
        assert_eq!(f, hmac_b64(b"1700000000\ns3cret", b""));
        assert_eq!(url_encode("a+b/c="), "a%2Bb%2Fc%3D");
    }
}
