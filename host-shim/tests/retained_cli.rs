//! `host-shim retained` end to end: `list`, `get`, `delete` and `count`
//! against `host-shim broker --admin-port 0`, with and without an admin
//! token, and `snapshot` against the built-in broker and Mosquitto (when
//! `/usr/sbin/mosquitto` is installed), on both MQTT versions.
//!
//! Everything runs on 127.0.0.1 with ports the OS picks, and every wait is
//! bounded so a hung command fails its test instead of the run.

use e2e::{BrokerProcess, MOSQUITTO};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value as Json;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod support;

use support::{json_lines, Output, BIN};

/// Where the broker and `host-shim retained` take the admin token from.
const TOKEN_VAR: &str = "HOST_SHIM_ADMIN_TOKEN";

/// Runs the binary with `args`, killing it after the timeout.
fn host_shim(args: &[&str]) -> Output {
    host_shim_with(args, &[])
}

/// Runs the binary with `args` and the environment variables `env`, and
/// no admin token but theirs.
fn host_shim_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = support::command();
    command.env_remove(TOKEN_VAR).envs(env.iter().copied());
    support::run(command, args, b"")
}

fn topics(lines: &[Json]) -> Vec<&str> {
    lines.iter().map(|l| l["topic"].as_str().unwrap()).collect()
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `host-shim broker --port 0 --admin-port 0`, its MQTT port and admin URL.
fn start_broker() -> (Process, u16, String) {
    start_broker_with(&[], &[])
}

/// `host-shim broker --port 0 --admin-port 0` with more `args` and the
/// environment variables `env`: its MQTT port and admin URL.
fn start_broker_with(args: &[&str], env: &[(&str, &str)]) -> (Process, u16, String) {
    let mut child = Command::new(BIN)
        .args(["broker", "--port", "0", "--admin-port", "0"])
        .args(args)
        .env_remove(TOKEN_VAR)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the broker starts");
    let stdout = child.stdout.take().unwrap();
    let child = Process(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for _ in 0..2 {
            let line = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(line);
        }
    });
    let line = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the broker did not announce its addresses")
    };
    let (mqtt, admin) = (line(), line());
    let port = mqtt
        .strip_prefix("listening on mqtt://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {mqtt:?}"));
    let admin = admin
        .strip_prefix("admin on ")
        .unwrap_or_else(|| panic!("unexpected second line {admin:?}"))
        .to_owned();
    assert!(admin.starts_with("http://127.0.0.1:"), "{admin}");
    (child, port, admin)
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Mosquitto on a free loopback port: the workspace's launcher, driven from
/// this synchronous test.
fn start_mosquitto() -> BrokerProcess {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(BrokerProcess::mosquitto(&[]))
        .unwrap_or_else(|e| panic!("mosquitto starts: {e:#}"))
}

/// Publishes `messages` retained at QoS 1 and waits for every PUBACK.
fn publish_retained(port: u16, messages: &[(&str, &[u8])]) {
    let mut options = MqttOptions::new("retained-cli-publisher", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(options, 100);
    for (topic, payload) in messages {
        client
            .publish(*topic, QoS::AtLeastOnce, true, payload.to_vec())
            .unwrap();
    }
    let mut acked = 0;
    while acked < messages.len() {
        match connection.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            other => panic!("publishing failed: {other:?}"),
        }
    }
    let _ = client.disconnect();
    let _ = connection.recv_timeout(Duration::from_secs(2));
}

const MESSAGES: [(&str, &[u8]); 4] = [
    ("a/2", b"two"),
    ("a/1", b"one"),
    ("b", b"\xff\xfe"),
    ("a/3", b"three"),
];

