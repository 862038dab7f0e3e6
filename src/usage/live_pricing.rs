//! The price table of a running server, replaced without a restart: when the data directory's
//! `model_prices_and_context_window.json` changes (checked every few seconds), on an admin
//! request, or when the optional remote table (`pricing_url`, fetched at start and daily)
//! is written there. A table that does not parse is refused and the current one stays.
//!
//! Readers take the current table with one `ArcSwap` load; nothing is locked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Serialize;

use super::TokenUsage;
use super::pricing::{Cost, FILE_NAME, ModelPrice, PriceMatch, Pricing};

/// Where the current table came from, and when.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PricingStatus {
    pub models: usize,
    /// `embedded` or the file's path.
    pub source: String,
    pub loaded_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The last reload or remote fetch that failed, if the latest attempt did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The file's identity as last loaded: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

pub struct LivePricing {
    current: ArcSwap<Pricing>,
    path: PathBuf,
    seen: Mutex<Stamp>,
    status: Mutex<PricingStatus>,
}

impl std::fmt::Debug for LivePricing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePricing")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl LivePricing {
    /// The data directory's table, or the embedded one (as `Pricing::load`, whose errors it
    /// keeps: a bad file at start is an error).
    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(FILE_NAME);
        let seen = stamp(&path);
        let pricing = Pricing::load(data_dir)?;
        let status = Self::status_of(&pricing, &path, seen);
        Ok(LivePricing {
            current: ArcSwap::from_pointee(pricing),
            path,
            seen: Mutex::new(seen),
            status: Mutex::new(status),
        })
    }

    fn status_of(pricing: &Pricing, path: &Path, seen: Stamp) -> PricingStatus {
        PricingStatus {
            models: pricing.model_count(),
            source: if seen.is_some() {
                path.display().to_string()
            } else {
                "embedded".into()
            },
            loaded_at: Some(chrono::Utc::now()),
            last_error: None,
        }
    }

    fn install(&self, pricing: Pricing, seen: Stamp) {
        *self.status.lock() = Self::status_of(&pricing, &self.path, seen);
        self.current.store(Arc::new(pricing));
        *self.seen.lock() = seen;
    }

    /// The current table.
    pub fn current(&self) -> Arc<Pricing> {
        self.current.load_full()
    }

    pub fn status(&self) -> PricingStatus {
        self.status.lock().clone()
    }

    pub fn model_count(&self) -> usize {
        self.current.load().model_count()
    }

    pub fn cost(&self, model: &str, u: &TokenUsage) -> Cost {
        self.current.load().cost(model, u)
    }

    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        self.current.load().price(model).cloned()
    }

    pub fn lookup(&self, model: &str) -> (Option<ModelPrice>, PriceMatch) {
        let current = self.current.load();
        let (p, m) = current.lookup(model);
        (p.cloned(), m)
    }

    /// Read the file again (the embedded table when it is gone). Blocking: parsing takes a
    /// moment. A file that does not parse is an error and the current table stays.
    pub fn reload(&self) -> Result<PricingStatus> {
        let seen = stamp(&self.path);
        let parent = self.path.parent().unwrap_or(Path::new("."));
        match Pricing::load(parent) {
            Ok(p) => {
                self.install(p, seen);
                let st = self.status();
                tracing::info!(models = st.models, source = %st.source, "pricing table reloaded");
                Ok(st)
            }
            Err(e) => {
                // Not retried until the file changes again.
                *self.seen.lock() = seen;
                self.status.lock().last_error = Some(format!("{e:#}"));
                tracing::error!(error = %format!("{e:#}"), "pricing table not reloaded; the current one stays");
                Err(e)
            }
        }
    }

    /// `reload` when the file changed (appeared, went, or was rewritten) since the last load.
    pub fn reload_if_changed(&self) -> Option<Result<PricingStatus>> {
        let now = stamp(&self.path);
        if now == *self.seen.lock() {
            return None;
        }
        Some(self.reload())
    }

    /// Fetch a LiteLLM table from `url`, check that it parses, and write it to the data
    /// directory (where `reload_if_changed` picks it up). Returns the model count.
    pub async fn fetch_remote(&self, client: &reqwest::Client, url: &str) -> Result<usize> {
        let r = async {
            let res = client
                .get(url)
                .send()
                .await
                .with_context(|| format!("fetching {url}"))?;
            if !res.status().is_success() {
                anyhow::bail!("fetching {url}: HTTP {}", res.status());
            }
            let bytes = res.bytes().await?;
            let (path, what) = (self.path.clone(), url.to_owned());
            tokio::task::spawn_blocking(move || -> Result<usize> {
                let n = Pricing::from_json(&bytes)
                    .with_context(|| format!("{what} is not a LiteLLM price table"))?
                    .model_count();
                crate::crypto::write_private(&path, &bytes)?;
                Ok(n)
            })
            .await?
        }
        .await;
        if let Err(e) = &r {
            self.status.lock().last_error = Some(format!("{e:#}"));
        }
        r
    }
}
