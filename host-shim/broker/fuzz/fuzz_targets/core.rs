//! Arbitrary bytes as a script of several connections' traffic, transport
//! ends, writes and clock moves into the broker's core.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mqtt_broker::fuzzing::core(data));
