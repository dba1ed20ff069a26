//! `host-shim retained`: the retained messages of a running built-in broker
//! through its admin endpoint (`list`, `get`, `delete`, `count`), and a
//! retained snapshot of any broker through the connector (`snapshot`).
//!
//! The admin endpoint speaks a small HTTP/1.1 JSON API (see
//! `mqtt_broker::admin`); `ureq` is the client, one blocking request at a
//! time, every wait bounded.

use super::{ensure_valid, show_progress, ConnectionArgs};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use host_shim::flow::{document_line, ConfigKind};
use mqtt_broker::admin::{AdminCount, AdminDeleted, AdminEntry, AdminErrorBody, AdminPage};
use mqtt_topic::{TopicFilter, TopicName};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Where `list`, `get`, `delete` and `count` look without `--admin`.
const DEFAULT_ADMIN: &str = "http://127.0.0.1:18830";

/// How long connecting to the admin endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one admin request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read: a page of listings, or one payload (at most
/// MQTT's 256 MiB, a third more in base64).
const MAX_RESPONSE: u64 = 512 * 1024 * 1024;

/// The longest one `next` call of a snapshot waits.
const POLL: Duration = Duration::from_millis(250);

/// `host-shim retained`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
list, get, delete and count talk to a built-in broker started with an
admin endpoint:
  host-shim broker --admin-port 18830
When the broker has an admin token, give the same one here, best in
HOST_SHIM_ADMIN_TOKEN (`ps` shows flags). snapshot works with any broker,
through the connector.

Each message prints as one line of JSON:
  {\"topic\":\"a/b\",\"qos\":1,\"payload_bytes\":5,\"last_modified\":1767225600,
   \"expires_in\":null}
last_modified is in Unix seconds, expires_in in seconds (null: never).
get adds \"payload\" (UTF-8 text) or \"payload_base64\".
get and delete exit with 1 when the topic has no retained message.

Examples:
  host-shim retained list --filter 'users/settings/#'
  host-shim retained get users/settings/user01 | jq -r .payload
  host-shim retained delete users/settings/user01
  host-shim retained snapshot --url mqtt://localhost:1883 --filter '#'")]
pub struct RetainedArgs {
    #[command(subcommand)]
    pub command: RetainedCommand,
}

/// The `host-shim retained` subcommands.
#[derive(Debug, Subcommand)]
pub enum RetainedCommand {
    /// List the built-in broker's retained messages, in topic order
    List(ListArgs),
    /// Print one retained message with its payload
    Get(TopicArgs),
    /// Delete one retained message
    Delete(TopicArgs),
    /// Print how many retained messages the built-in broker holds
    Count(AdminArgs),
    /// Take the retained messages of any broker, through the connector
    // Boxed: the connection flags make it several times the others' size.
    Snapshot(Box<SnapshotArgs>),
}

/// Where the admin endpoint is, and its token.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Admin endpoint of the broker [default: http://127.0.0.1:18830]
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Token of the admin endpoint, if the broker has one
    #[arg(
        long,
        value_name = "TOKEN",
        env = "HOST_SHIM_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

impl AdminArgs {
    /// The endpoint these flags name.
    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let mut endpoint = Endpoint::parse(self.admin.as_deref())?;
        if let Some(token) = &self.admin_token {
            mqtt_broker::admin::check_token(token)
                .context("invalid --admin-token (or HOST_SHIM_ADMIN_TOKEN)")?;
            endpoint.token = Some(token.clone());
        }
        Ok(endpoint)
    }
}

/// `host-shim retained list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only topics matching this filter (+ and # wildcards) [default: #]
    #[arg(long, value_name = "FILTER")]
    pub filter: Option<String>,
    /// Messages fetched per request, 1 to 1000 [default: 100]
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=1000)
    )]
    pub page_size: Option<u16>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `host-shim retained get` and `delete`.
