//! See `wisp::fuzzing::core_ops`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wisp::fuzzing::core_ops(data);
});
