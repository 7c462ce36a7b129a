//! Any bytes as seed-system files (see wfstate::fuzzing::legacy).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wfstate::fuzzing::legacy(data));