#[derive(Debug, Args)]
pub struct TopicArgs {
    /// Topic name (no wildcards)
    #[arg(value_name = "TOPIC")]
    pub topic: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `host-shim retained snapshot`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Subscribes, prints the retained messages the broker sends, and stops once
none has come for --quiet-ms. Each prints as one line of JSON, as with
`host-shim listen`. Exits with 1 if --timeout ends it first.

Example:
  host-shim retained snapshot --url mqtt://localhost:1883 \\
      --filter 'users/settings/+' --quiet-ms 500")]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Topic filter to take the retained messages of; repeat for more
    #[arg(long, value_name = "FILTER", required = true)]
    pub filter: Vec<String>,
    /// Stop after MS milliseconds without a message [default: 1000]
    #[arg(long, value_name = "MS")]
    pub quiet_ms: Option<u32>,
    /// Give up after SECS seconds in all [default: 30]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
}

/// Runs `host-shim retained`.
pub fn run(args: RetainedArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RetainedCommand::List(args) => list(&args),
        RetainedCommand::Get(args) => get(&args),
        RetainedCommand::Delete(args) => delete(&args),
        RetainedCommand::Count(args) => count(&args),
        RetainedCommand::Snapshot(args) => snapshot(&args),
    }
}

// ----- Admin endpoint -----

/// Everything but the unreserved characters of RFC 3986 is escaped, `/`
/// and `+` included, so a topic or filter arrives exactly as written.
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn escape(text: &str) -> String {
    utf8_percent_encode(text, ESCAPE).to_string()
}

/// Checks a listing's filter here, where the reason can be given: the
/// endpoint only says that it refused it.
fn check_filter(filter: &str) -> anyhow::Result<()> {
    let parsed = filter
        .parse::<TopicFilter>()
        .map_err(|e| anyhow::anyhow!("invalid topic filter {filter:?}: {e}"))?;
    if parsed.shared().is_some() {
        anyhow::bail!(
            "invalid topic filter {filter:?}: retained messages are listed by topic \
             filter, not by a shared subscription's; leave out $share/GROUP/"
        );
    }
    Ok(())
}

/// Checks a topic name here, where the reason can be given.
fn check_topic(topic: &str) -> anyhow::Result<()> {
    topic
        .parse::<TopicName>()
        .map(drop)
        .map_err(|e| anyhow::anyhow!("invalid topic name {topic:?}: {e}"))
}

fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let filter = args.filter.as_deref().unwrap_or("#");
    check_filter(filter)?;
    let endpoint = args.admin.endpoint()?;
    let page_size = args.page_size.unwrap_or(100);
    let mut stdout = std::io::stdout().lock();
    let mut cursor: Option<String> = None;
    loop {
        let mut target = format!("/retained?filter={}&page_size={page_size}", escape(filter));
        if let Some(cursor) = &cursor {
            target.push_str(&format!("&cursor={}", escape(cursor)));
        }
        let page: AdminPage = endpoint.call("GET", &target)?.ok()?;
        for entry in &page.entries {
            writeln!(stdout, "{}", serde_json::to_string(entry)?)?;
        }
        stdout.flush()?;
        match page.next_cursor {
            // A cursor that does not move would loop forever.
            Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
            Some(next) => anyhow::bail!("the admin endpoint repeated the cursor {next:?}"),
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn get(args: &TopicArgs) -> anyhow::Result<ExitCode> {
    check_topic(&args.topic)?;
    let endpoint = args.admin.endpoint()?;
    let answer = endpoint.call("GET", &format!("/retained/{}", escape(&args.topic)))?;
    if answer.status == 404 {
        return not_found(&answer);
    }
    let entry: AdminEntry = answer.ok()?;
    print_line(&serde_json::to_string(&entry)?)
}

fn delete(args: &TopicArgs) -> anyhow::Result<ExitCode> {
    check_topic(&args.topic)?;
    let endpoint = args.admin.endpoint()?;
    let answer = endpoint.call("DELETE", &format!("/retained/{}", escape(&args.topic)))?;
    if answer.status == 404 {
        return not_found(&answer);
    }
    let deleted: AdminDeleted = answer.ok()?;
    print_line(&serde_json::to_string(&deleted)?)
}

fn count(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let endpoint = args.endpoint()?;
    let count: AdminCount = endpoint.call("GET", "/retained-count")?.ok()?;
    print_line(&count.count.to_string())
}

/// A missing topic is an answer, not a failure: say so on stderr and exit
/// with 1, as `grep` does when nothing matches.
fn not_found(answer: &Answer) -> anyhow::Result<ExitCode> {
    eprintln!("host-shim: {}", answer.error_message());
    Ok(ExitCode::from(1))
}

fn print_line(line: &str) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The admin endpoint to talk to.
#[derive(Clone, PartialEq, Eq)]
struct Endpoint {
    /// As given, for messages.
    url: String,
    /// `host:port`, for the request URLs.
    authority: String,
    /// Sent as `Authorization: Bearer TOKEN` when set.
    token: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.token.as_ref().map(|_| "<hidden>");
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("token", &token)
            .finish()
    }
}

/// One answer of the admin endpoint.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Endpoint {
    /// Reads `http://HOST:PORT` (a trailing `/` is fine); `None` is the
    /// default.
    fn parse(url: Option<&str>) -> anyhow::Result<Endpoint> {
        let url = url.unwrap_or(DEFAULT_ADMIN);
        let Some(rest) = url.strip_prefix("http://") else {
            anyhow::bail!("--admin must be http://HOST:PORT, not {url:?}");
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok || authority.contains('/') {
            anyhow::bail!("--admin must be http://HOST:PORT, not {url:?}");
        }
        Ok(Endpoint {
            url: url.to_owned(),
            authority: authority.to_owned(),
            token: None,
        })
    }

    /// Sends one request and reads the whole answer, whatever its status.
    fn call(&self, method: &str, target: &str) -> anyhow::Result<Answer> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // The endpoint is on loopback: never through a proxy that the
            // environment names, and never redirected elsewhere.
            .proxy(None)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent("host-shim")
            .accept("application/json")
            .build()
            .into();
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{target}", self.authority));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(ureq::SendBody::none())
            .with_context(|| format!("cannot make a request to {}", self.url))?;
        let mut response = agent.run(request).map_err(|e| self.explain(e))?;
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(|e| self.explain(e))?;
        Ok(Answer {
            status: response.status().as_u16(),
            body,
        })
    }

    /// Says what a failed exchange means for someone at the command line.
    fn explain(&self, error: ureq::Error) -> anyhow::Error {
        use std::io::ErrorKind;
        use ureq::Timeout;
        let url = &self.url;
        let context = match &error {
            ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Timeout(Timeout::Resolve | Timeout::Connect) => None,
            ureq::Error::Io(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::AddrNotAvailable
                        | ErrorKind::HostUnreachable
                        | ErrorKind::NetworkUnreachable
                ) =>
            {
                None
            }
            ureq::Error::Timeout(_) => Some(format!(
                "the admin endpoint at {url} did not answer in time"
            )),
            ureq::Error::BodyExceedsLimit(_) => Some(format!("the answer from {url} is too large")),
            ureq::Error::Protocol(_) | ureq::Error::LargeResponseHeader(..) => {
                Some(format!("{url} is not a host-shim admin endpoint"))
            }
            _ => Some(format!("cannot read the answer from {url}")),
        };
        let context = context.unwrap_or_else(|| {
            format!(
                "cannot reach the admin endpoint at {url} (start the broker with \
                 `host-shim broker --admin-port PORT`, or give --admin URL)"
            )
        });
        anyhow::Error::new(error).context(context)
    }
}

