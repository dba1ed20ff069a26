//! End-to-end tests: the real connector component in the real host,
//! against the built-in broker.

use host_shim::broker::{self, BrokerConfig};
use host_shim::host::{Document, Limits, Property, Runtime, Value};
use std::time::Duration;

fn runtime() -> Runtime {
    Runtime::embedded(Limits::default()).expect("the embedded component loads")
}

fn text(name: &str, value: &str) -> Property {
    Property {
        name: name.to_owned(),
        value: Value::Text(value.to_owned()),
    }
}

fn property<'a>(doc: &'a Document, name: &str) -> Option<&'a Value> {
    doc.properties
        .iter()
        .find(|p| p.name == name)
        .map(|p| &p.value)
}

#[tokio::test]
async fn retained_configuration_reaches_a_later_listener() {
    let broker = broker::start(BrokerConfig::ephemeral()).await.unwrap();
    let connection = format!(r#"{{"url": "{}"}}"#, broker.url());
    let rt = runtime();

    let mut sender = rt
        .open_sender(
            &connection,
            r#"{"topic": "users/settings/user01", "qos": 1, "retained": true}"#,
        )
        .await
        .unwrap();
    let doc = Document {
        id: 0,
        payload: br#"{"account_type":"standard"}"#.to_vec(),
        properties: vec![],
    };
    let results = sender.send(&[doc]).await.unwrap();
    assert!(results[0].is_ok(), "{:?}", results[0]);
    sender.close().await;

    let mut listener = rt
        .open_listener(
            &connection,
            r#"{"subscriptions": [{"filter": "users/settings/+"}]}"#,
        )
        .await
        .unwrap();
    let docs = listener.next(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].payload, br#"{"account_type":"standard"}"#);
    assert_eq!(
        property(&docs[0], "mqtt.retained"),
        Some(&Value::Boolean(true))
    );
    assert_eq!(
        property(&docs[0], "mqtt.topic"),
        Some(&Value::Text("users/settings/user01".into()))
    );
    listener.commit(&[docs[0].id]).await.unwrap();
    listener.close().await;
    let _ = text("", "");
    broker.shutdown().await;
}
