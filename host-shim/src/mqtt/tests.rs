//! End-to-end tests of [`MqttClient`] against the built-in broker and, when
//! `/usr/sbin/mosquitto` is installed, against Mosquitto (each test starts
//! its own on a free loopback port and stops it).

use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector::model::{
    parse_topic_filter, parse_topic_name, ConnectOptions, ErrorCode, Incoming, MessageProperties,
    MqttVersion, Outgoing, QoS, Subscription,
};

use super::MqttClient;
use e2e::{BrokerProcess, MOSQUITTO};
use mqtt_broker::{self as broker, BrokerConfig, BrokerHandle, User};

const BOTH: [MqttVersion; 2] = [MqttVersion::V311, MqttVersion::V5];

/// A name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn options(url: &str, protocol: MqttVersion, client_id: &str) -> ConnectOptions {
    ConnectOptions {
        url: url.to_owned(),
        protocol,
        client_id: client_id.to_owned(),
        username: None,
        password: None,
        keep_alive: Duration::from_secs(30),
        clean_start: true,
        session_expiry: 0,
        connect_timeout: Duration::from_secs(5),
        tls: None,
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        send_timeout: Duration::from_secs(10),
        will: None,
        inflight_window: 32,
        receive_maximum: 64,
    }
}

/// Options for a session the broker keeps after the client goes away
/// (3.1.1 keeps only sessions that did not start clean).
fn persistent(url: &str, protocol: MqttVersion, client_id: &str) -> ConnectOptions {
    ConnectOptions {
        clean_start: false,
        session_expiry: 300,
        ..options(url, protocol, client_id)
    }
}

fn message(topic: &str, payload: &str, qos: QoS) -> Outgoing {
    Outgoing {
        topic: topic.parse().unwrap(),
        payload: payload.as_bytes().to_vec(),
        qos,
        retain: false,
        properties: MessageProperties::default(),
    }
}

fn subscription(filter: &str, qos: QoS) -> Subscription {
    Subscription {
        filter: filter.parse().unwrap(),
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
    }
}

async fn connect(options: ConnectOptions) -> MqttClient {
    let what = format!("{} {:?}", options.url, options.protocol);
    match MqttClient::connect(options).await {
        Ok(client) => client,
        Err(e) => panic!("connect to {what}: {e}"),
    }
}

/// Receives until `n` deliveries came or `within` passed.
async fn receive_n(client: &MqttClient, n: usize, within: Duration) -> Vec<Incoming> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let batch = client
            .receive(n - got.len(), Duration::from_millis(100))
            .await
            .expect("receive");
        got.extend(batch);
    }
    got
}

