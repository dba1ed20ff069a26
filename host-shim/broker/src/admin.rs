//! The admin endpoint: a small HTTP/1.1 JSON API, on loopback only, over a
//! running broker's retained messages. `host-shim retained list | get |
//! delete | count` talk to it; so can `curl`.
//!
//! It is off unless started ([`serve`], or `host-shim broker --admin-port
//! PORT`). It speaks plain HTTP, which is why it refuses to listen anywhere
//! but on a loopback address; see [Security](#security) for what keeps the
//! rest of the machine out.
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
//! seconds), "expires_in" (seconds, or null for never)}`. Every request
//! carries `Authorization: Bearer TOKEN` when the endpoint has a token.
//!
//! - `filter` defaults to `#`; `page_size` to 100, at most
//!   [`MAX_PAGE_SIZE`] (larger asks get that many); `cursor` is the previous
//!   page's `next_cursor`: a listing is over when it is null.
//! - `TOPIC` is the rest of the path, percent-decoded: `/` may stay as it
//!   is or be `%2F`. Query values are percent-decoded too, and `+` stays a
//!   `+` (the MQTT wildcard), so a space must be `%20`.
//! - Errors are `{"error": "sentence"}` with 400 (a malformed request, an
//!   unknown parameter, an invalid filter), 401 (no token or a wrong one,
//!   with `WWW-Authenticate: Bearer`), 403 (a `Host` that is not a loopback
//!   name), 404, 405 (with `Allow`), 408 (the request took over 10 s), 413
//!   (a body over 64 KiB), 431 (a head over 8 KiB), 500 (a delete not
//!   written to disk) or 503 (the broker is shutting down).
//! - A request HTTP cannot parse at all (a malformed request line or
//!   header, a head over 8 KiB) is answered by the HTTP layer itself: 400
//!   or 431 with an empty body. A head not complete within 10 s ends the
//!   connection without an answer; a body that has not come 10 s after
//!   its head gets 408.
//!
//! # Security
//!
//! Loopback keeps other machines out. Two checks, in this order and before
//! anything else, keep out what else on this machine could reach it:
//!
//! - `Host` must be `localhost`, `127.0.0.1`, `[::1]` or the address the
//!   endpoint listens on, with any port (a tunnel may forward another) or
//!   none; anything else gets 403. A web page that has made its own name
//!   resolve to 127.0.0.1 (DNS rebinding) is sent with its own name in
//!   `Host`, so a browser cannot be used to read or delete retained
//!   messages. A request without `Host` passes: browsers always send one.
//! - With a token ([`serve`]'s `token`: `host-shim broker --admin-token
//!   TOKEN`, or the environment variable `HOST_SHIM_ADMIN_TOKEN`, which
//!   `ps` does not show), a request without `Authorization: Bearer TOKEN`
//!   gets 401. The token is compared in constant time. Without a token,
//!   any local user or process can read and delete retained messages.
//!
//! # Layout
//!
//! HTTP/1.1 itself is `hyper`'s (parsing, framing, the head size limit and
//! timeout), routing `axum`'s. Here: the accept loop, the route table, the
//! checks every request passes (`screen`) and the handlers; in `guard`,
//! the `Host` and token checks; in `query`, the parameters and topic of a
//! request; in `wire`, the JSON bodies.

mod guard;
mod query;
mod wire;

pub use self::guard::{check_token, InvalidToken};
pub use self::wire::{AdminCount, AdminDeleted, AdminEntry, AdminErrorBody, AdminPage};

use self::guard::Token;
use self::query::ListQuery;
use super::server::{AdminError, BrokerAdmin, StartError};
#[cfg(doc)]
use super::MAX_PAGE_SIZE;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// The port `host-shim retained` looks for the endpoint on when not told
/// (`http://127.0.0.1:18830`): MQTT's 1883 with a 0 for "admin".
pub const DEFAULT_PORT: u16 = 18830;

/// Entries per page when a listing does not say.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The longest request line and headers accepted: hyper's read buffer, so
/// also the smallest it allows.
const MAX_HEAD: usize = 8 * 1024;

/// The longest request body read (and thrown away: no request needs one).
const MAX_BODY: usize = 64 * 1024;

/// How long a client may take to send its request head, and then its body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more wait in the kernel's backlog.
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
/// With a `token`, every request must carry `Authorization: Bearer TOKEN`.
///
/// # Errors
///
/// [`StartError::Config`] for an address that is not loopback or a token
/// that is not 1 to 1024 visible ASCII characters, [`StartError::Bind`]
/// when the address cannot be bound.
pub async fn serve(
    admin: BrokerAdmin,
    addr: SocketAddr,
    token: Option<&str>,
) -> Result<AdminServer, StartError> {
    serve_with(admin, addr, token, REQUEST_TIMEOUT).await
}

