//! The connector's `mqtts://` path end to end against the built-in
//! broker's TLS listener: the broker verified with `tls.ca_file`, mutual
//! TLS with a client certificate, and a distinct message for each way a
//! TLS connection fails. Certificates are made by each test (`e2e::Pki`).

use crate::common::*;
use e2e::{Issued, Pki};
use host_shim::host::{ErrorCode, OperationError};
use mqtt_broker::{self as broker, BrokerConfig, BrokerHandle, TlsConfig};
use serde_json::json;

/// The built-in broker with a TLS listener serving `server`; client
/// certificates of `pki`'s CA are required when `mutual`.
async fn tls_broker(pki: &Pki, server: &Issued, mutual: bool) -> anyhow::Result<BrokerHandle> {
    let config = BrokerConfig {
        tls: Some(TlsConfig {
            port: 0,
            cert_file: server.cert_file.clone(),
            key_file: server.key_file.clone(),
            ca_file: mutual.then(|| pki.ca_file().to_owned()),
            require_certificate: mutual,
            use_identity_as_username: false,
        }),
        ..BrokerConfig::ephemeral()
    };
    let handle = within("the TLS broker to start", broker::start(config)).await??;
    Ok(handle)
}

/// A connection configuration for `url` with the `tls` object given.
fn connection(url: &str, version: Version, tls: serde_json::Value) -> String {
    json!({
        "url": url,
        "mqtt_version": version.config_value(),
        "connect_timeout_ms": 5000,
        "tls": tls,
    })
    .to_string()
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The `tls` object trusting `pki`'s CA, with `client`'s certificate.
fn tls_options(pki: &Pki, client: Option<&Issued>) -> serde_json::Value {
    match client {
        Some(client) => json!({
            "ca_file": path(pki.ca_file()),
            "client_cert_file": path(&client.cert_file),
            "client_key_file": path(&client.key_file),
        }),
        None => json!({"ca_file": path(pki.ca_file())}),
    }
}

/// A message sent over `mqtts://` reaches a listener over `mqtts://`.
async fn round_trip(connection: &str, topic: &str) -> anyhow::Result<()> {
    let mut listener =
        open_listener(connection, json!({"subscriptions": [{"filter": topic}]})).await?;
    let mut sender = open_sender(&runtime(), connection, json!({"topic": topic, "qos": 1})).await?;
    send_ok(&mut sender, &[doc("over tls")]).await?;
    let docs = receive(&mut listener, 1).await?;
    assert_eq!(docs[0].payload, b"over tls");
    commit(&mut listener, &docs).await?;
    close_sender(sender).await?;
    close_listener(listener).await
}

/// Server verification with `tls.ca_file`, in both protocol versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_verifies_the_broker_with_ca_file() -> anyhow::Result<()> {
    let pki = Pki::new("test CA")?;
    let broker = tls_broker(&pki, &pki.server()?, false).await?;
    let url = broker.tls_url().expect("a TLS listener");
    assert!(url.starts_with("mqtts://127.0.0.1:"), "{url}");
    for version in [Version::V5, Version::V311] {
        round_trip(
            &connection(&url, version, tls_options(&pki, None)),
            "tls/ca",
        )
        .await?;
    }
    broker.shutdown().await;
    Ok(())
}

/// Mutual TLS: the broker requires a client certificate of its CA, and the
/// connector presents `tls.client_cert_file` with its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_mutual_tls_with_a_client_certificate() -> anyhow::Result<()> {
    let pki = Pki::new("test CA")?;
    let broker = tls_broker(&pki, &pki.server()?, true).await?;
    let url = broker.tls_url().expect("a TLS listener");
    let client = pki.client("connector")?;
    for version in [Version::V5, Version::V311] {
        let connection = connection(&url, version, tls_options(&pki, Some(&client)));
        round_trip(&connection, "tls/mutual").await?;
    }
    broker.shutdown().await;
    Ok(())
}

/// The message of the connection error opening a sender with `connection`
/// gets.
async fn connect_error(connection: &str) -> anyhow::Result<String> {
    let opened = within(
        "the sender to fail",
        runtime().open_sender(connection, &json!({"topic": "tls/x"}).to_string()),
    )
    .await?;
    match opened {
        Ok(_) => anyhow::bail!("connected, expected a TLS failure: {connection}"),
        Err(OperationError::Connector(e)) => {
            assert_eq!(e.code, ErrorCode::ConnectionFailed, "{e:?}");
            Ok(e.message)
        }
        Err(OperationError::Trap(t)) => anyhow::bail!("a connection error is not a trap: {t}"),
    }
}

/// Each way a TLS connection fails has its own message saying what is
/// wrong and what to do: an unknown CA, an expired or wrong-host broker
/// certificate, a missing client certificate, and a plain TCP port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_failures_have_distinct_messages() -> anyhow::Result<()> {
    let pki = Pki::new("test CA")?;
    let version = Version::V5;

    let other_ca = Pki::new("another CA")?;
    let broker = tls_broker(&pki, &pki.server()?, false).await?;
    let url = broker.tls_url().expect("a TLS listener");
    let unknown_ca =
        connect_error(&connection(&url, version, tls_options(&other_ca, None))).await?;
    assert!(
        unknown_ca.contains("not signed by the CA in tls.ca_file"),
        "{unknown_ca}"
    );

    // The plain listener of the same broker, with an mqtts:// URL.
    let plain = broker.url().replace("mqtt://", "mqtts://");
    let not_tls = connect_error(&connection(&plain, version, tls_options(&pki, None))).await?;
    assert!(
        not_tls.contains("does not speak TLS on this port")
            && not_tls.contains("use mqtt:// or the broker's TLS port"),
        "{not_tls}"
    );
    broker.shutdown().await;

    let broker = tls_broker(&pki, &pki.expired_server()?, false).await?;
    let url = broker.tls_url().expect("a TLS listener");
    let expired = connect_error(&connection(&url, version, tls_options(&pki, None))).await?;
    assert!(
        expired.contains("the broker's certificate has expired"),
        "{expired}"
    );
    broker.shutdown().await;

    let broker = tls_broker(&pki, &pki.wrong_host_server()?, false).await?;
    let url = broker.tls_url().expect("a TLS listener");
    let wrong_host = connect_error(&connection(&url, version, tls_options(&pki, None))).await?;
    assert!(
        wrong_host.contains("the broker's certificate is for another host name, not 127.0.0.1"),
        "{wrong_host}"
    );
    broker.shutdown().await;

    let broker = tls_broker(&pki, &pki.server()?, true).await?;
    let url = broker.tls_url().expect("a TLS listener");
    let no_client_cert = connect_error(&connection(&url, version, tls_options(&pki, None))).await?;
    assert!(
        no_client_cert.contains(
            "the broker requires a client certificate: set tls.client_cert_file and tls.client_key_file"
        ),
        "{no_client_cert}"
    );
    // A client certificate of another CA is refused with its own message.
    let stranger = other_ca.client("stranger")?;
    let mut options = tls_options(&pki, Some(&stranger));
    options["ca_file"] = json!(path(pki.ca_file()));
    let refused_cert = connect_error(&connection(&url, version, options)).await?;
    assert!(
        refused_cert.contains("the broker refused the client certificate"),
        "{refused_cert}"
    );
    broker.shutdown().await;

    let all = [
        &unknown_ca,
        &not_tls,
        &expired,
        &wrong_host,
        &no_client_cert,
        &refused_cert,
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b, "two failures with one message");
        }
    }
    Ok(())
}