fn payloads(messages: &[Incoming]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

/// A free loopback port (free when asked; good enough for tests).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A broker the test talks to; stopped on drop.
enum TestBroker {
    Builtin(Option<BrokerHandle>),
    Mosquitto(BrokerProcess),
}

impl TestBroker {
    async fn builtin(config: BrokerConfig) -> TestBroker {
        TestBroker::Builtin(Some(broker::start(config).await.expect("start broker")))
    }

    /// Mosquitto on a free port, or `None` (with a note) when not installed.
    async fn mosquitto() -> Option<TestBroker> {
        if !BrokerProcess::mosquitto_installed() {
            eprintln!("note: {MOSQUITTO} not found; skipping the Mosquitto half of this test");
            return None;
        }
        let process = BrokerProcess::mosquitto(&[])
            .await
            .unwrap_or_else(|e| panic!("start mosquitto: {e:#}"));
        Some(TestBroker::Mosquitto(process))
    }

    fn url(&self) -> String {
        match self {
            TestBroker::Builtin(handle) => handle.as_ref().map(|h| h.url()).unwrap_or_default(),
            TestBroker::Mosquitto(process) => format!("mqtt://{}", process.addr()),
        }
    }

    fn is_builtin(&self) -> bool {
        matches!(self, TestBroker::Builtin(_))
    }
}

/// The built-in broker, then Mosquitto when installed.
async fn brokers() -> Vec<TestBroker> {
    let mut all = vec![TestBroker::builtin(BrokerConfig::ephemeral()).await];
    all.extend(TestBroker::mosquitto().await);
    all
}

#[tokio::test]
async fn publish_batch_resolves_each_message_at_its_ack() {
    for broker in brokers().await {
        for protocol in BOTH {
            let url = broker.url();
            let topic = unique("batch");
            let sub = connect(options(&url, protocol, &unique("sub"))).await;
            let granted = sub
                .subscribe(vec![subscription(&format!("{topic}/#"), QoS::ExactlyOnce)])
                .await
                .unwrap();
            assert_eq!(granted[0].qos, Some(QoS::ExactlyOnce));

            let publisher = connect(options(&url, protocol, &unique("pub"))).await;
            // The bad topic is refused where it enters, as the capability
            // does with a guest's batch, and fails alone there.
            let bad = parse_topic_name(&format!("{topic}/+")).map(|topic| Outgoing {
                topic,
                ..message("x", "bad", QoS::AtLeastOnce)
            });
            let outcomes = publisher
                .publish_each(vec![
                    Ok(message(&format!("{topic}/a"), "zero", QoS::AtMostOnce)),
                    Ok(message(&format!("{topic}/b"), "one", QoS::AtLeastOnce)),
                    bad,
                    Ok(message(&format!("{topic}/c"), "two", QoS::ExactlyOnce)),
                ])
                .await;
            assert_eq!(outcomes.len(), 4);
            assert!(outcomes[0].is_ok() && outcomes[1].is_ok() && outcomes[3].is_ok());
            assert_eq!(
                outcomes[2].as_ref().unwrap_err().code,
                ErrorCode::InvalidDocument,
                "a bad topic fails alone"
            );

            let got = receive_n(&sub, 3, Duration::from_secs(5)).await;
            assert_eq!(payloads(&got), ["zero", "one", "two"], "{protocol:?}");
            let qos: Vec<QoS> = got.iter().map(|m| m.qos).collect();
            assert_eq!(qos, [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]);
            let ids: Vec<u64> = got.iter().map(|m| m.id).collect();
            sub.ack(&ids).await.unwrap();
            publisher.disconnect().await;
            sub.disconnect().await;
        }
    }
}

#[tokio::test]
async fn mixed_qos_batches_pipeline_through_a_small_window() {
    for broker in brokers().await {
        for protocol in BOTH {
            let mut opts = options(&broker.url(), protocol, &unique("mixed"));
            opts.inflight_window = 3;
            let client = connect(opts).await;
            let topic = unique("mixed");
            let batch: Vec<Outgoing> = (0..120)
                .map(|i| {
                    let qos = QoS::from_level((i % 3) as u8).unwrap_or_default();
                    message(&topic, &i.to_string(), qos)
                })
                .collect();
            let outcomes = client.publish(batch).await;
            assert!(
                outcomes.iter().all(Result::is_ok),
                "{protocol:?}: {outcomes:?}"
            );
            client.disconnect().await;
        }
    }
}

/// Batches sent back to back, as a pipeline does, each with refused
/// messages at known places: every outcome stays with its own message,
/// whatever batch it was in, and the broker gets exactly the others.
/// Against Mosquitto's default configuration (Nagle on) the client nudges
/// it for each batch's last acknowledgements.
#[tokio::test]
async fn consecutive_small_batches_keep_each_outcome_in_place() {
    const BATCHES: usize = 40;
    const SIZE: usize = 7;
    let refused = |n: usize| n % 11 == 5;
    for broker in brokers().await {
        for protocol in BOTH {
            let url = broker.url();
            let topic = unique("batches");
            let sub = connect(options(&url, protocol, &unique("sub"))).await;
            sub.subscribe(vec![subscription(&topic, QoS::ExactlyOnce)])
                .await
                .unwrap();
            let mut opts = options(&url, protocol, &unique("pub"));
            opts.inflight_window = 4;
            let publisher = connect(opts).await;
            let mut expected = Vec::new();
            for batch in 0..BATCHES {
                let messages = (0..SIZE)
                    .map(|i| {
                        let n = batch * SIZE + i;
                        if refused(n) {
                            return parse_topic_name(&format!("{topic}/+")).map(|topic| Outgoing {
                                topic,
                                ..message("x", "bad", QoS::AtLeastOnce)
                            });
                        }
                        expected.push(n.to_string());
                        let qos = [QoS::AtLeastOnce, QoS::ExactlyOnce][n % 2];
                        Ok(message(&topic, &n.to_string(), qos))
                    })
                    .collect();
                let outcomes = publisher.publish_each(messages).await;
                assert_eq!(outcomes.len(), SIZE);
                for (i, outcome) in outcomes.iter().enumerate() {
                    let n = batch * SIZE + i;
                    match outcome {
                        Err(e) if refused(n) => assert_eq!(e.code, ErrorCode::InvalidDocument),
                        Ok(()) if !refused(n) => {}
                        other => panic!("{protocol:?}, message {n}: {other:?}"),
                    }
                }
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut got = Vec::new();
            while got.len() < expected.len() && Instant::now() < deadline {
                let batch = sub.receive(64, Duration::from_millis(100)).await.unwrap();
                let ids: Vec<u64> = batch.iter().map(|m| m.id).collect();
                sub.ack(&ids).await.unwrap();
                got.extend(batch);
            }
            // Each once; MQTT keeps the order of one publisher's messages
            // per QoS level.
            let got = payloads(&got);
            for qos in 0..2 {
                let at = |all: &[String]| -> Vec<String> {
                    all.iter()
                        .filter(|p| p.parse::<usize>().is_ok_and(|n| n % 2 == qos))
                        .cloned()
                        .collect()
                };
                assert_eq!(at(&got), at(&expected), "{protocol:?}");
            }
            assert_eq!(got.len(), expected.len(), "{protocol:?}");
            publisher.disconnect().await;
            sub.disconnect().await;
        }
    }
}

#[tokio::test]
async fn v311_publishes_200_qos2_messages_through_a_window_of_20() {
    for broker in brokers().await {
        let mut opts = options(&broker.url(), MqttVersion::V311, &unique("qos2"));
        opts.inflight_window = 20;
        let client = connect(opts).await;
        let topic = unique("qos2");
        let batch = (0..200)
            .map(|i| message(&topic, &i.to_string(), QoS::ExactlyOnce))
            .collect();
        let outcomes = client.publish(batch).await;
        assert_eq!(outcomes.len(), 200);
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        client.disconnect().await;
    }
}

#[tokio::test]
async fn subscribe_reports_the_granted_qos_per_filter() {
    for broker in brokers().await {
        for protocol in BOTH {
            let client = connect(options(&broker.url(), protocol, &unique("grant"))).await;
            let base = unique("grant");
            let mut subs = vec![
                subscription(&format!("{base}/0"), QoS::AtMostOnce),
                subscription(&format!("{base}/1/+"), QoS::AtLeastOnce),
                subscription(&format!("{base}/2/#"), QoS::ExactlyOnce),
            ];
            if broker.is_builtin() {
                // The built-in broker refuses this filter by default.
                subs.push(subscription("test/nosubscribe", QoS::AtLeastOnce));
            }
            let granted = client.subscribe(subs.clone()).await.unwrap();
            assert_eq!(granted.len(), subs.len());
            for (g, s) in granted.iter().zip(&subs) {
                assert_eq!(g.filter, s.filter);
            }
            assert_eq!(granted[0].qos, Some(QoS::AtMostOnce));
            assert_eq!(granted[1].qos, Some(QoS::AtLeastOnce));
            assert_eq!(granted[2].qos, Some(QoS::ExactlyOnce));
            if broker.is_builtin() {
                assert_eq!(granted[3].qos, None);
                assert!(granted[3].reason_code >= 0x80);
            }
            // A bad filter is refused where it enters (the capability).
            let bad = parse_topic_filter("a/#/b").unwrap_err();
            assert_eq!(bad.code, ErrorCode::InvalidConfig);
            client
                .unsubscribe(vec![
                    format!("{base}/0").parse().unwrap(),
                    format!("{base}/1/+").parse().unwrap(),
                ])
                .await
                .unwrap();
            client.disconnect().await;
        }
    }
}

#[tokio::test]
async fn receive_returns_batches_and_waits_only_for_the_first() {
    for broker in brokers().await {
        for protocol in BOTH {
            let url = broker.url();
            let topic = unique("recv");
            let sub = connect(options(&url, protocol, &unique("sub"))).await;
            sub.subscribe(vec![subscription(&topic, QoS::AtLeastOnce)])
                .await
                .unwrap();

            let started = Instant::now();
            let none = sub.receive(10, Duration::from_millis(150)).await.unwrap();
            assert!(none.is_empty());
            assert!(started.elapsed() >= Duration::from_millis(140));

            let publisher = connect(options(&url, protocol, &unique("pub"))).await;
            let batch = (0..10)
                .map(|i| message(&topic, &i.to_string(), QoS::AtLeastOnce))
                .collect();
            assert!(publisher.publish(batch).await.iter().all(Result::is_ok));
            // Wait until all ten are queued, then take them four at a time.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut sizes = Vec::new();
            let mut all = Vec::new();
            for _ in 0..3 {
                let batch = sub.receive(4, Duration::from_secs(2)).await.unwrap();
                sizes.push(batch.len());
                all.extend(batch);
            }
            assert_eq!(sizes, [4, 4, 2], "{protocol:?}");
            let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
            assert_eq!(payloads(&all), expected);
            let ids: Vec<u64> = all.iter().map(|m| m.id).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in arrival order");
            sub.ack(&ids).await.unwrap();
            publisher.disconnect().await;
            sub.disconnect().await;
        }
    }
}

/// Publishes `bodies` at QoS 1 to `topic` from a throwaway client.
async fn publish_all(url: &str, protocol: MqttVersion, topic: &str, bodies: &[&str]) {
    let publisher = connect(options(url, protocol, &unique("pub"))).await;
    let batch = bodies
        .iter()
        .map(|b| message(topic, b, QoS::AtLeastOnce))
        .collect();
    let outcomes = publisher.publish(batch).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    publisher.disconnect().await;
}

/// Receives one message on `client`, checks it is `expected`, acks it,
/// disconnects, and ends the persistent session `id`.
async fn take_one_and_end_session(
    client: MqttClient,
    url: &str,
    protocol: MqttVersion,
    id: &str,
    expected: &str,
) {
    let got = receive_n(&client, 1, Duration::from_secs(5)).await;
    assert_eq!(payloads(&got), [expected], "{protocol:?}");
    let ids: Vec<u64> = got.iter().map(|m| m.id).collect();
    client.ack(&ids).await.unwrap();
    client.disconnect().await;
    connect(options(url, protocol, id)).await.disconnect().await;
}

#[tokio::test]
async fn unacked_delivery_is_redelivered_to_the_next_session() {
    for broker in brokers().await {
        for protocol in BOTH {
            let url = broker.url();
            let id = unique("redeliver");
            let topic = unique("redeliver");
            let first = connect(persistent(&url, protocol, &id)).await;
            first
                .subscribe(vec![subscription(&topic, QoS::AtLeastOnce)])
                .await
                .unwrap();
            publish_all(&url, protocol, &topic, &["keep me"]).await;
            let got = receive_n(&first, 1, Duration::from_secs(5)).await;
            assert_eq!(payloads(&got), ["keep me"]);
            // A crash: no ack, no DISCONNECT.
            drop(first);
            tokio::time::sleep(Duration::from_millis(100)).await;

            let second = connect(persistent(&url, protocol, &id)).await;
            assert!(second.capabilities().session_present, "{protocol:?}");
            take_one_and_end_session(second, &url, protocol, &id, "keep me").await;
        }
    }
}

/// Leaves the broker a QoS 2 delivery to release on the persistent session
/// `id`: a 3.1.1 client takes one message published to `topic`, writes its
/// PUBREC and goes away without reading the broker's PUBREL.
async fn leave_a_release_pending(url: &str, id: &str, topic: &str) {
    use rumqttc::{Event, Outgoing as Out, Packet};
    let addr = url.trim_start_matches("mqtt://");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut mqtt = rumqttc::MqttOptions::new(id, host, port.parse().expect("port"));
    mqtt.set_clean_session(false).set_manual_acks(true);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(mqtt, 10);
    client
        .subscribe(topic, rumqttc::QoS::ExactlyOnce)
        .await
        .unwrap();
    let publisher = connect(options(url, MqttVersion::V5, &unique("pub"))).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let event = tokio::time::timeout_at(deadline.into(), eventloop.poll())
            .await
            .expect("the predecessor's PUBREC in time")
            .expect("the predecessor's connection");
        match event {
            Event::Incoming(Packet::SubAck(_)) => {
                let outcomes = publisher
                    .publish(vec![message(topic, "released?", QoS::ExactlyOnce)])
                    .await;
                assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
            }
            Event::Incoming(Packet::Publish(p)) => client.ack(&p).await.unwrap(),
            // Written: stop before the PUBREL is read.
            Event::Outgoing(Out::PubRec(_)) => break,
            _ => {}
        }
    }
    drop(eventloop);
    publisher.disconnect().await;
}

/// What this thread logs while the guard lives (a test's driver tasks run
/// on its thread).
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Sink(sink.clone()))
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// A process that takes over a persistent session answers the PUBREL its
/// predecessor left (MQTT-4.4.0-1, MQTT-4.3.3-11) and keeps its connection
/// (rumqttc alone takes it as unsolicited and drops the connection).
#[tokio::test]
async fn a_new_process_completes_the_release_its_predecessor_left() {
    let (logs, _guard) = capture_logs();
    for broker in brokers().await {
        for protocol in BOTH {
            let url = broker.url();
            let id = unique("successor");
            let topic = unique("successor");
            leave_a_release_pending(&url, &id, &topic).await;

            let second = connect(persistent(&url, protocol, &id)).await;
            assert!(second.capabilities().session_present, "{protocol:?}");
            second
                .subscribe(vec![subscription(&topic, QoS::ExactlyOnce)])
                .await
                .unwrap_or_else(|e| panic!("subscribe after the takeover ({protocol:?}): {e}"));
            publish_all(&url, protocol, &topic, &["next"]).await;
            take_one_and_end_session(second, &url, protocol, &id, "next").await;
        }
    }
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!logs.contains("connection to the broker lost"), "{logs}");
}

