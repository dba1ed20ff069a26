//! Every flow in `examples/` runs with `host-shim run` on the built-in
//! broker, exits 0 (every `expect` block met), and prints the lines that show
//! what the example is about.
//!
//! A new example needs a test here: `every_example_has_a_test` fails until
//! it is added to [`TESTED`].

use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_host-shim");

/// The longest one example may take; they take a few seconds.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The examples with a test below.
const TESTED: &[&str] = &[
    "aws-iot-exact-topic.flow.json",
    "broker-restart.flow.json",
    "last-known-state.flow.json",
    "quickstart.flow.json",
    "retain-unsupported.flow.json",
    "retained-config.flow.json",
    "retained-limits.flow.json",
    "shared-workers.flow.json",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host-shim is in the workspace")
        .to_path_buf()
}

struct Run {
    stdout: String,
    stderr: String,
}

impl Run {
    /// The received documents: the stdout lines that are JSON objects.
    fn documents(&self) -> Vec<Json> {
        self.stdout
            .lines()
            .filter(|line| line.starts_with('{'))
            .map(|line| serde_json::from_str(line).expect("a document line is JSON"))
            .collect()
    }

    /// `(topic, payload, retained)` of each received document, in order.
    fn seen(&self) -> Vec<(String, String, bool)> {
        self.documents()
            .iter()
            .map(|d| {
                (
                    d["topic"].as_str().unwrap_or_default().to_owned(),
                    d["payload"].as_str().unwrap_or_default().to_owned(),
                    d["retained"].as_bool().expect("retained is a flag"),
                )
            })
            .collect()
    }

    /// Fails unless the log (stderr) has a line that is exactly `line`.
    fn has_line(&self, line: &str) {
        assert!(
            self.stderr.lines().any(|l| l == line),
            "no line {line:?} in stderr:\n{}",
            self.stderr
        );
    }
}

/// `host-shim run examples/NAME`; fails the test unless it exits 0 within
/// [`TIMEOUT`] and says it passed.
fn run_example(name: &str) -> Run {
    let mut child = Command::new(BIN)
        .arg("run")
        .arg(Path::new("examples").join(name))
        .current_dir(workspace())
        // Warnings (the connector's and the broker's) are part of what some
        // examples show; make sure a RUST_LOG in the environment does not
        // hide them.
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("host-shim run examples/{name} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = |rx: mpsc::Receiver<Vec<u8>>| {
        String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default())
            .into_owned()
    };
    let run = Run {
        stdout: text(stdout),
        stderr: text(stderr),
    };
    assert_eq!(
        status.code(),
        Some(0),
        "examples/{name} failed\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("built-in broker on mqtt://127.0.0.1:")),
        "examples run on the built-in broker on loopback:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.lines().any(|l| l.starts_with("passed: ")),
        "{}",
        run.stderr
    );
    // stdout is the documents alone.
    assert!(
        run.stdout.lines().all(|l| l.starts_with('{')),
        "{}",
        run.stdout
    );
    run
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

fn triple(topic: &str, payload: &str, retained: bool) -> (String, String, bool) {
    (topic.to_owned(), payload.to_owned(), retained)
}

#[test]
fn every_example_has_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(workspace().join("examples"))
        .expect("examples/ exists")
        .map(|entry| entry.expect("a directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".flow.json"))
        .collect();
    found.sort();
    assert_eq!(found, TESTED, "examples/ and the tests here differ");
}

#[test]
fn quickstart() {
    let run = run_example("quickstart.flow.json");
    assert_eq!(
        run.seen(),
        [triple(
            "users/settings/user01",
            r#"{"account_type":"standard"}"#,
            true
        )]
    );
}

#[test]
fn retained_config() {
    let run = run_example("retained-config.flow.json");
    let settings = r#"{"account_type":"premium"}"#;
    // The device online before gets it live, the one after from the store;
    // after the clear, nobody gets anything.
    assert_eq!(
        run.seen(),
        [
            triple("users/settings/user01", settings, false),
            triple("users/settings/user01", settings, true),
        ]
    );
    run.has_line("step 5 listen: 0 documents");
}

#[test]
fn last_known_state() {
    let run = run_example("last-known-state.flow.json");
    run.has_line("step 3 drop device: connection dropped");
    let status = "devices/device-1/status";
    assert_eq!(
        run.seen(),
        [
            triple(status, "online", true),
            triple(status, "offline", false),
            triple(status, "offline", true),
        ]
    );
}

#[test]
fn broker_restart() {
    let run = run_example("broker-restart.flow.json");
    run.has_line("step 4 broker: restarted");
    run.has_line("step 6 receive worker: 3 documents");
    let orders: Vec<String> = run
        .seen()
        .into_iter()
        .map(|(_, payload, _)| payload)
        .collect();
    assert_eq!(
        orders,
        [
            r#"{"order":1001}"#,
            r#"{"order":1002}"#,
            r#"{"order":1003}"#
        ]
    );
}

#[test]
fn shared_workers() {
    let run = run_example("shared-workers.flow.json");
    run.has_line("step 3 receive a: 5 documents");
    run.has_line("step 4 receive b: 5 documents");
    let mut jobs: Vec<u32> = run
        .seen()
        .into_iter()
        .map(|(_, payload, _)| payload.parse().unwrap())
        .collect();
    jobs.sort_unstable();
    assert_eq!(jobs, (1..=10).collect::<Vec<u32>>(), "each job once");
}

#[test]
fn aws_iot_exact_topic() {
    let run = run_example("aws-iot-exact-topic.flow.json");
    run.has_line("step 2 receive wildcard: 0 documents");
    run.has_line("step 3 listen: 1 document");
    assert_eq!(
        run.seen(),
        [
            triple("thermostats/t1/config", r#"{"setpoint":21}"#, true),
            triple("thermostats/t1/config", r#"{"setpoint":19}"#, false),
        ]
    );
}

#[test]
fn retain_unsupported() {
    let run = run_example("retain-unsupported.flow.json");
    run.has_line("step 1 send: 1 ok, 1 failed");
    assert!(
        run.stderr.contains(
            "document 0: the broker does not support retained messages (Retain Available = 0"
        ),
        "{}",
        run.stderr
    );
    run.has_line("step 2 send: 1 ok");
    let warning = run
        .stderr
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning on stderr:\n{}", run.stderr));
    assert!(
        warning.contains("sent without the retain flag as retain_unsupported is \"strip\""),
        "{warning}"
    );
    run.has_line("step 5 listen: 0 documents");
    assert!(run.seen().iter().all(|(_, _, retained)| !retained));
}

#[test]
fn retained_limits() {
    let run = run_example("retained-limits.flow.json");
    for warning in [
        "retained message not stored: payload over retain.max_payload_bytes",
        "retained message not stored: retain.max_messages reached",
    ] {
        assert!(run.stderr.contains(warning), "{warning}:\n{}", run.stderr);
    }
    let seen = run.seen();
    // All five delivered live...
    let live: Vec<&str> = seen
        .iter()
        .filter(|(_, _, retained)| !retained)
        .map(|(topic, _, _)| topic.as_str())
        .collect();
    assert_eq!(
        live,
        ["limits/big", "limits/a", "limits/b", "limits/c", "limits/a"]
    );
    // ...but only two stored.
    let mut stored: Vec<(String, String, bool)> = seen
        .into_iter()
        .filter(|(_, _, retained)| *retained)
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        [
            triple("limits/a", "a2", true),
            triple("limits/b", "b1", true)
        ]
    );
}
