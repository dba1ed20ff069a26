//! The admin endpoint: a small HTTP/1.1 JSON API, on loopback only, over a
//! running broker's retained messages. `host-shim retained list | get |
//! delete | count` talk to it; so can `curl`.
//!
//! It is off unless started ([`serve`], or `host-shim broker --admin-port
//! PORT`), and it has no authentication, which is why it refuses to listen
//! anywhere but on a loopback address.
//!
//! # Protocol
//!
//! One request per connection (the answer says `Connection: close`); every
//! answer is a JSON object.
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /retained?filter=F&page_size=N&cursor=C` | 200 `{"entries": [INFO, ...], "next_cursor": "t" or null}` |
//! | `GET /retained/TOPIC` | 200 INFO with `payload` (UTF-8 text) or `payload_base64`; 404 when there is none |
//! | `DELETE /retained/TOPIC` | 200 `{"topic": "t", "deleted": true}`; 404 when there is none |
//! | `GET /retained-count` | 200 `{"count": N}` |
//!
//! INFO is `{"topic", "qos", "payload_bytes", "last_modified" (Unix
//! seconds), "expires_in" (seconds, or null for never)}`.
//!
//! - `filter` defaults to `#`; `page_size` to 100, at most
//!   [`MAX_PAGE_SIZE`] (larger asks get that many); `cursor` is the previous
//!   page's `next_cursor`: a listing is over when it is null.
//! - `TOPIC` is the rest of the path, percent-decoded: `/` may stay as it
//!   is or be `%2F`. Query values are percent-decoded too, and `+` stays a
//!   `+` (the MQTT wildcard), so a space must be `%20`.
//! - Errors are `{"error": "sentence"}` with 400 (a malformed request, an
//!   unknown parameter, an invalid filter), 404, 405 (with `Allow`), 408
//!   (the request took over 10 s), 413 (a body over 64 KiB), 431 (a head
//!   over 8 KiB), 500 (a delete not written to disk) or 503 (the broker is
//!   shutting down).

use super::server::{AdminError, BrokerAdmin, StartError, MAX_PAGE_SIZE};
use super::{RetainedEntry, RetainedInfo, RetainedPage};
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{debug, warn};

/// The port `host-shim retained` looks for the endpoint on when not told
/// (`http://127.0.0.1:18830`): MQTT's 1883 with a 0 for "admin".
pub const DEFAULT_PORT: u16 = 18830;

/// Entries per page when a listing does not say.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The longest request line and headers accepted.
const MAX_HEAD: usize = 8 * 1024;

/// The longest request body read (and thrown away: no request needs one).
const MAX_BODY: usize = 64 * 1024;

/// How long a client may take to send its whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests served at once; more wait in the kernel's backlog.
const MAX_CLIENTS: usize = 32;

/// A running admin endpoint. Dropping it stops accepting without waiting;
/// it also stops by itself when the broker shuts down.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    /// Never sent on: dropping it is the stop signal.
    stop: watch::Sender<()>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// The address it listens on (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL to give `host-shim retained --admin`, such as
    /// `http://127.0.0.1:18830`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting and waits until the accept loop has ended. Requests
    /// already accepted are still answered.
    pub async fn shutdown(self) {
        let AdminServer { stop, task, .. } = self;
        drop(stop);
        let _ = task.await;
    }
}

/// Starts the admin endpoint for `admin` on `addr`, which must be a
/// loopback address (`127.0.0.0/8` or `::1`); port 0 picks a free port.
///
/// # Errors
///
/// [`StartError::Config`] for an address that is not loopback,
/// [`StartError::Bind`] when it cannot be bound.
pub async fn serve(admin: BrokerAdmin, addr: SocketAddr) -> Result<AdminServer, StartError> {
    if !addr.ip().is_loopback() {
        return Err(StartError::Config(format!(
            "the admin endpoint listens on loopback only (127.0.0.1 or ::1), \
             not {}: it has no authentication",
            addr.ip()
        )));
    }
    let bind_error = |source| StartError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let (stop, stopped) = watch::channel(());
    let task = tokio::spawn(accept_loop(listener, admin, stopped));
    Ok(AdminServer {
        local_addr,
        stop,
        task,
    })
}

/// Accepts until stopped or the broker is gone; one task per request.
async fn accept_loop(listener: TcpListener, admin: BrokerAdmin, mut stopped: watch::Receiver<()>) {
    let limit = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit,
            _ = stopped.changed() => return,
            () = admin.closed() => return,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
            () = admin.closed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let admin = admin.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_one(stream, &admin).await {
                        debug!(%peer, "admin request failed: {e}");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Usually out of file descriptors: wait rather than spin.
                warn!("admin endpoint: accepting failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request, answers it, and closes.
async fn serve_one(mut stream: TcpStream, admin: &BrokerAdmin) -> std::io::Result<()> {
    let response = match timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => Response::error(408, "the request took too long"),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Err(response))) => response,
        Ok(Ok(Ok(request))) => answer(admin, request).await,
    };
    stream.write_all(&response.encode()).await?;
    stream.shutdown().await
}

/// A request the endpoint understands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    List {
        filter: String,
        page_size: usize,
        cursor: Option<String>,
    },
    Get(String),
    Delete(String),
    Count,
}