impl Answer {
    /// The body as `T` if the status is 200, else the endpoint's error.
    fn ok<T: DeserializeOwned>(self) -> anyhow::Result<T> {
        if self.status != 200 {
            anyhow::bail!("{}", self.error_message());
        }
        serde_json::from_slice(&self.body).context("the admin endpoint's answer is not valid")
    }

    /// The error sentence the endpoint sent, or the status when it sent
    /// none.
    fn error_message(&self) -> String {
        match serde_json::from_slice::<AdminErrorBody>(&self.body) {
            Ok(body) => body.error,
            Err(_) => format!("the admin endpoint answered with status {}", self.status),
        }
    }
}

// ----- Snapshot -----

impl SnapshotArgs {
    /// The Listen configuration of a retained snapshot.
    fn listen_config(&self) -> anyhow::Result<Json> {
        let subscriptions: Vec<Json> = self
            .filter
            .iter()
            .map(|filter| serde_json::json!({ "filter": filter }))
            .collect();
        let mut config = serde_json::json!({
            "subscriptions": subscriptions,
            "retained": "only",
        });
        if let Some(quiet_ms) = self.quiet_ms {
            config["quiet_ms"] = Json::from(quiet_ms);
        }
        ensure_valid(ConfigKind::Listen, "listen", &config)?;
        Ok(config)
    }

    fn timeout(&self) -> anyhow::Result<Duration> {
        let secs = self.timeout.unwrap_or(30.0);
        Duration::try_from_secs_f64(secs)
            .map_err(|_| anyhow::anyhow!("--timeout must be a number of seconds, not {secs}"))
    }
}

