//! Arrival order across connections: a SUBSCRIBE that reached the broker
//! before a PUBLISH on another connection is in force for that PUBLISH,
//! idle and while another client loads the broker. MQTT orders messages
//! only within a connection; this is the broker handling what reached its
//! sockets first, first, so that tests that do not wait for the SUBACK are
//! not flaky.
//!
//! A test binary of its own: cargo runs binaries one after another, so the
//! rest of the broker's suite does not load the machine while this one
//! watches the order of arrivals.

use anyhow::Result;
use e2e::*;

const ROUNDS: usize = 500;

/// Idle, then under load, one after the other on one broker: run side by
/// side, two such tests would load each other's clients too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_then_publish_at_once_on_fresh_connections_idle_and_under_load() -> Result<()> {
    let broker = Broker::start().await?;
    let idle = subscribe_then_publish_rounds(broker.addr(), ROUNDS, ROUND_WAIT).await?;
    let load = Load::start(broker.addr()).await?;
    let loaded = subscribe_then_publish_rounds(broker.addr(), ROUNDS, ROUND_WAIT).await?;
    let published = load.sent();
    drop(load);
    assert!(published > 0, "the background publisher published");
    assert_eq!(
        (idle, loaded),
        (ROUNDS, ROUNDS),
        "rounds where the PUBLISH sent after the SUBSCRIBE reached the subscriber, \
         idle and under load ({published} messages of background load)"
    );
    broker.shutdown().await
}
