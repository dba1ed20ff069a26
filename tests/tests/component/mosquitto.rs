//! A Mosquitto broker process for one test: on 127.0.0.1 and a free port,
//! with a temporary configuration, killed when the guard is dropped.

use anyhow::{bail, Context, Result};
use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Where CI and the Debian package install the broker.
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// How long Mosquitto may take to accept connections.
const STARTUP: Duration = Duration::from_secs(10);

/// A running Mosquitto. Dropping it kills the process and removes its
/// files.
pub struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    /// Starts Mosquitto with anonymous access, no persistence, and the
    /// configuration lines `extra`; returns once its port accepts.
    pub async fn start(extra: &[&str]) -> Result<Mosquitto> {
        // A free port can be taken by someone else between our probe and
        // Mosquitto's bind; one more try makes that race harmless.
        let mut last_error = None;
        for _ in 0..3 {
            match Mosquitto::try_start(extra).await {
                Ok(m) => return Ok(m),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    async fn try_start(extra: &[&str]) -> Result<Mosquitto> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "e2e-mosquitto-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let conf = dir.join("mosquitto.conf");
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
        );
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        // The log goes to a file, not a pipe nobody reads (which would
        // block Mosquitto once full); it explains a failed start.
        let log_path = dir.join("mosquitto.log");
        let log = fs::File::create(&log_path)?;
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("starting {MOSQUITTO} (install it: apt-get install -y mosquitto)")
            })?;
        let mut mosquitto = Mosquitto { child, port, dir };
        if let Err(e) = mosquitto.wait_until_accepting().await {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(e.context(format!("Mosquitto log:\n{log}")));
        }
        Ok(mosquitto)
    }

    async fn wait_until_accepting(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("Mosquitto exited during startup: {status}");
            }
            let attempt = tokio::time::timeout(
                Duration::from_millis(500),
                TcpStream::connect(("127.0.0.1", self.port)),
            )
            .await;
            if let Ok(Ok(_)) = attempt {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "Mosquitto did not accept on port {} within {STARTUP:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The URL the connector connects to.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A port nobody listens on right now.
fn free_port() -> Result<u16> {
    let probe = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(probe.local_addr()?.port())
}
