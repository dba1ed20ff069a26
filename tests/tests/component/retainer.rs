//! The built-in broker's retainer options, each through the real connector
//! against a broker configured with it, and the connector's own retained
//! features that `retained.rs` does not already cover (a declared
//! `retain_supported: false` on a broker that has retain, `clear` against a
//! document's `mqtt.retained: false`, the Listen policies next to the 5.0
//! subscription options, a retained last will).
//!
//! Broker tests run on MQTT 5.0 and 3.1.1 unless the option is 5.0 only
//! (`on_both_versions!` makes the `v5` and `v311` tests). Nothing here
//! asserts speed: waits are deadlines, and the expiry tests sleep past an
//! expiry with a margin before they look.

use crate::common::*;
use anyhow::{Context, Result};
use host_shim::host::{Document, ErrorCode, Listener, OperationError, Sender, Value};
use mqtt_broker::{
    self as broker, BrokerConfig, BrokerHandle, Profile, RetainConfig, RetainStorage,
};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// A built-in broker with a configuration of the test's own
// ---------------------------------------------------------------------------

/// A built-in broker started with a given configuration, on 127.0.0.1 and
/// a free port. Dropping it stops the broker.
struct Builtin {
    handle: BrokerHandle,
    url: String,
}

impl Builtin {
    async fn start(mut config: BrokerConfig) -> Result<Builtin> {
        config.host = "127.0.0.1".to_owned();
        config.port = 0;
        let handle = within("the built-in broker to start", broker::start(config))
            .await?
            .context("starting the built-in broker")?;
        let url = handle.url();
        Ok(Builtin { handle, url })
    }

    /// Disconnects every client and waits until the broker has stopped.
    async fn shutdown(self) -> Result<()> {
        within("the broker to shut down", self.handle.shutdown()).await
    }

    fn connection(&self, version: Version) -> String {
        self.connection_with(version, json!({}))
    }

    fn connection_with(&self, version: Version, extra: serde_json::Value) -> String {
        let mut config = json!({
            "url": self.url,
            "mqtt_version": version.config_value(),
            "connect_timeout_ms": 5000,
        });
        if let (Some(fields), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            fields.extend(extra.clone());
        }
        config.to_string()
    }

    async fn sender(&self, version: Version, config: serde_json::Value) -> Result<Sender> {
        open_sender(&runtime(), &self.connection(version), config).await
    }

    async fn listener(&self, version: Version, config: serde_json::Value) -> Result<Listener> {
        open_listener(&self.connection(version), config).await
    }
}

/// The default configuration with `change` applied to its retain options.
fn retain(change: impl FnOnce(&mut RetainConfig)) -> BrokerConfig {
    let mut config = BrokerConfig::ephemeral();
    change(&mut config.retain);
    config
}

/// One test per MQTT version for `async fn NAME(version: Version)`: a module
/// `NAME` with the tests `v5` and `v311`.
macro_rules! on_both_versions {
    ($scenario:ident) => {
        mod $scenario {
            use $crate::common::Version;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn v5() -> anyhow::Result<()> {
                super::$scenario(Version::V5).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn v311() -> anyhow::Result<()> {
                super::$scenario(Version::V311).await
            }
        }
    };
}

/// `(topic, payload, retained)` of each document, in order.
fn seen(docs: &[Document]) -> Vec<(String, String, bool)> {
    docs.iter()
        .map(|d| (topic(d).to_owned(), payload(d), retained(d)))
        .collect()
}

fn triple(topic: &str, payload: &str, retained: bool) -> (String, String, bool) {
    (topic.to_owned(), payload.to_owned(), retained)
}

/// Exactly `n` documents: `n` within [`WAIT`], then none more for [`QUIET`].
/// Commits them.
async fn receive_exactly(listener: &mut Listener, n: usize) -> Result<Vec<Document>> {
    let mut docs = receive(listener, n).await?;
    let extra = receive_for(listener, QUIET).await?;
    anyhow::ensure!(
        extra.is_empty(),
        "expected {n} documents, then {} more: {}",
        extra.len(),
        summary(&extra)
    );
    docs.extend(extra);
    commit(listener, &docs).await?;
    Ok(docs)
}

/// Receives and commits batch by batch (so a small in-flight window keeps
/// moving) until `n` documents came, within [`WAIT`] plus `extra`.
async fn receive_committing(
    listener: &mut Listener,
    n: usize,
    extra: Duration,
) -> Result<Vec<Document>> {
    let limit = WAIT + extra;
    let deadline = Instant::now() + limit;
    let mut docs = Vec::new();
    while docs.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            !left.is_zero(),
            "expected {n} documents within {limit:?}, got {}",
            docs.len()
        );
        let batch = within_for(limit, "listener.next", listener.next(100, left))
            .await?
            .context("listener.next")?;
        commit(listener, &batch).await?;
        docs.extend(batch);
    }
    Ok(docs)
}

