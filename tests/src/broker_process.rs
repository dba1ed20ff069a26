//! Brokers as child processes on loopback, for benchmarks that compare
//! them: Mosquitto (`/usr/sbin/mosquitto`) with a generated configuration,
//! and the built-in broker served by the calling binary itself (see
//! [`serve_builtin_if_asked`]). Both are measured alike: a process of their
//! own, whose resident memory can be read, and clients in another.

use anyhow::{anyhow, bail, Context, Result};
use mqtt_broker::BrokerConfig;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Where the Debian package installs Mosquitto.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// The argument that makes a binary calling [`serve_builtin_if_asked`]
/// serve the built-in broker instead of doing its own job.
const SERVE_FLAG: &str = "--serve-builtin-broker";

/// How long a broker may take to accept connections.
const STARTUP: Duration = Duration::from_secs(10);

/// A broker process on 127.0.0.1. Dropping it kills the process and
/// removes its files.
pub struct BrokerProcess {
    child: Child,
    addr: SocketAddr,
    dir: Option<PathBuf>,
}

impl BrokerProcess {
    /// Whether Mosquitto is installed.
    pub fn mosquitto_installed() -> bool {
        std::path::Path::new(MOSQUITTO).exists()
    }

    /// Starts Mosquitto with anonymous access, no persistence, logging only
    /// errors and warnings to a file, plus the configuration lines `extra`;
    /// returns once its port accepts.
    pub async fn mosquitto(extra: &[&str]) -> Result<BrokerProcess> {
        // A free port can be taken between the probe and Mosquitto's bind;
        // another try makes that race harmless.
        let mut last = None;
        for _ in 0..3 {
            match BrokerProcess::try_mosquitto(extra).await {
                Ok(process) => return Ok(process),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("mosquitto did not start")))
    }

    async fn try_mosquitto(extra: &[&str]) -> Result<BrokerProcess> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!(
            "e2e-mosquitto-proc-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let conf = dir.join("mosquitto.conf");
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nlog_type error\nlog_type warning\n"
        );
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        let log_path = dir.join("mosquitto.log");
        let log = fs::File::create(&log_path)?;
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {MOSQUITTO} (apt-get install -y mosquitto)"))?;
        let mut process = BrokerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: Some(dir),
        };
        if let Err(e) = process.wait_until_accepting().await {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(e.context(format!("Mosquitto log:\n{log}")));
        }
        Ok(process)
    }

    /// Starts the built-in broker with `config` (host and port are set to
    /// 127.0.0.1 and a free port) in a child process: this binary again,
    /// which must call [`serve_builtin_if_asked`] first thing in `main`.
    pub async fn builtin(config: &BrokerConfig) -> Result<BrokerProcess> {
        let config = BrokerConfig {
            host: "127.0.0.1".to_owned(),
            port: 0,
            ..config.clone()
        };
        let json = serde_json::to_string(&config)?;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args([SERVE_FLAG, &json])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the built-in broker process")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        // The child prints its port once it listens.
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = tokio::time::timeout(STARTUP, line)
            .await
            .context("the built-in broker process did not start in time")???;
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("unexpected first line from the broker process: {line:?}"))?;
        Ok(BrokerProcess {
            child,
            addr,
            dir: None,
        })
    }

    async fn wait_until_accepting(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the broker exited during startup: {status}");
            }
            let attempt = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(self.addr),
            )
            .await;
            if let Ok(Ok(_)) = attempt {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the broker did not accept on {} in {STARTUP:?}", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        process_status_kib(self.pid(), "VmRSS:")
    }

    /// Its peak resident memory since the last [`reset_peak`](Self::reset_peak)
    /// (or its start), in KiB.
    pub fn peak_kib(&self) -> Option<u64> {
        process_status_kib(self.pid(), "VmHWM:")
    }

    /// Resets the peak to the current resident memory (Linux).
    pub fn reset_peak(&self) {
        let _ = fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }
}

/// A size field of `/proc/{pid}/status` (`VmRSS:`, `VmHWM:`), in KiB, where
/// there is one (Linux).
pub fn process_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Serves the built-in broker when this process was started by
/// [`BrokerProcess::builtin`], and never returns then; otherwise returns at
/// once. Call it first thing in `main`, before any runtime starts. The
/// broker runs on a default multi-threaded tokio runtime, like the CLI's
/// `broker` command, and stops when the parent closes its standard input.
pub fn serve_builtin_if_asked() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(SERVE_FLAG) {
        return;
    }
    let result = (|| -> Result<()> {
        let json = args.next().context("missing configuration")?;
        let config = BrokerConfig::from_json(&json)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let broker = mqtt_broker::start(config).await?;
            println!("listening on {}", broker.local_addr());
            // Ends when the parent goes away (its end of the pipe closes).
            tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
            })
            .await?;
            broker.shutdown().await;
            anyhow::Ok(())
        })
    })();
    if let Err(e) = result {
        eprintln!("built-in broker process: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0);
}