/// What every request is held to.
#[derive(Debug, Clone)]
struct Policy {
    /// The address listened on, a loopback name in `Host`.
    listening: IpAddr,
    /// The token requests must carry, if any.
    token: Option<Token>,
    /// How long the head may take, and then the body.
    request_timeout: Duration,
}

async fn serve_with(
    admin: BrokerAdmin,
    addr: SocketAddr,
    token: Option<&str>,
    request_timeout: Duration,
) -> Result<AdminServer, StartError> {
    if !addr.ip().is_loopback() {
        return Err(StartError::Config(format!(
            "the admin endpoint listens on loopback only (127.0.0.1 or ::1), \
             not {}: it speaks plain HTTP",
            addr.ip()
        )));
    }
    let token = token
        .map(Token::new)
        .transpose()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let bind_error = |source| StartError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let (stop, stopped) = watch::channel(());
    let policy = Policy {
        listening: local_addr.ip(),
        token,
        request_timeout,
    };
    let http = http_settings(request_timeout);
    let app = router(admin.clone(), policy);
    let task = tokio::spawn(accept_loop(listener, app, http, admin, stopped));
    Ok(AdminServer {
        local_addr,
        stop,
        task,
    })
}

/// HTTP/1.1 as the endpoint speaks it: one request per connection, a
/// bounded head that must come in time, and header names as
/// `Content-Type` rather than `content-type`, for people reading `curl -v`.
fn http_settings(request_timeout: Duration) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(request_timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .title_case_headers(true);
    http
}

/// Accepts until stopped or the broker is gone; one task per connection.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    http: http1::Builder,
    admin: BrokerAdmin,
    mut stopped: watch::Receiver<()>,
) {
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
                let connection = http
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        debug!(%peer, "admin connection failed: {e}");
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

/// The routes, each with the methods it takes, behind `screen`.
fn router(admin: BrokerAdmin, policy: Policy) -> Router {
    Router::new()
        .route("/retained", only("GET", get(list)))
        .route("/retained-count", only("GET", get(count)))
        .route(
            "/retained/{*topic}",
            only("GET, DELETE", get(get_one).delete(delete_one)),
        )
        // The wildcard above needs at least one character.
        .route(
            "/retained/",
            only("GET, DELETE", get(get_one).delete(delete_one)),
        )
        .fallback(no_such_endpoint)
        .with_state(admin)
        .layer(middleware::from_fn_with_state(Arc::new(policy), screen))
}

/// `methods`, and 405 with `Allow: allow` for any other method, `HEAD`
/// included (axum would otherwise answer it as a `GET`).
fn only(allow: &'static str, methods: MethodRouter<BrokerAdmin>) -> MethodRouter<BrokerAdmin> {
    let refuse = move || async move {
        Refusal::new(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow} here"))
            .with_header(header::ALLOW, allow)
    };
    methods.head(refuse).fallback(refuse)
}

/// What every request passes before it is routed: the `Host` and token
/// checks, what hyper lets through but the endpoint does not take, the
/// body limits, and `Connection: close` on every answer.
async fn screen(State(policy): State<Arc<Policy>>, request: Request, next: Next) -> Response {
    let mut response = match admit(&policy, request).await {
        Ok(request) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    };
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The request, its body read and dropped, or why it is refused.
async fn admit(policy: &Policy, request: Request) -> Result<Request, Refusal> {
    guard::check_host(request.headers(), policy.listening)?;
    if let Some(token) = &policy.token {
        guard::check_authorization(request.headers(), token)?;
    }
    // hyper takes any token as a method; the endpoint's are upper case.
    if !request
        .method()
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_uppercase())
    {
        return Err(Refusal::bad_request(
            "expected a request line `METHOD /path HTTP/1.1`",
        ));
    }
    let uri = request.uri();
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(Refusal::bad_request(
            "the request target must be a path, such as /retained",
        ));
    }
    let headers = request.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Refusal::bad_request(
            "request bodies are not used here: no Transfer-Encoding",
        ));
    }
    // hyper has checked that it is a number.
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    if content_length > MAX_BODY as u64 {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is over 64 KiB",
        ));
    }
    // Read the body to its end, so that closing does not reset the
    // connection and destroy the answer before the client reads it.
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(policy.request_timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request took too long",
        )),
        Ok(Err(e)) => Err(Refusal::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
        Ok(Ok(_)) => Ok(Request::from_parts(parts, Body::empty())),
    }
}