/// The error of a document that must have failed.
fn failed(results: &[Result<(), host_shim::host::Error>], index: usize) -> &host_shim::host::Error {
    match &results[index] {
        Err(e) => e,
        Ok(()) => panic!("document {index} must fail, it succeeded"),
    }
}

/// Reads a `retained: "only"` listener until `done()`, within [`WAIT`],
/// committing as it goes.
async fn read_snapshot(listener: &mut Listener) -> Result<Vec<Document>> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let batch = within(
            "listener.next",
            listener.next(100, Duration::from_millis(200)),
        )
        .await??;
        commit(listener, &batch).await?;
        got.extend(batch);
        if within("listener.done", listener.done()).await?? {
            return Ok(got);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the snapshot did not finish within {WAIT:?}; got {}",
            summary(&got)
        );
    }
}

fn expiry(doc: &Document) -> Option<i64> {
    match property(doc, "mqtt.message-expiry") {
        Some(Value::Integer(secs)) => Some(*secs),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// retain.enabled
// ---------------------------------------------------------------------------

/// `retain.enabled: false` on 5.0: CONNACK says Retain Available = 0, so the
/// connector fails a retained document with `unsupported` naming Retain
/// Available, never sending it (the broker would disconnect with 0x9A); with
/// `retain_unsupported: "strip"` it goes through as a plain message. A
/// CONNECT whose will is retained is refused by the broker with 0x9A
/// (MQTT-3.2.2-14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_disabled_v5_fails_or_strips_and_refuses_a_retained_will() -> Result<()> {
    let broker = Builtin::start(retain(|r| r.enabled = false)).await?;
    let v5 = Version::V5;
    let mut watcher = broker
        .listener(
            v5,
            json!({"subscriptions": [{"filter": "off/#", "qos": 1}]}),
        )
        .await?;

    let mut strict = broker
        .sender(v5, json!({"topic": "off/strict", "retained": true}))
        .await?;
    let results = send(&mut strict, &[doc("kept")]).await?;
    let error = failed(&results, 0);
    assert_eq!(error.code, ErrorCode::Unsupported, "{error:?}");
    assert!(
        error.message.contains("Retain Available = 0"),
        "{}",
        error.message
    );
    // The connection survived: the sender still sends.
    send_ok(
        &mut strict,
        &[doc("plain").with("mqtt.retained", Value::Boolean(false))],
    )
    .await?;

    let mut strip = broker
        .sender(
            v5,
            json!({"topic": "off/stripped", "retained": true, "retain_unsupported": "strip"}),
        )
        .await?;
    send_ok(&mut strip, &[doc("stripped")]).await?;
    let docs = receive_exactly(&mut watcher, 2).await?;
    assert_eq!(
        seen(&docs),
        [
            triple("off/strict", "plain", false),
            triple("off/stripped", "stripped", false)
        ]
    );

    let will = broker.connection_with(
        v5,
        json!({"will": {"topic": "off/will", "payload": "gone", "retain": true}}),
    );
    let refused = within(
        "the sender to open",
        runtime().open_sender(&will, &json!({"topic": "off/x"}).to_string()),
    )
    .await?;
    match refused {
        Err(OperationError::Connector(e)) => {
            assert_eq!(e.reason_code, Some(0x9A), "{e:?}");
        }
        Err(other) => panic!("expected the broker's refusal, got {other}"),
        Ok(_) => panic!("a retained will must be refused without retain"),
    }

    close_listener(watcher).await?;
    close_sender(strict).await?;
    close_sender(strip).await?;
    broker.shutdown().await
}

// ---------------------------------------------------------------------------
// retain.storage
// ---------------------------------------------------------------------------

/// `retain.storage: {"disk": PATH}`: a retained QoS 1 message (acknowledged,
/// so on disk) is there for a listener of a new broker started on the same
/// file after the first one shut down; a retained message cleared before
/// the shutdown stays cleared.
async fn disk_storage_survives_a_restart(version: Version) -> Result<()> {
    let path = std::env::temp_dir().join(format!(
        "e2e-retainer-{}-{}.redb",
        std::process::id(),
        version.config_value()
    ));
    let _ = std::fs::remove_file(&path);
    let config = retain(|r| r.storage = RetainStorage::Disk(path.clone()));

    let first = Builtin::start(config.clone()).await?;
    let mut sender = first
        .sender(
            version,
            json!({"topic": "disk/kept", "qos": 1, "retained": true}),
        )
        .await?;
    send_ok(
        &mut sender,
        &[
            doc("kept"),
            doc("cleared").with("mqtt.topic", text("disk/cleared")),
        ],
    )
    .await?;
    send_ok(
        &mut sender,
        &[doc("").with("mqtt.topic", text("disk/cleared"))],
    )
    .await?;
    close_sender(sender).await?;
    first.shutdown().await?;

    // `shutdown()` must not return before the first broker has closed the
    // file: the second could not open it (or, should start fall back to
    // memory, would find nothing).
    let second = Builtin::start(config).await?;
    let mut listener = second
        .listener(
            version,
            json!({"subscriptions": [{"filter": "disk/#", "qos": 1}]}),
        )
        .await?;
    let docs = receive_exactly(&mut listener, 1)
        .await
        .context("the retained message did not survive the restart")?;
    assert_eq!(seen(&docs), [triple("disk/kept", "kept", true)]);
    assert_eq!(qos(&docs[0]), 1);
    close_listener(listener).await?;
    second.shutdown().await?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}
on_both_versions!(disk_storage_survives_a_restart);

// ---------------------------------------------------------------------------
// retain.max_messages and retain.max_payload_bytes
// ---------------------------------------------------------------------------

/// `retain.max_messages: 2`: a third new topic is delivered live but not
/// stored; a topic that has a retained message can still replace it, and
/// clearing one frees a place.
async fn max_messages_refuses_new_topics_when_full(version: Version) -> Result<()> {
    let broker = Builtin::start(retain(|r| r.max_messages = 2)).await?;
    let filter = json!({"subscriptions": [{"filter": "full/#", "qos": 1}]});
    let mut live = broker.listener(version, filter.clone()).await?;
    let mut sender = broker
        .sender(
            version,
            json!({"topic": "full/a", "qos": 1, "retained": true}),
        )
        .await?;
    send_ok(
        &mut sender,
        &[
            doc("a1"),
            doc("b1").with("mqtt.topic", text("full/b")),
            doc("c1").with("mqtt.topic", text("full/c")),
        ],
    )
    .await?;
    // Refused for storage, never for delivery.
    let docs = receive_exactly(&mut live, 3).await?;
    assert_eq!(
        seen(&docs),
        [
            triple("full/a", "a1", false),
            triple("full/b", "b1", false),
            triple("full/c", "c1", false)
        ]
    );

    let mut later = broker.listener(version, filter.clone()).await?;
    let docs = receive_exactly(&mut later, 2).await?;
    assert_eq!(
        seen(&docs),
        [triple("full/a", "a1", true), triple("full/b", "b1", true)]
    );
    close_listener(later).await?;

    // Full, yet full/a can be replaced and full/b cleared; then full/d fits.
    send_ok(
        &mut sender,
        &[
            doc("a2"),
            doc("").with("mqtt.topic", text("full/b")),
            doc("d1").with("mqtt.topic", text("full/d")),
        ],
    )
    .await?;
    let mut last = broker.listener(version, filter).await?;
    let docs = receive_exactly(&mut last, 2).await?;
    assert_eq!(
        seen(&docs),
        [triple("full/a", "a2", true), triple("full/d", "d1", true)]
    );
    close_listener(last).await?;
    close_listener(live).await?;
    close_sender(sender).await?;
    broker.shutdown().await
}
on_both_versions!(max_messages_refuses_new_topics_when_full);

/// `retain.max_payload_bytes: 16`: a payload of 16 bytes is stored, one of
/// 17 is delivered live but not stored, and it does not replace the message
/// the topic already has.
async fn max_payload_bytes_stores_only_small_payloads(version: Version) -> Result<()> {
    let broker = Builtin::start(retain(|r| r.max_payload_bytes = 16)).await?;
    let filter = json!({"subscriptions": [{"filter": "size/#", "qos": 1}]});
    let mut live = broker.listener(version, filter.clone()).await?;
    let mut sender = broker
        .sender(
            version,
            json!({"topic": "size/fits", "qos": 1, "retained": true}),
        )
        .await?;
    let fits = "0123456789abcdef";
    let over = "0123456789abcdefg";
    send_ok(
        &mut sender,
        &[
            doc(fits),
            doc(over).with("mqtt.topic", text("size/over")),
            doc(over),
        ],
    )
    .await?;
    let docs = receive_exactly(&mut live, 3).await?;
    assert_eq!(
        seen(&docs),
        [
            triple("size/fits", fits, false),
            triple("size/over", over, false),
            triple("size/fits", over, false)
        ]
    );

    let mut later = broker.listener(version, filter).await?;
    let docs = receive_exactly(&mut later, 1).await?;
    assert_eq!(seen(&docs), [triple("size/fits", fits, true)]);
    close_listener(later).await?;
    close_listener(live).await?;
    close_sender(sender).await?;
    broker.shutdown().await
}
on_both_versions!(max_payload_bytes_stores_only_small_payloads);

// ---------------------------------------------------------------------------
// retain.default_expiry
// ---------------------------------------------------------------------------

/// `retain.default_expiry: 1` with `clean_interval: 1`: a retained message
/// without an expiry of its own (from a 3.1.1 publisher, which cannot give
/// one, and from a 5.0 one) is gone after a second; the PUBLISH's own Message
/// Expiry Interval takes precedence either way, from the configuration
/// (`message_expiry_secs: 4`, longer than the default but gone after four
/// seconds) or from the document (`mqtt.message-expiry: 3600`). A message
/// delivered from the store carries its remaining interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_expiry_and_the_publishs_own_expiry() -> Result<()> {
    let broker = Builtin::start(retain(|r| {
        r.default_expiry = 1;
        r.clean_interval = 1;
    }))
    .await?;
    let filter = json!({"subscriptions": [{"filter": "exp/#", "qos": 1}]});
    let mut v311 = broker
        .sender(
            Version::V311,
            json!({"topic": "exp/default-v311", "qos": 1, "retained": true}),
        )
        .await?;
    let mut v5 = broker
        .sender(
            Version::V5,
            json!({"topic": "exp/own", "qos": 1, "retained": true,
                   "properties": {"message_expiry_secs": 4}}),
        )
        .await?;
    let mut plain_v5 = broker
        .sender(
            Version::V5,
            json!({"topic": "exp/default-v5", "qos": 1, "retained": true}),
        )
        .await?;
    send_ok(&mut v311, &[doc("default")]).await?;
    send_ok(
        &mut v5,
        &[
            doc("own"),
            doc("long")
                .with("mqtt.topic", text("exp/long"))
                .with("mqtt.message-expiry", Value::Integer(3600)),
        ],
    )
    .await?;
    // A 5.0 PUBLISH without the property: the default applies.
    send_ok(&mut plain_v5, &[doc("default")]).await?;
    let sent = Instant::now();

    // Past the default expiry, well before the own one.
    tokio::time::sleep_until(sent + Duration::from_millis(1500)).await;
    let mut first = broker.listener(Version::V5, filter.clone()).await?;
    let docs = receive_exactly(&mut first, 2).await?;
    assert_eq!(
        seen(&docs),
        [
            triple("exp/long", "long", true),
            triple("exp/own", "own", true)
        ]
    );
    let own = expiry(&docs[1]).context("a 5.0 delivery carries the remaining expiry")?;
    assert!((1..4).contains(&own), "remaining expiry of exp/own: {own}");
    let long = expiry(&docs[0]).context("a 5.0 delivery carries the remaining expiry")?;
    assert!(
        (3590..=3600).contains(&long),
        "remaining of exp/long: {long}"
    );
    close_listener(first).await?;

    // Past the own expiry too; a 3.1.1 listener sees the same store.
    tokio::time::sleep_until(sent + Duration::from_millis(4500)).await;
    let mut second = broker.listener(Version::V311, filter).await?;
    let docs = receive_exactly(&mut second, 1).await?;
    assert_eq!(seen(&docs), [triple("exp/long", "long", true)]);
    close_listener(second).await?;
    close_sender(v311).await?;
    close_sender(v5).await?;
    close_sender(plain_v5).await?;
    broker.shutdown().await
}

