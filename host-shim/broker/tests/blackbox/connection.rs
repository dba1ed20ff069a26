//! Connection-level behaviour: keep alive, client identifiers, session
//! takeover and authentication.

use anyhow::{ensure, Result};
use bytes::Bytes;
use e2e::*;
use mqtt_broker::{BrokerConfig, User};
use std::time::{Duration, Instant};

/// A client with keep alive 1 s that sends nothing after CONNECT is
/// disconnected after 1.5 × keep alive (v311 MQTT-3.1.2-24, v5
/// MQTT-3.1.2-22), not before.
async fn silent_client_disconnected(level: u8) -> Result<()> {
    let broker = Broker::start().await?;
    let mut connect = if level == 5 {
        RawConnect::v5("ka-silent")
    } else {
        RawConnect::v4("ka-silent")
    };
    connect.keep_alive = 1;
    // Measured from before the CONNECT is sent, so the broker's own timer
    // (started on receipt) can only have started later.
    let start = Instant::now();
    let mut raw = Raw::connected(&broker, &connect).await?;
    let frames = raw.closed().await?;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400),
        "closed after {elapsed:?}: the broker must allow 1.5 × keep alive"
    );
    if level == 5 {
        for f in &frames {
            assert!(
                f.kind() == kind::DISCONNECT && f.disconnect_reason() == 0x8D,
                "only DISCONNECT 0x8D may precede the close: {f:?}"
            );
        }
    } else {
        assert!(
            frames.is_empty(),
            "3.1.1 has no server DISCONNECT: {frames:?}"
        );
    }
    broker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_keep_alive_timeout_mqtt_3_1_2_24() -> Result<()> {
    silent_client_disconnected(4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_keep_alive_timeout_mqtt_3_1_2_22() -> Result<()> {
    silent_client_disconnected(5).await
}

/// A client that keeps sending PINGREQ within its keep alive stays connected
/// and gets a PINGRESP for each (MQTT-3.12.4-1, both versions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_kept_by_pings_mqtt_3_12_4_1() -> Result<()> {
    let broker = Broker::start().await?;
    let pinger = |level: u8| {
        let broker = &broker;
        async move {
            let mut connect = if level == 5 {
                RawConnect::v5("ka-pings-5")
            } else {
                RawConnect::v4("ka-pings-4")
            };
            connect.keep_alive = 1;
            let mut raw = Raw::connected(broker, &connect).await?;
            // 2 s in all: past 1.5 × keep alive.
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                raw.send(&[0xC0, 0x00]).await?;
                let f = raw.recv().await?;
                ensure!(f.kind() == kind::PINGRESP, "level {level}: {f:?}");
            }
            anyhow::Ok(())
        }
    };
    let (v4, v5) = tokio::join!(pinger(4), pinger(5));
    v4?;
    v5?;
    broker.shutdown().await
}

/// 5.0: an empty Client Identifier is accepted and the CONNACK carries an
/// Assigned Client Identifier (MQTT-3.1.3-6, MQTT-3.2.2-16), different for
/// each client (MQTT-3.1.3-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_empty_client_id_assigned_mqtt_3_1_3_6_and_3_2_2_16() -> Result<()> {
    let broker = Broker::start().await?;
    let a = V5::connect(v5_opts(&broker, "")).await?;
    let b = V5::connect(v5_opts(&broker, "")).await?;
    let id_a = a.connack_props()?.assigned_client_identifier;
    let id_b = b.connack_props()?.assigned_client_identifier;
    let id_a = id_a.expect("Assigned Client Identifier in CONNACK");
    let id_b = id_b.expect("Assigned Client Identifier in CONNACK");
    assert!(!id_a.is_empty());
    assert_ne!(id_a, id_b, "assigned identifiers must be unique");

    // Both connections stay usable: neither took the other over.
    let (mut a, mut b) = (a, b);
    a.sync().await?;
    b.sync().await?;
    broker.shutdown().await
}