/// Reads the request head (and any small body, which it discards) and
/// parses it. The outer error is the connection's; the inner one is the
/// answer to a request that cannot be served.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Result<Request, Response>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_len = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_HEAD {
            return Ok(Err(Response::error(431, "the request head is over 8 KiB")));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = match parse_head(&buf[..head_len]) {
        Ok(head) => head,
        Err(response) => return Ok(Err(response)),
    };
    if head.content_length > MAX_BODY {
        return Ok(Err(Response::error(413, "the request body is over 64 KiB")));
    }
    // Read the body to its end, so that closing does not reset the
    // connection and destroy the answer before the client reads it.
    let mut unread = head
        .content_length
        .saturating_sub(buf.len().saturating_sub(head_len));
    while unread > 0 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        unread = unread.saturating_sub(n);
    }
    Ok(route(&head.method, &head.target))
}

/// Where the head ends (after its blank line), if it is all in `buf`. A
/// bare LF line end is accepted as well as CRLF.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(offset) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + offset;
        let rest = &buf[at + 1..];
        if rest.starts_with(b"\n") {
            return Some(at + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(at + 3);
        }
        i = at + 1;
    }
    None
}

/// The parts of a request head the endpoint uses.
#[derive(Debug)]
struct Head {
    method: String,
    target: String,
    content_length: usize,
}

/// Parses the request line and the headers; only `Content-Length` and
/// `Transfer-Encoding` matter.
fn parse_head(bytes: &[u8]) -> Result<Head, Response> {
    let bad = |why: &str| Response::error(400, why);
    let text = std::str::from_utf8(bytes).map_err(|_| bad("the request head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(bad("expected a request line `METHOD /path HTTP/1.1`"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("expected a request line `METHOD /path HTTP/1.1`"));
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => {
            return Err(Response::error(505, "only HTTP/1.1 is spoken here"))
        }
        _ => return Err(bad("expected a request line `METHOD /path HTTP/1.1`")),
    }
    if !target.starts_with('/') {
        return Err(bad("the request target must be a path, such as /retained"));
    }
    let mut content_length = 0;
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("a header line has no `:`"));
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(bad("a header name is empty or has spaces"));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value
                .parse()
                .map_err(|_| bad("Content-Length is not a number"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad(
                "request bodies are not used here: no Transfer-Encoding",
            ));
        }
    }
    Ok(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        content_length,
    })
}

/// Maps a method and target to a request, or to the error answer.
fn route(method: &str, target: &str) -> Result<Request, Response> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = parse_query(query)?;
    let only = |methods: &'static str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(Response::error(405, &format!("use {methods} here")).allow(methods))
        }
    };
    match path {
        "/retained" => {
            only("GET", method == "GET")?;
            let mut filter = "#".to_owned();
            let mut page_size = DEFAULT_PAGE_SIZE;
            let mut cursor = None;
            for (name, value) in params {
                match name.as_str() {
                    "filter" => filter = value,
                    "page_size" => {
                        page_size = match value.parse::<usize>() {
                            Ok(0) | Err(_) => {
                                return Err(Response::error(
                                    400,
                                    "page_size must be a whole number from 1",
                                ))
                            }
                            Ok(n) => n.min(MAX_PAGE_SIZE),
                        }
                    }
                    "cursor" => cursor = Some(value),
                    other => {
                        return Err(Response::error(
                            400,
                            &format!(
                                "unknown parameter {other:?}: use filter, page_size and cursor"
                            ),
                        ))
                    }
                }
            }
            Ok(Request::List {
                filter,
                page_size,
                cursor,
            })
        }
        "/retained-count" => {
            only("GET", method == "GET")?;
            no_params(&params)?;
            Ok(Request::Count)
        }
        _ => {
            let Some(encoded) = path.strip_prefix("/retained/") else {
                return Err(Response::error(
                    404,
                    "no such endpoint: use /retained, /retained/TOPIC or /retained-count",
                ));
            };
            only("GET, DELETE", method == "GET" || method == "DELETE")?;
            no_params(&params)?;
            let topic = decode(encoded)?;
            if topic.is_empty() || topic.contains(['+', '#', '\0']) {
                return Err(Response::error(
                    400,
                    &format!("not a topic name: {topic:?}"),
                ));
            }
            Ok(if method == "GET" {
                Request::Get(topic)
            } else {
                Request::Delete(topic)
            })
        }
    }
}

