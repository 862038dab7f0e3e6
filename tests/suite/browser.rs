//! The web UI in a real browser: headless Chromium driven over the DevTools protocol
//! (chromiumoxide, no driver process) against crs and the mock upstream.
//!
//! Every page load collects console errors, uncaught exceptions and failed requests; a test
//! fails on any that it did not expect. Screenshots go to `test-artifacts/screenshots/`; with
//! `CRS_UPDATE_SCREENSHOTS=1` the ones the README shows are copied to `docs/screenshots/`.
//!
//! scripts/test.sh installs Debian's `chromium` and sets CRS_E2E_REQUIRED=1, so a missing
//! browser fails there; a bare `cargo test` skips the browser tests with a message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine as _;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::{
    MediaFeature, SetDeviceMetricsOverrideParams,
};
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel, LogEntrySource};
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, CaptureScreenshotParams, Viewport as Clip,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::Page;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

/// One browser at a time: the machines have two cores.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WIDE: (u32, u32) = (1360, 900);
const PHONE: (u32, u32) = (375, 812);

fn chromium_path() -> Option<PathBuf> {
    let candidates = [
        std::env::var("CHROMIUM").ok(),
        Some("/usr/bin/chromium".into()),
        Some("/usr/bin/chromium-browser".into()),
        Some("/usr/bin/google-chrome".into()),
    ];
    if let Some(p) = candidates
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .find(|p| p.exists())
    {
        return Some(p);
    }
    if std::env::var("CRS_E2E_REQUIRED").as_deref() == Ok("1") {
        panic!(
            "Chromium is missing: run scripts/test.sh, which installs it (apt-get install chromium)"
        );
    }
    eprintln!("skipping: Chromium is not installed (scripts/test.sh installs it)");
    None
}

fn artifacts_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts/screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A failed request the test expects (a URL part and an HTTP status).
#[derive(Clone)]
struct Expected {
    url_part: String,
    status: u16,
}

struct Ui {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    page: Page,
    problems: Arc<parking_lot::Mutex<Vec<String>>>,
    expected: Arc<parking_lot::Mutex<Vec<Expected>>>,
    base: String,
    _profile: tempfile::TempDir,
}

impl Ui {
    async fn launch(exe: PathBuf, base: String) -> Ui {
        let profile = tempfile::tempdir().unwrap();
        let config = BrowserConfig::builder()
            .chrome_executable(exe)
            .new_headless_mode()
            .no_sandbox()
            .user_data_dir(profile.path())
            .window_size(WIDE.0, WIDE.1)
            .viewport(Viewport {
                width: WIDE.0,
                height: WIDE.1,
                device_scale_factor: Some(1.0),
                emulating_mobile: false,
                is_landscape: true,
                has_touch: false,
            })
            .launch_timeout(Duration::from_secs(60))
            .request_timeout(Duration::from_secs(30))
            .args([
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--lang=en-US",
                "--force-color-profile=srgb",
            ])
            .build()
            .unwrap();
        let (browser, mut handler) = Browser::launch(config).await.expect("launching Chromium");
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let page = browser.new_page("about:blank").await.unwrap();
        let problems = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let expected: Arc<parking_lot::Mutex<Vec<Expected>>> =
            Arc::new(parking_lot::Mutex::new(Vec::new()));

        let mut console = page
            .event_listener::<EventConsoleApiCalled>()
            .await
            .unwrap();
        let p = problems.clone();
        tokio::spawn(async move {
            while let Some(ev) = console.next().await {
                if matches!(
                    ev.r#type,
                    ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert
                ) {
                    let text: Vec<String> = ev
                        .args
                        .iter()
                        .map(|a| {
                            a.value
                                .as_ref()
                                .map(|v| v.to_string())
                                .or_else(|| a.description.clone())
                                .unwrap_or_default()
                        })
                        .collect();
                    p.lock()
                        .push(format!("console.{:?}: {}", ev.r#type, text.join(" ")));
                }
            }
        });
        let mut exceptions = page.event_listener::<EventExceptionThrown>().await.unwrap();
        let p = problems.clone();
        tokio::spawn(async move {
            while let Some(ev) = exceptions.next().await {
                let d = &ev.exception_details;
                let desc = d
                    .exception
                    .as_ref()
                    .and_then(|e| e.description.clone())
                    .unwrap_or_default();
                p.lock().push(format!(
                    "uncaught exception: {} {} at {}:{}",
                    d.text,
                    desc,
                    d.url.clone().unwrap_or_default(),
                    d.line_number
                ));
            }
        });
        let mut log = page.event_listener::<EventEntryAdded>().await.unwrap();
        let p = problems.clone();
        let exp = expected.clone();
        tokio::spawn(async move {
            while let Some(ev) = log.next().await {
                let e = &ev.entry;
                if e.level != LogEntryLevel::Error {
                    continue;
                }
                let url = e.url.clone().unwrap_or_default();
                if e.source == LogEntrySource::Network
                    && exp.lock().iter().any(|x| {
                        url.contains(&x.url_part)
                            && e.text.contains(&format!("status of {}", x.status))
                    })
                {
                    continue;
                }
                p.lock()
                    .push(format!("{:?} error: {} {}", e.source, e.text, url));
            }
        });
        page.enable_log().await.unwrap();
        // Light system theme; no animations, so clicks never land on something still moving.
        page.emulate_media_features(vec![
            MediaFeature::new("prefers-color-scheme", "light"),
            MediaFeature::new("prefers-reduced-motion", "reduce"),
        ])
        .await
        .unwrap();
        let ui = Ui {
            browser,
            handler,
            page,
            problems,
            expected,
            base,
            _profile: profile,
        };
        // Account types and settings this server may not offer yet are probed; 404 is an answer.
        for t in [
            "claude-accounts",
            "openai-responses-accounts",
            "gemini-api-accounts",
            "azure-openai-accounts",
            "bedrock-accounts",
            "droid-accounts",
            "ccr-accounts",
            "/admin/settings",
        ] {
            ui.expect_failure(t, 404);
        }
        ui
    }

    fn expect_failure(&self, url_part: &str, status: u16) {
        self.expected.lock().push(Expected {
            url_part: url_part.into(),
            status,
        });
    }

    /// Every visible control has an accessible name (a label, aria-label or text).
    async fn assert_labelled(&self, when: &str) {
        let unnamed = self
            .eval(
                r#"(() => {
                const out = [];
                for (const el of document.querySelectorAll("input, select, textarea, button, a[href]")) {
                    if (el.type === "hidden" || !el.getClientRects().length) continue;
                    const by = el.getAttribute("aria-labelledby");
                    const name = (el.getAttribute("aria-label") || "").trim()
                        || (by && (document.getElementById(by)?.innerText || "").trim())
                        || [...(el.labels || [])].map((l) => l.innerText).join(" ").trim()
                        || (el.title || "").trim()
                        || ((el.tagName === "BUTTON" || el.tagName === "A") ? el.innerText.trim() : "");
                    if (!name) out.push(el.outerHTML.slice(0, 160));
                }
                return out;
            })()"#,
            )
            .await;
        assert_eq!(unnamed, json!([]), "controls without a name {when}");
    }

