//! HTTP clients for upstream calls: one pooled `reqwest::Client` per distinct proxy, and the
//! proxy URL an account's proxy settings make.

use std::collections::HashMap;

use anyhow::{Context, Result};
use parking_lot::Mutex;

use crate::config::Config;
use crate::model::ProxyConfig;

/// One pooled HTTP client per distinct proxy (and one without a proxy).
pub struct HttpClients {
    config: Config,
    by_proxy: Mutex<HashMap<String, reqwest::Client>>,
}

impl HttpClients {
    pub fn new(config: &Config) -> Self {
        HttpClients {
            config: config.clone(),
            by_proxy: Mutex::new(HashMap::new()),
        }
    }

    /// The client for a proxy URL ("" = direct). Built once, reused for every account using it.
    pub fn get(&self, proxy_url: &str) -> Result<reqwest::Client> {
        let mut map = self.by_proxy.lock();
        if let Some(c) = map.get(proxy_url) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(self.config.connect_timeout)
            .pool_idle_timeout(self.config.upstream_idle)
            .pool_max_idle_per_host(self.config.upstream_idle_connections)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none());
        if !proxy_url.is_empty() {
            b = b.proxy(reqwest::Proxy::all(proxy_url).context("invalid proxy")?);
        } else {
            b = b.no_proxy();
        }
        let c = b.build().context("building HTTP client")?;
        map.insert(proxy_url.to_owned(), c.clone());
        Ok(c)
    }
}

pub fn proxy_url(p: &ProxyConfig, password: &str) -> String {
    let scheme = match p.kind.as_str() {
        // socks5h: let the proxy resolve names (hickory may hand back ::1 first for localhost).
        "socks5" | "socks5h" | "socks" => "socks5h",
        "https" => "https",
        _ => "http",
    };
    if p.username.is_empty() {
        format!("{scheme}://{}:{}", p.host, p.port)
    } else {
        format!(
            "{scheme}://{}:{}@{}:{}",
            super::request::encode_segment(&p.username),
            super::request::encode_segment(password),
            p.host,
            p.port
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = ProxyConfig {
            kind: "socks5".into(),
            host: "127.0.0.1".into(),
            port: 1080,
            username: "u@x".into(),
            password: String::new(),
        };
        assert_eq!(proxy_url(&p, "p:w"), "socks5h://u%40x:p%3Aw@127.0.0.1:1080");
        let p = ProxyConfig {
            kind: "http".into(),
            host: "proxy".into(),
            port: 3128,
            ..Default::default()
        };
        assert_eq!(proxy_url(&p, ""), "http://proxy:3128");
    }
}
