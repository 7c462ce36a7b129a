//! Any bytes as a checkpoint file (see wfstate::fuzzing::checkpoint).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wfstate::fuzzing::checkpoint(data));
