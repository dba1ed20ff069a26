//! The retained message management API of the built-in broker, through
//! `BrokerHandle`: list with paging, get, delete and count, checked against
//! what MQTT clients see. Loopback only; every wait is bounded.

use mqtt_broker::{self as broker, AdminError, BrokerConfig, BrokerHandle, MAX_PAGE_SIZE};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use std::time::Duration;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn client(broker: &BrokerHandle, id: &str) -> (AsyncClient, EventLoop) {
    let addr = broker.local_addr();
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 100)
}

/// Publishes `messages` retained at QoS 1 and waits for every PUBACK.
pub(crate) async fn publish_retained(broker: &BrokerHandle, messages: &[(&str, &[u8])]) {
    let (client, mut events) = client(broker, "publisher");
    for (topic, payload) in messages {
        client
            .publish(*topic, QoS::AtLeastOnce, true, payload.to_vec())
            .await
            .unwrap();
    }
    let mut acked = 0;
    timeout(WAIT, async {
        while acked < messages.len() {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("PUBACKs did not come");
    client.disconnect().await.unwrap();
    let _ = timeout(WAIT, events.poll()).await;
}

/// The topics of the retained messages a new `filter` subscriber receives,
/// until none has come for 300 ms.
async fn retained_on_subscribe(broker: &BrokerHandle, filter: &str) -> Vec<String> {
    let (client, mut events) = client(broker, "subscriber");
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let mut topics = Vec::new();
    let mut subscribed = false;
    timeout(WAIT, async {
        loop {
            let quiet = if subscribed {
                Duration::from_millis(300)
            } else {
                WAIT
            };
            match timeout(quiet, events.poll()).await {
                Err(_) => break,
                Ok(event) => match event.unwrap() {
                    Event::Incoming(Packet::SubAck(_)) => subscribed = true,
                    Event::Incoming(Packet::Publish(p)) => {
                        assert!(p.retain, "a live message on a quiet broker");
                        topics.push(p.topic.clone());
                    }
                    _ => {}
                },
            }
        }
    })
    .await
    .expect("the subscriber never went quiet");
    topics
}

#[tokio::test]
async fn list_get_delete_and_count_through_the_handle() {
    let broker = broker::start(BrokerConfig::ephemeral()).await.unwrap();
    let mut topics: Vec<String> = (0..25).map(|i| format!("t/{i:02}")).collect();
    let payloads: Vec<Vec<u8>> = (0..25).map(|i| format!("v{i}").into_bytes()).collect();
    let mut messages: Vec<(&str, &[u8])> = topics
        .iter()
        .zip(&payloads)
        .map(|(t, p)| (t.as_str(), p.as_slice()))
        .collect();
    messages.push(("other/x", b"\xff\x00"));
    // Out of order on purpose: the listing sorts.
    messages.reverse();
    publish_retained(&broker, &messages).await;

    assert_eq!(broker.retained_count().await.unwrap(), 26);

    // Paging: the cursor walks every matching topic once, in topic order.
    let mut listed = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = broker.retained_list("t/#", 10, cursor).await.unwrap();
        pages += 1;
        assert!(page.entries.len() <= 10);
        for entry in &page.entries {
            assert_eq!((entry.qos, entry.expires_in), (1, None));
            assert!(entry.last_modified > 0);
        }
        listed.extend(page.entries.into_iter().map(|e| e.topic));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
        assert!(pages < 10, "the cursor does not move");
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, topics);
    let all = broker.retained_list("#", 0, None).await.unwrap();
    assert_eq!(all.entries.len(), 1, "a page holds at least one entry");
    let all = broker.retained_list("#", usize::MAX, None).await.unwrap();
    assert_eq!(all.entries.len(), 26.min(MAX_PAGE_SIZE));
    assert_eq!(all.entries[0].topic, "other/x");
    assert!(matches!(
        broker.retained_list("t/#/x", 10, None).await,
        Err(AdminError::InvalidFilter(_))
    ));

    let entry = broker.retained_get("t/03").await.unwrap().unwrap();
    assert_eq!(
        (entry.info.topic.as_str(), &entry.payload[..]),
        ("t/03", &b"v3"[..])
    );
    assert_eq!(entry.info.payload_bytes, 2);
    let binary = broker.retained_get("other/x").await.unwrap().unwrap();
    assert_eq!(&binary.payload[..], b"\xff\x00");
    assert!(broker.retained_get("t/99").await.unwrap().is_none());

    assert!(broker.retained_delete("t/03").await.unwrap());
    assert!(!broker.retained_delete("t/03").await.unwrap());
    assert!(broker.retained_get("t/03").await.unwrap().is_none());
    assert_eq!(broker.retained_count().await.unwrap(), 25);

    // A new subscriber no longer gets the deleted message.
    topics.retain(|t| t != "t/03");
    assert_eq!(retained_on_subscribe(&broker, "t/#").await, topics);

    let admin = broker.admin();
    broker.shutdown().await;
    assert!(matches!(
        admin.retained_count().await,
        Err(AdminError::Closed)
    ));
}

#[tokio::test]
async fn a_disk_broker_writes_a_delete_before_it_answers() {
    let path = std::env::temp_dir().join(format!(
        "host-shim-admin-delete-{}.redb",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let config = || {
        let text = serde_json::json!({
            "port": 0,
            "retain": { "storage": { "disk": path } }
        });
        BrokerConfig::from_json(&text.to_string()).unwrap()
    };

    let broker = broker::start(config()).await.unwrap();
    publish_retained(&broker, &[("keep", b"1"), ("drop", b"2")]).await;
    assert!(broker.retained_delete("drop").await.unwrap());
    broker.shutdown().await;

    let broker = broker::start(config()).await.unwrap();
    let page = broker.retained_list("#", 10, None).await.unwrap();
    let topics: Vec<_> = page.entries.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(topics, ["keep"]);
    broker.shutdown().await;
    let _ = std::fs::remove_file(&path);
}