/// Rejects any parameter, for endpoints that take none.
fn no_params(params: &[(String, String)]) -> Result<(), Response> {
    match params.first() {
        None => Ok(()),
        Some((name, _)) => Err(Response::error(
            400,
            &format!("unknown parameter {name:?}: this endpoint takes none"),
        )),
    }
}

/// Splits and decodes `a=1&b=2`. A parameter given twice is an error, so
/// that a typo cannot go unnoticed behind a second value.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, Response> {
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (decode(name)?, decode(value)?);
        if params.iter().any(|(n, _)| *n == name) {
            return Err(Response::error(
                400,
                &format!("parameter {name:?} given twice"),
            ));
        }
        params.push((name, value));
    }
    Ok(params)
}

/// Percent-decodes to UTF-8. `+` stays `+`: it is MQTT's wildcard, not a
/// space.
fn decode(text: &str) -> Result<String, Response> {
    let bytes = text.as_bytes();
    // `percent_decode` leaves a malformed escape as it is; a client that
    // sent one meant something else, so say so.
    for (i, _) in text.match_indices('%') {
        let valid = bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if !valid {
            return Err(Response::error(
                400,
                "a `%` is not followed by two hex digits",
            ));
        }
    }
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Response::error(400, "a percent-encoded value is not UTF-8"))
}

/// Carries out a request against the broker.
async fn answer(admin: &BrokerAdmin, request: Request) -> Response {
    let result = match request {
        Request::List {
            filter,
            page_size,
            cursor,
        } => admin
            .retained_list(&filter, page_size, cursor)
            .await
            .map(|page| Response::ok(&AdminPage::from(page))),
        Request::Count => admin
            .retained_count()
            .await
            .map(|count| Response::ok(&AdminCount { count })),
        Request::Get(topic) => admin.retained_get(&topic).await.map(|entry| match entry {
            Some(entry) => Response::ok(&AdminEntry::from(entry)),
            None => not_found(&topic),
        }),
        Request::Delete(topic) => admin.retained_delete(&topic).await.map(|deleted| {
            if deleted {
                Response::ok(&AdminDeleted {
                    topic,
                    deleted: true,
                })
            } else {
                not_found(&topic)
            }
        }),
    };
    result.unwrap_or_else(|e| match e {
        AdminError::Closed => Response::error(503, "the broker is shutting down"),
        AdminError::InvalidFilter(why) => Response::error(400, &why),
        AdminError::Store(ref error) => Response::error(500, &format!("{e}: {error}")),
    })
}

fn not_found(topic: &str) -> Response {
    Response::error(404, &format!("no retained message on topic {topic:?}"))
}

/// One retained message as the endpoint sends it: in a listing without
/// its payload, from `GET /retained/TOPIC` with `payload` (UTF-8 text) or
/// `payload_base64` (anything else), as `host-shim listen` prints
/// documents. The fields keep this order on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminEntry {
    /// The topic name.
    pub topic: String,
    /// The QoS it was published with.
    pub qos: u8,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// When it was stored, in seconds since the Unix epoch.
    pub last_modified: u64,
    /// Seconds until it expires; `null` never expires.
    pub expires_in: Option<u64>,
    /// The payload, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload in standard base64, when it is not UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl From<RetainedInfo> for AdminEntry {
    fn from(info: RetainedInfo) -> Self {
        AdminEntry {
            topic: info.topic,
            qos: info.qos,
            payload_bytes: info.payload_bytes,
            last_modified: info.last_modified,
            expires_in: info.expires_in,
            payload: None,
            payload_base64: None,
        }
    }
}

