//! Arbitrary bytes as one connection's stream into the broker's decoder,
//! and every packet decoded encoded back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mqtt_broker::fuzzing::codec(data));