// ---------------------------------------------------------------------------
// retain.wildcard_delivery
// ---------------------------------------------------------------------------

/// `retain.wildcard_delivery: false` (AWS IoT Core's rule): a new
/// subscription with a wildcard gets no retained message, one that names the
/// topic exactly does, and the wildcard subscription still gets live
/// messages.
async fn wildcard_delivery_off_sends_retained_only_to_exact_topics(version: Version) -> Result<()> {
    let broker = Builtin::start(retain(|r| r.wildcard_delivery = false)).await?;
    let mut sender = broker
        .sender(
            version,
            json!({"topic": "wd/x/state", "qos": 1, "retained": true}),
        )
        .await?;
    send_ok(
        &mut sender,
        &[
            doc("x"),
            doc("sentinel").with("mqtt.topic", text("wd/sentinel")),
        ],
    )
    .await?;

    // One connection, three filters: only the exact one gets its retained
    // message, which also marks that the others had their chance.
    let mut wildcard = broker
        .listener(
            version,
            json!({"subscriptions": [
                {"filter": "wd/+/state", "qos": 1},
                {"filter": "wd/#", "qos": 1},
                {"filter": "wd/sentinel", "qos": 1}
            ]}),
        )
        .await?;
    let docs = receive_through(&mut wildcard, "wd/sentinel").await?;
    assert_eq!(seen(&docs), [triple("wd/sentinel", "sentinel", true)]);
    commit(&mut wildcard, &docs).await?;

    let mut exact = broker
        .listener(
            version,
            json!({"subscriptions": [{"filter": "wd/x/state", "qos": 1}]}),
        )
        .await?;
    let docs = receive_exactly(&mut exact, 1).await?;
    assert_eq!(seen(&docs), [triple("wd/x/state", "x", true)]);

    send_ok(&mut sender, &[doc("x2")]).await?;
    let docs = receive_through(&mut wildcard, "wd/x/state").await?;
    assert!(
        docs.iter()
            .all(|d| topic(d) == "wd/x/state" && payload(d) == "x2" && !retained(d)),
        "{}",
        summary(&docs)
    );
    commit(&mut wildcard, &docs).await?;
    close_listener(exact).await?;
    close_listener(wildcard).await?;
    close_sender(sender).await?;
    broker.shutdown().await
}
on_both_versions!(wildcard_delivery_off_sends_retained_only_to_exact_topics);

