//! The `host-shim` binary end to end: schemas, validation, flows, and send
//! and listen against the built-in broker started with `host-shim broker`.
//!
//! Everything runs on 127.0.0.1 with ports the OS picks, and every wait is
//! bounded so a hung command fails its test instead of the run.

use serde_json::Value as Json;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_host-shim");

/// The longest any one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The binary, with a code cache of this test process's own: the first run
/// compiles the connector, the others read it back.
fn command() -> Command {
    let mut command = Command::new(BIN);
    command.env(
        "XDG_CACHE_HOME",
        std::env::temp_dir().join(format!("host-shim-cli-test-{}/cache", std::process::id())),
    );
    command
}

/// Runs the binary with `args` and `stdin`, killing it after the timeout.
fn host_shim_with_input(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command()
        .args(args)
        .current_dir(workspace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("host-shim {args:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let bytes = |rx: mpsc::Receiver<Vec<u8>>| {
        String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default())
            .into_owned()
    };
    Output {
        code: status.code(),
        stdout: bytes(stdout),
        stderr: bytes(stderr),
    }
}

fn host_shim(args: &[&str]) -> Output {
    host_shim_with_input(args, b"")
}

fn drain(mut from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        let _ = tx.send(all);
    });
    rx
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A file in a directory of this test process, removed with the directory.
fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("host-shim-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// `host-shim broker` on a free port, killed when dropped.
struct Broker {
    child: Child,
    url: String,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// `host-shim broker` with extra arguments.
    fn start_with(extra: &[&str]) -> Broker {
        let mut child = command()
            .args(["broker", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the broker starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("the broker did not announce its address");
            }
        };
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(url.starts_with("mqtt://127.0.0.1:"), "{url}");
        Broker { child, url }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_lines(stdout: &str) -> Vec<Json> {
    stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[test]
fn schema_prints_each_kind_as_json() {
    for kind in ["connection", "send", "listen", "flow"] {
        let out = host_shim(&["schema", kind]);
        assert_eq!(out.code, Some(0), "{kind}: {}", out.stderr);
        let schema: Json =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(schema.is_object(), "{kind}");
        assert_eq!(
            host_shim(&["schema", kind]).stdout,
            out.stdout,
            "{kind} is not stable"
        );
    }
    let list = host_shim(&["schema"]);
    assert_eq!(list.code, Some(0));
    for kind in ["connection", "send", "listen", "flow"] {
        assert!(
            list.stdout.lines().any(|l| l.starts_with(kind)),
            "{}",
            list.stdout
        );
    }
}

#[test]
fn validate_reports_each_problem_with_its_pointer() {
    let good = temp_file(
        "good-send.json",
        br#"{"topic": "a/b", "qos": 1, "retained": true}"#,
    );
    let out = host_shim(&["validate", "send", good.to_str().unwrap()]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), ""),
        "{}",
        out.stderr
    );

    let bad = temp_file("bad-send.json", br#"{"topic": "a/#", "qos": 1}"#);
    let out = host_shim(&["validate", "send", bad.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(!out.stdout.is_empty());
    for line in out.stdout.lines() {
        let (pointer, message) = line.split_once(": ").unwrap_or_else(|| panic!("{line:?}"));
        assert!(pointer.starts_with('/') || pointer == "(root)", "{line:?}");
        assert!(!message.is_empty(), "{line:?}");
    }
    assert!(
        out.stdout.lines().any(|l| l.starts_with("/topic: ")),
        "{}",
        out.stdout
    );

    let flow = temp_file(
        "bad.flow.json",
        br#"{"steps": [{"sleep_ms": 1}, {"send": {"config": {"topic": "a/#"}, "documents": []}}]}"#,
    );
    let out = host_shim(&["validate", "flow", flow.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("/steps/1/send/config/topic: ")),
        "{}",
        out.stdout
    );

    let out = host_shim_with_input(&["validate", "flow", "-"], b"{ not json");
    assert_eq!(out.code, Some(2));
    assert!(
        out.stdout.starts_with("(root): invalid JSON"),
        "{}",
        out.stdout
    );

    let out = host_shim(&["validate", "flow", "examples/quickstart.flow.json"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), ""),
        "{}",
        out.stderr
    );
}

#[test]
fn broker_settings_report_every_problem_with_its_pointer() {
    let bad = temp_file(
        "bad.broker.json",
        br#"{"max_mesages": 5, "port": "x", "retain": {"storage": "disk"}}"#,
    );
    let out = host_shim(&["validate", "broker", bad.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].starts_with("/max_mesages: ") && lines[0].contains("\"max_queued_messages\""),
        "{}",
        out.stdout
    );
    assert!(lines[1].starts_with("/port: "), "{}", out.stdout);
    assert!(lines[2].starts_with("/retain/storage: "), "{}", out.stdout);

    // The broker refuses to start with the same list.
    let out = host_shim(&["broker", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    for line in &lines {
        assert!(out.stderr.contains(line), "{line} in {}", out.stderr);
    }

    let flow = temp_file(
        "bad-broker.flow.json",
        br#"{"broker": {"retian": {}}, "steps": []}"#,
    );
    let out = host_shim(&["validate", "flow", flow.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stdout.starts_with("/broker/retian: ") && out.stdout.contains("\"retain\""),
        "{}",
        out.stdout
    );
}

#[test]
fn the_quickstart_flow_passes_and_prints_the_retained_document() {
    let out = host_shim(&["run", "examples/quickstart.flow.json"]);
    assert_eq!(
        out.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let documents = json_lines(&out.stdout);
    assert_eq!(documents.len(), 1, "{}", out.stdout);
    assert_eq!(documents[0]["topic"], "users/settings/user01");
    assert_eq!(documents[0]["retained"], true);
    assert_eq!(documents[0]["payload"], r#"{"account_type":"standard"}"#);
    assert!(out.stdout.contains("passed"), "{}", out.stdout);
}

#[test]
fn an_unmet_expectation_exits_1_and_says_what_differed() {
    let flow = temp_file(
        "unmet.flow.json",
        br#"{"steps": [
            {"send": {"config": {"topic": "t/1", "retained": true}, "documents": [{"payload": "a"}]}},
            {"listen": {"config": {"subscriptions": [{"filter": "t/+"}]}, "count": 1, "timeout_ms": 5000,
                        "expect": {"payloads": ["b"]}}},
            {"sleep_ms": 1}
        ]}"#,
    );
    let out = host_shim(&["run", flow.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("FAILED: step 1 (listen)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(r#"expected payloads ["b"], got ["a"]"#),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("step 2"),
        "the flow stops at the failed step"
    );

    let invalid = temp_file(
        "invalid.flow.json",
        br#"{"steps": [{"receive": {"name": "x"}}]}"#,
    );
    let out = host_shim(&["run", invalid.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.starts_with("host-shim: invalid flow"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("/steps/0/receive/name: "),
        "{}",
        out.stderr
    );
}

#[test]
fn send_and_listen_round_trip_on_both_versions() {
    let broker = Broker::start();
    let url = broker.url.as_str();
    for version in ["3.1.1", "5"] {
        let topic = format!("cli/{version}/text");
        let out = host_shim(&[
            "send",
            "--url",
            url,
            "--mqtt-version",
            version,
            "--topic",
            &topic,
            "--qos",
            "1",
            "--retain",
            "--message",
            "héllo",
        ]);
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(0), "ok\n"),
            "{version}: {}",
            out.stderr
        );

        let filter = format!("cli/{version}/+");
        let out = host_shim(&[
            "listen",
            "--url",
            url,
            "--mqtt-version",
            version,
            "--topic",
            &filter,
            "--qos",
            "1",
            "--count",
            "1",
            "--timeout",
            "20",
        ]);
        assert_eq!(out.code, Some(0), "{version}: {}", out.stderr);
        let documents = json_lines(&out.stdout);
        assert_eq!(documents.len(), 1, "{version}: {}", out.stdout);
        let doc = &documents[0];
        assert_eq!(doc["topic"], topic.as_str(), "{version}");
        assert_eq!(doc["payload"], "héllo", "{version}");
        assert_eq!(doc["retained"], true, "{version}");
        assert_eq!(doc["qos"], 1, "{version}");
        assert!(doc["properties"].is_object(), "{version}");

        // Binary payloads, one document per line of the file.
        let file = temp_file(&format!("binary-{version}"), b"\xff\x00A\nsecond\n");
        let topic = format!("cli/{version}/binary");
        let out = host_shim(&[
            "send",
            "--url",
            url,
            "--mqtt-version",
            version,
            "--topic",
            &topic,
            "--retain",
            "--file",
            file.to_str().unwrap(),
        ]);
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(0), "ok\nok\n"),
            "{version}: {}",
            out.stderr
        );
        let out = host_shim(&[
            "listen",
            "--url",
            url,
            "--mqtt-version",
            version,
            "--topic",
            &topic,
            "--count",
            "1",
            "--timeout",
            "20",
        ]);
        let documents = json_lines(&out.stdout);
        assert_eq!(documents.len(), 1, "{version}: {}", out.stdout);
        // The retained message is the last one sent: "second".
        assert_eq!(documents[0]["payload"], "second", "{version}");

        let out = host_shim(&[
            "send",
            "--url",
            url,
            "--mqtt-version",
            version,
            "--topic",
            &topic,
            "--retain",
            "--message",
            "placeholder",
        ]);
        assert_eq!(out.code, Some(0));
        let out = host_shim_with_input(
            &[
                "send",
                "--url",
                url,
                "--mqtt-version",
                version,
                "--topic",
                &topic,
                "--retain",
                "--file",
                "-",
            ],
            b"\xff\x00A",
        );
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(0), "ok\n"),
            "{version}: {}",
            out.stderr
        );
        let out = host_shim(&[
            "listen",
            "--url",
            url,
            "--mqtt-version",
            version,
            "--topic",
            &topic,
            "--count",
            "1",
            "--timeout",
            "20",
        ]);
        let documents = json_lines(&out.stdout);
        assert_eq!(documents.len(), 1, "{version}: {}", out.stdout);
        assert_eq!(documents[0]["payload_base64"], "/wBB", "{version}");
        assert!(documents[0].get("payload").is_none(), "{version}");
    }
}

#[test]
fn send_from_standard_input_sends_each_line_as_it_comes() {
    let broker = Broker::start();
    let mut child = command()
        .args([
            "send",
            "--url",
            &broker.url,
            "--topic",
            "cli/stream",
            "--qos",
            "1",
        ])
        .args(["--file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    // Standard input stays open throughout: each outcome must come while
    // the command still waits for more lines.
    for line in ["first", "second"] {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let outcome = lines.recv_timeout(COMMAND_TIMEOUT);
        if outcome.is_err() {
            let _ = child.kill();
        }
        assert_eq!(outcome.as_deref(), Ok("ok"), "after {line:?}");
        assert!(child.try_wait().unwrap().is_none(), "still reading");
    }
    drop(stdin);
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "send did not end with its input");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}

#[test]
fn send_file_outcomes_stay_with_their_lines_across_batches() {
    let config = temp_file("small-packets.json", br#"{"max_packet_size": 200}"#);
    let broker = Broker::start_with(&["--config", config.to_str().unwrap()]);
    // Refused lines at the edges of the CLI's batches of 500, and within.
    let refused = [0, 3, 499, 500, 777, 1000, 1201];
    let input: String = (0..1202)
        .map(|n| {
            let width = if refused.contains(&n) { 300 } else { 10 };
            format!("{n:0width$}\n")
        })
        .collect();
    let file = temp_file("batches.txt", input.as_bytes());
    let out = host_shim(&[
        "send",
        "--url",
        &broker.url,
        "--topic",
        "cli/batches",
        "--qos",
        "2",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1202);
    for (n, line) in lines.iter().enumerate() {
        if refused.contains(&n) {
            let prefix = format!("document {n}: ");
            assert!(line.starts_with(&prefix), "line {n}: {line}");
            assert!(line.contains("maximum packet size"), "line {n}: {line}");
        } else {
            assert_eq!(*line, "ok", "line {n}");
        }
    }
}

#[test]
fn listen_stops_at_its_timeout() {
    let broker = Broker::start();
    let started = Instant::now();
    let out = host_shim(&[
        "listen",
        "--url",
        &broker.url,
        "--topic",
        "nobody/#",
        "--timeout",
        "1",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), ""),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn send_errors_exit_2_with_the_reason() {
    let broker = Broker::start();
    let out = host_shim(&[
        "send",
        "--url",
        "mqtt://127.0.0.1:1",
        "--topic",
        "a",
        "--message",
        "x",
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(out.stderr.starts_with("host-shim: "), "{}", out.stderr);
    let out = host_shim(&[
        "send",
        "--url",
        &broker.url,
        "--topic",
        "a/#",
        "--message",
        "x",
    ]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("/topic: "), "{}", out.stderr);
}

#[test]
fn help_teaches_within_80_columns_and_flags_get_suggestions() {
    for sub in ["run", "send", "listen", "broker", "schema", "validate"] {
        let out = host_shim(&[sub, "--help"]);
        assert_eq!(out.code, Some(0), "{sub}");
        for line in out.stdout.lines() {
            assert!(line.chars().count() < 80, "{sub}: too long: {line:?}");
        }
    }
    let out = host_shim(&["--help"]);
    assert!(out.stdout.contains("run"), "{}", out.stdout);

    let out = host_shim(&["send", "--topik", "a"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--topic"), "{}", out.stderr);
}
