//! End-to-end tests: the real connector component in the real host, against
//! the built-in broker and Mosquitto, over MQTT 5.0 and 3.1.1.
//!
//! Scenarios that apply to any broker are written once as
//! `async fn scenario(target: &Target)` and turned into one test per broker
//! and version by [`common::on_every_broker`]: for example
//! `retained::retained_set_deliver_clear::mosquitto_v311`. The Mosquitto
//! tests need `/usr/sbin/mosquitto` (`apt-get install -y mosquitto`, as
//! `.ci/run` does).

mod common;

mod config;
mod limits;
mod qos;
mod retained;
mod retainer;
mod send;
mod session;
mod tls;

use common::*;
use host_shim::host::Value;
use serde_json::json;

/// The example of the host's documentation, end to end: a retained
/// configuration document reaches a listener that subscribes later, on its
/// topic and flagged retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_configuration_reaches_a_later_listener() -> anyhow::Result<()> {
    let target = Target::start(BrokerKind::Builtin, Version::V5).await?;
    let mut sender = target
        .sender(json!({"topic": "users/settings/user01", "qos": 1, "retained": true}))
        .await?;
    send_ok(&mut sender, &[doc(r#"{"account_type":"standard"}"#)]).await?;
    close_sender(sender).await?;

    let mut listener = target
        .listener(json!({"subscriptions": [{"filter": "users/settings/+"}]}))
        .await?;
    let docs = receive(&mut listener, 1).await?;
    assert_eq!(docs[0].payload, br#"{"account_type":"standard"}"#);
    assert_eq!(
        property(&docs[0], "mqtt.retained"),
        Some(&Value::Boolean(true))
    );
    assert_eq!(topic(&docs[0]), "users/settings/user01");
    commit(&mut listener, &docs).await?;
    close_listener(listener).await
}