// ---------------------------------------------------------------------------
// retain.delivery_batch and retain.delivery_rate
// ---------------------------------------------------------------------------

/// `retain.delivery_batch` and `retain.delivery_rate`, alone and together,
/// with a small in-flight window: every one of N retained messages arrives,
/// in topic order (the order the broker walks its store), none twice. With
/// a rate the delivery takes at least N / rate seconds; that is not asserted
/// (no timing in tests), but the deadline allows for it.
async fn paced_delivery_sends_every_retained_message_once(version: Version) -> Result<()> {
    const N: usize = 30;
    let cases: [(usize, u32, u16); 3] = [(4, 0, 100), (0, 60, 100), (5, 50, 3)];
    for (batch, rate, inflight) in cases {
        let mut config = retain(|r| {
            r.delivery_batch = batch;
            r.delivery_rate = rate;
        });
        config.max_inflight = inflight;
        let broker = Builtin::start(config).await?;
        let mut sender = broker
            .sender(
                version,
                json!({"topic": "pace/00", "qos": 1, "retained": true}),
            )
            .await?;
        let topics: Vec<String> = (0..N).map(|i| format!("pace/{i:02}")).collect();
        let docs: Vec<Document> = topics
            .iter()
            .map(|t| doc(format!("v-{t}")).with("mqtt.topic", text(t)))
            .collect();
        send_ok(&mut sender, &docs).await?;

        let mut listener = broker
            .listener(
                version,
                json!({"subscriptions": [{"filter": "pace/#", "qos": 1}]}),
            )
            .await?;
        let allowance = match rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(N as f64 / f64::from(rate)),
        };
        let mut got = receive_committing(&mut listener, N, allowance).await?;
        got.extend(receive_for(&mut listener, QUIET).await?);
        let case = format!("delivery_batch {batch}, delivery_rate {rate}, max_inflight {inflight}");
        let got_topics: Vec<&str> = got.iter().map(topic).collect();
        assert_eq!(got_topics, topics, "{case}");
        assert!(
            got.iter()
                .all(|d| retained(d) && payload(d) == format!("v-{}", topic(d))),
            "{case}: {}",
            summary(&got)
        );
        close_listener(listener).await?;
        close_sender(sender).await?;
        broker.shutdown().await?;
    }
    Ok(())
}
on_both_versions!(paced_delivery_sends_every_retained_message_once);

