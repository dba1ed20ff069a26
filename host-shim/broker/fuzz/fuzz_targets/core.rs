//! Arbitrary scripts of bytes arriving on four connections, time passing
//! and connections closing, driven through the codec into the broker core
//! (see `mqtt_broker::fuzzing::drive_core`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mqtt_broker::fuzzing::drive_core(data));