impl From<RetainedEntry> for AdminEntry {
    fn from(entry: RetainedEntry) -> Self {
        let mut out = AdminEntry::from(entry.info);
        match std::str::from_utf8(&entry.payload) {
            Ok(text) => out.payload = Some(text.to_owned()),
            Err(_) => {
                out.payload_base64 =
                    Some(base64::engine::general_purpose::STANDARD.encode(&entry.payload))
            }
        }
        out
    }
}

/// The answer to `GET /retained`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminPage {
    /// The page's messages, in topic order, without payloads.
    pub entries: Vec<AdminEntry>,
    /// The `cursor` of the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl From<RetainedPage> for AdminPage {
    fn from(page: RetainedPage) -> Self {
        AdminPage {
            entries: page.entries.into_iter().map(AdminEntry::from).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// The answer to `GET /retained-count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCount {
    /// Retained messages stored and not expired.
    pub count: usize,
}

/// The answer to `DELETE /retained/TOPIC`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminDeleted {
    /// The topic whose message was deleted.
    pub topic: String,
    /// Always true: a topic without a message answers 404.
    pub deleted: bool,
}

/// An error answer's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminErrorBody {
    /// What went wrong, as a sentence.
    pub error: String,
}

/// An answer: a status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Response {
    status: u16,
    /// JSON text, serialized from a struct so its keys keep their order.
    body: String,
    /// The `Allow` header of a 405.
    allow: Option<&'static str>,
}

impl Response {
    fn ok(body: &impl Serialize) -> Self {
        match serde_json::to_string(body) {
            Ok(body) => Response {
                status: 200,
                body,
                allow: None,
            },
            // Strings, numbers and lists of them always serialize.
            Err(e) => Response::error(500, &format!("cannot encode the answer: {e}")),
        }
    }

    fn error(status: u16, message: &str) -> Self {
        let body = AdminErrorBody {
            error: message.to_owned(),
        };
        Response {
            status,
            body: serde_json::to_string(&body).unwrap_or_default(),
            allow: None,
        }
    }

    fn allow(mut self, methods: &'static str) -> Self {
        self.allow = Some(methods);
        self
    }

    /// The bytes on the wire.
    fn encode(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        };
        let mut body = self.body.clone();
        body.push('\n');
        let allow = self
            .allow
            .map(|methods| format!("Allow: {methods}\r\n"))
            .unwrap_or_default();
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{start, BrokerConfig};
    use serde_json::{json, Value as Json};
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn routes() {
        let list = |filter: &str, page_size, cursor: Option<&str>| Request::List {
            filter: filter.to_owned(),
            page_size,
            cursor: cursor.map(str::to_owned),
        };
        assert_eq!(route("GET", "/retained"), Ok(list("#", 100, None)));
        assert_eq!(
            route("GET", "/retained?filter=a/%2B/c&page_size=5&cursor=a%2Fb"),
            Ok(list("a/+/c", 5, Some("a/b")))
        );
        // `+` is the wildcard, not a space.
        assert_eq!(
            route("GET", "/retained?filter=a/+/%23"),
            Ok(list("a/+/#", 100, None))
        );
        assert_eq!(
            route("GET", "/retained?page_size=99999"),
            Ok(list("#", MAX_PAGE_SIZE, None))
        );
        assert_eq!(route("GET", "/retained-count"), Ok(Request::Count));
        assert_eq!(
            route("GET", "/retained/a/b%20c"),
            Ok(Request::Get("a/b c".to_owned()))
        );
        assert_eq!(
            route("DELETE", "/retained/a%2Fb"),
            Ok(Request::Delete("a/b".to_owned()))
        );
        // A topic named like an endpoint is still a topic.
        assert_eq!(
            route("GET", "/retained/count"),
            Ok(Request::Get("count".to_owned()))
        );
    }

