//! Bounds on a request's header fields, answered as a problem on both
//! listeners (national API and federation).
//!
//! Why here and not in hyper: hyper answers what it refuses itself (too many
//! fields, a head over its buffer) with a bare `431` and no body, and offers
//! no hook to shape that answer. So hyper is given generous bounds
//! ([`HYPER_MAX_HEADER_FIELDS`]; its default buffer of about 400 KB) and the
//! gateway's own, tighter ones are enforced here, where the answer can be a
//! documented problem. Only a head beyond hyper's bounds, or one that is not
//! HTTP at all, still gets hyper's bare answer.

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;

/// The most header fields a request may carry.
pub const MAX_HEADER_FIELDS: usize = 100;
/// The most bytes a request's header fields may take in all, each counted
/// as its name, its value and 4 bytes (`name: value\r\n`; hyper has
/// trimmed the spaces around the value).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// What hyper itself is told to accept, so that requests between the
/// gateway's bound and this one reach [`enforce`] and get a problem.
pub const HYPER_MAX_HEADER_FIELDS: usize = 1000;

/// Middleware: refuses a request over either bound with `431
/// headers-too-large`, before authentication and before any handler.
pub async fn enforce(request: Request, next: Next) -> Response {
    if within_bounds(request.headers()) {
        next.run(request).await
    } else {
        Problem::headers_too_large(MAX_HEADER_FIELDS, MAX_HEADER_BYTES).into_response()
    }
}

fn within_bounds(headers: &HeaderMap) -> bool {
    // `len` counts every field, a repeated name once per line.
    if headers.len() > MAX_HEADER_FIELDS {
        return false;
    }
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    bytes <= MAX_HEADER_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    fn with_fields(count: usize, value_len: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&"v".repeat(value_len)).unwrap();
        for i in 0..count {
            headers.append(HeaderName::from_bytes(format!("x-f{i}").as_bytes()).unwrap(), value.clone());
        }
        headers
    }

    #[test]
    fn the_field_count_is_bounded_repeated_names_included() {
        assert!(within_bounds(&with_fields(MAX_HEADER_FIELDS, 1)));
        assert!(!within_bounds(&with_fields(MAX_HEADER_FIELDS + 1, 1)));
        let mut repeated = HeaderMap::new();
        for _ in 0..=MAX_HEADER_FIELDS {
            repeated.append("x-same", HeaderValue::from_static("1"));
        }
        assert!(!within_bounds(&repeated));
    }

    #[test]
    fn the_bytes_are_bounded_as_on_the_wire() {
        // One field "x-f0: vvv...\r\n": 4 + 2 + 2 bytes around the value.
        let exactly = MAX_HEADER_BYTES - "x-f0".len() - 4;
        assert!(within_bounds(&with_fields(1, exactly)));
        assert!(!within_bounds(&with_fields(1, exactly + 1)));
    }
}
