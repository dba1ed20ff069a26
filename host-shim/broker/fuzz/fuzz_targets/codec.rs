//! Arbitrary bytes as one connection's stream: decoded as the broker reads
//! them, every packet decoded encoded back.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mqtt_broker::fuzzing::decode_stream(data));
