//! Any bytes as checkpoint index records (see wfstate::fuzzing::index).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wfstate::fuzzing::index(data));