#[test]
fn list_get_delete_and_count_through_the_admin_endpoint() {
    let (_broker, port, admin) = start_broker();
    publish_retained(port, &MESSAGES);

    let out = host_shim(&["retained", "list", "--admin", &admin, "--page-size", "1"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines = json_lines(&out.stdout);
    assert_eq!(topics(&lines), ["a/1", "a/2", "a/3", "b"]);
    for line in &lines {
        let object = line.as_object().unwrap();
        let keys: Vec<_> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "expires_in",
                "last_modified",
                "payload_bytes",
                "qos",
                "topic"
            ]
        );
        assert_eq!(line["qos"], 1);
        assert!(line["expires_in"].is_null());
    }
    assert_eq!(lines[2]["payload_bytes"], 5);
    // The keys print in a fixed order.
    assert!(
        out.stdout
            .starts_with(r#"{"topic":"a/1","qos":1,"payload_bytes":3,"#),
        "{}",
        out.stdout
    );

    let out = host_shim(&["retained", "list", "--admin", &admin, "--filter", "a/+"]);
    assert_eq!(topics(&json_lines(&out.stdout)), ["a/1", "a/2", "a/3"]);

    let out = host_shim(&["retained", "get", "a/2", "--admin", &admin]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let got = &json_lines(&out.stdout)[0];
    assert_eq!(
        (got["topic"].as_str(), got["payload"].as_str()),
        (Some("a/2"), Some("two"))
    );
    let out = host_shim(&["retained", "get", "b", "--admin", &admin]);
    assert_eq!(json_lines(&out.stdout)[0]["payload_base64"], "//4=");
    let out = host_shim(&["retained", "get", "nope", "--admin", &admin]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(1), ""));
    assert!(
        out.stderr.contains("no retained message on topic \"nope\""),
        "{}",
        out.stderr
    );

    let out = host_shim(&["retained", "delete", "a/2", "--admin", &admin]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        json_lines(&out.stdout),
        [serde_json::json!({ "topic": "a/2", "deleted": true })]
    );
    let out = host_shim(&["retained", "delete", "a/2", "--admin", &admin]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);

    let out = host_shim(&["retained", "count", "--admin", &admin]);
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(0), "3"),
        "{}",
        out.stderr
    );
    let out = host_shim(&["retained", "list", "--admin", &admin]);
    assert_eq!(topics(&json_lines(&out.stdout)), ["a/1", "a/3", "b"]);

    // A bad filter or topic, with the reason.
    let out = host_shim(&["retained", "list", "--admin", &admin, "--filter", "a/#/b"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.starts_with("host-shim: "), "{}", out.stderr);
    assert!(out.stderr.contains("a/#/b"), "{}", out.stderr);
    assert!(
        out.stderr.contains("'#' must be the last level"),
        "{}",
        out.stderr
    );
    for verb in ["get", "delete"] {
        let out = host_shim(&["retained", verb, "a/+", "--admin", &admin]);
        assert_eq!(out.code, Some(2), "{verb}");
        assert!(out.stderr.contains("wildcards"), "{verb}: {}", out.stderr);
    }
    let out = host_shim(&[
        "retained",
        "list",
        "--admin",
        &admin,
        "--filter",
        "$share/g/a",
    ]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("$share/GROUP/"), "{}", out.stderr);
}

#[test]
fn an_unreachable_admin_endpoint_is_a_clear_error() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = host_shim(&["retained", "list", "--admin", &url]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("cannot reach the admin endpoint") && out.stderr.contains(&url),
        "{}",
        out.stderr
    );
    let out = host_shim(&["retained", "count", "--admin", "localhost"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("http://HOST:PORT"), "{}", out.stderr);
}

#[test]
fn the_admin_endpoint_refuses_other_than_loopback() {
    let out = host_shim(&[
        "broker",
        "--port",
        "0",
        "--admin-port",
        "0",
        "--admin-host",
        "0.0.0.0",
    ]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("loopback"), "{}", out.stderr);
}

