//! Any bytes as a state file (see wfstate::fuzzing::state_envelope).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wfstate::fuzzing::state_envelope(data));
