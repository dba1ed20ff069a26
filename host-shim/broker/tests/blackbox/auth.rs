//! Authentication: `allow_anonymous` without accounts, and password files
//! made by Mosquitto's own `mosquitto_passwd`.

use anyhow::{bail, ensure, Context, Result};
use e2e::*;
use mqtt_broker::BrokerConfig;
use std::path::{Path, PathBuf};

/// A file under the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!("e2e-broker-{name}-{}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `mosquitto_passwd ARGS` and insists it succeeds.
fn mosquitto_passwd(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("mosquitto_passwd")
        .args(args)
        .output()
        .context("cannot run mosquitto_passwd; install the Debian package mosquitto")?;
    if !out.status.success() {
        bail!(
            "mosquitto_passwd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The CONNACK code a CONNECT with these credentials gets.
async fn connack_code(
    broker: &Broker,
    level: u8,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<u8> {
    let id = format!("auth-{level}");
    let base = if level == 5 {
        RawConnect::v5(&id)
    } else {
        RawConnect::v4(&id)
    };
    let connect = RawConnect {
        username: username.map(str::to_owned),
        password: password.map(str::to_owned),
        ..base
    };
    let (mut raw, connack) = Raw::handshake(broker, &connect).await?;
    if connack.connack_code() != 0 {
        ensure!(!connack.session_present(), "refused with Session Present");
        raw.closed().await?;
    }
    Ok(connack.connack_code())
}

/// `allow_anonymous: false` with no account configured lets nobody in, any
/// user name and password included (v311 MQTT-3.1.4-4 / v5 MQTT-3.1.4-2:
/// the server authenticates before it accepts; Mosquitto does the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accounts_and_no_anonymous_refuses_everyone() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        allow_anonymous: false,
        ..config()
    })
    .await?;
    for level in [4, 5] {
        for (user, pass) in [(Some("anyone"), Some("anything")), (None, None)] {
            let code = connack_code(&broker, level, user, pass).await?;
            ensure!(
                matches!(code, 4 | 5 | 0x86 | 0x87),
                "level {level} {user:?}: expected a refusal, got {code:#04x}"
            );
        }
    }
    broker.shutdown().await
}

/// A password file made by `mosquitto_passwd`, with both of its hashes
/// (`$7$` PBKDF2-SHA512, the default, and `$6$` SHA-512), is read as
/// Mosquitto reads it: the right passwords are accepted, wrong ones and
/// unknown users refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_passwd_files_are_accepted() -> Result<()> {
    let file = TempFile::new("mosquitto-passwd");
    let path = file.0.to_str().context("temp path")?;
    mosquitto_passwd(&["-c", "-b", path, "alice", "s3cret"])?;
    mosquitto_passwd(&["-H", "sha512", "-b", path, "bob", "hunter2"])?;
    let text = std::fs::read_to_string(&file.0)?;
    ensure!(
        text.contains("alice:$7$") && text.contains("bob:$6$"),
        "{text}"
    );

    let broker = Broker::with(BrokerConfig {
        allow_anonymous: false,
        password_file: Some(file.0.clone()),
        ..config()
    })
    .await?;
    for level in [4, 5] {
        for (user, pass) in [("alice", "s3cret"), ("bob", "hunter2")] {
            let code = connack_code(&broker, level, Some(user), Some(pass)).await?;
            ensure!(code == 0, "level {level} {user}: refused with {code:#04x}");
        }
        for (user, pass) in [("alice", "hunter2"), ("bob", "s3cret"), ("carol", "s3cret")] {
            let code = connack_code(&broker, level, Some(user), Some(pass)).await?;
            ensure!(
                matches!(code, 4 | 5 | 0x86 | 0x87),
                "level {level} {user}/{pass}: expected a refusal, got {code:#04x}"
            );
        }
    }
    broker.shutdown().await
}

/// A password file that `mosquitto_passwd -U` converted from plain text is
/// read too, and a broken hash is a start error naming the file, the line
/// and the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_and_broken_password_files() -> Result<()> {
    let file = TempFile::new("mosquitto-passwd-u");
    std::fs::write(&file.0, "dave:plain-pw\n")?;
    mosquitto_passwd(&["-U", file.0.to_str().context("temp path")?])?;
    let broker = Broker::with(BrokerConfig {
        allow_anonymous: false,
        password_file: Some(file.0.clone()),
        ..config()
    })
    .await?;
    ensure!(connack_code(&broker, 5, Some("dave"), Some("plain-pw")).await? == 0);
    ensure!(connack_code(&broker, 5, Some("dave"), Some("other")).await? != 0);
    broker.shutdown().await?;

    std::fs::write(&file.0, "# accounts\nerin:$7$101$notbase64!$AAAA\n")?;
    let err = start_error(&file.0).await?;
    ensure!(
        err.contains(&file.0.display().to_string())
            && err.contains("line 2")
            && err.contains("erin")
            && err.contains("base64"),
        "{err}"
    );
    Ok(())
}

async fn start_error(password_file: &Path) -> Result<String> {
    match mqtt_broker::start(BrokerConfig {
        password_file: Some(password_file.to_owned()),
        ..config()
    })
    .await
    {
        Ok(broker) => {
            broker.shutdown().await;
            bail!("the broker started")
        }
        Err(e) => Ok(e.to_string()),
    }
}