/// 3.1.1: an empty Client Identifier with Clean Session 0 is refused with
/// return code 0x02 and the connection closed (v311 MQTT-3.1.3-8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_empty_client_id_persistent_refused_mqtt_3_1_3_8() -> Result<()> {
    let broker = Broker::start().await?;
    let connect = RawConnect {
        clean: false,
        ..RawConnect::v4("")
    };
    let (mut raw, connack) = Raw::handshake(&broker, &connect).await?;
    assert_eq!(
        connack.connack_code(),
        0x02,
        "Identifier rejected: {connack:?}"
    );
    assert!(!connack.session_present(), "v311 MQTT-3.2.2-4");
    raw.closed().await?;
    broker.shutdown().await
}

/// 3.1.1: an empty Client Identifier with Clean Session 1 is accepted (the
/// broker assigns one, v311 MQTT-3.1.3-6) and the connection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_empty_client_id_clean_accepted_mqtt_3_1_3_6() -> Result<()> {
    let broker = Broker::start().await?;
    let (mut raw, connack) = Raw::handshake(&broker, &RawConnect::v4("")).await?;
    assert_eq!(connack.connack_code(), 0, "{connack:?}");
    raw.send(&raw_subscribe(4, 1, "anon/t", 1)).await?;
    let suback = raw.recv().await?;
    assert_eq!((suback.kind(), suback.pkid()), (kind::SUBACK, 1));

    let mut publ = V4::connect(v4_opts(&broker, "anon-pub")).await?;
    publ.publish("anon/t", 1, false, b"hi").await?;
    let got = raw.recv().await?.publish(false)?;
    assert_eq!(got.payload, Bytes::from_static(b"hi"));
    broker.shutdown().await
}

/// 3.1.1: a second connection with the same Client Identifier disconnects
/// the first (v311 MQTT-3.1.4-2); the second works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_session_takeover_mqtt_3_1_4_2() -> Result<()> {
    let broker = Broker::start().await?;
    let mut first = V4::connect(v4_opts(&broker, "v4-takeover")).await?;
    let mut second = V4::connect(v4_opts(&broker, "v4-takeover")).await?;
    let why = first.inbox.ended().await?;
    assert!(
        !matches!(why, rumqttc::ConnectionError::ConnectionRefused(_)),
        "the first connection must be closed, not refused: {why:?}"
    );

    second.subscribe("takeover/t", 1).await?;
    second.publish("takeover/t", 1, false, b"mine").await?;
    assert_eq!(
        second.next_publish().await?.payload,
        Bytes::from_static(b"mine")
    );
    broker.shutdown().await
}

/// 5.0: the first connection gets DISCONNECT 0x8E (Session taken over) and
/// is closed (v5 MQTT-3.1.4-3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_takeover_0x8e_mqtt_3_1_4_3() -> Result<()> {
    let broker = Broker::start().await?;
    let mut first = V5::connect(v5_opts(&broker, "v5-takeover")).await?;
    let mut second = V5::connect(v5_opts(&broker, "v5-takeover")).await?;
    let why = first.inbox.ended().await?;
    assert_eq!(
        server_disconnect_reason(why),
        Some(p5::DisconnectReasonCode::SessionTakenOver),
        "{why:?}"
    );
    second.sync().await?;
    broker.shutdown().await
}

fn auth_config() -> BrokerConfig {
    BrokerConfig {
        allow_anonymous: false,
        users: vec![User {
            username: "alice".to_owned(),
            password: "s3cret".to_owned(),
        }],
        ..config()
    }
}

