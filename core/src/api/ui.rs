//! `GET /_lb/ui`: the dashboard, one self-contained HTML page compiled into the binary. It draws
//! the ring from `/_lb/ring` and the replicas from `/_lb/status`, polling both once a second.
//!
//! The page is served with a Content-Security-Policy that allows nothing but its own inline
//! `<style>` and `<script>` (by their SHA-256, computed once from the page itself) and fetches to
//! its own origin, and that turns on Trusted Types, so even a slip into `innerHTML` with a
//! hostname would throw instead of parsing markup.

use std::sync::OnceLock;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::ApiError;

/// The page (`core/src/api/ui.html`).
const PAGE: &str = include_str!("ui.html");

/// The text of the page's one inline element `tag` (between `<tag>` and `</tag>`).
fn inline(tag: &str) -> Option<&'static str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = PAGE.find(&open)? + open.len();
    let end = start + PAGE[start..].find(&close)?;
    Some(&PAGE[start..end])
}

/// A CSP source expression for `text`: `'sha256-…'`.
fn hash_source(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page's Content-Security-Policy.
fn policy() -> &'static HeaderValue {
    static POLICY: OnceLock<HeaderValue> = OnceLock::new();
    POLICY.get_or_init(|| {
        let script = inline("script").expect("ui.html has an inline <script>");
        let style = inline("style").expect("ui.html has an inline <style>");
        let policy = format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
             require-trusted-types-for 'script'; trusted-types 'none'",
            hash_source(script),
            hash_source(style),
        );
        HeaderValue::from_str(&policy).expect("the policy is ASCII")
    })
}

/// Answer `GET /_lb/ui` (and `HEAD`): the page, never cached, never framed.
pub(crate) fn page(method: &Method) -> Result<Response<Bytes>, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed {
            path: "/_lb/ui",
            allowed: "GET",
        });
    }
    let mut resp = Response::new(Bytes::from_static(PAGE.as_bytes()));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, policy().clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_one_inline_script_and_style_and_nothing_external() {
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        assert!(PAGE.contains("<script>") && PAGE.contains("<style>"));
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            " src=",
            "@import",
            "url(",
            "https://",
        ] {
            assert!(!PAGE.contains(banned), "ui.html contains {banned:?}");
        }
        // The one `http://` is the SVG namespace, a name rather than a fetch.
        assert_eq!(PAGE.matches("http://").count(), 1);
        assert!(PAGE.contains("\"http://www.w3.org/2000/svg\""));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let policy = policy().to_str().unwrap();
        assert!(policy.starts_with("default-src 'none'; "), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        let script = inline("script").unwrap();
        assert!(script.contains("fetch(") && script.contains("\"/_lb/ring\""));
        assert!(policy.contains(&format!("script-src {};", hash_source(script))));
        let style = inline("style").unwrap();
        assert!(policy.contains(&format!("style-src {};", hash_source(style))));
        assert!(policy.contains("connect-src 'self';"));
        // A known vector, so the encoding is the one browsers compare against.
        assert_eq!(
            hash_source("abc"),
            "'sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0='"
        );
    }

    #[test]
    fn the_page_is_html_and_other_methods_are_refused() {
        let resp = page(&Method::GET).unwrap();
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(resp.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert!(matches!(
            page(&Method::POST),
            Err(ApiError::MethodNotAllowed { .. })
        ));
    }
}
