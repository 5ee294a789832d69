//! Fuzz the core with arbitrary SDP offers: see `wisp::fuzzing::sdp_offer`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wisp::fuzzing::sdp_offer(data);
});