#[test]
fn with_a_token_in_the_environment_only_commands_that_give_it_are_served() {
    let (_broker, port, admin) = start_broker_with(&[], &[(TOKEN_VAR, "s3cret-T0ken")]);
    publish_retained(port, &MESSAGES);

    let out = host_shim(&["retained", "count", "--admin", &admin]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(2), ""));
    assert!(
        out.stderr.contains("needs a token") && out.stderr.contains(TOKEN_VAR),
        "{}",
        out.stderr
    );
    let wrong = [
        "retained",
        "count",
        "--admin",
        &admin,
        "--admin-token",
        "wrong",
    ];
    let out = host_shim(&wrong);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("token is wrong"), "{}", out.stderr);
    // The flag wins over the variable.
    let out = host_shim_with(&wrong, &[(TOKEN_VAR, "s3cret-T0ken")]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);

    let out = host_shim(&[
        "retained",
        "count",
        "--admin",
        &admin,
        "--admin-token",
        "s3cret-T0ken",
    ]);
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(0), "4"),
        "{}",
        out.stderr
    );
    let env = [(TOKEN_VAR, "s3cret-T0ken")];
    let out = host_shim_with(&["retained", "list", "--admin", &admin], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(topics(&json_lines(&out.stdout)), ["a/1", "a/2", "a/3", "b"]);
    let out = host_shim_with(&["retained", "get", "a/1", "--admin", &admin], &env);
    assert_eq!(
        json_lines(&out.stdout)[0]["payload"],
        "one",
        "{}",
        out.stderr
    );
    let out = host_shim_with(&["retained", "delete", "a/1", "--admin", &admin], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = host_shim_with(&["retained", "count", "--admin", &admin], &env);
    assert_eq!(out.stdout.trim(), "3", "{}", out.stderr);
}

#[test]
fn the_broker_takes_its_token_from_the_flag_and_checks_it() {
    let (_broker, _, admin) = start_broker_with(&["--admin-token", "fl4g"], &[]);
    let out = host_shim(&["retained", "count", "--admin", &admin]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("needs a token"), "{}", out.stderr);
    let out = host_shim(&[
        "retained",
        "count",
        "--admin",
        &admin,
        "--admin-token",
        "fl4g",
    ]);
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(0), "0"),
        "{}",
        out.stderr
    );

    // A token that cannot travel in a header is refused on both sides.
    let out = host_shim(&[
        "broker",
        "--port",
        "0",
        "--admin-port",
        "0",
        "--admin-token",
        "two words",
    ]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("visible ASCII"), "{}", out.stderr);
    let out = host_shim_with(
        &["retained", "count", "--admin", &admin],
        &[(TOKEN_VAR, "two words")],
    );
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("--admin-token") && out.stderr.contains("visible ASCII"),
        "{}",
        out.stderr
    );
}

/// Runs `retained snapshot` against the broker on `port` and checks it
/// prints exactly the retained messages under `a/`.
fn check_snapshot(port: u16, version: &str, broker: &str) {
    let url = format!("mqtt://127.0.0.1:{port}");
    let out = host_shim(&[
        "retained",
        "snapshot",
        "--url",
        &url,
        "--filter",
        "a/#",
        "--quiet-ms",
        "300",
        "--timeout",
        "20",
        "--mqtt-version",
        version,
    ]);
    assert_eq!(out.code, Some(0), "{broker} {version}: {}", out.stderr);
    let mut lines = json_lines(&out.stdout);
    // Mosquitto does not promise an order.
    lines.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
    assert_eq!(topics(&lines), ["a/1", "a/2", "a/3"], "{broker} {version}");
    for line in &lines {
        assert_eq!(line["retained"], true, "{broker} {version}: {line}");
    }
    assert_eq!(lines[0]["payload"], "one", "{broker} {version}");
}

#[test]
fn snapshot_takes_the_retained_messages_of_the_built_in_broker() {
    let (_broker, port, _) = start_broker();
    publish_retained(port, &MESSAGES);
    for version in ["3.1.1", "5"] {
        check_snapshot(port, version, "built-in");
    }

    // Ended by its timeout rather than by quiet: incomplete, exit 1.
    let url = format!("mqtt://127.0.0.1:{port}");
    let out = host_shim(&[
        "retained",
        "snapshot",
        "--url",
        &url,
        "--filter",
        "#",
        "--timeout",
        "0",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("incomplete"), "{}", out.stderr);
}

#[test]
fn snapshot_takes_the_retained_messages_of_mosquitto() {
    if !BrokerProcess::mosquitto_installed() {
        eprintln!("skipped: {MOSQUITTO} is not installed");
        return;
    }
    let mosquitto = start_mosquitto();
    publish_retained(mosquitto.port(), &MESSAGES);
    for version in ["3.1.1", "5"] {
        check_snapshot(mosquitto.port(), version, "mosquitto");
    }
}
