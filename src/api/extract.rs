//! Our own extractors, so that bad input is answered in our error format: a JSON body
//! with a size cap (413) and syntax errors with line and column (400), and repeatable
//! query parameters (`embed=a&embed=b`).

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde_json::Value;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON document from the request body, not yet typed: handlers first normalise or
/// merge it, then convert it (see `dto`).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = read_capped(req.into_body()).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Oversized bodies are read on (and dropped) up to this size before the 413 goes out,
/// so that a client still sending gets to read the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 16 * BODY_LIMIT;

/// Reads the body up to [`BODY_LIMIT`]; beyond it answers 413 (after draining).
async fn read_capped(mut body: axum::body::Body) -> Result<Bytes, ApiError> {
    use axum::body::HttpBody;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len();
        if seen <= BODY_LIMIT {
            buf.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > BODY_LIMIT {
        return Err(ApiError::PayloadTooLarge(BODY_LIMIT));
    }
    Ok(Bytes::from(buf))
}

pub fn parse_json(bytes: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson {
        message: match e.classify() {
            serde_json::error::Category::Eof => "unexpected end of input".into(),
            serde_json::error::Category::Syntax => "syntax error".into(),
            serde_json::error::Category::Data => "invalid data".into(),
            serde_json::error::Category::Io => "could not read body".into(),
        },
        line: e.line(),
        column: e.column(),
    })
}

/// All query parameters in order, repeats kept.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A boolean flag: absent -> `default`; `true`/`false` (any case) or 400.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") || v.is_empty() => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(ApiError::BadRequest(format!("query parameter '{key}' must be true or false, not '{v}'"))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        Ok(Params(form_urlencoded::parse(q.as_bytes()).into_owned().collect()))
    }
}

/// Who asked, and for what (`api_post_event`'s `clientIp` and `uri`). The address is
/// the peer's, or, for a request a follower forwarded, the one the follower saw (the
/// last in `X-Forwarded-For`); it is empty when the server was not started with
/// connection info.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub client_ip: String,
    pub uri: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::ConnectInfo;
        let peer = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string());
        let forwarded = match parts.headers.contains_key(super::forward::FORWARDED_BY) {
            true => parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
            false => None,
        };
        let via = forwarded.and_then(|chain| chain.rsplit(',').next()).map(|ip| ip.trim().to_string());
        let client_ip = via.or(peer).unwrap_or_default();
        let uri = match parts.extensions.get::<axum::extract::OriginalUri>() {
            Some(u) => u.0.path().to_string(),
            None => parts.uri.path().to_string(),
        };
        Ok(Origin { client_ip, uri })
    }
}
