//! The TLS listener (`tls`): beside plain TCP, mutual TLS, the client
//! certificate's Common Name as user name, and Mosquitto's clients over
//! TLS. Certificates are made by each test (`e2e::Pki`).

use anyhow::Result;
use bytes::Bytes;
use e2e::*;
use mqtt_broker::{BrokerConfig, TlsConfig, User};
use rumqttc::{TlsConfiguration, Transport};

/// A TLS listener with the server certificate of `pki`, clients not asked
/// for a certificate.
fn tls_config(pki: &Pki) -> Result<TlsConfig> {
    let server = pki.server()?;
    Ok(TlsConfig {
        port: 0,
        cert_file: server.cert_file,
        key_file: server.key_file,
        ca_file: None,
        require_certificate: false,
        use_identity_as_username: false,
    })
}

/// The same, with client certificates required and checked against the
/// CA of `pki`.
fn mutual_tls_config(pki: &Pki) -> Result<TlsConfig> {
    Ok(TlsConfig {
        ca_file: Some(pki.ca_file().to_owned()),
        require_certificate: true,
        ..tls_config(pki)?
    })
}

async fn tls_broker(tls: TlsConfig) -> Result<Broker> {
    Broker::with(BrokerConfig {
        tls: Some(tls),
        ..config()
    })
    .await
}

/// 3.1.1 options for the broker's TLS listener, trusting `pki`'s CA and
/// presenting `client` when given.
fn v4_tls_opts(
    broker: &Broker,
    id: &str,
    pki: &Pki,
    client: Option<&Issued>,
) -> Result<rumqttc::MqttOptions> {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", broker.tls_port());
    opts.set_keep_alive(std::time::Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let tls = TlsConfiguration::Rustls(pki.client_config(client)?);
    opts.set_transport(Transport::tls_with_config(tls));
    Ok(opts)
}

/// The same for 5.0.
fn v5_tls_opts(
    broker: &Broker,
    id: &str,
    pki: &Pki,
    client: Option<&Issued>,
) -> Result<rumqttc::v5::MqttOptions> {
    let mut opts = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", broker.tls_port());
    opts.set_keep_alive(std::time::Duration::from_secs(30));
    opts.set_max_packet_size(Some(1 << 20));
    let tls = TlsConfiguration::Rustls(pki.client_config(client)?);
    opts.set_transport(Transport::tls_with_config(tls));
    Ok(opts)
}

/// A TLS client and a plain one share the broker: what one publishes the
/// other receives, both ways, and the handle gives the `mqtts://` URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_beside_plain_tcp() -> Result<()> {
    let pki = Pki::new("test CA")?;
    let broker = tls_broker(tls_config(&pki)?).await?;
    let mut secure = V4::connect(v4_tls_opts(&broker, "over-tls", &pki, None)?).await?;
    secure.subscribe("tls/in", 1).await?;
    let mut plain = V5::connect(v5_opts(&broker, "over-tcp")).await?;
    plain.subscribe("tls/out", 1).await?;

    plain
        .publish("tls/in", 1, false, b"to the tls client")
        .await?;
    let got = secure.next_publish().await?;
    assert_eq!(got.payload, Bytes::from("to the tls client"));
    // A payload larger than one TLS record and than the read-ahead chunk.
    let big = vec![b'x'; 100_000];
    secure.publish("tls/out", 1, false, &big).await?;
    let got = plain.next_publish().await?;
    assert_eq!(got.payload, Bytes::from(big));
    secure.disconnect().await?;
    plain.disconnect().await?;
    broker.shutdown().await
}

/// `require_certificate`: a client without a certificate fails the
/// handshake, and so does one whose certificate another CA signed; one
/// with a certificate of the configured CA connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_of_the_ca() -> Result<()> {
    let pki = Pki::new("test CA")?;
    let broker = tls_broker(mutual_tls_config(&pki)?).await?;

    let refused = V5::refused(v5_tls_opts(&broker, "no-cert", &pki, None)?).await?;
    let text = format!("{refused:?}");
    assert!(text.contains("CertificateRequired"), "{text}");

    let stranger_ca = Pki::new("another CA")?;
    let stranger = stranger_ca.client("stranger")?;
    let refused = V4::refused(v4_tls_opts(&broker, "stranger", &pki, Some(&stranger))?).await?;
    let text = format!("{refused:?}");
    assert!(
        text.contains("UnknownCA") || text.contains("BadCertificate"),
        "{text}"
    );

    let device = pki.client("device-1")?;
    let client = V5::connect(v5_tls_opts(&broker, "with-cert", &pki, Some(&device))?).await?;
    client.disconnect().await?;
    broker.shutdown().await
}

