//! Request extraction: the authenticated caller, and JSON bodies checked
//! for media type and size before anything reads them.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use super::body_guard::BodyReadError;
use super::problem::Problem;
use super::AppState;
use crate::app::AppError;
use crate::audit::Actor;
use crate::auth::Principal;
use crate::config::CertificateFingerprint;
use crate::domain::submission::{looks_like_field_name, FieldProblem};

/// What the connection tells about the caller: the client certificate's
/// fingerprint, when one was presented.
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    pub certificate: Option<CertificateFingerprint>,
    /// SHA-256 of the client certificate's SubjectPublicKeyInfo: how member
    /// gateways are known on the federation listener.
    pub spki_pin: Option<String>,
}

/// The authenticated caller. A failure is answered `401` and audited.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let certificate = parts.extensions.get::<ConnectionInfo>().and_then(|c| c.certificate.clone());
        // A browser that holds a DPO's client certificate (for the console)
        // presents it on every connection, even for a request another site
        // made it send: the API answers no request a browser says another
        // site started. Clients of the API send no `Sec-Fetch-Site`.
        let site = parts.headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if site.is_some_and(|site| site == "cross-site" || site == "same-site") {
            tracing::info!("request refused: started by another site");
            let subject = certificate.map_or_else(|| "anonymous".to_owned(), |c| c.display());
            state.gateway.audit_refusal(Actor { org: None, subject }, "forbidden", "cross_site_request").await?;
            return Err(AppError::Forbidden { code: "cross_site_request" }.into());
        }
        let authorization = parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
        match state.auth.authenticate(authorization.as_deref(), certificate.as_ref(), state.gateway.now()).await {
            Ok(principal) => Ok(Caller(principal)),
            Err(error) => {
                tracing::info!(code = error.code(), "request refused: not authenticated");
                let subject = certificate.map_or_else(|| "anonymous".to_owned(), |c| c.display());
                let actor = Actor { org: None, subject };
                if let Err(audit_error) = state.gateway.audit_refusal(actor, "unauthenticated", error.code()).await {
                    return Err(audit_error.into());
                }
                Err(AppError::Unauthenticated(error).into())
            }
        }
    }
}

/// The route's one path parameter, percent-decoded. One that does not
/// decode to UTF-8 is a `400` problem (axum would answer in plain text),
/// and, like every problem, it does not repeat the value.
#[derive(Debug, Clone)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParam(value)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => {
                Err(Problem::invalid(&[FieldProblem { field: "(path)".to_owned(), problem: "must be UTF-8 once percent-decoded".to_owned() }]))
            }
            Err(rejection) => Err(AppError::Internal(format!("path parameters: {}", rejection.status())).into()),
        }
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|essence| essence == "application/json")
}

/// How far beyond the limit a refused body is still read (and dropped).
const DRAIN_AT_MOST: usize = 1024 * 1024;

/// Reads and drops up to `at_most` bytes of `body`.
async fn discard(mut body: Body, at_most: usize) {
    use axum::body::HttpBody;
    let mut seen = 0usize;
    while seen < at_most {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => seen = seen.saturating_add(frame.data_ref().map_or(0, |data| data.len())),
            _ => break,
        }
    }
}

/// The body as UTF-8 text: `415` unless it is declared JSON, `413` beyond `limit`.
pub async fn json_text(headers: &HeaderMap, body: Body, limit: usize) -> Result<String, Problem> {
    if !is_json(headers) {
        return Err(Problem::unsupported_media_type());
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if let Some(length) = declared.filter(|length| *length > limit) {
        // hyper closes a connection whose request body was left unread, and
        // a client still sending then sees a reset instead of this answer:
        // read and drop a body that is too large, within reason.
        if length <= limit.saturating_add(DRAIN_AT_MOST) {
            discard(body, length).await;
        }
        return Err(Problem::payload_too_large(limit));
    }
    let bytes = read_limited(body, limit).await?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        Problem::invalid(&[FieldProblem { field: "(body)".to_owned(), problem: "must be UTF-8".to_owned() }])
    })
}

/// Reads the whole body, up to `limit` bytes. Only a body over the limit is
/// `413`; one whose framing is broken (a bad chunk, a connection closed
/// before the declared length) is `400 malformed-body`, and one the body
/// guard stopped is `408` or `503`.
pub async fn read_limited(body: Body, limit: usize) -> Result<axum::body::Bytes, Problem> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(Problem::payload_too_large(limit)),
        Err(error) => match BodyReadError::find(error.as_ref()) {
            Some(stopped) => Err(Problem::body_read(stopped)),
            None => Err(Problem::malformed_body()),
        },
    }
}

/// A JSON body into `T`, whose unknown fields are refused; errors name the
/// field, never the value. Every body of this API is one JSON object: serde
/// would otherwise fill a struct from an array, by position (`[null]` as
/// `{}`, a whole consent withdrawal), and stop reading after the first value.
pub async fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: Body, limit: usize) -> Result<T, Problem> {
    let text = json_text(headers, body, limit).await?;
    let is_object = text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{');
    let not_an_object = || Problem::invalid(&[FieldProblem { field: "(body)".to_owned(), problem: "must be a JSON object".to_owned() }]);
    let malformed = |inner: &serde_json::Error| Problem::from(AppError::MalformedJson { line: inner.line(), column: inner.column() });
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => {
            deserializer.end().map_err(|inner| malformed(&inner))?;
            if is_object { Ok(value) } else { Err(not_an_object()) }
        }
        Err(error) => {
            let inner = error.inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(malformed(inner));
            }
            if !is_object {
                return Err(not_an_object());
            }
            let field = visible_path(error.path());
            let message = inner.to_string();
            let problem = if message.starts_with("unknown field") {
                "unknown field".to_owned()
            } else if message.starts_with("missing field") {
                message.split(" at line").next().unwrap_or("missing field").to_owned()
            } else {
                "invalid value".to_owned()
            };
            Err(Problem::invalid(&[FieldProblem { field, problem }]))
        }
    }
}

/// The path of the field at fault. It stops before a key that does not look
/// like a field name: such a key may be a submitted value, e.g. a name.
fn visible_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } if looks_like_field_name(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            _ => break,
        }
    }
    if out.is_empty() { "(body)".to_owned() } else { out }
}