#[tokio::test]
async fn acks_are_held_back_until_earlier_deliveries_are_acked() {
    for broker in brokers().await {
        for protocol in BOTH {
            let url = broker.url();
            let id = unique("order");
            let topic = unique("order");
            let client = connect(persistent(&url, protocol, &id)).await;
            client
                .subscribe(vec![subscription(&topic, QoS::AtLeastOnce)])
                .await
                .unwrap();
            publish_all(&url, protocol, &topic, &["m1", "m2", "m3"]).await;
            let got = receive_n(&client, 3, Duration::from_secs(5)).await;
            assert_eq!(payloads(&got), ["m1", "m2", "m3"]);
            // Ack only the last: its PUBACK must wait for m1 and m2.
            client.ack(&[got[2].id]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(client);
            tokio::time::sleep(Duration::from_millis(100)).await;

            let client = connect(persistent(&url, protocol, &id)).await;
            let got = receive_n(&client, 3, Duration::from_secs(5)).await;
            assert_eq!(
                payloads(&got),
                ["m1", "m2", "m3"],
                "{protocol:?}: m3's ack went out before m1's"
            );
            // Ack the first: exactly m1's PUBACK goes out.
            client.ack(&[got[0].id]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(client);
            tokio::time::sleep(Duration::from_millis(100)).await;

            let client = connect(persistent(&url, protocol, &id)).await;
            let got = receive_n(&client, 3, Duration::from_secs(2)).await;
            assert_eq!(payloads(&got), ["m2", "m3"], "{protocol:?}");
            let ids: Vec<u64> = got.iter().map(|m| m.id).collect();
            client.ack(&ids).await.unwrap();
            client.disconnect().await;
            connect(options(&url, protocol, &id))
                .await
                .disconnect()
                .await;
        }
    }
}

#[tokio::test]
async fn retained_message_is_delivered_flagged_retain() {
    for broker in brokers().await {
        for protocol in BOTH {
            let url = broker.url();
            let topic = unique("retained");
            let publisher = connect(options(&url, protocol, &unique("pub"))).await;
            let mut retained = message(&topic, "last known", QoS::AtLeastOnce);
            retained.retain = true;
            assert!(publisher.publish(vec![retained]).await[0].is_ok());

            let sub = connect(options(&url, protocol, &unique("sub"))).await;
            sub.subscribe(vec![subscription(&topic, QoS::AtLeastOnce)])
                .await
                .unwrap();
            let got = receive_n(&sub, 1, Duration::from_secs(5)).await;
            assert_eq!(payloads(&got), ["last known"]);
            assert!(got[0].retain, "{protocol:?}");
            sub.ack(&[got[0].id]).await.unwrap();

            // A live message is not flagged, and an empty one clears.
            let live = message(&topic, "live", QoS::AtLeastOnce);
            let mut clear = message(&topic, "", QoS::AtLeastOnce);
            clear.retain = true;
            assert!(publisher
                .publish(vec![live, clear])
                .await
                .iter()
                .all(Result::is_ok));
            let got = receive_n(&sub, 1, Duration::from_secs(5)).await;
            assert_eq!(payloads(&got), ["live"]);
            assert!(!got[0].retain);
            publisher.disconnect().await;
            sub.disconnect().await;
        }
    }
}

#[tokio::test]
async fn v5_properties_round_trip() {
    for broker in brokers().await {
        let url = broker.url();
        let topic = unique("props");
        let sub = connect(options(&url, MqttVersion::V5, &unique("sub"))).await;
        sub.subscribe(vec![subscription(&topic, QoS::AtLeastOnce)])
            .await
            .unwrap();
        let properties = MessageProperties {
            payload_format: Some(1),
            message_expiry: Some(600),
            content_type: Some("application/json".into()),
            response_topic: Some("replies/here".into()),
            correlation_data: Some(vec![0, 1, 2, 255]),
            user_properties: vec![
                ("k".into(), "v1".into()),
                ("k".into(), "v2".into()),
                ("other".into(), "x".into()),
            ],
        };
        let publisher = connect(options(&url, MqttVersion::V5, &unique("pub"))).await;
        let mut m = message(&topic, "{}", QoS::AtLeastOnce);
        m.properties = properties.clone();
        assert!(publisher.publish(vec![m]).await[0].is_ok());

        let got = receive_n(&sub, 1, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1);
        let mut received = got[0].properties.clone();
        // The broker forwards the remaining lifetime.
        let expiry = received.message_expiry.take().expect("message expiry");
        assert!((590..=600).contains(&expiry), "{expiry}");
        let mut expected = properties;
        expected.message_expiry = None;
        assert_eq!(received, expected);
        publisher.disconnect().await;
        sub.disconnect().await;
    }
}

#[tokio::test]
async fn bad_credentials_are_not_authorized_with_the_reason_code() {
    let config = BrokerConfig {
        allow_anonymous: false,
        users: vec![User {
            username: "alice".into(),
            password: "secret".into(),
        }],
        ..BrokerConfig::ephemeral()
    };
    let broker = TestBroker::builtin(config).await;
    for protocol in BOTH {
        let mut opts = options(&broker.url(), protocol, &unique("auth"));
        opts.username = Some("alice".into());
        opts.password = Some("wrong".into());
        let e = MqttClient::connect(opts.clone())
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code, ErrorCode::NotAuthorized, "{e}");
        // 3.1.1 return codes 4 and 5 are reported as their 5.0 equivalents.
        assert!(
            [0x86, 0x87].contains(&e.reason_code.unwrap_or(0)),
            "{e:?} on {protocol:?}"
        );

        opts.password = Some("secret".into());
        connect(opts).await.disconnect().await;
    }
}

#[tokio::test]
async fn unreachable_broker_is_a_connection_failure() {
    let port = free_port();
    for protocol in BOTH {
        let url = format!("mqtt://127.0.0.1:{port}");
        let e = MqttClient::connect(options(&url, protocol, "nobody"))
            .await
            .err()
            .expect("nothing listens there");
        assert_eq!(e.code, ErrorCode::ConnectionFailed, "{e}");
    }
}

#[tokio::test]
async fn silent_broker_is_a_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and say nothing.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    for protocol in BOTH {
        let mut opts = options(&format!("mqtt://127.0.0.1:{port}"), protocol, "patient");
        opts.connect_timeout = Duration::from_millis(300);
        let started = Instant::now();
        let e = MqttClient::connect(opts).await.err().expect("no CONNACK");
        assert_eq!(e.code, ErrorCode::Timeout, "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    silent.abort();
}

#[tokio::test]
async fn invalid_options_are_config_errors() {
    let mut opts = options("ftp://127.0.0.1", MqttVersion::V5, "x");
    let e = MqttClient::connect(opts.clone()).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidConfig);
    opts.url = "mqtt://127.0.0.1:1".into();
    opts.inflight_window = 0;
    let e = MqttClient::connect(opts.clone()).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidConfig);
    let mut opts = options("mqtt://127.0.0.1:1", MqttVersion::V311, "");
    opts.clean_start = false;
    let e = MqttClient::connect(opts).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidConfig);
}

