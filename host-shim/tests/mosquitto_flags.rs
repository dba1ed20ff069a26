//! `host-shim pub` / `sub` with Mosquitto's flags: each flag's effect on a
//! broker (`host-shim broker`, or a fake one that records the CONNECT), and
//! the same command lines run by `mosquitto_pub` / `mosquitto_sub` giving
//! the same result.
//!
//! Everything runs on 127.0.0.1 with ports the OS picks; every wait is
//! bounded.

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use support::{command, host_shim, host_shim_with_input, program, temp_file, Broker, Output};

/// Exit code of `sub -W` that timed out before its count, as mosquitto_sub.
const TIMED_OUT: i32 = 27;

/// `-h 127.0.0.1 -p PORT` for `broker`, then `args`.
fn at<'a>(port: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["-h", "127.0.0.1", "-p", port];
    all.extend_from_slice(args);
    all
}

fn pub_(port: &str, args: &[&str]) -> Output {
    let mut all = vec!["pub"];
    all.extend(at(port, args));
    let out = host_shim(&all);
    assert_eq!(out.code, Some(0), "pub {args:?}: {}", out.stderr);
    out
}

fn sub(port: &str, args: &[&str]) -> Output {
    let mut all = vec!["sub"];
    all.extend(at(port, args));
    host_shim(&all)
}

