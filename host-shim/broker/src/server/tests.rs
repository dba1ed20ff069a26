//! The shell over real sockets on loopback: handshakes, limits,
//! timeouts, shutdown and configuration errors.

use super::reader::CONNECT_TIMEOUT;
use super::*;
use crate::{BrokerConfig, RetainStorage};
use e2e::{raw_publish, raw_subscribe, raw_subscribe_many, RawConnect};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

/// A 3.1.1 CONNECT, clean session, keep alive 60, client id `test`, with
/// the protocol level given.
fn connect_v311(level: u8) -> Vec<u8> {
    RawConnect {
        level,
        keep_alive: 60,
        ..RawConnect::v4("test")
    }
    .encode()
}

/// A 5.0 CONNECT, clean start, keep alive 60, no properties, client id
/// `test5`.
fn connect_v5() -> Vec<u8> {
    RawConnect {
        keep_alive: 60,
        ..RawConnect::v5("test5")
    }
    .encode()
}

/// Everything the server sends until it closes, or fails after 5 s.
pub(super) async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("the server did not close")
        .expect("read failed");
    out
}

async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    timeout(Duration::from_secs(5), stream.read_exact(&mut out))
        .await
        .expect("nothing received")
        .expect("read failed");
    out
}

#[tokio::test]
async fn connect_gets_connack() {
    let broker = start(BrokerConfig::ephemeral()).await.unwrap();
    assert_eq!(broker.url(), format!("mqtt://{}", broker.local_addr()));
    let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
    client.write_all(&connect_v311(4)).await.unwrap();
    assert_eq!(read_exact(&mut client, 4).await, [0x20, 0x02, 0x00, 0x00]);

    // PINGREQ, PINGRESP.
    client.write_all(&[0xC0, 0x00]).await.unwrap();
    assert_eq!(read_exact(&mut client, 2).await, [0xD0, 0x00]);

    timeout(Duration::from_secs(5), broker.shutdown())
        .await
        .expect("shutdown hangs");
    // 3.1.1 has no server DISCONNECT: just the close.
    assert_eq!(read_to_end(&mut client).await, b"");
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_1_then_eof() {
    let broker = start(BrokerConfig::ephemeral()).await.unwrap();
    let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
    client.write_all(&connect_v311(6)).await.unwrap();
    // MQTT-3.1.2-2.
    assert_eq!(read_to_end(&mut client).await, [0x20, 0x02, 0x00, 0x01]);
    broker.shutdown().await;
}

#[tokio::test]
async fn malformed_first_packet_closes() {
    let broker = start(BrokerConfig::ephemeral()).await.unwrap();
    let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
    // A SUBSCRIBE before CONNECT.
    client
        .write_all(&raw_subscribe(4, 1, "a", 0))
        .await
        .unwrap();
    read_to_end(&mut client).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_disconnects_v5_clients_with_0x8b() {
    let broker = start(BrokerConfig::ephemeral()).await.unwrap();
    let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
    client.write_all(&connect_v5()).await.unwrap();
    let connack = read_exact(&mut client, 2).await;
    assert_eq!(connack[0], 0x20);
    read_exact(&mut client, usize::from(connack[1])).await;

    timeout(Duration::from_secs(5), broker.shutdown())
        .await
        .expect("shutdown hangs");
    let rest = read_to_end(&mut client).await;
    assert_eq!(rest.first(), Some(&0xE0), "{rest:02x?}");
    assert_eq!(rest.get(2), Some(&0x8B), "{rest:02x?}");
}

#[tokio::test]
async fn shutdown_closes_connections_without_connect() {
    let broker = start(BrokerConfig::ephemeral()).await.unwrap();
    let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
    // Let the connection task start.
    sleep(Duration::from_millis(50)).await;
    timeout(Duration::from_secs(5), broker.shutdown())
        .await
        .expect("shutdown hangs");
    assert_eq!(read_to_end(&mut client).await, b"");
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_connect_timeout() {
    let broker = start(BrokerConfig::ephemeral()).await.unwrap();
    let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
    let started = Instant::now();
    assert_eq!(read_to_end(&mut client).await, b"");
    assert!(started.elapsed() >= CONNECT_TIMEOUT);
    broker.shutdown().await;
}

#[tokio::test]
async fn dropping_the_handle_stops_listening() {
    let broker = start(BrokerConfig::ephemeral()).await.unwrap();
    let addr = broker.local_addr();
    drop(broker);
    timeout(Duration::from_secs(5), async {
        while TcpStream::connect(addr).await.is_ok() {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("still listening");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait() {
    let config = BrokerConfig {
        max_connections: 1,
        ..BrokerConfig::ephemeral()
    };
    let broker = start(config).await.unwrap();
    let mut first = TcpStream::connect(broker.local_addr()).await.unwrap();
    first.write_all(&connect_v311(4)).await.unwrap();
    read_exact(&mut first, 4).await;

    let mut second = TcpStream::connect(broker.local_addr()).await.unwrap();
    second.write_all(&connect_v311(4)).await.unwrap();
    let mut byte = [0u8; 1];
    let waited = timeout(Duration::from_millis(200), second.read(&mut byte)).await;
    assert!(waited.is_err(), "second connection served while first open");

    drop(first);
    assert_eq!(read_exact(&mut second, 4).await, [0x20, 0x02, 0x00, 0x00]);
    broker.shutdown().await;
}

#[tokio::test]
async fn invalid_config_is_refused() {
    for (config, key) in [
        (
            BrokerConfig {
                maximum_qos: 3,
                ..BrokerConfig::ephemeral()
            },
            "maximum_qos",
        ),
        (
            BrokerConfig {
                receive_maximum: 0,
                ..BrokerConfig::ephemeral()
            },
            "receive_maximum",
        ),
        (
            BrokerConfig {
                max_inflight: 0,
                ..BrokerConfig::ephemeral()
            },
            "max_inflight",
        ),
        (
            BrokerConfig {
                max_connections: 0,
                ..BrokerConfig::ephemeral()
            },
            "max_connections",
        ),
        (
            BrokerConfig {
                password_file: Some("/nonexistent/host-shim/passwords".into()),
                ..BrokerConfig::ephemeral()
            },
            "password_file",
        ),
    ] {
        match start(config).await {
            Err(StartError::Config(msg)) => assert!(msg.contains(key), "{msg}"),
            other => panic!("{key}: expected a config error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn bind_errors_name_the_address() {
    let config = BrokerConfig {
        host: "203.0.113.1".to_owned(),
        ..BrokerConfig::ephemeral()
    };
    match start(config).await {
        Err(err @ StartError::Bind { .. }) => {
            assert!(err.to_string().contains("203.0.113.1:0"), "{err}")
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
}

#[tokio::test]
async fn password_file_accounts_reach_the_core() {
    let path = std::env::temp_dir().join(format!("host-shim-passwords-{}", std::process::id()));
    std::fs::write(&path, "alice:secret\n").unwrap();
    let config = BrokerConfig {
        allow_anonymous: false,
        password_file: Some(path.clone()),
        ..BrokerConfig::ephemeral()
    };
    let broker = start(config).await;
    std::fs::remove_file(&path).unwrap();
    let broker = broker.unwrap();

    let login = |password: &str| {
        // 3.1.1 CONNECT with username `alice` and the password given.
        RawConnect {
            keep_alive: 60,
            username: Some("alice".to_owned()),
            password: Some(password.to_owned()),
            ..RawConnect::v4("c")
        }
        .encode()
    };
    let mut good = TcpStream::connect(broker.local_addr()).await.unwrap();
    good.write_all(&login("secret")).await.unwrap();
    assert_eq!(read_exact(&mut good, 4).await, [0x20, 0x02, 0x00, 0x00]);

    let mut bad = TcpStream::connect(broker.local_addr()).await.unwrap();
    bad.write_all(&login("wrong")).await.unwrap();
    let refused = read_exact(&mut bad, 4).await;
    assert_eq!(&refused[..3], [0x20, 0x02, 0x00]);
    assert_ne!(refused[3], 0x00, "wrong password accepted");
    broker.shutdown().await;
}

/// Reads one packet: its first byte and its body.
async fn read_packet(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let first = read_exact(stream, 1).await[0];
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let byte = read_exact(stream, 1).await[0];
        len |= usize::from(byte & 0x7F) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    (first, read_exact(stream, len).await)
}

#[tokio::test]
async fn slow_subscriber_loses_qos0_but_not_qos1() {
    const COUNT: usize = 2000;
    let config = BrokerConfig {
        max_queued_messages: 10,
        ..BrokerConfig::ephemeral()
    };
    let broker = start(config).await.unwrap();

    let mut sub = TcpStream::connect(broker.local_addr()).await.unwrap();
    sub.write_all(&connect_v311(4)).await.unwrap();
    read_exact(&mut sub, 4).await;
    // SUBSCRIBE t at QoS 0 and m at QoS 1.
    sub.write_all(&raw_subscribe_many(4, 1, &[("t", 0), ("m", 1)]))
        .await
        .unwrap();
    assert_eq!(read_packet(&mut sub).await, (0x90, vec![0, 1, 0, 1]));

    let mut publisher = TcpStream::connect(broker.local_addr()).await.unwrap();
    let mut connect = connect_v311(4);
    *connect.last_mut().unwrap() = b'p';
    publisher.write_all(&connect).await.unwrap();
    read_exact(&mut publisher, 4).await;
    let message = raw_publish(4, "t", 0, 0, false, false, &[7; 16 * 1024]);
    for _ in 0..COUNT {
        publisher.write_all(&message).await.unwrap();
    }
    publisher
        .write_all(&raw_publish(4, "m", 1, 9, false, false, b"end"))
        .await
        .unwrap();
    // The PUBACK: the router has handled every message before it.
    assert_eq!(read_packet(&mut publisher).await, (0x40, vec![0, 9]));

    let mut received = 0;
    loop {
        let (first, body) = read_packet(&mut sub).await;
        assert_eq!(first & 0xF0, 0x30, "not a PUBLISH");
        if body[2] == b'm' {
            assert_eq!(first, 0x32, "the QoS 1 message keeps its QoS");
            break;
        }
        received += 1;
    }
    assert!(received < COUNT, "nothing dropped");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_store_that_cannot_be_opened_is_an_error() {
    let path = std::env::temp_dir().join("host-shim-no-such-dir/retained.redb");
    let mut config = BrokerConfig::ephemeral();
    config.retain.storage = RetainStorage::Disk(path);
    let err = start(config).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot open the retained message store"),
        "{err}"
    );
}
