//! Interoperability with Mosquitto's own clients, `mosquitto_pub` and
//! `mosquitto_sub` (Debian package mosquitto-clients), in both protocol
//! versions.

use anyhow::Result;
use bytes::Bytes;
use e2e::*;

/// `mosquitto_pub` at QoS 0, 1 and 2 to a rumqttc 3.1.1 subscriber at QoS 2:
/// delivered at the publish QoS (v311 MQTT-3.8.4-6), payload intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_to_rumqttc_v4_mqtt_3_8_4_6() -> Result<()> {
    let broker = Broker::start().await?;
    let mut sub = V4::connect(v4_opts(&broker, "mq-in-v4")).await?;
    sub.subscribe("mq/in", 2).await?;
    for qos in 0..=2u8 {
        let msg = format!("from mosquitto_pub q{qos}");
        mosquitto_pub(
            &broker,
            false,
            &["-q", &qos.to_string(), "-t", "mq/in", "-m", &msg],
        )
        .await?;
        let got = sub.next_publish().await?;
        assert_eq!(got.topic, "mq/in");
        assert_eq!(got.payload, Bytes::from(msg));
        assert_eq!(got.qos as u8, qos);
        assert!(!got.retain);
    }
    broker.shutdown().await
}

/// The same with `-V mqttv5` and a rumqttc 5.0 subscriber (v5 MQTT-3.8.4-8),
/// plus a user property set by `mosquitto_pub -D` forwarded (MQTT-3.3.2-17).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_to_rumqttc_v5_mqtt_3_8_4_8() -> Result<()> {
    let broker = Broker::start().await?;
    let mut sub = V5::connect(v5_opts(&broker, "mq-in-v5")).await?;
    sub.subscribe("mq/in", 2).await?;
    for qos in 0..=2u8 {
        let msg = format!("from mosquitto_pub q{qos}");
        let args = [
            "-q",
            &qos.to_string(),
            "-t",
            "mq/in",
            "-m",
            &msg,
            "-D",
            "publish",
            "user-property",
            "origin",
            "mosquitto",
        ];
        mosquitto_pub(&broker, true, &args).await?;
        let got = sub.next_publish().await?;
        assert_eq!(topic5(&got), "mq/in");
        assert_eq!(got.payload, Bytes::from(msg));
        assert_eq!(got.qos as u8, qos);
        let props = got.properties.unwrap_or_default();
        assert_eq!(
            props.user_properties,
            [("origin".to_owned(), "mosquitto".to_owned())]
        );
    }
    broker.shutdown().await
}

/// A rumqttc publisher at QoS 0, 1 and 2 to `mosquitto_sub -q 2`: all three
/// arrive at their publish QoS, RETAIN=0.
async fn rumqttc_to_mosquitto_sub(v5: bool) -> Result<()> {
    let broker = Broker::start().await?;
    let mut sub = MosquittoSub::start(&broker, v5, &["-t", "mq/out", "-q", "2", "-C", "3"])?;
    sub.subscribed().await?;

    if v5 {
        let mut publ = V5::connect(v5_opts(&broker, "mq-out-pub")).await?;
        for qos in 0..=2u8 {
            publ.publish("mq/out", qos, false, format!("q{qos}").as_bytes())
                .await?;
        }
    } else {
        let mut publ = V4::connect(v4_opts(&broker, "mq-out-pub")).await?;
        for qos in 0..=2u8 {
            publ.publish("mq/out", qos, false, format!("q{qos}").as_bytes())
                .await?;
        }
    }
    let mut got = sub.messages().await?;
    got.sort_by(|a, b| a.3.cmp(&b.3));
    let expected: Vec<(String, String, String, String)> = (0..=2u8)
        .map(|q| ("0".into(), q.to_string(), "mq/out".into(), format!("q{q}")))
        .collect();
    assert_eq!(
        got, expected,
        "(retain, qos, topic, payload) as printed by mosquitto_sub"
    );
    broker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_to_mosquitto_sub_v4() -> Result<()> {
    rumqttc_to_mosquitto_sub(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_to_mosquitto_sub_v5() -> Result<()> {
    rumqttc_to_mosquitto_sub(true).await
}

/// Retained messages set by `mosquitto_pub -r` (QoS 1) and by rumqttc
/// (QoS 2) are delivered to a new `mosquitto_sub -q 2 -C 2` subscription with
/// the retain flag (`%r` = 1; v311 MQTT-3.3.1-8) at their stored QoS, and a
/// rumqttc subscriber sees the one set by mosquitto_pub as retained too.
async fn retained_with_mosquitto(v5: bool) -> Result<()> {
    let broker = Broker::start().await?;
    mosquitto_pub(&broker, v5, &["-r", "-q", "1", "-t", "mq/ret/a", "-m", "A"]).await?;
    let mut publ = V4::connect(v4_opts(&broker, "mq-ret-pub")).await?;
    publ.publish("mq/ret/b", 2, true, b"B").await?;

    let sub = MosquittoSub::start(&broker, v5, &["-t", "mq/ret/#", "-q", "2", "-C", "2"])?;
    let mut got = sub.messages().await?;
    got.sort_by(|a, b| a.2.cmp(&b.2));
    let expected = vec![
        (
            "1".to_owned(),
            "1".to_owned(),
            "mq/ret/a".to_owned(),
            "A".to_owned(),
        ),
        (
            "1".to_owned(),
            "2".to_owned(),
            "mq/ret/b".to_owned(),
            "B".to_owned(),
        ),
    ];
    assert_eq!(
        got, expected,
        "(retain, qos, topic, payload) as printed by mosquitto_sub"
    );

    let mut sub = V4::connect(v4_opts(&broker, "mq-ret-sub")).await?;
    sub.subscribe("mq/ret/a", 2).await?;
    let got = sub.next_publish().await?;
    assert!(got.retain);
    assert_eq!(got.payload, Bytes::from_static(b"A"));

    // And `mosquitto_pub -r -n` (empty retained) deletes it (MQTT-3.3.1-10).
    mosquitto_pub(&broker, v5, &["-r", "-n", "-t", "mq/ret/a"]).await?;
    let mut later = V4::connect(v4_opts(&broker, "mq-ret-later")).await?;
    later.subscribe("mq/ret/a", 2).await?;
    later.no_publish().await?;
    broker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_with_mosquitto_v4_mqtt_3_3_1_8() -> Result<()> {
    retained_with_mosquitto(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_with_mosquitto_v5_mqtt_3_3_1_9() -> Result<()> {
    retained_with_mosquitto(true).await
}

/// Will set by `mosquitto_sub --will-*`, published when the process is
/// killed (no DISCONNECT; v311 MQTT-3.1.2-8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_will_on_kill_mqtt_3_1_2_8() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V4::connect(v4_opts(&broker, "mq-will-watch")).await?;
    watcher.subscribe("mq/will", 1).await?;
    let mut sub = MosquittoSub::start(
        &broker,
        false,
        &[
            "-t",
            "mq/unused",
            "--will-topic",
            "mq/will",
            "--will-payload",
            "mosquitto died",
            "--will-qos",
            "1",
        ],
    )?;
    sub.subscribed().await?;
    sub.kill().await?;
    let got = watcher.next_publish().await?;
    assert_eq!(got.payload, Bytes::from_static(b"mosquitto died"));
    broker.shutdown().await
}