#[test]
fn pub_retained_then_sub_prints_topic_and_payload() {
    let broker = Broker::start();
    let port = broker.port();
    pub_(&port, &["-t", "a/b", "-m", "hi", "-q", "1", "-r"]);
    let out = sub(&port, &["-t", "a/#", "-C", "1", "-W", "5", "-v"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "a/b hi\n"),
        "{}",
        out.stderr
    );
    // -L names the same broker as a URL.
    let url = broker.url.clone();
    let out = host_shim(&["sub", "-L", &url, "-t", "a/b", "-C", "1", "-W", "5", "-v"]);
    assert_eq!(out.stdout, "a/b hi\n", "{}", out.stderr);
    // -L may name the topic, as for mosquitto_sub -L.
    let out = host_shim(&[
        "sub",
        "-L",
        &format!("{url}/a/+"),
        "-C",
        "1",
        "-W",
        "5",
        "-v",
    ]);
    assert_eq!(out.stdout, "a/b hi\n", "{}", out.stderr);
    let out = host_shim(&["pub", "-L", &format!("{url}/a/c"), "-m", "via -L", "-r"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = sub(&broker.port(), &["-t", "a/c", "-C", "1", "-W", "5", "-v"]);
    assert_eq!(out.stdout, "a/c via -L\n", "{}", out.stderr);
    // -L with -p is refused: which port would it be?
    let out = host_shim(&["sub", "-L", &url, "-p", "1", "-t", "a"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}

#[test]
fn sub_exits_27_when_the_count_does_not_come_in_time() {
    let broker = Broker::start();
    let out = sub(&broker.port(), &["-t", "empty/#", "-C", "1", "-W", "1"]);
    assert_eq!(out.code, Some(TIMED_OUT), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);
    // Without -C the time is the planned end.
    let out = sub(&broker.port(), &["-t", "empty/#", "-W", "1"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[test]
fn message_sources_m_f_s_n_and_file() {
    let broker = Broker::start();
    let port = broker.port();
    let payload = |topic: &str| {
        let out = sub(&port, &["-t", topic, "-C", "1", "-W", "5", "-F", "%p|%l"]);
        assert_eq!(out.code, Some(0), "{topic}: {}", out.stderr);
        out.stdout
    };
    // -f: the whole file, newlines and all, as one document.
    let file = temp_file("whole.txt", b"line 1\nline 2\n");
    pub_(&port, &["-t", "src/f", "-r", "-f", file.to_str().unwrap()]);
    assert_eq!(payload("src/f"), "line 1\nline 2\n|14\n");
    // -s: all of standard input as one document.
    let out = host_shim_with_input(&["pub", "-p", &port, "-t", "src/s", "-r", "-s"], b"a\nb");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(payload("src/s"), "a\nb|3\n");
    // --file: one document per line; the last is retained.
    let lines = temp_file("lines.txt", b"one\ntwo\n");
    let out = pub_(
        &port,
        &["-t", "src/l", "-r", "--file", lines.to_str().unwrap()],
    );
    assert!(out.stderr.starts_with("sent 2, failed 0"), "{}", out.stderr);
    assert_eq!(payload("src/l"), "two|3\n");
    // -n: an empty retained message clears the topic.
    pub_(&port, &["-t", "src/l", "-r", "-n"]);
    let out = sub(&port, &["-t", "src/l", "-C", "1", "-W", "1"]);
    assert_eq!(out.code, Some(TIMED_OUT), "{}", out.stdout);
    // One source at a time.
    let out = host_shim(&["pub", "-p", &port, "-t", "x", "-m", "a", "-n"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let out = host_shim(&["pub", "-p", &port, "-t", "x"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("-m TEXT"), "{}", out.stderr);
}

/// `host-shim sub -v` with `args`, also subscribed to `ready/{name}`,
/// returned once it is subscribed (a marker published there until it
/// prints it), with the lines it prints.
fn subscribed(
    port: &str,
    name: &str,
    args: &[&str],
) -> (std::process::Child, mpsc::Receiver<String>) {
    let ready = format!("ready/{name}");
    let mut listener = command()
        .args(["sub", "-p", port, "-v", "-t", &ready])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, received) = mpsc::channel();
    let stdout = listener.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    for _ in 0..50 {
        pub_(port, &["-t", &ready, "-m", "x", "-q", "0"]);
        if received.recv_timeout(Duration::from_millis(200)).is_ok() {
            while received.try_recv().is_ok() {}
            return (listener, received);
        }
    }
    let _ = listener.kill();
    let _ = listener.wait();
    panic!("the listener never subscribed");
}

#[test]
fn l_sends_each_line_while_standard_input_stays_open() {
    let broker = Broker::start();
    let port = broker.port();
    let (mut listener, received) = subscribed(&port, "l", &["-t", "stream/#", "-W", "60"]);

    let mut sender = command()
        .args(["pub", "-p", &port, "-t", "stream/lines", "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = sender.stdin.take().unwrap();
    for line in ["first", "second", "third"] {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let got = received.recv_timeout(Duration::from_secs(20));
        if got.is_err() {
            let _ = sender.kill();
            let _ = listener.kill();
        }
        assert_eq!(got.unwrap(), format!("stream/lines {line}"));
        assert!(sender.try_wait().unwrap().is_none(), "still reading");
    }
    drop(stdin);
    let _ = listener.kill();
    let _ = listener.wait();
    let status = wait_exit(&mut sender);
    assert_eq!(status, Some(0));
}

/// The exit code of `child`, waiting at most a minute.
fn wait_exit(child: &mut std::process::Child) -> Option<i32> {
    for _ in 0..3000 {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("did not exit within a minute");
}

#[test]
fn qos_retain_and_format_fields() {
    let broker = Broker::start();
    let port = broker.port();
    pub_(&port, &["-t", "f/2", "-m", "two", "-q", "2", "-r"]);
    pub_(&port, &["-t", "f/0", "-m", "zero", "-q", "0", "-r"]);
    let format = "%t %p %q %r %l %x";
    let out = sub(
        &port,
        &["-t", "f/2", "-q", "2", "-C", "1", "-W", "5", "-F", format],
    );
    assert_eq!(out.stdout, "f/2 two 2 1 3 74776f\n", "{}", out.stderr);
    // Delivered at the lower of published and granted QoS.
    let out = sub(
        &port,
        &["-t", "f/2", "-q", "1", "-C", "1", "-W", "5", "-F", "%q"],
    );
    assert_eq!(out.stdout, "1\n", "{}", out.stderr);
    let out = sub(
        &port,
        &["-t", "f/0", "-q", "2", "-C", "1", "-W", "5", "-F", "%q"],
    );
    assert_eq!(out.stdout, "0\n", "{}", out.stderr);
    // %j is the JSON line listen prints without -F.
    let out = sub(&port, &["-t", "f/2", "-C", "1", "-W", "5", "-F", "%j"]);
    let plain = sub(&port, &["-t", "f/2", "-C", "1", "-W", "5"]);
    assert_eq!(out.stdout, plain.stdout);
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        (json["topic"].as_str(), json["retained"].as_bool()),
        (Some("f/2"), Some(true))
    );
    // A field -F does not know is a usage error naming the fields.
    let out = sub(&port, &["-t", "f/2", "-F", "%z"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("%t topic"), "{}", out.stderr);
}

#[test]
fn r_skips_retained_and_retained_only_takes_only_them() {
    let broker = Broker::start();
    let port = broker.port();
    pub_(&port, &["-t", "keep/1", "-m", "old", "-r"]);
    pub_(&port, &["-t", "keep/2", "-m", "old", "-r"]);
    let out = sub(&port, &["-t", "keep/#", "-R", "-C", "1", "-W", "1"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(TIMED_OUT), ""),
        "{}",
        out.stderr
    );
    // --retained-only ends by itself once the retained messages are in.
    let out = sub(
        &port,
        &["-t", "keep/#", "--retained-only", "-W", "30", "-F", "%t %r"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "keep/1 1\nkeep/2 1\n");
    assert!(
        sub(&port, &["-t", "k", "-R", "--retained-only"]).code == Some(2),
        "the two contradict each other"
    );
}

#[test]
fn username_and_password() {
    let config = temp_file(
        "users.json",
        br#"{"allow_anonymous": false, "users": [{"username": "dev", "password": "s3cret"}]}"#,
    );
    let broker = Broker::start_with(&["--config", config.to_str().unwrap()]);
    let port = broker.port();
    let out = host_shim(&["pub", "-p", &port, "-t", "u", "-m", "x"]);
    assert_eq!(out.code, Some(3), "anonymous: {}", out.stderr);
    let out = host_shim(&[
        "pub", "-p", &port, "-u", "dev", "-P", "wrong", "-t", "u", "-m", "x",
    ]);
    assert_eq!(out.code, Some(3), "wrong password: {}", out.stderr);
    let out = host_shim(&[
        "pub", "-p", &port, "-u", "dev", "-P", "s3cret", "-t", "u", "-m", "x", "-r",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = host_shim(&[
        "sub", "-p", &port, "-u", "dev", "-P", "s3cret", "-t", "u", "-C", "1", "-W", "5", "-v",
    ]);
    assert_eq!(out.stdout, "u x\n", "{}", out.stderr);
    // Credentials in the URL: the error points to the flags.
    let url = format!("mqtt://dev:s3cret@127.0.0.1:{port}");
    let out = host_shim(&["pub", "-L", &url, "-t", "u", "-m", "x"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("-u USER -P PASSWORD"), "{}", out.stderr);
}

#[test]
fn c_and_i_keep_the_session_for_the_next_connection() {
    let broker = Broker::start();
    let port = broker.port();
    for version in ["5", "311"] {
        let id = format!("persistent-{version}");
        let topic = format!("session/{version}");
        let session = ["-V", version, "-c", "-i", &id, "-q", "1", "-t", &topic];
        // Subscribes, and leaves the session behind.
        let mut args = session.to_vec();
        args.extend(["-W", "1"]);
        assert_eq!(sub(&port, &args).code, Some(0));
        // Sent while nobody is connected: kept for the session.
        pub_(&port, &["-t", &topic, "-m", "queued", "-q", "1"]);
        let mut args = session.to_vec();
        args.extend(["-C", "1", "-W", "10", "-v"]);
        let out = sub(&port, &args);
        assert_eq!(
            out.stdout,
            format!("{topic} queued\n"),
            "{version}: {}",
            out.stderr
        );
        // Without -c, nothing was kept.
        let mut args = vec!["-V", version, "-i", &id, "-q", "1", "-t", &topic];
        args.extend(["-W", "1"]);
        assert_eq!(sub(&port, &args).code, Some(0));
        pub_(&port, &["-t", &topic, "-m", "lost", "-q", "1"]);
        let mut args = vec!["-V", version, "-i", &id, "-q", "1", "-t", &topic];
        args.extend(["-C", "1", "-W", "1"]);
        assert_eq!(sub(&port, &args).code, Some(TIMED_OUT), "{version}");
    }
}

#[test]
fn will_flags_publish_the_will_when_the_client_dies() {
    let broker = Broker::start();
    let port = broker.port();
    let will = [
        "--will-topic",
        "status/dev",
        "--will-payload",
        "offline",
        "--will-qos",
        "1",
        "--will-retain",
    ];
    let (mut doomed, _) = subscribed(&port, "will", &will);
    // Killed: no DISCONNECT, so the broker publishes the will.
    doomed.kill().unwrap();
    let _ = doomed.wait();
    let out = sub(
        &port,
        &[
            "-t",
            "status/dev",
            "-C",
            "1",
            "-W",
            "10",
            "-F",
            "%t %p %q %r",
        ],
    );
    assert_eq!(out.stdout, "status/dev offline 1 1\n", "{}", out.stderr);
}

/// The CONNECT packet a client sent, read by a fake broker that answers
/// "not authorized" so the client exits at once.
struct Connect {
    level: u8,
    flags: u8,
    keep_alive: u16,
    /// Client id, will topic, will payload, username, password, in order,
    /// as present.
    strings: Vec<Vec<u8>>,
}

/// Runs `host-shim pub ... -m x` with `args` against a fake broker and
/// returns the CONNECT it sent.
fn connect_of(args: &[&str]) -> Connect {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut header = [0u8; 1];
        socket.read_exact(&mut header).unwrap();
        let mut length = 0usize;
        for shift in (0..4).map(|i| 7 * i) {
            let mut byte = [0u8; 1];
            socket.read_exact(&mut byte).unwrap();
            length |= usize::from(byte[0] & 0x7f) << shift;
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; length];
        socket.read_exact(&mut body).unwrap();
        let v5 = body[6] == 5;
        let refusal: &[u8] = if v5 {
            &[0x20, 3, 0, 0x87, 0]
        } else {
            &[0x20, 2, 0, 5]
        };
        let _ = socket.write_all(refusal);
        let _ = tx.send(body);
    });
    let mut all = vec!["pub", "-h", "127.0.0.1", "-p", &port, "-t", "t", "-m", "x"];
    all.extend_from_slice(args);
    let out = host_shim(&all);
    assert_eq!(out.code, Some(3), "{args:?}: {}", out.stderr);
    let body = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    parse_connect(&body)
}

fn parse_connect(body: &[u8]) -> Connect {
    let level = body[6];
    let flags = body[7];
    let keep_alive = u16::from_be_bytes([body[8], body[9]]);
    let mut at = 10;
    let skip_properties = |at: &mut usize| {
        let mut length = 0usize;
        for shift in (0..4).map(|i| 7 * i) {
            let byte = body[*at];
            *at += 1;
            length |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        *at += length;
    };
    if level == 5 {
        skip_properties(&mut at);
    }
    let mut strings = Vec::new();
    let mut string = |at: &mut usize| {
        let n = usize::from(u16::from_be_bytes([body[*at], body[*at + 1]]));
        strings.push(body[*at + 2..*at + 2 + n].to_vec());
        *at += 2 + n;
    };
    string(&mut at);
    if flags & 0x04 != 0 {
        if level == 5 {
            skip_properties(&mut at);
        }
        string(&mut at);
        string(&mut at);
    }
    if flags & 0x80 != 0 {
        string(&mut at);
    }
    if flags & 0x40 != 0 {
        string(&mut at);
    }
    Connect {
        level,
        flags,
        keep_alive,
        strings,
    }
}

#[test]
fn connect_carries_version_id_keepalive_session_credentials_and_will() {
    let c = connect_of(&["-V", "mqttv311", "-i", "me", "-k", "7"]);
    assert_eq!((c.level, c.keep_alive), (4, 7));
    assert_eq!(c.strings, [b"me".to_vec()]);
    assert_eq!(c.flags & 0x02, 0x02, "clean session without -c");

    let c = connect_of(&["-V", "5", "-i", "me", "-c"]);
    assert_eq!(c.level, 5);
    assert_eq!(c.flags & 0x02, 0, "-c asks to resume the session");

    let c = connect_of(&["-V", "311", "-i", "me", "-u", "user", "-P", "pw"]);
    assert_eq!(c.flags & 0xC0, 0xC0);
    assert_eq!(
        c.strings,
        [b"me".to_vec(), b"user".to_vec(), b"pw".to_vec()]
    );

    let c = connect_of(&[
        "-V",
        "311",
        "-i",
        "me",
        "--will-topic",
        "w/t",
        "--will-payload",
        "bye",
        "--will-qos",
        "2",
        "--will-retain",
    ]);
    // Will flag, will QoS 2, will retain.
    assert_eq!(c.flags & 0x3C, 0x04 | 0x10 | 0x20);
    assert_eq!(
        c.strings,
        [b"me".to_vec(), b"w/t".to_vec(), b"bye".to_vec()]
    );
}

#[test]
fn tls_flags_on_a_plain_port_fail_with_a_hint() {
    let broker = Broker::start();
    let pki = e2e::Pki::new("flags-test-ca").expect("test certificates");
    let ca = pki.ca_file().to_path_buf();
    let out = host_shim(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "--cafile",
        ca.to_str().unwrap(),
        "-t",
        "t",
        "-m",
        "x",
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("mqtts://127.0.0.1:"), "{}", out.stderr);
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("for a plain port use mqtt://"),
        "{}",
        out.stderr
    );
    // Without -h or -p, the TLS flags mean port 8883.
    let out = host_shim(&[
        "pub",
        "--cafile",
        ca.to_str().unwrap(),
        "-t",
        "t",
        "-m",
        "x",
        "-d",
    ]);
    assert!(
        out.stderr.contains("mqtts://localhost:8883"),
        "{}",
        out.stderr
    );
}

#[test]
fn d_shows_the_connector_and_the_client_but_not_the_engine() {
    let broker = Broker::start();
    let port = broker.port();
    pub_(&port, &["-t", "d", "-m", "x", "-r"]);
    let out = sub(&port, &["-d", "-t", "d", "-C", "1", "-W", "10"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains(" host_shim::mqtt"), "{}", out.stderr);
    assert!(out.stderr.contains("DEBUG"), "{}", out.stderr);
    assert!(out.stderr.contains(" connector"), "{}", out.stderr);
    for engine in ["wasmtime", "cranelift"] {
        assert!(
            !out.stderr
                .lines()
                .any(|l| l.contains(&format!(" {engine}"))),
            "{engine} in {}",
            out.stderr
        );
    }
}

/// Runs Mosquitto's client `tool` (`mosquitto_pub`, `mosquitto_sub`) or
/// ours (`pub`, `sub`) with the same arguments.
fn both(port: &str, mosquitto: &str, ours: &str, args: &[&str]) -> (Output, Output) {
    let args = at(port, args);
    let theirs = program(mosquitto, &args);
    let mut all = vec![ours];
    all.extend(args);
    (theirs, host_shim(&all))
}

#[test]
fn the_same_command_lines_as_mosquitto_give_the_same_results() {
    if !e2e::BrokerProcess::mosquitto_installed() {
        eprintln!("mosquitto_sub is not installed: skipped");
        return;
    }
    let broker = Broker::start();
    let port = broker.port();
    // Published by each tool, read by each tool.
    for (publisher, topic) in [("mosquitto_pub", "side/m"), ("pub", "side/h")] {
        let publish = ["-t", topic, "-m", "hi there", "-q", "1", "-r"];
        let out = if publisher == "pub" {
            pub_(&port, &publish)
        } else {
            program(publisher, &at(&port, &publish))
        };
        assert_eq!(out.code, Some(0), "{publisher}: {}", out.stderr);
        for sub_args in [
            vec!["-t", topic, "-C", "1", "-W", "5", "-v"],
            vec![
                "-t",
                topic,
                "-C",
                "1",
                "-W",
                "5",
                "-q",
                "1",
                "-F",
                "%t|%p|%q|%r|%l|%x",
            ],
            vec![
                "-t", "side/#", "-C", "2", "-W", "5", "-q", "2", "-F", "%t %q",
            ],
            vec!["-t", topic, "-R", "-C", "1", "-W", "1"],
            vec!["-t", "side/none", "-C", "1", "-W", "1"],
        ] {
            let (theirs, ours) = both(&port, "mosquitto_sub", "sub", &sub_args);
            let sorted = |out: &Output| {
                let mut lines: Vec<&str> = out.stdout.lines().collect();
                lines.sort_unstable();
                lines.join("\n")
            };
            assert_eq!(
                (ours.code, sorted(&ours)),
                (theirs.code, sorted(&theirs)),
                "{publisher} then sub {sub_args:?}: {}",
                ours.stderr
            );
        }
    }
    // An empty retained message clears, whoever sends it.
    for (publisher, topic) in [("mosquitto_pub", "side/m"), ("pub", "side/h")] {
        let clear = at(&port, &["-t", topic, "-r", "-n"]);
        let out = if publisher == "pub" {
            let mut all = vec!["pub"];
            all.extend(clear);
            host_shim(&all)
        } else {
            program(publisher, &clear)
        };
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let (theirs, ours) = both(
            &port,
            "mosquitto_sub",
            "sub",
            &["-t", topic, "-C", "1", "-W", "1"],
        );
        assert_eq!((ours.code, theirs.code), (Some(TIMED_OUT), Some(TIMED_OUT)));
    }
}

#[test]
fn a_retained_send_dropped_by_a_311_broker_hints_at_retain_supported() {
    let config = temp_file("tagoio.json", br#"{"profile": "tagoio"}"#);
    let broker = Broker::start_with(&["--config", config.to_str().unwrap()]);
    let port = broker.port();
    let out = host_shim(&["pub", "-p", &port, "-V", "311", "-t", "t", "-m", "x", "-r"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("document 0: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("hint: ") && out.stderr.contains("\"retain_supported\": false"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("sent 0, failed 1 "), "{}", out.stderr);
    // With it, the connector refuses the retained send itself, and says why.
    let connection = temp_file("no-retain.json", br#"{"retain_supported": false}"#);
    let out = host_shim(&[
        "pub",
        "-p",
        &port,
        "-V",
        "311",
        "-t",
        "t",
        "-m",
        "x",
        "-r",
        "--connection",
        connection.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("does not support retained"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("hint: "), "{}", out.stderr);
    // Not retained: sent.
    pub_(&port, &["-V", "311", "-t", "t", "-m", "x"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_flags_reach_a_broker_that_requires_a_client_certificate() {
    if !e2e::BrokerProcess::mosquitto_installed() {
        eprintln!("mosquitto is not installed: skipped");
        return;
    }
    let pki = e2e::Pki::new("flags-test-ca").expect("test certificates");
    let (server, client) = (
        pki.server().expect("a server certificate"),
        pki.client("flags-client").expect("a client certificate"),
    );
    let file = |path: &std::path::Path| path.to_string_lossy().into_owned();
    let (ca, cert, key) = (
        file(pki.ca_file()),
        file(&client.cert_file),
        file(&client.key_file),
    );
    let broker = e2e::BrokerProcess::mosquitto(&[
        &format!("cafile {ca}"),
        &format!("certfile {}", file(&server.cert_file)),
        &format!("keyfile {}", file(&server.key_file)),
        "require_certificate true",
    ])
    .await
    .expect("mosquitto starts with TLS");
    let port = broker.port().to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            host_shim(&args)
        })
    };
    let with = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["pub", "-h", "localhost", "-p", &port, "-t", "tls/t"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // The CA, the client certificate and its key: accepted, over TLS.
    let out = run(with(&[
        "--cafile", &ca, "--cert", &cert, "--key", &key, "-m", "secure", "-r",
    ]))
    .await
    .unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut args = with(&["--cafile", &ca, "--cert", &cert, "--key", &key]);
    args[0] = "sub".into();
    args.extend(["-C", "1", "-W", "10", "-v"].map(String::from));
    let out = run(args).await.unwrap();
    assert_eq!(out.stdout, "tls/t secure\n", "{}", out.stderr);
    // Without the client certificate, the broker refuses the handshake.
    let out = run(with(&["--cafile", &ca, "-m", "x"])).await.unwrap();
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("hint: the broker wants a client"),
        "{}",
        out.stderr
    );
    // Without the CA, the broker's certificate is not trusted.
    let out = run(with(&["--cert", &cert, "--key", &key, "-m", "x"]))
        .await
        .unwrap();
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("--cafile FILE"), "{}", out.stderr);
}
