//! The admin endpoint (`mqtt_broker::admin`) on the wire: raw HTTP/1.1
//! requests over TCP to an endpoint on 127.0.0.1, port 0, and the status,
//! headers and JSON body of each answer. Every wait is bounded.

use crate::admin::publish_retained;
use mqtt_broker::admin::{self, AdminServer};
use mqtt_broker::{self as broker, BrokerConfig, BrokerHandle, StartError};
use serde_json::{json, Value as Json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// The longest request head the endpoint takes.
const MAX_HEAD: usize = 8 * 1024;

/// A broker and its admin endpoint on loopback, without a token.
async fn start() -> (BrokerHandle, AdminServer) {
    start_with(None).await
}

/// A broker and its admin endpoint on loopback.
async fn start_with(token: Option<&str>) -> (BrokerHandle, AdminServer) {
    let broker = broker::start(BrokerConfig::ephemeral()).await.unwrap();
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let server = admin::serve(broker.admin(), loopback, token).await.unwrap();
    (broker, server)
}

/// One answer: its status, its head as text, and its body as JSON (null
/// when empty, as in the answers of the HTTP layer itself).
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Json,
}

impl Answer {
    /// The value of header `name`, found case-insensitively.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `request` as it is and reads the answer to the end: the endpoint
/// closes every connection after one answer.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut response))
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
    // The answer to HEAD gives the length of the body it leaves out.
    if !request.starts_with(b"HEAD ") {
        assert_eq!(length, body.len());
    }
    let body = if body.is_empty() {
        Json::Null
    } else {
        serde_json::from_str(body).unwrap()
    };
    Answer {
        status,
        head: head.to_owned(),
        body,
    }
}