async fn list(
    State(admin): State<BrokerAdmin>,
    RawQuery(query): RawQuery,
) -> Result<Response, Refusal> {
    let ListQuery {
        filter,
        page_size,
        cursor,
    } = ListQuery::parse(query.as_deref().unwrap_or_default())?;
    let page = admin.retained_list(&filter, page_size, cursor).await?;
    Ok(json(&AdminPage::from(page)))
}

async fn count(
    State(admin): State<BrokerAdmin>,
    RawQuery(query): RawQuery,
) -> Result<Response, Refusal> {
    query::no_params(query.as_deref().unwrap_or_default())?;
    let count = admin.retained_count().await?;
    Ok(json(&AdminCount { count }))
}

async fn get_one(State(admin): State<BrokerAdmin>, uri: Uri) -> Result<Response, Refusal> {
    let topic = topic_of(&uri)?;
    match admin.retained_get(&topic).await? {
        Some(entry) => Ok(json(&AdminEntry::from(entry))),
        None => Err(not_found(&topic)),
    }
}

async fn delete_one(State(admin): State<BrokerAdmin>, uri: Uri) -> Result<Response, Refusal> {
    let topic = topic_of(&uri)?;
    if admin.retained_delete(&topic).await? {
        Ok(json(&AdminDeleted {
            topic,
            deleted: true,
        }))
    } else {
        Err(not_found(&topic))
    }
}

/// The topic of `/retained/TOPIC`, which takes no parameters.
fn topic_of(uri: &Uri) -> Result<String, Refusal> {
    query::no_params(uri.query().unwrap_or_default())?;
    query::topic(uri.path())
}

async fn no_such_endpoint() -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        "no such endpoint: use /retained, /retained/TOPIC or /retained-count",
    )
}

fn not_found(topic: &str) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        format!("no retained message on topic {topic:?}"),
    )
}

/// A 200 answer with `body` as JSON text and a final newline, for people
/// reading `curl`.
fn json(body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => json_response(StatusCode::OK, text),
        // Strings, numbers and lists of them always serialize.
        Err(e) => Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        )
        .into_response(),
    }
}

fn json_response(status: StatusCode, mut text: String) -> Response {
    text.push('\n');
    let content_type = HeaderValue::from_static("application/json");
    (status, [(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// An error answer: a status, `{"error": "sentence"}`, and a header when
/// the status needs one (`Allow` for 405, `WWW-Authenticate` for 401).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    status: StatusCode,
    message: String,
    header: Option<(HeaderName, &'static str)>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            header: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, message)
    }

    fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.header = Some((name, value));
        self
    }
}

impl From<AdminError> for Refusal {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Closed => Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the broker is shutting down",
            ),
            AdminError::InvalidFilter(why) => Refusal::bad_request(why),
            AdminError::Store(ref error) => {
                Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}: {error}"))
            }
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = AdminErrorBody {
            error: self.message,
        };
        let mut response = json_response(
            self.status,
            serde_json::to_string(&body).unwrap_or_default(),
        );
        if let Some((name, value)) = self.header {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{start, BrokerConfig};
    use std::net::{IpAddr, Ipv4Addr};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(5);

    fn loopback() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
    }

    /// Sends `request` and reads until the endpoint closes.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .expect("not closed")
            .unwrap();
        String::from_utf8(response).unwrap()
    }

    #[tokio::test]
    async fn a_slow_request_is_cut_off() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        let limit = Duration::from_millis(200);
        let server = serve_with(broker.admin(), loopback(), None, limit)
            .await
            .unwrap();
        let addr = server.local_addr();

        // A head that never ends: closed without an answer.
        let response = exchange(addr, b"GET /retained HTTP/1.1\r\nHost: localhost\r\n").await;
        assert_eq!(response, "");
        // A body that never comes: 408.
        let response = exchange(
            addr,
            b"GET /retained HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
        assert!(
            response.ends_with("{\"error\":\"the request took too long\"}\n"),
            "{response}"
        );
        // In time, it is served.
        let response = exchange(addr, b"GET /retained-count HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");

        server.shutdown().await;
        broker.shutdown().await;
    }

    #[tokio::test]
    async fn stops_with_the_broker() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        let server = serve(broker.admin(), loopback(), None).await.unwrap();
        broker.shutdown().await;
        timeout(WAIT, server.task)
            .await
            .expect("the endpoint outlived the broker")
            .unwrap();
    }
}