/// Runs `host-shim retained snapshot`: prints each retained message until
/// the operation is done (quiet for `quiet_ms`), or exits with 1 at the
/// timeout.
fn snapshot(args: &SnapshotArgs) -> anyhow::Result<ExitCode> {
    let connection = args.connection.connection_config()?;
    let config = args.listen_config()?;
    let timeout = args.timeout()?;
    let runtime = args.connection.runtime()?;
    let deadline = Instant::now() + timeout;

    super::tokio()?.block_on(async {
        let mut listener = runtime
            .open_listener(&connection.to_string(), &config.to_string())
            .await
            .context("cannot open the listener")?;
        let progress = show_progress();
        let mut stdout = std::io::stdout().lock();
        let mut received = 0u64;
        let result: anyhow::Result<bool> = async {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                let batch = listener.next(1000, left.min(POLL)).await?;
                if batch.is_empty() {
                    if listener.done().await? {
                        return Ok(true);
                    }
                    continue;
                }
                for document in &batch {
                    writeln!(stdout, "{}", document_line(document))?;
                }
                stdout.flush()?;
                let ids: Vec<u64> = batch.iter().map(|d| d.id).collect();
                listener.commit(&ids).await?;
                received += batch.len() as u64;
                if progress {
                    eprint!("\rreceived {received}");
                }
            }
        }
        .await;
        if progress && received > 0 {
            eprintln!();
        }
        listener.close().await;
        if result? {
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!(
                "host-shim: the snapshot is incomplete: retained messages still came \
                 after --timeout {}s ({received} printed)",
                timeout.as_secs_f64()
            );
            Ok(ExitCode::from(1))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls() {
        let endpoint = Endpoint::parse(None).unwrap();
        assert_eq!(endpoint.authority, "127.0.0.1:18830");
        let endpoint = Endpoint::parse(Some("http://[::1]:9/")).unwrap();
        assert_eq!(endpoint.authority, "[::1]:9");
        assert_eq!(
            Endpoint::parse(Some("http://localhost:1"))
                .unwrap()
                .authority,
            "localhost:1"
        );
        for bad in [
            "127.0.0.1:18830",
            "https://127.0.0.1:1",
            "http://127.0.0.1",
            "http://127.0.0.1:99999",
            "http://:1",
            "http://h:1/path",
        ] {
            let err = Endpoint::parse(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("http://HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn escapes_everything_but_unreserved() {
        assert_eq!(escape("a/+/#"), "a%2F%2B%2F%23");
        assert_eq!(escape("a b-c_d.e~"), "a%20b-c_d.e~");
        assert_eq!(escape("é"), "%C3%A9");
    }

    /// An endpoint on a loopback port that answers one request with
    /// `response`, as it is, and closes.
    fn canned(response: &'static [u8]) -> Endpoint {
        serve_once(move |_| response.to_vec())
    }

    /// An endpoint on a loopback port that answers one request with what
    /// `answer` makes of its head, and closes.
    fn serve_once(answer: impl FnOnce(&[u8]) -> Vec<u8> + Send + 'static) -> Endpoint {
        use std::io::Read as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => return,
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = stream.write_all(&answer(&head));
        });
        Endpoint::parse(Some(&url)).unwrap()
    }

    fn call(response: &'static [u8]) -> anyhow::Result<Answer> {
        canned(response).call("GET", "/retained-count")
    }

    #[test]
    fn answers() {
        let answer =
            call(b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\n{\"error\":\"x\"}\n")
                .unwrap();
        assert_eq!(answer.status, 404);
        assert_eq!(answer.error_message(), "x");
        // Without a Content-Length, the body ends where the connection does.
        let answer = call(b"HTTP/1.1 200 OK\r\n\r\n{\"count\":3}").unwrap();
        assert_eq!(answer.ok::<AdminCount>().unwrap().count, 3);
        let answer = call(b"HTTP/1.1 500 Oops\r\nContent-Length: 8\r\n\r\nnot json").unwrap();
        assert_eq!(
            answer.error_message(),
            "the admin endpoint answered with status 500"
        );
        let answer = call(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nnot json").unwrap();
        let err = format!("{:#}", answer.ok::<AdminCount>().unwrap_err());
        assert!(err.contains("not valid"), "{err}");
    }

    #[test]
    fn answers_that_are_not_http_say_so() {
        let err = format!("{:#}", call(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err());
        assert!(err.contains("is not a host-shim admin endpoint"), "{err}");
        let err = format!("{:#}", call(b"HTTP/1.1 200 OK\r\n").unwrap_err());
        assert!(err.contains("http://127.0.0.1:"), "{err}");
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}";
        let err = format!("{:#}", call(short).unwrap_err());
        assert!(err.contains("cannot read the answer"), "{err}");
    }

    #[test]
    fn sends_the_token() {
        let echo = |head: &[u8]| {
            let body = serde_json::json!({ "error": String::from_utf8_lossy(head) }).to_string();
            let mut answer =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            answer.extend_from_slice(body.as_bytes());
            answer
        };
        let mut endpoint = serve_once(echo);
        endpoint.token = Some("t0k=".to_owned());
        let head = endpoint
            .call("GET", "/retained-count")
            .unwrap()
            .error_message();
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("\r\nauthorization: bearer t0k=\r\n"),
            "{head}"
        );
        let head = serve_once(echo).call("GET", "/x").unwrap().error_message();
        assert!(
            !head.to_ascii_lowercase().contains("authorization"),
            "{head}"
        );

        let args = AdminArgs {
            admin: None,
            admin_token: Some("two words".to_owned()),
        };
        let err = format!("{:#}", args.endpoint().unwrap_err());
        assert!(
            err.contains("--admin-token") && err.contains("visible ASCII"),
            "{err}"
        );
        let args = AdminArgs {
            admin: None,
            admin_token: Some("s3cret".to_owned()),
        };
        let endpoint = args.endpoint().unwrap();
        assert!(!format!("{endpoint:?}").contains("s3cret"));
    }

    #[test]
    fn a_closed_port_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = Endpoint::parse(Some(&format!("http://127.0.0.1:{port}"))).unwrap();
        let err = format!("{:#}", endpoint.call("GET", "/retained-count").unwrap_err());
        assert!(err.contains("cannot reach the admin endpoint"), "{err}");
    }
}