    /// Fail on any console error, exception or unexpected failed request so far.
    fn assert_clean(&self, when: &str) {
        let p = self.problems.lock().clone();
        assert!(
            p.is_empty(),
            "browser problems {when}:\n  {}",
            p.join("\n  ")
        );
    }

    /// Load a page and wait for its new document (navigation through JavaScript: the app's
    /// own history changes during load do not confuse the wait).
    async fn goto(&self, path: &str) {
        let url = format!("{}{}", self.base, path);
        self.navigate(&format!("location.href = {url:?}")).await;
    }

    async fn reload(&self) {
        self.navigate("location.reload()").await;
    }

    async fn navigate(&self, js: &str) {
        self.eval("(() => { window.__crsOld = true; return true; })()")
            .await;
        self.eval(&format!("(() => {{ {js}; return true; }})()"))
            .await;
        self.wait_js("!window.__crsOld && document.readyState === 'complete'", js)
            .await;
    }

    async fn eval(&self, js: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.page.evaluate(js).await {
                Ok(v) => return v.into_value::<Value>().unwrap_or(Value::Null),
                // The page may be between documents; try again.
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("evaluating {js}: {e}"),
            }
        }
    }

    /// Wait until a JavaScript expression is truthy.
    async fn wait_js(&self, js: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = match self.page.evaluate(format!("!!({js})")).await {
                Ok(v) => v.into_value::<bool>().unwrap_or(false),
                Err(_) => false,
            };
            if ok {
                return;
            }
            if Instant::now() > deadline {
                let url = self.page.url().await.ok().flatten().unwrap_or_default();
                self.screenshot("timeout").await;
                panic!(
                    "timed out waiting for {what} ({js}) on {url}; problems: {:?}",
                    self.problems.lock()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for(&self, css: &str) {
        self.wait_js(&format!("(() => {{ const e = document.querySelector({css:?}); return e && e.getClientRects().length > 0; }})()"), css)
            .await;
    }

    async fn wait_gone(&self, css: &str) {
        self.wait_js(
            &format!("!document.querySelector({css:?})"),
            &format!("{css} to go away"),
        )
        .await;
    }

    /// Wait for a visible element whose text contains `text`.
    async fn wait_text(&self, css: &str, text: &str) {
        self.wait_js(
            &format!(
                "[...document.querySelectorAll({css:?})].some(e => e.getClientRects().length > 0 && e.innerText.includes({text:?}))"
            ),
            &format!("{css} containing {text:?}"),
        )
        .await;
    }

    /// Wait until the current view has loaded (no skeleton placeholders left).
    async fn wait_loaded(&self) {
        self.wait_js(
            "document.readyState === 'complete' && !document.querySelector('.skel, .boot, [aria-busy=true]')",
            "the page to finish loading",
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        self.eval(&format!("document.querySelector({css:?})?.innerText ?? ''"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn click(&self, css: &str) {
        self.wait_for(css).await;
        let el = self.page.find_element(css).await.unwrap();
        el.click().await.unwrap();
    }

    /// Click the first visible element matching `css` whose text contains `text`.
    async fn click_text(&self, css: &str, text: &str) {
        self.wait_text(css, text).await;
        let ok = self
            .eval(&format!(
                "(() => {{ const e = [...document.querySelectorAll({css:?})].find(e => e.getClientRects().length > 0 && e.innerText.includes({text:?})); if (!e) return false; e.setAttribute('data-click-target', ''); return true; }})()"
            ))
            .await;
        assert_eq!(ok, Value::Bool(true));
        self.click("[data-click-target]").await;
        self.eval("document.querySelector('[data-click-target]')?.removeAttribute('data-click-target') ?? true").await;
    }

    /// Focus a field, clear it and type like a person.
    async fn fill(&self, css: &str, text: &str) {
        self.wait_for(css).await;
        self.eval(&format!("(() => {{ const e = document.querySelector({css:?}); e.focus(); e.value = ''; return true; }})()"))
            .await;
        let el = self.page.find_element(css).await.unwrap();
        el.type_str(text).await.unwrap();
    }

    /// Focus an element and press a key (Enter, Escape, Tab, ...).
    async fn press(&self, css: &str, key: &str) {
        self.wait_for(css).await;
        self.eval(&format!(
            "(() => {{ document.querySelector({css:?}).focus(); return true; }})()"
        ))
        .await;
        let el = self.page.find_element(css).await.unwrap();
        el.press_key(key).await.unwrap();
    }

    async fn set_viewport(&self, (w, h): (u32, u32)) {
        let mobile = w < 600;
        self.page
            .execute(
                SetDeviceMetricsOverrideParams::builder()
                    .width(w as i64)
                    .height(h as i64)
                    .device_scale_factor(if mobile { 2.0 } else { 1.0 })
                    .mobile(mobile)
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
    }

    /// Save a screenshot of the whole page as test-artifacts/screenshots/<name>.png.
    async fn screenshot(&self, name: &str) -> PathBuf {
        self.capture(name, true).await
    }

    /// Save a screenshot of what the window shows.
    async fn screenshot_view(&self, name: &str) -> PathBuf {
        self.capture(name, false).await
    }

    async fn capture(&self, name: &str, full: bool) -> PathBuf {
        // Sticky headers are drawn where they stick: start from the top for the whole page.
        if full {
            self.eval("(() => { window.scrollTo(0, 0); return true; })()")
                .await;
        }
        let m = self.page.layout_metrics().await.unwrap();
        let mut params = CaptureScreenshotParams::builder().format(CaptureScreenshotFormat::Png);
        if full {
            params = params.capture_beyond_viewport(true).clip(Clip {
                x: 0.0,
                y: 0.0,
                width: m.css_layout_viewport.client_width as f64,
                height: m.css_content_size.height.clamp(100.0, 6000.0),
                scale: 1.0,
            });
        }
        let shot = self.page.execute(params.build()).await.unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&shot.result.data)
            .unwrap();
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

/// With CRS_UPDATE_SCREENSHOTS=1, copy a screenshot into docs/screenshots for the README.
fn publish(shot: &Path, name: &str) {
    if std::env::var("CRS_UPDATE_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(shot, dir.join(format!("{name}.png"))).unwrap();
}

/// Open the add form of an OAuth account type and get its authorisation link: (the URL, its
/// PKCE challenge).
async fn oauth_form(ui: &Ui, label: &str) -> (String, String) {
    ui.click("[data-add-account]").await;
    ui.assert_labelled(&format!("in the {label} form")).await;
    ui.click("[data-oauth-generate]").await;
    ui.wait_for("[data-auth-url]").await;
    let url = ui.text("[data-auth-url]").await;
    let challenge = query_param(&url, "code_challenge");
    (url, challenge)
}

async fn login(ui: &Ui) {
    ui.goto("/admin-next/login").await;
    ui.wait_for("input[name=username]").await;
    ui.fill("input[name=username]", ADMIN_USER).await;
    ui.fill("input[name=password]", ADMIN_PASS).await;
    ui.press("input[name=password]", "Enter").await;
    ui.wait_js(
        "location.pathname === '/admin-next/dashboard'",
        "the dashboard after login",
    )
    .await;
    ui.wait_loaded().await;
}

async fn send(env: &Env, key: &str, model: &str, stream: bool) {
    let r = env
        .messages(key, msg_body(model, stream, "hello from the browser test"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ui_login_keys_usage_accounts_theme_and_navigation() {
    let Some(exe) = chromium_path() else {
        return;
    };
    let _one = BROWSER.lock().await;
    // A second mock plays Anthropic's OAuth token endpoint for the Claude OAuth form.
    let oauth = crs::mock::MockUpstream::start().await.unwrap();
    let token_url = format!("{}/v1/oauth/token", oauth.url());
    let google_token_url = format!("{}/token", oauth.url());
    let openai_auth = oauth.url();
    let env = Env::start_with(|c| {
        c.claude_oauth_token_url = token_url;
        c.gemini_oauth_token_url = google_token_url;
        c.openai_oauth_base_url = openai_auth;
    })
    .await;
    let ui = Ui::launch(exe, env.url("")).await;
    let account = env
        .create_account(json!({"name": "console-main", "priority": 10}))
        .await;

    // /admin in a browser goes to the app, which asks for a login.
    ui.goto("/admin").await;
    ui.wait_js(
        "location.pathname === '/admin-next/login'",
        "the login page",
    )
    .await;
    ui.wait_for("input[name=username]").await;
    let focused = ui.eval("document.activeElement?.name ?? ''").await;
    assert_eq!(focused, "username", "the username field has the focus");
    ui.screenshot("admin-login").await;

    // A wrong password shows the server's message; Enter submits.
    ui.expect_failure("/web/auth/login", 401);
    ui.fill("input[name=username]", ADMIN_USER).await;
    ui.fill("input[name=password]", "not-the-password").await;
    ui.press("input[name=password]", "Enter").await;
    ui.wait_text("[data-login-error]", "Invalid username or password")
        .await;

    ui.fill("input[name=password]", ADMIN_PASS).await;
    ui.press("input[name=password]", "Enter").await;
    ui.wait_js(
        "location.pathname === '/admin-next/dashboard'",
        "the dashboard",
    )
    .await;
    ui.wait_loaded().await;
    assert_eq!(ui.text("[data-stat=requests]").await, "0");
    ui.assert_clean("after login");

    // Every page is reachable from the navigation, and keyboard focus is visible.
    for (nav, title) in [
        ("api-keys", "API keys"),
        ("accounts", "Accounts"),
        ("usage", "Usage"),
        ("settings", "Settings"),
        ("dashboard", "Dashboard"),
    ] {
        ui.click(&format!("nav a[data-nav='{nav}']")).await;
        ui.wait_js(&format!("location.pathname === '/admin-next/{nav}'"), nav)
            .await;
        ui.wait_text("main h1", title).await;
        ui.wait_loaded().await;
        assert_eq!(
            ui.eval("document.querySelector(\"nav a[aria-current='page']\")?.dataset.nav")
                .await,
            nav
        );
        ui.assert_clean(&format!("on {nav}"));
        ui.assert_labelled(&format!("on {nav}")).await;
    }
    ui.press("nav a[data-nav='dashboard']", "Tab").await;
    let outline = ui
        .eval("getComputedStyle(document.activeElement).outlineStyle")
        .await;
    assert_eq!(outline, "solid", "keyboard focus has a visible outline");

    // Create a key with policy fields; the plaintext is shown once.
    ui.click("nav a[data-nav='api-keys']").await;
    ui.wait_loaded().await;
    ui.click("[data-create-key]").await;
    ui.wait_for("dialog[open] input[name=name]").await;
    ui.screenshot("admin-key-form").await;
    ui.assert_labelled("in the key form").await;
    ui.fill("dialog input[aria-label=Tags]", "e2e").await;
    ui.press("dialog input[aria-label=Tags]", "Enter").await; // adds the tag, does not submit
    ui.wait_text("dialog .chip", "e2e").await;
    // The server's own validation message comes back as a toast; the dialog stays open.
    ui.expect_failure("/admin/api-keys", 400);
    ui.fill("dialog input[name=name]", "browser-key").await;
    ui.fill("dialog input[name=dailyCostLimit]", "-1").await;
    ui.press("dialog input[name=dailyCostLimit]", "Enter").await;
    ui.wait_text(
        ".toast[data-kind=error]",
        "dailyCostLimit must be 0 or more",
    )
    .await;
    ui.wait_for("dialog[open] input[name=name]").await;
    ui.fill("dialog input[name=dailyCostLimit]", "5").await;
    ui.fill("dialog input[name=rateLimitWindow]", "60").await;
    ui.fill("dialog input[name=rateLimitRequests]", "100").await;
    ui.click("dialog input[name=enableClientRestriction]").await;
    ui.click("dialog input[name=allowedClients][value=claude_code]")
        .await;
    ui.click("dialog input[name=enableClientRestriction]").await; // and off again
    ui.fill("dialog input[name=name]", "browser-key").await;
    ui.press("dialog input[name=name]", "Enter").await;
    ui.wait_for("[data-plaintext-key]").await;
    let plaintext = ui.text("[data-plaintext-key]").await;
    assert!(plaintext.starts_with("cr_"), "{plaintext}");
    ui.screenshot("admin-key-created").await;
    ui.click("dialog [data-copy]").await;
    ui.wait_text("dialog [data-copy]", "Cop").await;
    ui.press("dialog [data-copy]", "Escape").await;
    ui.wait_gone("dialog[open]").await;
    ui.wait_text("tbody tr", "browser-key").await;
    let (_, list) = env
        .admin(Method::GET, "/admin/api-keys?search=browser-key", None)
        .await;
    let k = &list["data"]["items"][0];
    assert_eq!(k["dailyCostLimit"], 5.0);
    assert_eq!(k["rateLimitWindow"], 60);
    assert_eq!(k["rateLimitRequests"], 100);
    assert_eq!(k["tags"], json!(["e2e"]));
    assert_eq!(k["enableClientRestriction"], false);
    let key_id = k["id"].as_str().unwrap().to_owned();
    ui.assert_clean("after creating a key");

    // Requests through crs show up as the key's usage.
    send(&env, &plaintext, "claude-sonnet-4-5-20250929", false).await;
    send(&env, &plaintext, "claude-sonnet-4-5-20250929", true).await;
    send(&env, &plaintext, "claude-3-5-haiku-20241022", false).await;
    ui.reload().await;
    ui.wait_loaded().await;
    let row = format!("tr[data-key-id='{key_id}']");
    ui.wait_text(&format!("{row} [data-total-requests]"), "3 requests")
        .await;
    ui.click(&format!("{row} [data-action=usage]")).await;
    ui.wait_js(
        "document.querySelectorAll('dialog[open] tbody tr').length === 3",
        "three records in the key's usage",
    )
    .await;
    ui.wait_for("dialog[open] .chart rect.col").await;
    ui.screenshot("admin-key-usage").await;
    ui.press("dialog[open] button", "Escape").await;
    ui.wait_gone("dialog[open]").await;

    // Edit: the form comes back filled in; saving keeps the other fields.
    ui.click(&format!("{row} [data-action=edit]")).await;
    ui.wait_for("dialog[open] textarea[name=description]").await;
    assert_eq!(
        ui.eval("document.querySelector('dialog input[name=dailyCostLimit]').value")
            .await,
        "5"
    );
    ui.fill("dialog textarea[name=description]", "made by a test")
        .await;
    ui.click("dialog button[type=submit]").await;
    ui.wait_gone("dialog[open]").await;
    ui.wait_text(".toast", "Saved browser-key").await;
    let (_, v) = env
        .admin(Method::GET, &format!("/admin/api-keys/{key_id}"), None)
        .await;
    assert_eq!(v["data"]["description"], "made by a test");
    assert_eq!(v["data"]["dailyCostLimit"], 5.0);
    assert_eq!(v["data"]["tags"], json!(["e2e"]));

    // Soft delete, then restore from the Deleted list.
    ui.click(&format!("{row} [data-action=delete]")).await;
    ui.wait_text("dialog[open]", "Delete browser-key?").await;
    ui.click("dialog[open] button[type=submit]").await;
    ui.wait_gone(&row).await;
    ui.click_text("button.tab", "Deleted").await;
    ui.wait_for(&format!("{row} [data-action=restore]")).await;
    ui.click(&format!("{row} [data-action=restore]")).await;
    ui.wait_text(".toast", "Restored browser-key").await;
    ui.click_text("button.tab", "Keys").await;
    ui.wait_for(&row).await;
    let (_, v) = env
        .admin(Method::GET, &format!("/admin/api-keys/{key_id}"), None)
        .await;
    assert_eq!(v["data"]["isDeleted"], false);
    assert_eq!(v["data"]["isActive"], true);

    // Search narrows the list.
    env.create_key(json!({"name": "other-key"})).await;
    ui.reload().await;
    ui.wait_text("tbody tr", "other-key").await;
    ui.fill("[data-search]", "browser").await;
    ui.wait_js(
        "document.querySelectorAll(\"table[aria-label='API keys'] tbody tr\").length === 1",
        "one search result",
    )
    .await;
    ui.wait_text("tbody tr", "browser-key").await;
    ui.assert_clean("on the keys page");

    // More traffic, so the dashboard has something to show.
    let (_, alice) = env
        .create_key(json!({"name": "alice-laptop", "tags": ["team-a"], "dailyCostLimit": 20}))
        .await;
    let (_, ci) = env
        .create_key(json!({"name": "ci-pipeline", "tags": ["ci"], "rateLimitWindow": 60, "rateLimitRequests": 500}))
        .await;
    for _ in 0..6 {
        send(&env, &alice, "claude-sonnet-4-5-20250929", false).await;
    }
    for _ in 0..2 {
        send(&env, &alice, "claude-opus-4-1-20250805", true).await;
    }
    for _ in 0..4 {
        send(&env, &ci, "claude-3-5-haiku-20241022", false).await;
    }

    // The dashboard counts the requests and draws them.
    ui.click("nav a[data-nav='dashboard']").await;
    ui.wait_loaded().await;
    ui.wait_js(
        "document.querySelector('[data-stat=requests]').innerText === '15'",
        "15 requests today",
    )
    .await;
    ui.wait_for("[data-chart=requests] rect.col").await;
    ui.wait_text(".barlist", "browser-key").await;
    ui.wait_text("table", "console-main").await;
    let shot = ui.screenshot("admin-dashboard-light").await;
    publish(&shot, "dashboard-light");

    // Usage page: the ranking and the records.
    ui.click("nav a[data-nav='usage']").await;
    ui.wait_loaded().await;
    ui.wait_text("table[aria-label='Cost ranking']", "browser-key")
        .await;
    ui.wait_js(
        "document.querySelectorAll(\"table[aria-label='Request records'] tbody tr\").length === 15",
        "15 records",
    )
    .await;
    ui.wait_text("table[aria-label='Request records']", "browser-key")
        .await;
    ui.screenshot("admin-usage").await;

    // Accounts: the card, a test (which may not exist on this server yet), scheduling, and a
    // new account through the form.
    ui.expect_failure("/test", 404);
    ui.click("nav a[data-nav='accounts']").await;
    ui.wait_loaded().await;
    let card = format!("[data-account-id='{account}']");
    ui.wait_text(card.as_str(), "console-main").await;
    ui.click(&format!("{card} [data-action=test]")).await;
    ui.wait_js(
        "document.querySelector('.toast')",
        "a toast with the test result",
    )
    .await;
    // The result is a dot in the card's test history.
    ui.wait_for(&format!("{card} [data-test-history] .test-dot.ok"))
        .await;
    // Scheduled tests: the dialog saves v1's test config, and the card names the schedule.
    ui.click(&format!("{card} [data-action=test-schedule]"))
        .await;
    ui.wait_for("dialog[open] input[name=cronExpression]").await;
    ui.click("dialog[open] input[role=switch]").await;
    ui.fill("dialog input[name=cronExpression]", "30 6 * * 1-5")
        .await;
    ui.press("dialog input[name=cronExpression]", "Enter").await;
    ui.wait_gone("dialog[open]").await;
    ui.wait_text(
        &format!("{card} [data-test-history]"),
        "scheduled 30 6 * * 1-5",
    )
    .await;
    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/claude-console-accounts/{account}/test-config"),
            None,
        )
        .await;
    assert_eq!(v["data"]["config"]["enabled"], true, "{v}");
    ui.click(&format!("{card} input[role=switch]")).await;
    ui.wait_text(".toast", "paused").await;
    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/claude-console-accounts/{account}"),
            None,
        )
        .await;
    assert_eq!(v["data"]["schedulable"], false);
    ui.wait_text(&format!("{card} .badge"), "Paused").await;
    ui.click(&format!("{card} input[role=switch]")).await;
    ui.wait_text(".toast", "taking requests again").await;
    ui.click("[data-add-account]").await;
    ui.wait_for("dialog[open] input[name=name]").await;
    ui.fill("dialog input[name=name]", "second-upstream").await;
    ui.fill("dialog input[name=apiUrl]", &env.mock.url()).await;
    ui.fill("dialog input[name=apiKey]", UPSTREAM_KEY).await;
    ui.press("dialog input[name=apiKey]", "Enter").await;
    ui.wait_gone("dialog[open]").await;
    ui.wait_text(".account-card h3", "second-upstream").await;
    ui.eval("(() => { document.querySelectorAll('.toast').forEach((t) => t.remove()); document.activeElement?.blur(); return true; })()")
        .await;
    let shot = ui.screenshot("admin-accounts").await;
    publish(&shot, "accounts");

    // Claude OAuth: get the link, sign in (the mock's code stands in for Claude's page),
    // paste the code.
    ui.click_text("button.tab", "Claude OAuth").await;
    ui.wait_loaded().await;
    ui.wait_text(".empty", "No Claude OAuth accounts yet").await;
    let (_, challenge) = oauth_form(&ui, "Claude OAuth").await;
    ui.fill("dialog input[name=name]", "claude-max").await;
    ui.fill("dialog input[name=apiUrl]", &env.mock.url()).await;
    ui.fill(
        "dialog input[name=authorizationCode]",
        &format!("code-{challenge}#state"),
    )
    .await;
    ui.press("dialog input[name=authorizationCode]", "Enter")
        .await;
    ui.wait_gone("dialog[open]").await;
    ui.wait_text(".account-card h3", "claude-max").await;
    ui.wait_text(".account-card", "refreshes in").await;
    // Usage windows: polled on demand (the upstream mock takes any token for this), shown as
    // bars with their reset times.
    ui.wait_text("[data-usage-windows]", "Not polled yet").await;
    env.mock.state.accepted_keys.lock().clear();
    ui.click("[data-action=usage-refresh]").await;
    ui.wait_for("[data-window=fiveHour] .meter").await;
    ui.wait_text("[data-window=fiveHour]", "resets in 4h").await;
    ui.wait_text("[data-window=sevenDay] .window-pct", "1%")
        .await;
    ui.screenshot("admin-accounts-claude").await;
    env.mock
        .state
        .accepted_keys
        .lock()
        .push(UPSTREAM_KEY.into());
    ui.wait_text("button.tab[aria-selected=true]", "Claude OAuth · 1")
        .await;

    // Gemini OAuth: the same flow with Google (the mock's token endpoint checks the PKCE
    // verifier against the code).
    ui.click_text("button.tab", "Gemini OAuth").await;
    ui.wait_loaded().await;
    ui.wait_text(".empty", "No Gemini OAuth accounts yet").await;
    let (url, challenge) = oauth_form(&ui, "Gemini OAuth").await;
    assert!(
        url.starts_with("https://accounts.google.com/o/oauth2/v2/auth?"),
        "{url}"
    );
    ui.fill("dialog input[name=name]", "google-login").await;
    ui.fill("dialog input[name=projectId]", "ui-project").await;
    ui.fill(
        "dialog input[name=authorizationCode]",
        &format!("code-{challenge}"),
    )
    .await;
    ui.press("dialog input[name=authorizationCode]", "Enter")
        .await;
    ui.wait_gone("dialog[open]").await;
    ui.wait_text(".account-card h3", "google-login").await;
    ui.wait_text(".account-card", "ui-project").await;
    ui.wait_text(".account-card", "refreshes in").await;
    ui.wait_text("button.tab[aria-selected=true]", "Gemini OAuth · 1")
        .await;

    // ChatGPT (Codex): OpenAI's sign-in ends on a localhost address that does not load; the
    // admin pastes that whole address. The windows appear once the backend has answered.
    ui.click_text("button.tab", "ChatGPT (Codex)").await;
    ui.wait_loaded().await;
    ui.wait_text(".empty", "No ChatGPT (Codex) accounts yet")
        .await;
    ui.click("[data-add-account]").await;
    ui.assert_labelled("in the ChatGPT form").await;
    ui.click("[data-oauth-generate]").await;
    ui.wait_for("[data-auth-url]").await;
    let url = ui.text("[data-auth-url]").await;
    assert!(
        url.contains("client_id=app_EMoamEEZ73f0CkXaXp7hrann"),
        "{url}"
    );
    let param = |name: &str| query_param(&url, name);
    ui.fill("dialog input[name=name]", "chatgpt-plus").await;
    ui.fill(
        "dialog input[name=baseApi]",
        &format!("{}/backend-api/codex", env.mock.url()),
    )
    .await;
    ui.fill(
        "dialog input[name=authorizationCode]",
        &format!(
            "http://localhost:1455/auth/callback?code=code-{}&scope=openid&state={}",
            param("code_challenge"),
            param("state")
        ),
    )
    .await;
    ui.press("dialog input[name=authorizationCode]", "Enter")
        .await;
    ui.wait_gone("dialog[open]").await;
    ui.wait_text(".account-card h3", "chatgpt-plus").await;
    ui.wait_text(".account-card", "plus plan").await;
    ui.wait_text("[data-usage-windows]", "No answer seen yet")
        .await;
    env.mock.state.accepted_keys.lock().clear();
    let (_, codex_key) = env
        .create_key(json!({"name": "codex", "permissions": ["openai"]}))
        .await;
    let r = env
        .http
        .post(env.url("/openai/v1/responses"))
        .bearer_auth(&codex_key)
        .json(&json!({"model": "gpt-5", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.mock
        .state
        .accepted_keys
        .lock()
        .push(UPSTREAM_KEY.into());
    ui.goto("/admin-next/accounts").await;
    ui.wait_loaded().await;
    ui.click_text("button.tab", "ChatGPT (Codex)").await;
    ui.wait_text("[data-window=fiveHour] .window-pct", "12%")
        .await;
    ui.wait_text("[data-window=sevenDay]", "resets in").await;
    ui.screenshot("admin-accounts-chatgpt").await;
    ui.assert_clean("on the accounts page");

    // Settings: the sticky-session lifetime is saved on the server.
    ui.click("nav a[data-nav='settings']").await;
    ui.wait_loaded().await;
    ui.fill("input[name=stickySessionTtlHours]", "2").await;
    ui.press("input[name=stickySessionTtlHours]", "Enter").await;
    ui.wait_text(".toast", "Settings saved").await;
    let (_, v) = env.admin(Method::GET, "/admin/settings", None).await;
    assert_eq!(v["data"]["stickySessionTtlHours"], 2.0);

    // Dark mode: the toggle switches, and the choice survives a reload.
    ui.click(".sidebar [data-theme-toggle]").await;
    ui.wait_js(
        "document.documentElement.dataset.theme === 'dark'",
        "the dark theme",
    )
    .await;
    let bg = ui
        .eval("getComputedStyle(document.body).backgroundColor")
        .await;
    assert_eq!(bg, "rgb(13, 15, 19)");
    ui.click("nav a[data-nav='api-keys']").await;
    ui.reload().await;
    ui.wait_loaded().await;
    assert_eq!(
        ui.eval("document.documentElement.dataset.theme").await,
        "dark"
    );
    let shot = ui.screenshot_view("admin-keys-dark").await;
    publish(&shot, "keys-dark");
    ui.click("nav a[data-nav='dashboard']").await;
    ui.wait_loaded().await;
    ui.wait_for("[data-chart=requests] rect.col").await;
    ui.screenshot("admin-dashboard-dark").await;

    // Phone width: no sideways scrolling, and the menu button opens the navigation.
    ui.set_viewport(PHONE).await;
    for nav in ["dashboard", "api-keys", "accounts", "usage", "settings"] {
        ui.click("[data-menu]").await;
        ui.wait_js(
            "document.querySelector('.shell').classList.contains('nav-open')",
            "the open menu",
        )
        .await;
        ui.click(&format!("nav a[data-nav='{nav}']")).await;
        ui.wait_js(&format!("location.pathname === '/admin-next/{nav}' && !document.querySelector('.shell.nav-open')"), nav)
            .await;
        ui.wait_loaded().await;
        let width = ui.eval("document.documentElement.scrollWidth").await;
        assert!(
            width.as_u64().unwrap() <= PHONE.0 as u64,
            "{nav} is {width}px wide on a phone"
        );
        if nav == "dashboard" {
            ui.screenshot("admin-dashboard-phone").await;
        }
    }
    ui.set_viewport(WIDE).await;
    ui.assert_clean("at phone width");

    // Signing out revokes the session on the server: a copy of its token stops working.
    let token = ui
        .eval("JSON.parse(localStorage.getItem('crs.session')).token")
        .await;
    let token = token.as_str().expect("a session token").to_owned();
    ui.click("[data-logout]").await;
    ui.wait_js(
        "location.pathname === '/admin-next/login' && !localStorage.getItem('crs.session')",
        "the login page after signing out",
    )
    .await;
    let r = env
        .http
        .get(env.url("/web/auth/user"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the signed-out token still works");

    // A session the server no longer accepts sends the user back to the login page.
    ui.expect_failure("/admin/", 401);
    ui.expect_failure("/web/auth/user", 401);
    ui.eval("localStorage.setItem('crs.session', JSON.stringify({token: 'expired.token.value', username: 'root'})) ?? true")
        .await;
    ui.goto("/admin-next/usage").await;
    ui.wait_js(
        "location.pathname === '/admin-next/login'",
        "the login page after a 401",
    )
    .await;
    assert!(
        ui.eval("location.search")
            .await
            .as_str()
            .unwrap()
            .contains("next=usage")
    );

    // Changing the password signs out; the new password works.
    login(&ui).await;
    ui.click("nav a[data-nav='settings']").await;
    ui.wait_loaded().await;
    ui.fill("input[name=currentPassword]", ADMIN_PASS).await;
    ui.fill("input[name=newPassword]", "a-brand-new-password")
        .await;
    ui.fill("input[name=confirmPassword]", "a-brand-new-password")
        .await;
    ui.press("input[name=confirmPassword]", "Enter").await;
    ui.wait_js(
        "location.pathname === '/admin-next/login'",
        "the login page after a password change",
    )
    .await;
    ui.fill("input[name=username]", ADMIN_USER).await;
    ui.fill("input[name=password]", "a-brand-new-password")
        .await;
    ui.press("input[name=password]", "Enter").await;
    ui.wait_js(
        "location.pathname === '/admin-next/dashboard'",
        "the dashboard with the new password",
    )
    .await;
    ui.wait_loaded().await;
    ui.assert_clean("at the end");
    ui.close().await;
    env.stop().await;
    oauth.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_page_adds_a_webhook_and_tests_it() {
    let Some(exe) = chromium_path() else {
        return;
    };
    let _one = BROWSER.lock().await;
    let env = Env::start().await;
    let rx = crate::webhook::Receiver::start(0).await;
    let ui = Ui::launch(exe, env.url("")).await;
    login(&ui).await;
    ui.click("nav a[data-nav='notifications']").await;
    ui.wait_loaded().await;
    ui.wait_for("[data-webhook-form]").await;
    // The list is drawn again after each change (`data-renders` counts): each step waits for
    // the drawing its change causes.
    let drawn = |n: u32| {
        format!("Number(document.querySelector('[data-platforms]')?.dataset.renders) >= {n}")
    };
    ui.wait_js(&drawn(1), "the platform list").await;
    ui.click("input[data-webhook-enabled]").await;
    ui.wait_js(&drawn(2), "the list after switching on").await;
    ui.fill("[data-webhook-form] input[name=name]", "ops channel")
        .await;
    ui.fill("[data-webhook-form] input[name=url]", &rx.url)
        .await;
    ui.click("[data-webhook-form] button[type=submit]").await;
    ui.wait_js(&drawn(3), "the list after adding").await;
    ui.wait_text("table", "ops channel").await;
    assert_eq!(
        ui.eval("document.querySelector('input[data-webhook-enabled]').checked")
            .await,
        true
    );
    ui.click("[data-test-platform]").await;
    rx.wait_for("the platform test", |v| v["type"] == "test")
        .await;
    let (_, v) = env
        .admin(reqwest::Method::GET, "/admin/webhook/config", None)
        .await;
    assert_eq!(v["config"]["enabled"], true, "{v}");
    assert_eq!(v["config"]["platforms"][0]["name"], "ops channel");
    ui.click("[data-test-all]").await;
    ui.wait_text(".toast", "1 of 1").await;
    ui.screenshot("notifications").await;
    ui.assert_clean("on the notifications page");
    ui.close().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_service_page_shows_a_keys_usage_limits_and_models() {
    let Some(exe) = chromium_path() else {
        return;
    };
    let _one = BROWSER.lock().await;
    let env = Env::start().await;
    let ui = Ui::launch(exe, env.url("")).await;
    env.create_account(json!({})).await;
    let (_, key) = env
        .create_key(json!({
            "name": "alice-laptop", "dailyCostLimit": 10, "totalCostLimit": 250,
            "rateLimitWindow": 60, "rateLimitRequests": 100, "concurrencyLimit": 2,
            "enableModelRestriction": true, "modelRestrictionMode": "deny", "restrictedModels": ["claude-opus-4-1"],
        }))
        .await;
    for _ in 0..3 {
        send(&env, &key, "claude-sonnet-4-5-20250929", false).await;
    }
    send(&env, &key, "claude-3-5-haiku-20241022", true).await;

    // Nothing without a key.
    ui.goto("/").await;
    ui.wait_for("#api-key").await;
    assert_eq!(ui.eval("document.activeElement?.id").await, "api-key");
    assert_eq!(ui.text("[data-results]").await, "");
    let shot = ui.screenshot("self-service-empty").await;
    let _ = shot;

    // A wrong key: the server's message, no data.
    ui.expect_failure("/apiStats/api/", 401);
    ui.fill("#api-key", "cr_not_a_real_key").await;
    ui.press("#api-key", "Enter").await;
    ui.wait_for("[data-key-error]").await;
    assert_eq!(ui.text("[data-results]").await, "");
    assert_eq!(
        ui.eval("document.querySelector('#api-key').getAttribute('aria-invalid')")
            .await,
        "true"
    );

    // The real key, remembered in this tab only.
    ui.fill("#api-key", &key).await;
    ui.click("#remember").await;
    ui.press("#api-key", "Enter").await;
    ui.wait_text("[data-key-name]", "alice-laptop").await;
    ui.wait_loaded().await;
    ui.wait_text(".stat", "Requests today").await;
    assert!(
        ui.text(".stats-grid").await.contains('4'),
        "{}",
        ui.text(".stats-grid").await
    );
    ui.wait_text("[data-limit='Daily budget']", "of $10.00")
        .await;
    ui.wait_text("[data-limit='Requests per hour']", "4 of 100")
        .await;
    ui.wait_text(
        "table[aria-label='Usage by model']",
        "claude-sonnet-4-5-20250929",
    )
    .await;
    ui.wait_text(
        "table[aria-label='Usage by model']",
        "claude-3-5-haiku-20241022",
    )
    .await;
    ui.wait_for("[data-chart=key-trend] rect.col").await;
    ui.wait_text(".card", "Blocked models").await;
    assert_eq!(
        ui.eval("sessionStorage.getItem('crs.statsKey')").await,
        key.as_str()
    );
    assert_eq!(
        ui.eval(
            "Object.keys(localStorage).some(k => (localStorage.getItem(k) || '').includes('cr_'))"
        )
        .await,
        false,
        "the key is never kept in localStorage"
    );
    // The month and all-time views of the models.
    ui.click_text("button.tab", "All time").await;
    ui.wait_text(
        "table[aria-label='Usage by model']",
        "claude-3-5-haiku-20241022",
    )
    .await;
    ui.assert_labelled("on the self-service page").await;
    let shot = ui.screenshot("self-service-light").await;
    publish(&shot, "self-service");

    // Remembered: a reload shows it again without asking.
    ui.reload().await;
    ui.wait_text("[data-key-name]", "alice-laptop").await;
    ui.wait_loaded().await;

    // Dark theme, then a phone.
    ui.click("[data-theme-toggle]").await;
    ui.wait_js(
        "document.documentElement.dataset.theme === 'dark'",
        "the dark theme",
    )
    .await;
    ui.screenshot("self-service-dark").await;
    ui.set_viewport(PHONE).await;
    ui.reload().await;
    ui.wait_text("[data-key-name]", "alice-laptop").await;
    ui.wait_loaded().await;
    let width = ui.eval("document.documentElement.scrollWidth").await;
    assert!(
        width.as_u64().unwrap() <= PHONE.0 as u64,
        "the page is {width}px wide on a phone"
    );
    ui.click("[data-theme-toggle]").await;
    ui.wait_js(
        "document.documentElement.dataset.theme === 'light'",
        "the light theme",
    )
    .await;
    ui.screenshot("self-service-phone").await;
    let shot = ui.screenshot_view("self-service-phone-view").await;
    publish(&shot, "self-service-phone");

    // Forget: the data and the remembered key are gone.
    ui.click("[data-forget]").await;
    ui.wait_js(
        "document.querySelector('[data-results]').innerText === ''",
        "the results to clear",
    )
    .await;
    assert_eq!(
        ui.eval("sessionStorage.getItem('crs.statsKey')").await,
        Value::Null
    );
    ui.set_viewport(WIDE).await;

    // v1's address serves the same page.
    ui.goto("/admin-next/api-stats").await;
    ui.wait_for("#api-key").await;
    ui.assert_clean("on the self-service page");
    ui.close().await;
    env.stop().await;
}

/// Serving: types, caching, redirects, deep links, and that API routes still win. No browser.
#[tokio::test]
async fn web_ui_assets_are_served_with_types_caching_and_fallbacks() {
    let env = Env::start().await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str, accept: &str| http.get(env.url(path)).header("accept", accept).send();

    let r = get("/admin-next/", "text/html").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let index = r.text().await.unwrap();
    assert!(index.contains("/admin-next/js/admin/main.js"));

    let r = http
        .get(env.url("/admin-next/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // Deep links get the app; missing files are a JSON 404.
    for deep in [
        "/admin-next/api-keys",
        "/admin-next/accounts/claude-console",
        "/admin-next/login?next=usage",
    ] {
        let r = get(deep, "text/html").await.unwrap();
        assert_eq!(r.status(), 200, "{deep}");
        assert_eq!(r.text().await.unwrap(), index, "{deep}");
    }
    let r = get("/admin-next/js/nope.js", "*/*").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Not Found");

    // Redirects for browsers.
    let r = get("/admin-next", "text/html").await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/admin-next/");
    let r = get("/admin", "text/html,application/xhtml+xml")
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/admin-next/");
    let r = get("/admin", "application/json").await.unwrap();
    assert_eq!(r.status(), 404);

    // The self-service page at / and at v1's address.
    for p in ["/", "/admin-next/api-stats"] {
        let r = get(p, "text/html").await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("/admin-next/js/stats/main.js"),
            "{p}"
        );
    }

    // Content types.
    for (p, ct) in [
        ("/admin-next/css/app.css", "text/css; charset=utf-8"),
        (
            "/admin-next/js/admin/main.js",
            "text/javascript; charset=utf-8",
        ),
        ("/admin-next/img/favicon.svg", "image/svg+xml"),
    ] {
        let r = get(p, "*/*").await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
        assert_eq!(r.headers()["content-type"], ct, "{p}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }

    // Every module import resolves to a served file (a typo would break the app).
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets");
    let mut stack = vec![root.join("js")];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let src = std::fs::read_to_string(&path).unwrap();
            for spec in src
                .split(['"', '\''])
                .filter(|s| (s.starts_with("./") || s.starts_with("../")) && s.ends_with(".js"))
            {
                let target = path.parent().unwrap().join(spec);
                let rel = normalize(&target)
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                let r = get(&format!("/admin-next/{rel}"), "*/*").await.unwrap();
                assert_eq!(r.status(), 200, "{} imports {spec}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} imports found");

    // API routes are not shadowed.
    let r = get("/health", "text/html").await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    let r = get("/admin/api-keys", "text/html").await.unwrap();
    assert_eq!(r.status(), 401);
    let r = get("/v1/unknown", "text/html").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    env.stop().await;
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Pick `value` in the select `css`, as a person would (a change event follows).
async fn choose(ui: &Ui, css: &str, value: &str) {
    ui.eval(&format!(
        "(() => {{ const s = document.querySelector({css:?}); s.value = {value:?}; s.dispatchEvent(new Event('change')); return true; }})()"
    ))
    .await;
}

/// Droid and Bedrock forms: a key pool added and trimmed, a Factory login through the
/// device-code flow, a Bedrock API key instead of AWS keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn droid_pool_device_sign_in_and_bedrock_api_key_forms() {
    let Some(exe) = chromium_path() else {
        return;
    };
    let _one = BROWSER.lock().await;
    let workos = extra_mock().await;
    let workos_url = workos.url();
    let env = Env::start_with(|c| c.droid_workos_url = workos_url.clone()).await;
    env.mock
        .state
        .accepted_keys
        .lock()
        .extend(["fk-ui-0001".to_owned(), "fk-ui-0002".to_owned()]);
    let ui = Ui::launch(exe, env.url("")).await;
    login(&ui).await;
    ui.click("nav a[data-nav='accounts']").await;
    ui.wait_loaded().await;
    ui.click_text("button.tab", "Droid").await;
    ui.wait_loaded().await;

    // A pool of two keys.
    ui.click("[data-add-account]").await;
    ui.wait_for("dialog[open] textarea[name=apiKeys]").await;
    ui.assert_labelled("in the Droid form").await;
    ui.fill("dialog input[name=name]", "droid-pool").await;
    ui.fill("dialog input[name=baseUrl]", &env.mock.url()).await;
    ui.fill("dialog textarea[name=apiKeys]", "fk-ui-0001 fk-ui-0002")
        .await;
    ui.click("dialog button[type=submit]").await;
    ui.wait_gone("dialog[open]").await;
    ui.wait_text("[data-pool-summary]", "2 of 2 API keys usable")
        .await;
    let (_, v) = env.admin(Method::GET, "/admin/droid-accounts", None).await;
    let pool = v["data"][0].clone();
    assert_eq!(pool["authenticationMethod"], "api_key", "{pool}");
    assert_eq!(pool["apiKeyCount"], 2);
    // Edit: one key removed.
    ui.click(".account-card [data-action=edit]").await;
    ui.wait_for("dialog[open] [data-pool-key]").await;
    ui.click("dialog [data-pool-remove]").await;
    ui.click("dialog button[type=submit]").await;
    ui.wait_gone("dialog[open]").await;
    ui.wait_text("[data-pool-summary]", "1 of 1 API keys usable")
        .await;

    // A Factory login: code, approval (the mock approves on the second poll), account.
    ui.click("[data-add-account]").await;
    ui.wait_for("dialog[open] select[name=authenticationMethod]")
        .await;
    choose(&ui, "dialog select[name=authenticationMethod]", "").await;
    ui.assert_labelled("in the Droid sign-in form").await;
    ui.click("[data-device-generate]").await;
    ui.wait_text("[data-user-code]", "MOCK-CODE").await;
    ui.fill("dialog input[name=name]", "droid-login").await;
    ui.fill("dialog input[name=baseUrl]", &workos.url()).await;
    ui.click("dialog button[type=submit]").await;
    ui.wait_text(".toast", "Not approved yet").await;
    ui.click("dialog button[type=submit]").await;
    ui.wait_gone("dialog[open]").await;
    ui.wait_text(".account-card", "Factory login").await;
    let (_, v) = env.admin(Method::GET, "/admin/droid-accounts", None).await;
    let login_acc = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "droid-login")
        .cloned()
        .unwrap();
    assert_eq!(login_acc["hasRefreshToken"], true, "{login_acc}");
    assert_eq!(login_acc["organizationId"], "org_01MOCK");

    // Bedrock with an API key: the AWS key fields give way to the bearer token.
    ui.click_text("button.tab", "Bedrock").await;
    ui.wait_loaded().await;
    ui.click("[data-add-account]").await;
    ui.wait_for("dialog[open] select[name=credentialType]")
        .await;
    choose(&ui, "dialog select[name=credentialType]", "bearer_token").await;
    ui.assert_labelled("in the Bedrock form").await;
    ui.fill("dialog input[name=name]", "bedrock-key").await;
    ui.fill("dialog input[name=region]", "us-east-1").await;
    ui.fill("dialog input[name=endpointUrl]", &env.mock.url())
        .await;
    ui.fill(
        "dialog input[name=bearerToken]",
        crs::mock::bedrock::MOCK_BEARER_TOKEN,
    )
    .await;
    ui.click("dialog button[type=submit]").await;
    ui.wait_gone("dialog[open]").await;
    ui.wait_text(".account-card", "API key").await;
    let (_, v) = env
        .admin(Method::GET, "/admin/bedrock-accounts", None)
        .await;
    assert_eq!(v["data"][0]["credentialType"], "bearer_token", "{v}");
    assert_eq!(v["data"][0]["hasBearerToken"], true);
    ui.screenshot("admin-accounts-bedrock-bearer").await;
    ui.assert_clean("on the Droid and Bedrock forms");
    ui.close().await;
    env.stop().await;
}