#[tokio::test]
async fn reconnects_after_a_broker_restart_and_resubscribes() {
    for protocol in BOTH {
        let first = broker::start(BrokerConfig::ephemeral()).await.unwrap();
        let port = first.local_addr().port();
        let url = first.url();
        let topic = unique("restart");
        let sub = connect(ConnectOptions {
            send_timeout: Duration::from_millis(300),
            ..options(&url, protocol, &unique("sub"))
        })
        .await;
        sub.subscribe(vec![subscription(&topic, QoS::AtLeastOnce)])
            .await
            .unwrap();
        first.shutdown().await;

        // While the broker is away, publishing waits for the send timeout,
        // then fails.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let outcome = sub
                .publish(vec![message(&topic, "lost", QoS::AtLeastOnce)])
                .await;
            if let Err(e) = &outcome[0] {
                assert_eq!(e.code, ErrorCode::Timeout, "{e:?}");
                assert!(e.message.contains("send_timeout_ms (300 ms)"), "{e:?}");
                break;
            }
            assert!(Instant::now() < deadline, "the client did not notice");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let second = broker::start(BrokerConfig {
            port,
            ..BrokerConfig::ephemeral()
        })
        .await
        .expect("restart on the same port");
        let publisher = connect(options(&url, protocol, &unique("pub"))).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            let _ = publisher
                .publish(vec![message(&topic, "back", QoS::AtLeastOnce)])
                .await;
            let got = sub.receive(1, Duration::from_millis(200)).await.unwrap();
            if !got.is_empty() {
                break got;
            }
            assert!(Instant::now() < deadline, "{protocol:?}: no resubscribe");
        };
        assert_eq!(payloads(&got), ["back"]);
        assert!(!sub.capabilities().session_present);
        sub.ack(&[got[0].id]).await.unwrap();
        publisher.disconnect().await;
        sub.disconnect().await;
        second.shutdown().await;
    }
}

