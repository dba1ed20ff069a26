//! What the command-line suites share: running the binary with a bounded
//! wait, temporary files, and `host-shim broker` on a free port.

// Each suite uses some of these.
#![allow(dead_code)]

use serde_json::Value as Json;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_host-shim");

/// The longest any one command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The binary, with a code cache of this test process's own: the first run
/// compiles the connector, the others read it back.
pub fn command() -> Command {
    let mut command = Command::new(BIN);
    command.env(
        "XDG_CACHE_HOME",
        std::env::temp_dir().join(format!("host-shim-cli-test-{}/cache", std::process::id())),
    );
    command
}

/// Runs the binary with `args` and `stdin`, killing it after the timeout.
pub fn host_shim_with_input(args: &[&str], stdin: &[u8]) -> Output {
    run(command(), args, stdin)
}

/// Runs `program` (Mosquitto's clients, for instance) with `args`.
pub fn program(program: &str, args: &[&str]) -> Output {
    run(Command::new(program), args, b"")
}

/// Runs `command` with `args` and `stdin`, killing it after the timeout.
pub fn run(mut command: Command, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command
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
            panic!("{args:?} did not finish within {COMMAND_TIMEOUT:?}");
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

pub fn host_shim(args: &[&str]) -> Output {
    host_shim_with_input(args, b"")
}

pub fn drain(mut from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        let _ = tx.send(all);
    });
    rx
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A file in a directory of this test process, removed with the directory.
pub fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("host-shim-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// `host-shim broker` on a free port, killed when dropped.
pub struct Broker {
    child: Child,
    pub url: String,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// `host-shim broker` with extra arguments.
    pub fn start_with(extra: &[&str]) -> Broker {
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

impl Broker {
    /// The port it listens on.
    pub fn port(&self) -> String {
        self.url.rsplit(':').next().unwrap_or_default().to_owned()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn json_lines(stdout: &str) -> Vec<Json> {
    stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}
