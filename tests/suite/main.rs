//! The integration test suite, one binary: every module shares the harness in `common` and
//! links crs once (separate test binaries cost a link and ~65 MB of disk each).
//!
//! Run one area with a filter on its module, e.g. `cargo test --test suite browser::`.

mod common;

mod admin;
mod bedrock;
mod bridge;
mod browser;
mod chat;
mod chatgpt;
mod cli;
mod crash;
mod droid;
mod e2e_claude_code;
mod e2e_codex;
mod e2e_gemini;
mod fuzz;
mod gemini_oauth;
mod hardening;
mod import;
mod layering;
mod limits;
mod login;
mod metrics;
mod ops;
mod packaging;
mod pricing;
mod providers;
mod proxy;
mod relay;
mod robustness;
mod scheduler;
mod stats;
mod subscription;
mod tls;
mod upgrade;
mod webhook;
mod windows;