/// 3.1.1 with `allow_anonymous = false`: the configured account is accepted
/// (v311 MQTT-3.1.4-4); a wrong password, an unknown user and no credentials
/// get return code 4 or 5 with Session Present 0 (MQTT-3.2.2-4/5), then the
/// connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_username_password_mqtt_3_1_4_4_and_3_2_2_5() -> Result<()> {
    let broker = Broker::with(auth_config()).await?;
    let mut ok = v4_opts(&broker, "v4-auth-ok");
    ok.set_credentials("alice", "s3cret");
    V4::connect(ok).await?.disconnect().await?;

    let refused: [(Option<&str>, Option<&str>); 4] = [
        (Some("alice"), Some("wrong")),
        (Some("mallory"), Some("s3cret")),
        (Some("alice"), None),
        (None, None),
    ];
    for (user, pass) in refused {
        let connect = RawConnect {
            username: user.map(str::to_owned),
            password: pass.map(str::to_owned),
            ..RawConnect::v4("v4-auth-bad")
        };
        let (mut raw, connack) = Raw::handshake(&broker, &connect).await?;
        assert!(
            matches!(connack.connack_code(), 4 | 5),
            "{user:?}/{pass:?}: expected return code 4 or 5, got {connack:?}"
        );
        assert!(!connack.session_present());
        raw.closed().await?;
    }
    broker.shutdown().await
}

/// 5.0 with `allow_anonymous = false`: good credentials accepted (v5
/// MQTT-3.1.4-5); bad ones get 0x86 (Bad User Name or Password) or 0x87
/// (Not authorized), Session Present 0 (MQTT-3.2.2-6), and the connection is
/// closed (MQTT-3.1.4-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_username_password_mqtt_3_1_4_2_and_3_2_2_6() -> Result<()> {
    let broker = Broker::with(auth_config()).await?;
    let mut ok = v5_opts(&broker, "v5-auth-ok");
    ok.set_credentials("alice", "s3cret");
    V5::connect(ok).await?.disconnect().await?;

    let refused: [(Option<&str>, Option<&str>); 3] = [
        (Some("alice"), Some("wrong")),
        (Some("mallory"), Some("s3cret")),
        (None, None),
    ];
    for (user, pass) in refused {
        let connect = RawConnect {
            username: user.map(str::to_owned),
            password: pass.map(str::to_owned),
            ..RawConnect::v5("v5-auth-bad")
        };
        let (mut raw, connack) = Raw::handshake(&broker, &connect).await?;
        assert!(
            matches!(connack.connack_code(), 0x86 | 0x87),
            "{user:?}/{pass:?}: expected 0x86 or 0x87, got {connack:?}"
        );
        assert!(!connack.session_present());
        raw.closed().await?;
    }
    broker.shutdown().await
}

/// Accounts from `password_file` (`username:password` lines) are accepted,
/// others refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_file_accounts() -> Result<()> {
    let path = std::env::temp_dir().join(format!("e2e-broker-passwd-{}", std::process::id()));
    std::fs::write(&path, "bob:hunter2\n")?;
    let broker = Broker::with(BrokerConfig {
        allow_anonymous: false,
        password_file: Some(path.clone()),
        ..config()
    })
    .await;
    let outcome = async {
        let broker = broker?;
        let mut bob = v4_opts(&broker, "pf-bob");
        bob.set_credentials("bob", "hunter2");
        V4::connect(bob).await?.disconnect().await?;

        let mut eve = v4_opts(&broker, "pf-eve");
        eve.set_credentials("bob", "hunter3");
        let why = V4::refused(eve).await?;
        ensure!(
            matches!(
                why,
                rumqttc::ConnectionError::ConnectionRefused(
                    rumqttc::ConnectReturnCode::BadUserNamePassword
                        | rumqttc::ConnectReturnCode::NotAuthorized
                )
            ),
            "wrong password must be refused with 4 or 5: {why:?}"
        );

        let mut eve5 = v5_opts(&broker, "pf-eve5");
        eve5.set_credentials("bob", "hunter3");
        let why = V5::refused(eve5).await?;
        ensure!(
            matches!(
                why,
                rumqttc::v5::ConnectionError::ConnectionRefused(
                    p5::ConnectReturnCode::BadUserNamePassword
                        | p5::ConnectReturnCode::NotAuthorized
                )
            ),
            "5.0: wrong password must be refused with 0x86 or 0x87: {why:?}"
        );
        broker.shutdown().await
    }
    .await;
    let _ = std::fs::remove_file(&path);
    outcome
}
