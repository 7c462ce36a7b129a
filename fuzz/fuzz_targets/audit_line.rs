//! Any bytes as an audit log (see wfstate::fuzzing::audit_line).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wfstate::fuzzing::audit_line(data));