    #[test]
    fn bad_routes_say_why() {
        let status = |method, target| route(method, target).unwrap_err().status;
        assert_eq!(status("GET", "/"), 404);
        assert_eq!(status("GET", "/retainedx"), 404);
        assert_eq!(status("POST", "/retained"), 405);
        assert_eq!(status("PUT", "/retained/a"), 405);
        assert_eq!(status("DELETE", "/retained-count"), 405);
        assert_eq!(status("GET", "/retained?page_size=0"), 400);
        assert_eq!(status("GET", "/retained?page_size=-1"), 400);
        assert_eq!(status("GET", "/retained?pagesize=1"), 400);
        assert_eq!(status("GET", "/retained?filter=a&filter=b"), 400);
        assert_eq!(status("GET", "/retained?filter=%zz"), 400);
        assert_eq!(status("GET", "/retained?filter=%"), 400);
        assert_eq!(status("GET", "/retained?filter=%ff"), 400);
        assert_eq!(status("GET", "/retained/"), 400);
        assert_eq!(status("GET", "/retained/a/%23"), 400);
        assert_eq!(status("GET", "/retained/a?x=1"), 400);
        assert_eq!(status("GET", "/retained-count?x"), 400);
        let allow = route("POST", "/retained/a").unwrap_err();
        assert_eq!(allow.allow, Some("GET, DELETE"));
        assert!(allow
            .encode()
            .windows(19)
            .any(|w| w == b"Allow: GET, DELETE\r"));
    }

    #[test]
    fn heads() {
        let head =
            parse_head(b"GET /retained HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(
            (
                head.method.as_str(),
                head.target.as_str(),
                head.content_length
            ),
            ("GET", "/retained", 3)
        );
        let bad = |bytes: &[u8]| parse_head(bytes).unwrap_err().status;
        assert_eq!(bad(b"GET /retained\r\n\r\n"), 400);
        assert_eq!(bad(b"GET  /retained HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b"get /retained HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b"GET retained HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b"GET /retained HTTP/2\r\n\r\n"), 505);
        assert_eq!(bad(b"GET /retained HTTP/1.1\r\nHost x\r\n\r\n"), 400);
        assert_eq!(bad(b"GET /retained HTTP/1.1\r\n: x\r\n\r\n"), 400);
        assert_eq!(
            bad(b"GET /retained HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            bad(b"GET /retained HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(bad(b"GET /\xff HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b""), 400);

        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nbody"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    /// Sends `request` to the endpoint and returns the status and the JSON
    /// body.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, Json) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
            .await
            .expect("no answer")
            .unwrap();
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        (status, serde_json::from_str(body).unwrap())
    }

    #[tokio::test]
    async fn answers_over_http_and_rejects_garbage() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let server = serve(broker.admin(), loopback).await.unwrap();
        let addr = server.local_addr();
        assert_eq!(server.url(), format!("http://{addr}"));

        let (status, body) = exchange(addr, b"GET /retained-count HTTP/1.1\r\n\r\n").await;
        assert_eq!((status, body), (200, json!({ "count": 0 })));
        let (status, body) = exchange(addr, b"GET /retained HTTP/1.1\r\n\r\n").await;
        assert_eq!(
            (status, body),
            (200, json!({ "entries": [], "next_cursor": null }))
        );
        let (status, body) = exchange(addr, b"GET /retained/a HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 404);
        assert!(body["error"].as_str().unwrap().contains("\"a\""), "{body}");
        let (status, _) = exchange(addr, b"DELETE /retained/a HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 404);
        let (status, body) = exchange(addr, b"GET /retained?filter=a/%23/b HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 400, "{body}");
        // A body is read and thrown away.
        let (status, _) = exchange(
            addr,
            b"GET /retained-count HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert_eq!(status, 200);

        let (status, _) = exchange(addr, b"\x16\x03\x01\x02\x00\r\n\r\n").await;
        assert_eq!(status, 400);
        let (status, _) = exchange(
            addr,
            b"GET /retained HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n",
        )
        .await;
        assert_eq!(status, 413);
        let mut huge = b"GET /retained HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'x', MAX_HEAD + 10));
        let (status, _) = exchange(addr, &huge).await;
        assert_eq!(status, 431);

        server.shutdown().await;
        broker.shutdown().await;
    }

    #[tokio::test]
    async fn stops_with_the_broker() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let server = serve(broker.admin(), loopback).await.unwrap();
        broker.shutdown().await;
        timeout(Duration::from_secs(5), server.task)
            .await
            .expect("the endpoint outlived the broker")
            .unwrap();
    }

    #[tokio::test]
    async fn refuses_addresses_other_than_loopback() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        for ip in ["0.0.0.0", "::", "192.0.2.1"] {
            let addr = SocketAddr::new(ip.parse().unwrap(), 0);
            match serve(broker.admin(), addr).await {
                Err(StartError::Config(msg)) => {
                    assert!(msg.contains("loopback") && msg.contains(ip), "{msg}")
                }
                other => panic!("{ip}: expected a refusal, got {other:?}"),
            }
        }
        broker.shutdown().await;
    }
}
