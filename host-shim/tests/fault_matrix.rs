//! The fault matrix as tests: each fault of [`matrix::Fault`] on a stream of
//! 10,000 documents through the connector and the built-in broker, at QoS 1
//! and 2; and the listening host killed on Mosquitto too, where the
//! guarantee rests on the connector and any broker that keeps sessions.
//! Goal: nothing lost, nothing failed, no duplicate at QoS 2;
//! duplicates at QoS 1 are printed (a fault that makes a client resend
//! makes them). `cargo bench -p e2e --bench report -- faults` runs the same
//! streams at 100,000 documents and prints the table.

// Shared with the benchmark, which uses more of it.
#[allow(dead_code)]
#[path = "fault_matrix/matrix.rs"]
mod matrix;

use host_shim::host::{Limits, Runtime};
use matrix::{Fault, Matrix, Target};
use std::path::Path;
use std::sync::OnceLock;

/// Documents per stream.
const COUNT: usize = 10_000;

/// One runtime for the suite, so the component is compiled once.
fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Runtime::embedded(Limits::default()).expect("the embedded component loads"))
        .clone()
}

async fn stream_on(target: Target, fault: Fault, qos: u8) {
    let matrix = Matrix::new(runtime(), Path::new(env!("CARGO_BIN_EXE_host-shim")))
        .expect("the matrix's directory");
    let outcome = matrix
        .run_on(target, fault, qos, COUNT)
        .await
        .expect("the stream runs");
    println!("{}", matrix::table(std::slice::from_ref(&outcome)));
    assert_eq!(outcome.send_failed, 0, "{outcome:?}");
    assert_eq!(outcome.lost, 0, "{outcome:?}");
    if qos == 2 {
        assert_eq!(outcome.duplicated, 0, "{outcome:?}");
    }
}

macro_rules! matrix_tests {
    ($($name:ident: $target:expr, $fault:expr, $qos:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                stream_on($target, $fault, $qos).await;
            }
        )*
    };
}

matrix_tests! {
    broker_killed_qos1: Target::Builtin, Fault::BrokerKilled, 1;
    broker_killed_qos2: Target::Builtin, Fault::BrokerKilled, 2;
    connections_dropped_qos1: Target::Builtin, Fault::ConnectionsDropped, 1;
    connections_dropped_qos2: Target::Builtin, Fault::ConnectionsDropped, 2;
    acks_lost_qos1: Target::Builtin, Fault::AcksLost, 1;
    acks_lost_qos2: Target::Builtin, Fault::AcksLost, 2;
    listener_killed_qos1: Target::Builtin, Fault::ListenerKilled, 1;
    listener_killed_qos2: Target::Builtin, Fault::ListenerKilled, 2;
    slow_consumer_qos1: Target::Builtin, Fault::SlowConsumer, 1;
    slow_consumer_qos2: Target::Builtin, Fault::SlowConsumer, 2;
    worker_killed_qos1: Target::Builtin, Fault::WorkerKilled, 1;
    worker_killed_qos2: Target::Builtin, Fault::WorkerKilled, 2;
    listener_killed_on_mosquitto_qos1: Target::Mosquitto, Fault::ListenerKilled, 1;
    listener_killed_on_mosquitto_qos2: Target::Mosquitto, Fault::ListenerKilled, 2;
}
