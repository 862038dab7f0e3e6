//! Dashboard query timing with a year of history for 100 keys.
//!
//!     cargo run --release --example stats_bench
//!
//! Builds a data directory with 365 days of daily/monthly/all-time buckets and 31 days of
//! hourly buckets (the default retention) for 100 keys x 3 models x 4 accounts, plus request
//! records, then times each admin statistics query.

use std::time::{Duration, Instant};

use chrono::Utc;
use crs::admin::stats::{Dim, breakdown, dashboard_data, periods_for, trend};
use crs::usage::{Counters, bucket};

fn main() -> anyhow::Result<()> {
    crs::init_tls();
    let rt = tokio::runtime::Runtime::new()?;
    let _g = rt.enter();
    let dir = tempfile::tempdir()?;
    let mut cfg = crs::config::Config::for_data_dir(dir.path());
    cfg.admin_password = Some("bench-password".into());
    // The server's default page cache unless CRS_STORE_CACHE_MB says otherwise, as in `crs serve`.
    if let Some(mb) = std::env::var("CRS_STORE_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        cfg.store_cache_bytes = mb << 20;
    }
    let st = crs::server::open_state(cfg)?;

    let models = [
        "claude-sonnet-4-5-20250929",
        "claude-3-5-haiku-20241022",
        "claude-opus-4-1-20250805",
    ];
    let keys: Vec<String> = (0..100).map(|i| format!("key-{i:03}")).collect();
    let accounts: Vec<String> = (0..4).map(|i| format!("acct-{i}")).collect();
    let now = Utc::now();
    let t0 = Instant::now();
    let mut rows = 0usize;
    for day in 0..365i64 {
        let at = now - chrono::Duration::days(day);
        let p = st.clock.periods(at);
        let mut batch: Vec<(String, Counters)> = Vec::new();
        for (ki, key) in keys.iter().enumerate() {
            for (mi, model) in models.iter().enumerate() {
                let c = Counters {
                    requests: 10 + (ki % 7) as u64,
                    input_tokens: 10_000 + (ki * 31 + mi * 7) as u64,
                    output_tokens: 1_000,
                    cache_read_tokens: 5_000,
                    real_cost_picos: (20_000 + mi as i64 * 5_000) * 1_000_000,
                    rated_cost_picos: (20_000 + mi as i64 * 5_000) * 1_000_000,
                    ..Default::default()
                };
                let acc = &accounts[ki % accounts.len()];
                let mut periods = vec![
                    bucket::TOTAL.to_owned(),
                    bucket::day(&p.day),
                    bucket::month(&p.month),
                ];
                if day < 31 {
                    // Spread the day over its hours.
                    for h in 0..24 {
                        let hp = st.clock.periods(at - chrono::Duration::hours(h));
                        periods.push(bucket::hour(&hp.hour));
                    }
                }
                for per in &periods {
                    for k in [
                        bucket::global(per),
                        bucket::key(per, key),
                        bucket::model(per, model),
                        bucket::key_model(per, key, model),
                        bucket::account(per, acc),
                        bucket::account_model(per, acc, model),
                    ] {
                        batch.push((k, c));
                    }
                }
            }
        }
        rows += batch.len();
        st.store
            .apply_usage(batch.iter().map(|(k, c)| (k.as_str(), c)))?;
    }
    let db_size = std::fs::metadata(st.store.path())?.len();
    println!(
        "generated {rows} bucket updates in {:.1?}; store file {:.1} MiB",
        t0.elapsed(),
        db_size as f64 / 1048576.0
    );

    let time = |name: &str, f: &dyn Fn() -> anyhow::Result<usize>| -> anyhow::Result<()> {
        let mut samples = Vec::new();
        let mut n = 0;
        for _ in 0..50 {
            let t = Instant::now();
            n = f()?;
            samples.push(t.elapsed());
        }
        samples.sort();
        let p50 = samples[samples.len() / 2];
        let max = *samples.last().unwrap_or(&Duration::ZERO);
        println!(
            "{name:<44} p50 {:>8.2} ms   max {:>8.2} ms   ({n} rows)",
            ms(p50),
            ms(max)
        );
        Ok(())
    };
    time("dashboard", &|| Ok(dashboard_data(&st)?.to_string().len()))?;
    time("usage-trend day, 30 days, global", &|| {
        Ok(trend(&st, false, 30, &Dim::Global)?.len())
    })?;
    time("usage-trend day, 365 days, global", &|| {
        Ok(trend(&st, false, 365, &Dim::Global)?.len())
    })?;
    time("usage-trend hour, 7 days, one key", &|| {
        Ok(trend(&st, true, 168, &Dim::Key("key-042".into()))?.len())
    })?;
    let p30 = periods_for(&st, "30days").unwrap();
    let pall = periods_for(&st, "all").unwrap();
    let ptoday = periods_for(&st, "today").unwrap();
    time("usage-breakdown by key, today", &|| {
        Ok(breakdown(&st, "key", &ptoday)?.len())
    })?;
    time("usage-breakdown by key, 30 days (cost ranking)", &|| {
        Ok(breakdown(&st, "key", &p30)?.len())
    })?;
    time("usage-breakdown by model, all time", &|| {
        Ok(breakdown(&st, "model", &pall)?.len())
    })?;
    time("usage-breakdown by account, 30 days", &|| {
        Ok(breakdown(&st, "account", &p30)?.len())
    })?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