// ---------------------------------------------------------------------------
// Profiles
// ---------------------------------------------------------------------------

fn profile(profile: Profile) -> BrokerConfig {
    BrokerConfig {
        port: 0,
        ..BrokerConfig::profile(profile)
    }
}

/// `profile: mosquitto`: retained messages to wildcard subscriptions, at
/// every QoS up to 2, each kept at the QoS it was published with.
async fn profile_mosquitto_delivers_to_wildcards_at_every_qos(version: Version) -> Result<()> {
    let broker = Builtin::start(profile(Profile::Mosquitto)).await?;
    let mut sender = broker
        .sender(version, json!({"topic": "mq/0", "retained": true}))
        .await?;
    let docs: Vec<Document> = (0..3)
        .map(|q| {
            doc(format!("q{q}"))
                .with("mqtt.topic", text(&format!("mq/{q}")))
                .with("mqtt.qos", Value::Integer(q))
        })
        .collect();
    send_ok(&mut sender, &docs).await?;
    let mut listener = broker
        .listener(
            version,
            json!({"subscriptions": [{"filter": "mq/#", "qos": 2}]}),
        )
        .await?;
    let docs = receive_exactly(&mut listener, 3).await?;
    let got: Vec<(&str, i64, bool)> = docs
        .iter()
        .map(|d| (topic(d), qos(d), retained(d)))
        .collect();
    assert_eq!(
        got,
        [("mq/0", 0, true), ("mq/1", 1, true), ("mq/2", 2, true)]
    );
    close_listener(listener).await?;
    close_sender(sender).await?;
    broker.shutdown().await
}
on_both_versions!(profile_mosquitto_delivers_to_wildcards_at_every_qos);

