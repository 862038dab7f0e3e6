//! The web UI, embedded in the binary from `assets/`: the admin single-page app under
//! `/admin-next/` and the self-service usage page at `/` and `/admin-next/api-stats`.
//!
//! Plain ES modules and CSS, no build step. Release builds embed every file; debug builds read
//! `assets/` from the source tree, so edits show up on reload. Routes here are pushed last, so
//! every API route wins over them.

use rust_embed::RustEmbed;
use salvo::http::{HeaderValue, StatusCode, header};
use salvo::prelude::*;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// Where the admin app lives (v1's path).
pub const BASE: &str = "/admin-next/";

const ADMIN_PAGE: &str = "index.html";
const STATS_PAGE: &str = "stats.html";

/// Pages may load scripts, styles and data from this origin only; inline scripts are never
/// needed (the theme is set by a small external script before first paint).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("admin-next/{**rest}")
                .get(admin_next)
                .head(admin_next),
        )
        .push(
            Router::with_path("admin")
                .get(admin_redirect)
                .head(admin_redirect),
        )
        .push(Router::new().get(stats_root).head(stats_root))
}

/// The content type for a file name.
pub fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" | "md" => "text/plain; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// What a path under `/admin-next/` resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// An embedded file, by its name under `assets/`.
    File(String),
    /// Nothing there (a missing file with an extension, or a bad path).
    Missing,
}

/// Resolve the part of the path after `/admin-next/`: files by name, `api-stats` to the
/// self-service page, and any other extension-less path to the admin app (deep links).
pub fn resolve(rest: &str, exists: impl Fn(&str) -> bool) -> Resolved {
    let rest = rest.trim_matches('/');
    if rest
        .split('/')
        .any(|s| s == ".." || s == "." || s.contains('\\'))
    {
        return Resolved::Missing;
    }
    if rest.is_empty() {
        return Resolved::File(ADMIN_PAGE.into());
    }
    if rest == "api-stats" {
        return Resolved::File(STATS_PAGE.into());
    }
    if exists(rest) {
        return Resolved::File(rest.into());
    }
    let last = rest.rsplit('/').next().unwrap_or(rest);
    if last.contains('.') {
        Resolved::Missing
    } else {
        Resolved::File(ADMIN_PAGE.into())
    }
}

fn wants_html(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

fn redirect(res: &mut Response, to: &str) {
    res.status_code(StatusCode::FOUND);
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// Write an embedded file with its content type, validators and cache policy. HTML is always
/// revalidated; the other files are too (their names carry no hash), cheaply, by ETag.
fn serve(req: &Request, res: &mut Response, name: &str) {
    let Some(file) = Assets::get(name) else {
        res.status_code(StatusCode::NOT_FOUND);
        return;
    };
    let hash = file.metadata.sha256_hash();
    let etag = format!("\"{}\"", hex::encode(&hash[..12]));
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if name.ends_with(".html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if fresh {
        res.status_code(StatusCode::NOT_MODIFIED);
        return;
    }
    res.status_code(StatusCode::OK);
    let _ = res.write_body(file.data.into_owned());
}

/// `/admin-next` and everything under it.
#[handler]
async fn admin_next(req: &mut Request, res: &mut Response) {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(BASE) else {
        // `/admin-next` without the slash: relative URLs need it.
        let to = match req.uri().query() {
            Some(q) => format!("{BASE}?{q}"),
            None => BASE.to_owned(),
        };
        return redirect(res, &to);
    };
    match resolve(rest, |name| Assets::get(name).is_some()) {
        Resolved::File(name) => serve(req, res, &name),
        Resolved::Missing => {
            res.status_code(StatusCode::NOT_FOUND);
        }
    }
}

/// `/admin` in a browser goes to the admin app; anything else gets the usual 404.
#[handler]
async fn admin_redirect(req: &mut Request, res: &mut Response) {
    if wants_html(req) {
        redirect(res, BASE);
    } else {
        res.status_code(StatusCode::NOT_FOUND);
    }
}

/// `/`: the self-service usage page.
#[handler]
async fn stats_root(req: &mut Request, res: &mut Response) {
    serve(req, res, STATS_PAGE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_files_pages_and_deep_links() {
        let exists = |n: &str| ["js/admin/main.js", "css/app.css", "index.html"].contains(&n);
        assert_eq!(resolve("", exists), Resolved::File("index.html".into()));
        assert_eq!(
            resolve("api-stats", exists),
            Resolved::File("stats.html".into())
        );
        assert_eq!(
            resolve("css/app.css", exists),
            Resolved::File("css/app.css".into())
        );
        assert_eq!(
            resolve("api-keys", exists),
            Resolved::File("index.html".into())
        );
        assert_eq!(
            resolve("accounts/claude-console/", exists),
            Resolved::File("index.html".into())
        );
        assert_eq!(resolve("js/missing.js", exists), Resolved::Missing);
        assert_eq!(resolve("../Cargo.toml", exists), Resolved::Missing);
        assert_eq!(resolve("js/../../secrets", exists), Resolved::Missing);
    }

    #[test]
    fn every_embedded_file_has_a_known_type() {
        for name in Assets::iter() {
            assert_ne!(
                content_type(&name),
                "application/octet-stream",
                "{name} has no content type"
            );
        }
        assert!(Assets::get(ADMIN_PAGE).is_some());
        assert!(Assets::get(STATS_PAGE).is_some());
        assert_eq!(content_type("a/b.JS"), "text/javascript; charset=utf-8");
    }
}