/// `METHOD TARGET HTTP/1.1` with no headers.
async fn request(addr: SocketAddr, method: &str, target: &str) -> Answer {
    exchange(
        addr,
        format!("{method} {target} HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await
}

#[tokio::test]
async fn answers_over_http_and_rejects_garbage() {
    let (broker, server) = start().await;
    let addr = server.local_addr();
    assert_eq!(server.url(), format!("http://{addr}"));

    let answer = exchange(addr, b"GET /retained-count HTTP/1.1\r\n\r\n").await;
    assert_eq!((answer.status, answer.body), (200, json!({ "count": 0 })));
    let answer = exchange(addr, b"GET /retained HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        (answer.status, answer.body),
        (200, json!({ "entries": [], "next_cursor": null }))
    );
    let answer = exchange(addr, b"GET /retained/a HTTP/1.1\r\n\r\n").await;
    assert_eq!(answer.status, 404);
    let body = answer.body;
    assert!(body["error"].as_str().unwrap().contains("\"a\""), "{body}");
    let answer = exchange(addr, b"DELETE /retained/a HTTP/1.1\r\n\r\n").await;
    assert_eq!(answer.status, 404);
    let answer = exchange(addr, b"GET /retained?filter=a/%23/b HTTP/1.1\r\n\r\n").await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    // A body is read and thrown away.
    let answer = exchange(
        addr,
        b"GET /retained-count HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(answer.status, 200);

    let answer = exchange(addr, b"\x16\x03\x01\x02\x00\r\n\r\n").await;
    assert_eq!(answer.status, 400);
    let answer = exchange(
        addr,
        b"GET /retained HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 413);
    assert!(answer.body["error"].as_str().unwrap().contains("64 KiB"));
    let mut huge = b"GET /retained HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', MAX_HEAD + 10));
    let answer = exchange(addr, &huge).await;
    assert_eq!(answer.status, 431);

    server.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn every_answer_is_json_and_closes_the_connection() {
    let (broker, server) = start().await;
    let addr = server.local_addr();
    for (method, target) in [
        ("GET", "/retained"),
        ("GET", "/retained/a"),
        ("GET", "/nowhere"),
        ("POST", "/retained"),
        ("GET", "/retained?x=1"),
    ] {
        let answer = request(addr, method, target).await;
        assert_eq!(
            answer.header("Content-Type"),
            Some("application/json"),
            "{method} {target}: {answer:?}"
        );
        assert_eq!(answer.header("Connection"), Some("close"), "{answer:?}");
        assert!(answer.body.is_object(), "{method} {target}: {answer:?}");
        if answer.status != 200 {
            assert!(answer.body["error"].is_string(), "{answer:?}");
        }
    }
    server.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn routes() {
    let (broker, server) = start().await;
    let addr = server.local_addr();
    publish_retained(
        &broker,
        &[
            ("a/x/c", b"1"),
            ("a/y/c", b"2"),
            ("a/b c", b"3"),
            ("a/b", b"\xff"),
        ],
    )
    .await;

    let topics = |answer: &Answer| -> Vec<String> {
        answer.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["topic"].as_str().unwrap().to_owned())
            .collect()
    };
    let answer = request(addr, "GET", "/retained?filter=a/%2B/c&page_size=1").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(topics(&answer), ["a/x/c"]);
    assert_eq!(answer.body["next_cursor"], "a/x/c");
    let answer = request(addr, "GET", "/retained?filter=a/+/c&cursor=a%2Fx%2Fc").await;
    assert_eq!(topics(&answer), ["a/y/c"]);
    assert_eq!(answer.body["next_cursor"], Json::Null);
    let answer = request(addr, "GET", "/retained?filter=a/%23&page_size=99999").await;
    assert_eq!(topics(&answer), ["a/b", "a/b c", "a/x/c", "a/y/c"]);

    let answer = request(addr, "GET", "/retained-count").await;
    assert_eq!(answer.body, json!({ "count": 4 }));
    let answer = request(addr, "GET", "/retained/a/b%20c").await;
    assert_eq!((answer.status, &answer.body["payload"]), (200, &json!("3")));
    let answer = request(addr, "GET", "/retained/a%2Fb").await;
    assert_eq!(answer.body["payload_base64"], "/w==");
    // A topic named like an endpoint is still a topic.
    let answer = request(addr, "GET", "/retained/count").await;
    assert_eq!(answer.status, 404);
    let message = answer.body["error"].as_str().unwrap();
    assert!(message.contains("\"count\""), "{message}");
    let answer = request(addr, "DELETE", "/retained/a%2Fb").await;
    assert_eq!(
        (answer.status, answer.body),
        (200, json!({ "topic": "a/b", "deleted": true }))
    );
    let answer = request(addr, "DELETE", "/retained/a/b").await;
    assert_eq!(answer.status, 404);

    server.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_routes_say_why() {
    let (broker, server) = start().await;
    let addr = server.local_addr();
    for (method, target, status) in [
        ("GET", "/", 404),
        ("GET", "/retainedx", 404),
        ("POST", "/retained", 405),
        ("PUT", "/retained/a", 405),
        ("DELETE", "/retained-count", 405),
        ("HEAD", "/retained", 405),
        ("HEAD", "/retained/a", 405),
        ("GET", "/retained?page_size=0", 400),
        ("GET", "/retained?page_size=-1", 400),
        ("GET", "/retained?pagesize=1", 400),
        ("GET", "/retained?filter=a&filter=b", 400),
        ("GET", "/retained?filter=%zz", 400),
        ("GET", "/retained?filter=%", 400),
        ("GET", "/retained?filter=%ff", 400),
        ("GET", "/retained/", 400),
        ("DELETE", "/retained/", 400),
        ("GET", "/retained/a/%23", 400),
        ("GET", "/retained/a?x=1", 400),
        ("GET", "/retained-count?x", 400),
    ] {
        let answer = request(addr, method, target).await;
        assert_eq!(answer.status, status, "{method} {target}: {answer:?}");
        if method != "HEAD" {
            assert!(answer.body["error"].is_string(), "{answer:?}");
        }
    }
    let allow = request(addr, "POST", "/retained/a").await;
    assert_eq!(allow.header("Allow"), Some("GET, DELETE"));
    assert!(
        allow.head.contains("\r\nAllow: GET, DELETE\r"),
        "{}",
        allow.head
    );
    assert_eq!(allow.body["error"], "use GET, DELETE here");
    let allow = request(addr, "HEAD", "/retained-count").await;
    assert_eq!(allow.header("Allow"), Some("GET"));

    server.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn heads() {
    let (broker, server) = start().await;
    let addr = server.local_addr();
    let status = |bytes: &'static [u8]| async move { exchange(addr, bytes).await.status };

    let answer = exchange(
        addr,
        b"GET /retained HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body["entries"].is_array());
    // Bare LF line ends are accepted as well as CRLF.
    assert_eq!(status(b"GET /retained-count HTTP/1.1\n\n").await, 200);
    assert_eq!(status(b"GET /retained-count HTTP/1.0\r\n\r\n").await, 200);

    assert_eq!(status(b"GET /retained\r\n\r\n").await, 400);
    assert_eq!(status(b"GET  /retained HTTP/1.1\r\n\r\n").await, 400);
    assert_eq!(status(b"get /retained HTTP/1.1\r\n\r\n").await, 400);
    assert_eq!(status(b"GET retained HTTP/1.1\r\n\r\n").await, 400);
    assert_eq!(
        status(b"GET http://example.com/retained HTTP/1.1\r\n\r\n").await,
        400
    );
    // The HTTP layer refuses any version but 1.0 and 1.1 as malformed.
    assert_eq!(status(b"GET /retained HTTP/2\r\n\r\n").await, 400);
    assert_eq!(
        status(b"GET /retained HTTP/1.1\r\nHost x\r\n\r\n").await,
        400
    );
    assert_eq!(status(b"GET /retained HTTP/1.1\r\n: x\r\n\r\n").await, 400);
    assert_eq!(
        status(b"GET /retained HTTP/1.1\r\nContent-Length: -1\r\n\r\n").await,
        400
    );
    assert_eq!(
        status(b"GET /retained HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await,
        400
    );
    assert_eq!(status(b"GET /\xff HTTP/1.1\r\n\r\n").await, 400);

    // A connection closed before a whole head gets no answer.
    for partial in [&b""[..], b"GET / HTTP/1.1\r\nHost: localhost\r\n"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(partial).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut response = Vec::new();
        let read = timeout(WAIT, stream.read_to_end(&mut response)).await;
        assert!(read.expect("not closed").is_ok());
        assert!(
            response.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&response)
        );
    }

    server.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn serves_clients_one_after_another_and_at_once() {
    let (broker, server) = start().await;
    let addr = server.local_addr();
    let requests: Vec<_> = (0..50)
        .map(|_| tokio::spawn(request(addr, "GET", "/retained-count")))
        .collect();
    for answer in requests {
        assert_eq!(answer.await.unwrap().status, 200);
    }
    server.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn refuses_addresses_other_than_loopback() {
    let broker = broker::start(BrokerConfig::ephemeral()).await.unwrap();
    for ip in ["0.0.0.0", "::", "192.0.2.1"] {
        let addr = SocketAddr::new(ip.parse().unwrap(), 0);
        match admin::serve(broker.admin(), addr, None).await {
            Err(StartError::Config(msg)) => {
                assert!(msg.contains("loopback") && msg.contains(ip), "{msg}")
            }
            other => panic!("{ip}: expected a refusal, got {other:?}"),
        }
    }
    broker.shutdown().await;
}

/// `METHOD TARGET HTTP/1.1` with `headers` (each `Name: value`).
async fn request_with(addr: SocketAddr, method: &str, target: &str, headers: &[&str]) -> Answer {
    let mut text = format!("{method} {target} HTTP/1.1\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    exchange(addr, text.as_bytes()).await
}

#[tokio::test]
async fn refuses_hosts_that_are_not_loopback_names() {
    let (broker, server) = start().await;
    let addr = server.local_addr();
    let port = addr.port();
    publish_retained(&broker, &[("keep", b"1")]).await;

    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        "localhost.evil.example".to_owned(),
        format!("127.0.0.1.evil.example:{port}"),
        "192.0.2.1".to_owned(),
        format!("[::2]:{port}"),
        "localhost:http".to_owned(),
    ] {
        let header = format!("Host: {host}");
        let answer = request_with(addr, "GET", "/retained-count", &[&header]).await;
        assert_eq!(answer.status, 403, "{host}: {answer:?}");
        let message = answer.body["error"].as_str().unwrap();
        assert!(
            message.contains(&format!("{host:?}")) && message.contains("loopback"),
            "{message}"
        );
    }
    // Nothing is done for such a request, however it is asked.
    let answer = request_with(addr, "DELETE", "/retained/keep", &["Host: evil.example"]).await;
    assert_eq!(answer.status, 403);
    let answer = request(addr, "GET", "/retained/keep").await;
    assert_eq!(answer.status, 200, "{answer:?}");

    for host in [
        "localhost".to_owned(),
        "LocalHost".to_owned(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
        format!("[::1]:{port}"),
        // Through a tunnel, the port may be another.
        "localhost:9999".to_owned(),
    ] {
        let header = format!("Host: {host}");
        let answer = request_with(addr, "GET", "/retained-count", &[&header]).await;
        assert_eq!(
            (answer.status, answer.body),
            (200, json!({ "count": 1 })),
            "{host}"
        );
    }
    let answer = request_with(
        addr,
        "GET",
        "/retained-count",
        &["Host: localhost", "Host: evil.example"],
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");

    server.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn with_a_token_only_requests_that_carry_it_are_served() {
    let (broker, server) = start_with(Some("s3cret-T0ken")).await;
    let addr = server.local_addr();
    publish_retained(&broker, &[("keep", b"1")]).await;
    let count = |headers: &'static [&'static str]| async move {
        request_with(addr, "GET", "/retained-count", headers).await
    };

    let answer = count(&["Host: localhost"]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.header("WWW-Authenticate"), Some("Bearer"));
    let message = answer.body["error"].as_str().unwrap();
    assert!(message.contains("Authorization: Bearer"), "{message}");
    for wrong in [
        "Authorization: Bearer s3cret-T0ke",
        "Authorization: Bearer s3cret-T0ken0",
        "Authorization: Bearer S3CRET-T0KEN",
        "Authorization: Bearer ",
        "Authorization: Basic czNjcmV0LVQwa2Vu",
        "Authorization: s3cret-T0ken",
    ] {
        let answer = request_with(addr, "GET", "/retained-count", &[wrong]).await;
        assert_eq!(answer.status, 401, "{wrong}: {answer:?}");
        let challenge = answer.header("WWW-Authenticate").unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert!(answer.body["error"].is_string());
    }
    // Unknown endpoints and methods say nothing before the token is right.
    let answer = request(addr, "GET", "/nowhere").await;
    assert_eq!(answer.status, 401);
    let answer = request(addr, "DELETE", "/retained/keep").await;
    assert_eq!(answer.status, 401);

    let answer = count(&["Host: localhost", "Authorization: Bearer s3cret-T0ken"]).await;
    assert_eq!((answer.status, answer.body), (200, json!({ "count": 1 })));
    let answer = count(&["authorization: bearer s3cret-T0ken"]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // The Host check still applies.
    let answer = count(&["Host: evil.example", "Authorization: Bearer s3cret-T0ken"]).await;
    assert_eq!(answer.status, 403);

    server.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn refuses_tokens_that_cannot_travel_in_a_header() {
    let broker = broker::start(BrokerConfig::ephemeral()).await.unwrap();
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let long = "x".repeat(1025);
    for bad in ["", "two words", "tab\t", "caf\u{e9}", &long] {
        match admin::serve(broker.admin(), loopback, Some(bad)).await {
            Err(StartError::Config(msg)) => {
                assert!(msg.contains("visible ASCII"), "{msg}")
            }
            other => panic!("{bad:?}: expected a refusal, got {other:?}"),
        }
    }
    broker.shutdown().await;
}