/// `profile: emqx`, 5.0: packets and retained payloads up to 1 MiB. A
/// retained payload of half a MiB is stored and delivered whole; a message
/// over the packet size the broker announced fails in the connector before
/// it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_emqx_one_mib_limits() -> Result<()> {
    let broker = Builtin::start(profile(Profile::Emqx)).await?;
    let mut sender = broker
        .sender(
            Version::V5,
            json!({"topic": "emqx/big", "qos": 1, "retained": true}),
        )
        .await?;
    let half = vec![b'h'; 512 * 1024];
    let over = vec![b'o'; 1024 * 1024 + 1];
    let results = send(&mut sender, &[doc(half.clone()), doc(over)]).await?;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let error = failed(&results, 1);
    assert!(
        error.message.contains("maximum packet size"),
        "{}",
        error.message
    );
    let mut listener = broker
        .listener(
            Version::V5,
            json!({"subscriptions": [{"filter": "emqx/#"}]}),
        )
        .await?;
    let docs = receive_exactly(&mut listener, 1).await?;
    assert_eq!(topic(&docs[0]), "emqx/big");
    assert!(retained(&docs[0]));
    assert!(
        docs[0].payload == half,
        "the half-MiB payload arrives whole"
    );
    close_listener(listener).await?;
    close_sender(sender).await?;
    broker.shutdown().await
}

/// `profile: aws-iot`, 5.0: a wildcard subscription gets no retained
/// message while the exact topic does, and a message over the 128 KiB
/// packet limit (announced in CONNACK) fails in the connector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_aws_iot_exact_topic_and_128_kib() -> Result<()> {
    let broker = Builtin::start(profile(Profile::AwsIot)).await?;
    let v5 = Version::V5;
    let mut sender = broker
        .sender(
            v5,
            json!({"topic": "aws/t1/shadow", "qos": 1, "retained": true}),
        )
        .await?;
    let results = send(
        &mut sender,
        &[doc("state"), doc(vec![b'x'; 128 * 1024 + 1])],
    )
    .await?;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let error = failed(&results, 1);
    assert!(
        error.message.contains("maximum packet size"),
        "{}",
        error.message
    );

    let mut wildcard = broker
        .listener(
            v5,
            json!({"subscriptions": [{"filter": "aws/+/shadow", "qos": 1}]}),
        )
        .await?;
    let mut exact = broker
        .listener(
            v5,
            json!({"subscriptions": [{"filter": "aws/t1/shadow", "qos": 1}]}),
        )
        .await?;
    let docs = receive_exactly(&mut exact, 1).await?;
    assert_eq!(seen(&docs), [triple("aws/t1/shadow", "state", true)]);
    // The exact listener subscribed after the wildcard one and has its
    // message: the wildcard one has had its chance.
    let none = receive_for(&mut wildcard, QUIET).await?;
    assert!(none.is_empty(), "{}", summary(&none));
    close_listener(exact).await?;
    close_listener(wildcard).await?;
    close_sender(sender).await?;
    broker.shutdown().await
}

/// `profile: tagoio`, 5.0: no retained messages (CONNACK Retain Available
/// 0), so a retained send fails in the connector while a plain one goes
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_tagoio_has_no_retain() -> Result<()> {
    let broker = Builtin::start(profile(Profile::Tagoio)).await?;
    let v5 = Version::V5;
    let mut listener = broker
        .listener(
            v5,
            json!({"subscriptions": [{"filter": "tago/#", "qos": 1}]}),
        )
        .await?;
    let mut sender = broker
        .sender(v5, json!({"topic": "tago/d1", "qos": 1, "retained": true}))
        .await?;
    let results = send(
        &mut sender,
        &[
            doc("retained"),
            doc("plain").with("mqtt.retained", Value::Boolean(false)),
        ],
    )
    .await?;
    assert_eq!(failed(&results, 0).code, ErrorCode::Unsupported);
    assert!(results[1].is_ok(), "{:?}", results[1]);
    let docs = receive_exactly(&mut listener, 1).await?;
    assert_eq!(seen(&docs), [triple("tago/d1", "plain", false)]);
    close_listener(listener).await?;
    close_sender(sender).await?;
    broker.shutdown().await
}

// ---------------------------------------------------------------------------
// The connector's side, on every broker
// ---------------------------------------------------------------------------

