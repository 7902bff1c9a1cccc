//! The sidecar's HTTP client for the master's API: one HTTP/1.1 connection per request
//! (hyper), with the bearer token. Two calls: a JSON GET (the apps) and an open SSE
//! stream (`/v2/events`), read frame by frame.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// Time allowed to connect and to get the response head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JSON body accepted (10,000 apps with their tasks fit many times over).
const MAX_BODY: usize = 512 << 20;

/// A master's base URL, split for requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    /// `host:port` to connect to and to send as `Host`.
    pub authority: String,
    /// A path prefix (a master behind a proxy path), without the trailing `/`.
    pub prefix: String,
}

impl Master {
    /// Parses `http://host[:port][/prefix]` (the scheme may be left out).
    pub fn parse(url: &str) -> Result<Master, String> {
        let url = url.trim();
        if url.starts_with("https://") {
            return Err(format!("{url}: HTTPS masters are not supported yet; use http://"));
        }
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if authority.is_empty() || authority.contains(['@', ' ']) {
            return Err(format!("{url}: not a master URL (expected http://host:port)"));
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("/{prefix}") };
        Ok(Master { authority, prefix })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority, self.prefix)
    }
}

/// Sends one request and returns the response head (the body still streaming).
async fn send(master: &Master, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String> {
    let connecting = async {
        let tcp = TcpStream::connect(&master.authority).await.map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender.send_request(req).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("{}: no answer in {CONNECT_TIMEOUT:?}", master.authority))?
}

fn request(master: &Master, method: &str, path: &str, token: Option<&str>) -> hyper::http::request::Builder {
    let mut b =
        Request::builder().method(method).uri(format!("{}{path}", master.prefix)).header(HOST, &master.authority);
    if let Some(t) = token {
        b = b.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    b
}

/// Fails on a non-2xx status, with what the body says.
async fn ok(resp: Response<Incoming>) -> Result<Response<Incoming>, String> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    Err(format!("HTTP {status}: {text}"))
}

/// `GET path` as JSON.
pub async fn get_json(master: &Master, path: &str, token: Option<&str>) -> Result<serde_json::Value, String> {
    let req = request(master, "GET", path, token)
        .header(ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = ok(send(master, req).await?).await?;
    let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))
}

/// `POST path` with a JSON body; the answer's body is ignored.
pub async fn post_json(
    master: &Master,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> Result<(), String> {
    let req = request(master, "POST", path, token)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    ok(send(master, req).await?).await.map(|_| ())
}

/// An open event stream.
pub struct Stream {
    body: Incoming,
}

impl Stream {
    /// The next bytes; `Ok(None)` when the master closed the stream.
    pub async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// Opens `GET path` as Server-Sent Events, resuming after `last_event_id`.
pub async fn events(
    master: &Master,
    path: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> Result<Stream, String> {
    let mut b = request(master, "GET", path, token).header(ACCEPT, "text/event-stream");
    if let Some(id) = last_event_id {
        b = b.header("last-event-id", id);
    }
    let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
    let resp = ok(send(master, req).await?).await?;
    Ok(Stream { body: resp.into_body() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_urls() {
        let m = Master::parse("http://10.0.0.1:8080").unwrap();
        assert_eq!(m, Master { authority: "10.0.0.1:8080".into(), prefix: String::new() });
        assert_eq!(m.url("/v2/apps"), "http://10.0.0.1:8080/v2/apps");
        assert_eq!(Master::parse("m1").unwrap().authority, "m1:80");
        let p = Master::parse("http://lb.example.com/marathon/").unwrap();
        assert_eq!((p.authority.as_str(), p.prefix.as_str()), ("lb.example.com:80", "/marathon"));
        assert!(Master::parse("https://m1:8443").unwrap_err().contains("HTTPS"));
        assert!(Master::parse("http://").is_err());
        assert!(Master::parse("http://user@m1").is_err());
    }
}