#[tokio::test]
async fn a_publish_during_an_outage_goes_out_once_the_broker_is_back() {
    for protocol in BOTH {
        let first = broker::start(BrokerConfig::ephemeral()).await.unwrap();
        let port = first.local_addr().port();
        let url = first.url();
        let topic = unique("outage");
        // Slow to reconnect, so the subscriber below is in first.
        let publisher = connect(ConnectOptions {
            reconnect_min: Duration::from_millis(1500),
            reconnect_max: Duration::from_millis(1500),
            ..options(&url, protocol, &unique("pub"))
        })
        .await;
        first.shutdown().await;
        // Sent while nobody listens on the port: it waits for the reconnect.
        let waiting = {
            let publisher = publisher.clone();
            let batch = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
                .map(|qos| message(&topic, &format!("q{}", qos.level()), qos));
            tokio::spawn(async move { publisher.publish(batch.to_vec()).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "{protocol:?}: failed during the outage"
        );
        let second = broker::start(BrokerConfig {
            port,
            ..BrokerConfig::ephemeral()
        })
        .await
        .expect("restart on the same port");
        let sub = connect(options(&url, protocol, &unique("sub"))).await;
        sub.subscribe(vec![subscription(&topic, QoS::ExactlyOnce)])
            .await
            .unwrap();
        let outcomes = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the publish ends once the broker is back")
            .unwrap();
        assert_eq!(outcomes, vec![Ok(()), Ok(()), Ok(())], "{protocol:?}");
        let got = receive_n(&sub, 3, Duration::from_secs(5)).await;
        assert_eq!(payloads(&got), ["q0", "q1", "q2"], "{protocol:?}");
        publisher.disconnect().await;
        sub.disconnect().await;
        second.shutdown().await;
    }
}

#[tokio::test]
async fn v5_broker_without_retain_fails_only_the_retained_message() {
    let config = BrokerConfig {
        retain: broker::RetainConfig {
            enabled: false,
            ..broker::RetainConfig::default()
        },
        ..BrokerConfig::ephemeral()
    };
    let broker = TestBroker::builtin(config).await;
    let client = connect(options(&broker.url(), MqttVersion::V5, &unique("noretain"))).await;
    assert!(!client.capabilities().retain_available);
    let topic = unique("noretain");
    let mut retained = message(&topic, "r", QoS::AtLeastOnce);
    retained.retain = true;
    let outcomes = client
        .publish(vec![
            message(&topic, "a", QoS::AtLeastOnce),
            retained,
            message(&topic, "b", QoS::ExactlyOnce),
        ])
        .await;
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    let e = outcomes[1].as_ref().unwrap_err();
    assert_eq!(
        (e.code, e.reason_code),
        (ErrorCode::Unsupported, Some(0x9A))
    );
    client.disconnect().await;
}

#[tokio::test]
async fn v5_capabilities_come_from_the_connack() {
    let config = BrokerConfig {
        receive_maximum: 7,
        maximum_qos: 1,
        topic_alias_maximum: 5,
        ..BrokerConfig::ephemeral()
    };
    let broker = TestBroker::builtin(config).await;
    let client = connect(options(&broker.url(), MqttVersion::V5, &unique("caps"))).await;
    let caps = client.capabilities();
    assert_eq!(caps.protocol, MqttVersion::V5);
    assert_eq!(caps.receive_maximum, 7);
    assert_eq!(caps.maximum_qos, QoS::AtLeastOnce);
    assert_eq!(caps.topic_alias_maximum, 5);
    assert!(!caps.session_present);
    // Above the broker's maximum QoS: refused here, not by a disconnect.
    let topic = unique("caps");
    let outcomes = client
        .publish(vec![
            message(&topic, "2", QoS::ExactlyOnce),
            message(&topic, "1", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        outcomes[0].as_ref().unwrap_err().code,
        ErrorCode::Unsupported
    );
    assert!(outcomes[1].is_ok());
    // Thirty messages through a Receive Maximum of 7.
    let batch = (0..30)
        .map(|i| message(&topic, &i.to_string(), QoS::AtLeastOnce))
        .collect();
    assert!(client.publish(batch).await.iter().all(Result::is_ok));
    client.disconnect().await;

    let v311 = connect(options(&broker.url(), MqttVersion::V311, &unique("caps"))).await;
    let caps = v311.capabilities();
    assert_eq!(caps.protocol, MqttVersion::V311);
    assert!(caps.retain_available);
    v311.disconnect().await;
}

#[tokio::test]
async fn every_call_after_disconnect_is_closed() {
    let broker = TestBroker::builtin(BrokerConfig::ephemeral()).await;
    for protocol in BOTH {
        let client = connect(options(&broker.url(), protocol, &unique("closed"))).await;
        client.disconnect().await;
        let outcomes = client
            .publish(vec![message("t", "x", QoS::AtLeastOnce)])
            .await;
        assert_eq!(outcomes[0].as_ref().unwrap_err().code, ErrorCode::Closed);
        let sub = client.subscribe(vec![subscription("t", QoS::AtMostOnce)]);
        assert_eq!(sub.await.unwrap_err().code, ErrorCode::Closed);
        assert_eq!(
            client
                .unsubscribe(vec!["t".parse().unwrap()])
                .await
                .unwrap_err()
                .code,
            ErrorCode::Closed
        );
        let recv = client.receive(1, Duration::from_millis(10)).await;
        assert_eq!(recv.unwrap_err().code, ErrorCode::Closed);
        assert_eq!(client.ack(&[1]).await.unwrap_err().code, ErrorCode::Closed);
        client.disconnect().await;
    }
}