/// `retain_supported: false` in the connection is honoured on a broker that
/// does have retain (on 5.0 it overrides CONNACK's Retain Available = 1): a
/// retained document fails with `unsupported`, `strip` sends it plain, and
/// nothing is stored.
async fn declared_retain_unsupported_wins_over_the_broker(target: &Target) -> Result<()> {
    let declared = target.connection_with(json!({"retain_supported": false}));
    let rt = runtime();
    let mut strict =
        open_sender(&rt, &declared, json!({"topic": "decl/a", "retained": true})).await?;
    let results = send(&mut strict, &[doc("a")]).await?;
    let error = failed(&results, 0);
    assert_eq!(error.code, ErrorCode::Unsupported, "{error:?}");
    assert!(
        error.message.contains("retain_supported"),
        "{}",
        error.message
    );

    let mut strip = open_sender(
        &rt,
        &declared,
        json!({"topic": "decl/b", "retained": true, "retain_unsupported": "strip"}),
    )
    .await?;
    send_ok(&mut strip, &[doc("b")]).await?;

    // A retained sentinel from an ordinary connection: the only retained
    // message a later listener finds.
    let mut normal = target
        .sender(json!({"topic": "decl/sentinel", "retained": true}))
        .await?;
    send_ok(&mut normal, &[doc("s")]).await?;
    let mut later = target
        .listener(json!({"subscriptions": [{"filter": "decl/#"}]}))
        .await?;
    let docs = receive_through(&mut later, "decl/sentinel").await?;
    assert_eq!(seen(&docs), [triple("decl/sentinel", "s", true)]);
    commit(&mut later, &docs).await?;
    close_listener(later).await?;
    for sender in [strict, strip, normal] {
        close_sender(sender).await?;
    }
    Ok(())
}
on_every_broker!(declared_retain_unsupported_wins_over_the_broker);

/// `action: "clear"` clears even when a document says
/// `mqtt.retained: false`: clearing is a retained PUBLISH by definition, so
/// the property cannot turn it into a plain empty message.
async fn clear_is_retained_whatever_the_document_says(target: &Target) -> Result<()> {
    let mut sender = target
        .sender(json!({"topic": "clr/a", "retained": true}))
        .await?;
    send_ok(
        &mut sender,
        &[doc("a"), doc("s").with("mqtt.topic", text("clr/sentinel"))],
    )
    .await?;
    let mut clear = target
        .sender(json!({"topic": "clr/a", "action": "clear"}))
        .await?;
    send_ok(
        &mut clear,
        &[doc("ignored").with("mqtt.retained", Value::Boolean(false))],
    )
    .await?;
    let mut later = target
        .listener(json!({"subscriptions": [{"filter": "clr/#"}]}))
        .await?;
    let docs = receive_through(&mut later, "clr/sentinel").await?;
    assert_eq!(seen(&docs), [triple("clr/sentinel", "s", true)]);
    commit(&mut later, &docs).await?;
    close_listener(later).await?;
    close_sender(clear).await?;
    close_sender(sender).await
}
on_every_broker!(clear_is_retained_whatever_the_document_says);

/// The Listen policies side by side, and the 5.0 subscription options they
/// sit next to. With a retained message stored, then a live message
/// published retained and a live sentinel:
/// - `retained: "deliver"` (explicit) gets the stored one flagged retained
///   and the live ones not flagged; on 5.0 with `retain_as_published` the
///   live retained one keeps its flag (MQTT-3.3.1-13), on 3.1.1 the option
///   is ignored;
/// - `deliver` with 5.0 `retain_handling: 2` gets no stored message
///   (MQTT-3.3.1-11); on 3.1.1 the option is ignored and it does;
/// - `skip` gets only the live ones, on both versions;
/// - `only` gets only the stored one and finishes.
async fn listen_policies_and_subscription_options(target: &Target) -> Result<()> {
    let v5 = target.version == Version::V5;
    let mut sender = target
        .sender(json!({"topic": "pol/stored", "qos": 1, "retained": true}))
        .await?;
    send_ok(&mut sender, &[doc("stored")]).await?;

    let listen = |retained: &str, options: serde_json::Value| {
        let mut subscription = json!({"filter": "pol/#", "qos": 1});
        if let (Some(s), Some(o)) = (subscription.as_object_mut(), options.as_object()) {
            s.extend(o.clone());
        }
        json!({"subscriptions": [subscription], "retained": retained, "quiet_ms": 300})
    };
    let mut deliver = target
        .listener(listen("deliver", json!({"retain_as_published": true})))
        .await?;
    let mut handling2 = target
        .listener(listen("deliver", json!({"retain_handling": 2})))
        .await?;
    let mut skip = target.listener(listen("skip", json!({}))).await?;
    let mut only = target.listener(listen("only", json!({}))).await?;

    send_ok(
        &mut sender,
        &[
            doc("live-retained").with("mqtt.topic", text("pol/live")),
            doc("end")
                .with("mqtt.topic", text("pol/sentinel"))
                .with("mqtt.retained", Value::Boolean(false)),
        ],
    )
    .await?;

    // The snapshot first, `next()` before `done()` (see
    // `a_snapshot_asked_done_late_still_has_its_retained_messages`).
    let stored = triple("pol/stored", "stored", true);
    let got = read_snapshot(&mut only).await?;
    assert_eq!(seen(&got), std::slice::from_ref(&stored));

    let live = triple("pol/live", "live-retained", v5);
    let sentinel = triple("pol/sentinel", "end", false);
    let docs = receive_through(&mut deliver, "pol/sentinel").await?;
    assert_eq!(seen(&docs), [stored.clone(), live, sentinel.clone()]);
    commit(&mut deliver, &docs).await?;

    let docs = receive_through(&mut handling2, "pol/sentinel").await?;
    let live = triple("pol/live", "live-retained", false);
    let mut want = vec![live.clone(), sentinel.clone()];
    if !v5 {
        want.insert(0, stored);
    }
    assert_eq!(seen(&docs), want);
    commit(&mut handling2, &docs).await?;

    let docs = receive_through(&mut skip, "pol/sentinel").await?;
    assert_eq!(seen(&docs), [live, sentinel]);
    commit(&mut skip, &docs).await?;

    for listener in [deliver, handling2, skip, only] {
        close_listener(listener).await?;
    }
    close_sender(sender).await
}
on_every_broker!(listen_policies_and_subscription_options);