/// `use_identity_as_username`: the certificate's Common Name is the user
/// name. Anonymous clients are refused on the plain listener, yet a TLS
/// client without a user name is accepted (its certificate names it), and
/// so is one whose CONNECT carries a wrong password: the certificate
/// authenticates, not the password (as in Mosquitto).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_as_username_authenticates_by_certificate() -> Result<()> {
    let pki = Pki::new("test CA")?;
    let broker = Broker::with(BrokerConfig {
        allow_anonymous: false,
        users: vec![User {
            username: "device-7".to_owned(),
            password: "secret".to_owned(),
        }],
        tls: Some(TlsConfig {
            use_identity_as_username: true,
            ..mutual_tls_config(&pki)?
        }),
        ..config()
    })
    .await?;

    let refused = V4::refused(v4_opts(&broker, "anonymous")).await?;
    assert!(
        matches!(
            refused,
            rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::NotAuthorized)
        ),
        "{refused:?}"
    );

    let device = pki.client("device-7")?;
    let client = V4::connect(v4_tls_opts(&broker, "cert-only", &pki, Some(&device))?).await?;
    client.disconnect().await?;

    let mut opts = v5_tls_opts(&broker, "wrong-password", &pki, Some(&device))?;
    opts.set_credentials("device-7", "not the password");
    let client = V5::connect(opts).await?;
    client.disconnect().await?;
    broker.shutdown().await
}

/// `mosquitto_pub --cafile` publishes over TLS and `mosquitto_sub
/// --cafile` receives over TLS; with mutual TLS, both with `--cert` and
/// `--key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_over_tls_and_mutual_tls() -> Result<()> {
    let pki = Pki::new("test CA")?;
    let ca = pki.ca_file().to_string_lossy().into_owned();
    for mutual in [false, true] {
        let tls = if mutual {
            mutual_tls_config(&pki)?
        } else {
            tls_config(&pki)?
        };
        let broker = tls_broker(tls).await?;
        let client = pki.client("mosquitto-client")?;
        let cert = client.cert_file.to_string_lossy().into_owned();
        let key = client.key_file.to_string_lossy().into_owned();
        let mut tls_args = vec!["--cafile", ca.as_str()];
        if mutual {
            tls_args.extend(["--cert", cert.as_str(), "--key", key.as_str()]);
        }
        for v5 in [false, true] {
            let mut sub_args = tls_args.clone();
            sub_args.extend(["-t", "tls/mosq", "-C", "1", "-W", "10"]);
            let mut sub = MosquittoSub::start_tls(&broker, v5, &sub_args)?;
            sub.subscribed().await?;
            let payload = format!("over tls, mutual {mutual}, v5 {v5}");
            let mut pub_args = tls_args.clone();
            pub_args.extend(["-t", "tls/mosq", "-m", payload.as_str()]);
            mosquitto_pub_tls(&broker, v5, &pub_args).await?;
            let messages = sub.messages().await?;
            assert_eq!(messages.len(), 1, "{messages:?}");
            assert_eq!(messages[0].3, payload);
        }
        if mutual {
            // Without a client certificate Mosquitto's client is refused.
            let mut pub_args = vec!["--cafile", ca.as_str()];
            pub_args.extend(["-t", "tls/mosq", "-m", "no cert"]);
            let refused = mosquitto_pub_tls(&broker, false, &pub_args).await;
            assert!(refused.is_err(), "published without a client certificate");
        }
        broker.shutdown().await?;
    }
    Ok(())
}

/// `use_identity_as_username` with an `acl_file`: the certificate's Common
/// Name is the `%u` of the ACL's patterns, whatever user name the CONNECT
/// carries, so a device reads and writes under its own name only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_name_is_the_acl_user() -> Result<()> {
    let pki = Pki::new("test CA")?;
    let acl = std::env::temp_dir().join(format!("e2e-broker-tls-acl-{}", std::process::id()));
    std::fs::write(&acl, "pattern readwrite devices/%u/#\n")?;
    let broker = Broker::with(BrokerConfig {
        allow_anonymous: false,
        users: vec![User {
            username: "device-7".to_owned(),
            password: "secret".to_owned(),
        }],
        acl_file: Some(acl.clone()),
        tls: Some(TlsConfig {
            use_identity_as_username: true,
            ..mutual_tls_config(&pki)?
        }),
        ..config()
    })
    .await;
    let _ = std::fs::remove_file(&acl);
    let broker = broker?;

    let device = pki.client("device-7")?;
    let mut opts = v5_tls_opts(&broker, "acl-by-cert", &pki, Some(&device))?;
    // The CONNECT claims another name; the certificate decides.
    opts.set_credentials("device-8", "secret");
    let mut client = V5::connect(opts).await?;
    assert_eq!(client.subscribe("devices/device-7/#", 1).await?, 1);
    let refused = client.subscribe("devices/device-8/#", 1).await.unwrap_err();
    assert!(refused.to_string().contains("NotAuthorized"), "{refused}");
    client
        .publish("devices/device-7/state", 1, false, b"mine")
        .await?;
    let got = client.next_publish().await?;
    assert_eq!(got.payload, Bytes::from("mine"));
    client.disconnect().await?;
    broker.shutdown().await
}
