//! The `host-shim` binary end to end: schemas, validation, flows, and send
//! and listen against the built-in broker started with `host-shim broker`.
//!
//! Everything runs on 127.0.0.1 with ports the OS picks, and every wait is
//! bounded so a hung command fails its test instead of the run.

use serde_json::Value as Json;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;

use support::{
    command, host_shim, host_shim_with_input, json_lines, temp_file, Broker, COMMAND_TIMEOUT,
};

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
    // stdout holds the documents and nothing else, for `| jq`.
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert!(out.stderr.contains("passed"), "{}", out.stderr);

    let out = host_shim(&["run", "examples/quickstart.flow.json", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report: Json = serde_json::from_str(&out.stdout).expect("one JSON report");
    assert_eq!(report["passed"], true);
    assert_eq!(report["failed"], Json::Null);
    assert_eq!(report["documents"][0]["topic"], "users/settings/user01");
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
        out.stderr.contains("FAILED: step 1 (listen)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(r#"expected payloads ["b"], got ["a"]"#),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("step 2"),
        "the flow stops at the failed step"
    );
    let out = host_shim(&["run", flow.to_str().unwrap(), "--json"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let report: Json = serde_json::from_str(&out.stdout).expect("one JSON report");
    assert_eq!(report["passed"], false);
    assert_eq!(report["failed"]["step"], 1);
    assert_eq!(report["failed"]["kind"], "listen");
    assert_eq!(
        report["failed"]["differences"][0],
        r#"expected payloads ["b"], got ["a"]"#
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
fn broker_steps_restart_the_builtin_broker_and_drop_its_connections() {
    let store =
        std::env::temp_dir().join(format!("host-shim-cli-restart-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&store);
    let flow = serde_json::json!({
        "broker": { "retain": { "storage": { "disk": store } } },
        "steps": [
            { "send": { "config": { "topic": "kept/1", "qos": 1, "retained": true },
                        "documents": [{ "payload": "on disk" }] } },
            { "subscribe": { "name": "dash", "config": { "subscriptions": [{ "filter": "live/#" }] } } },
            { "broker": "restart" },
            // The listener reconnects and subscribes again; retained, so it
            // has the message whether it is back before or after.
            { "send": { "config": { "topic": "live/1", "qos": 1, "retained": true },
                        "documents": [{ "payload": "after restart" }] } },
            { "receive": { "name": "dash", "count": 1, "timeout_ms": 10000,
                           "expect": { "payloads": ["after restart"] } } },
            { "listen": { "config": { "subscriptions": [{ "filter": "kept/#" }] }, "count": 1,
                          "timeout_ms": 10000,
                          "expect": { "payloads": ["on disk"], "retained": true } } },
            { "broker": "drop_connections" },
            { "send": { "config": { "topic": "live/2", "qos": 1, "retained": true },
                        "documents": [{ "payload": "after drop" }] } },
            { "receive": { "name": "dash", "count": 2, "timeout_ms": 10000,
                           "expect": { "payloads": ["after restart", "after drop"],
                                       "any_order": true } } }
        ]
    });
    let file = temp_file("broker-steps.flow.json", flow.to_string().as_bytes());
    let out = host_shim(&["run", file.to_str().unwrap()]);
    assert_eq!(
        out.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.contains("step 2 broker: restarted"),
        "{}",
        out.stderr
    );
    // The subscriber's connection at least (the listen step's may not be
    // closed yet).
    let dropped = out
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("step 6 broker: "))
        .and_then(|rest| rest.split(' ').next()?.parse::<usize>().ok());
    assert!(dropped.is_some_and(|n| n >= 1), "{}", out.stderr);
    let _ = std::fs::remove_file(&store);

    // Against another broker, the step fails and says why.
    let flow = temp_file(
        "external-broker-step.flow.json",
        br#"{"steps": [{"broker": "restart"}]}"#,
    );
    let out = host_shim(&["run", flow.to_str().unwrap(), "--url", "mqtt://127.0.0.1:1"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("step 0 (broker): `broker` steps act on the built-in broker")
            && out.stderr.contains("mqtt://127.0.0.1:1"),
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
            (Some(0), ""),
            "{version}: {}",
            out.stderr
        );
        assert!(
            out.stderr.starts_with("sent 1, failed 0 "),
            "{}",
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
            (Some(0), ""),
            "{version}: {}",
            out.stderr
        );
        assert!(
            out.stderr.starts_with("sent 2, failed 0 "),
            "{}",
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
            (Some(0), ""),
            "{version}: {}",
            out.stderr
        );
        assert!(
            out.stderr.starts_with("sent 1, failed 0 "),
            "{}",
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
        .args(["--file", "-", "--results"])
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
    for (n, line) in ["first", "second"].into_iter().enumerate() {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let outcome = lines.recv_timeout(COMMAND_TIMEOUT);
        if outcome.is_err() {
            let _ = child.kill();
        }
        let expected = format!(r#"{{"document":{n},"ok":true}}"#);
        assert_eq!(outcome.as_deref(), Ok(expected.as_str()), "after {line:?}");
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
    // Refused lines at the edges of the CLI's batches of 5,000, and within.
    let refused = [0, 3, 4999, 5000, 7777, 10000, 10201];
    let input: String = (0..10202)
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
        "--results",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let results = json_lines(&out.stdout);
    assert_eq!(results.len(), 10202);
    for (n, result) in results.iter().enumerate() {
        assert_eq!(result["document"], n, "line {n}");
        if refused.contains(&n) {
            assert_eq!(result["ok"], false, "line {n}: {result}");
            let error = result["error"].as_str().unwrap_or_default();
            assert!(error.contains("maximum packet size"), "line {n}: {result}");
        } else {
            assert_eq!(result["ok"], true, "line {n}: {result}");
        }
    }
    // On stderr: a line per failure, naming the document, then the summary.
    let failures: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("document "))
        .collect();
    assert_eq!(failures.len(), refused.len(), "{}", out.stderr);
    for (line, n) in failures.iter().zip(refused) {
        let prefix = format!("document {n}: ");
        assert!(line.starts_with(&prefix), "{line}");
        assert!(line.contains("maximum packet size"), "{line}");
    }
    assert!(
        out.stderr
            .contains("sent 10195, failed 7 (10202 documents in "),
        "{}",
        out.stderr
    );
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
    // A broker that cannot be reached is exit 3, with a hint.
    let out = host_shim(&[
        "send",
        "--url",
        "mqtt://127.0.0.1:1",
        "--topic",
        "a",
        "--message",
        "x",
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stdout);
    assert!(out.stderr.starts_with("host-shim: "), "{}", out.stderr);
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    assert!(out.stderr.contains("host-shim broker"), "{}", out.stderr);
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

#[test]
fn completions_and_man_page_come_from_the_flag_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = host_shim(&["completions", shell]);
        assert_eq!(out.code, Some(0), "{shell}: {}", out.stderr);
        for flag in ["will-topic", "retained-only", "results"] {
            assert!(out.stdout.contains(flag), "{shell} lacks {flag}");
        }
    }
    let out = host_shim(&["completions", "tcsh"]);
    assert_eq!(out.code, Some(2));

    let out = host_shim(&["man"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains(".TH host-shim 1"), "{}", out.stdout);
    assert!(
        out.stdout.contains("host\\-shim\\-send(1)"),
        "{}",
        out.stdout
    );
    for (sub, flag) in [("send", "will\\-topic"), ("listen", "retained\\-only")] {
        let out = host_shim(&["man", sub]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(
            out.stdout.contains(&format!(".TH host-shim-{sub} 1")),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains(flag), "the {sub} page lacks {flag}");
    }
    let out = host_shim(&["man", "nope"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("one of: run, send"), "{}", out.stderr);

    let dir = std::env::temp_dir().join(format!("host-shim-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = host_shim(&["man", "--out-dir", dir.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for page in [
        "host-shim.1",
        "host-shim-send.1",
        "host-shim-retained-snapshot.1",
    ] {
        assert!(dir.join(page).is_file(), "no {page}");
    }
    assert!(!dir.join("host-shim-help.1").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_gives_the_real_qos_default_and_h_is_the_host() {
    for sub in ["send", "listen"] {
        let out = host_shim(&[sub, "--help"]);
        assert!(out.stdout.contains("[default: 1]"), "{sub}: {}", out.stdout);
        assert!(
            !out.stdout.contains("2 [default: 0]"),
            "{sub}: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("-h, --host <HOST>"),
            "{sub}: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("Exit status: 0"),
            "{sub}: {}",
            out.stdout
        );
    }
    // -h takes a host, so it is never help: without a topic, an error.
    let out = host_shim(&["sub", "-h", "127.0.0.1"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("-t FILTER"), "{}", out.stderr);
}

#[test]
fn listen_config_file_problems_name_the_file_and_the_key() {
    let config = temp_file(
        "typo.listen.json",
        br#"{"subscriptons": [{"filter": "a"}]}"#,
    );
    let out = host_shim(&["listen", "--config", config.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains(&config.display().to_string()) && !out.stderr.contains("or --config"),
        "{}",
        out.stderr
    );
    // The misspelt key, with the one it should be.
    assert!(out.stderr.contains("/subscriptons: "), "{}", out.stderr);
    assert!(out.stderr.contains("\"subscriptions\""), "{}", out.stderr);
}

/// On a terminal (here the pseudo-terminal `script(1)` gives), a send with
/// its documents going elsewhere draws its progress line on stderr while
/// lines stream in; on a pipe the same send draws nothing.
#[test]
fn a_terminal_sees_the_progress_line_and_a_pipe_does_not() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("script(1) is not installed: skipped");
        return;
    }
    let broker = Broker::start();
    let send = format!(
        "(echo one; sleep 3; echo two) | '{}' send --url {} --topic progress/t -l",
        support::BIN,
        broker.url
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &format!("{send} > /dev/null"), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{terminal}");
    assert!(
        terminal.contains("sent 1 ("),
        "no progress line in {terminal:?}"
    );
    assert!(
        terminal.contains("sent 2, failed 0"),
        "no summary in {terminal:?}"
    );

    let out = std::process::Command::new("sh")
        .args(["-c", &format!("{send} 2>&1 > /dev/null")])
        .output()
        .expect("sh runs");
    let piped = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{piped}");
    assert!(
        !piped.contains("sent 1 ("),
        "a progress line on a pipe: {piped:?}"
    );
    assert!(
        piped.contains("sent 2, failed 0"),
        "no summary in {piped:?}"
    );
}