/// A last will with retain: the device publishes "online" retained, its
/// connection drops without DISCONNECT, the broker publishes the will
/// "offline" (a watcher sees it live), and a subscriber that comes later
/// gets "offline" from the retained store (MQTT-3.1.2-8, -17 in 3.1.1;
/// MQTT-3.1.2-8, -14 in 5.0).
async fn retained_will_reaches_a_later_subscriber(target: &Target) -> Result<()> {
    let device = target.connection_with(json!({
        "client_id": format!("will-device-{}", target.version.config_value()),
        "keep_alive_secs": 5,
        "will": {"topic": "lwt/device", "payload": "offline", "qos": 1, "retain": true}
    }));
    let mut sender = open_sender(
        &runtime(),
        &device,
        json!({"topic": "lwt/device", "qos": 1, "retained": true}),
    )
    .await?;
    send_ok(&mut sender, &[doc("online")]).await?;
    let mut watcher = target
        .listener(json!({"subscriptions": [{"filter": "lwt/#", "qos": 1}]}))
        .await?;
    let docs = receive(&mut watcher, 1).await?;
    assert_eq!(seen(&docs), [triple("lwt/device", "online", true)]);
    commit(&mut watcher, &docs).await?;

    // Dropped, not closed: the connection ends without DISCONNECT.
    drop(sender);
    let docs = receive(&mut watcher, 1).await?;
    assert_eq!(seen(&docs), [triple("lwt/device", "offline", false)]);
    commit(&mut watcher, &docs).await?;
    close_listener(watcher).await?;

    let mut later = target
        .listener(json!({"subscriptions": [{"filter": "lwt/#", "qos": 1}]}))
        .await?;
    let docs = receive(&mut later, 1).await?;
    assert_eq!(seen(&docs), [triple("lwt/device", "offline", true)]);
    assert_eq!(qos(&docs[0]), 1);
    commit(&mut later, &docs).await?;
    close_listener(later).await
}
on_every_broker!(retained_will_reaches_a_later_subscriber);

/// A `retained: "only"` snapshot asked `done()` late: the pipeline looks
/// a while after opening (longer than `quiet_ms`), when the retained
/// messages are already waiting in the host's queue, and asks `done()`
/// before `next()`, as a `while !done() { next() }` loop does. The snapshot
/// is not done: its messages are still to be handed out (`done()` takes
/// what the host holds before it declares the snapshot complete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_asked_done_late_still_has_its_retained_messages() -> Result<()> {
    let target = Target::start(BrokerKind::Builtin, Version::V5).await?;
    let mut sender = target
        .sender(json!({"topic": "late/a", "qos": 1, "retained": true}))
        .await?;
    send_ok(&mut sender, &[doc("a")]).await?;
    let mut only = target
        .listener(
            json!({"subscriptions": [{"filter": "late/#"}], "retained": "only", "quiet_ms": 200}),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while !within("listener.done", only.done()).await?? {
        anyhow::ensure!(Instant::now() < deadline, "the snapshot did not finish");
        let batch = within("listener.next", only.next(100, Duration::from_millis(200))).await??;
        commit(&mut only, &batch).await?;
        got.extend(batch);
    }
    assert_eq!(seen(&got), [triple("late/a", "a", true)]);
    close_listener(only).await?;
    close_sender(sender).await
}
