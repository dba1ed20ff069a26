//! Mosquitto's own command line clients, `mosquitto_pub` and
//! `mosquitto_sub`, driven as child processes.

use crate::*;
use anyhow::{anyhow, bail, Result};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The protocol flag for Mosquitto's clients.
pub fn mosq_version(v5: bool) -> &'static str {
    if v5 {
        "mqttv5"
    } else {
        "mqttv311"
    }
}

/// A Mosquitto client command against `broker`. Its stdout is a pipe, which
/// makes it fully buffered; `line_buffered` runs it under coreutils' `stdbuf
/// -oL` (which execs it, keeping the PID) so lines arrive as printed.
fn mosquitto(
    bin: &str,
    port: u16,
    v5: bool,
    args: &[&str],
    line_buffered: bool,
) -> tokio::process::Command {
    let mut cmd = if line_buffered {
        let mut cmd = tokio::process::Command::new("stdbuf");
        cmd.args(["-oL", bin]);
        cmd
    } else {
        tokio::process::Command::new(bin)
    };
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-V", mosq_version(v5)])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn spawn_failed(bin: &str, e: std::io::Error) -> anyhow::Error {
    anyhow!("cannot run {bin} ({e}); install the Debian package mosquitto-clients")
}

/// Runs `mosquitto_pub` to completion and insists it succeeds.
pub async fn mosquitto_pub(broker: &Broker, v5: bool, args: &[&str]) -> Result<()> {
    mosquitto_pub_at(broker.port(), v5, args).await
}

/// Runs `mosquitto_pub` against the broker's TLS listener (`args` give
/// `--cafile` and the rest) to completion and insists it succeeds.
pub async fn mosquitto_pub_tls(broker: &Broker, v5: bool, args: &[&str]) -> Result<()> {
    mosquitto_pub_at(broker.tls_port(), v5, args).await
}

async fn mosquitto_pub_at(port: u16, v5: bool, args: &[&str]) -> Result<()> {
    let child = mosquitto("mosquitto_pub", port, v5, args, false)
        .spawn()
        .map_err(|e| spawn_failed("mosquitto_pub", e))?;
    let out = within("mosquitto_pub to exit", child.wait_with_output()).await??;
    if !out.status.success() {
        bail!(
            "mosquitto_pub {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A running `mosquitto_sub`, its stdout read line by line.
pub struct MosquittoSub {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

/// Format for `-F`: a marker, then retain flag, QoS, topic and payload.
pub const MOSQ_FORMAT: &str = "MSG %r %q %t %p";

impl MosquittoSub {
    /// Starts `mosquitto_sub` with `-d` (so the SUBACK is visible) and
    /// `-F MOSQ_FORMAT`, plus `args`.
    pub fn start(broker: &Broker, v5: bool, args: &[&str]) -> Result<MosquittoSub> {
        MosquittoSub::start_at(broker.port(), v5, args)
    }

    /// The same against the broker's TLS listener (`args` give `--cafile`
    /// and the rest).
    pub fn start_tls(broker: &Broker, v5: bool, args: &[&str]) -> Result<MosquittoSub> {
        MosquittoSub::start_at(broker.tls_port(), v5, args)
    }

    fn start_at(port: u16, v5: bool, args: &[&str]) -> Result<MosquittoSub> {
        let mut cmd = mosquitto("mosquitto_sub", port, v5, args, true);
        cmd.args(["-d", "-F", MOSQ_FORMAT]);
        let mut child = cmd.spawn().map_err(|e| spawn_failed("mosquitto_sub", e))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(MosquittoSub {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits until the debug output shows the SUBACK.
    pub async fn subscribed(&mut self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Err(_) => bail!(
                    "mosquitto_sub did not report a SUBACK; output: {:?}",
                    self.seen
                ),
                Ok(None) => bail!(
                    "mosquitto_sub exited before its SUBACK; output: {:?}",
                    self.seen
                ),
                Ok(Some(line)) => {
                    let suback = line.contains("received SUBACK");
                    self.seen.push(line);
                    if suback {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Kills the process (SIGKILL): its connection ends without DISCONNECT.
    pub async fn kill(mut self) -> Result<()> {
        within("mosquitto_sub to die", self.child.kill()).await??;
        Ok(())
    }

    /// Waits for the process to exit (it should: `-C N` or `-W`) and returns
    /// the message lines, each split into (retain, qos, topic, payload).
    pub async fn messages(mut self) -> Result<Vec<(String, String, String, String)>> {
        let status = within("mosquitto_sub to exit", self.child.wait()).await??;
        // Collect what the reader task still holds.
        while let Ok(Some(line)) = within("mosquitto_sub output", self.lines.recv()).await {
            self.seen.push(line);
        }
        if !status.success() {
            bail!("mosquitto_sub failed ({status}); output: {:?}", self.seen);
        }
        Ok(self
            .seen
            .iter()
            .filter_map(|l| l.strip_prefix("MSG "))
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let mut next = || it.next().unwrap_or_default().to_owned();
                (next(), next(), next(), next())
            })
            .collect())
    }
}
