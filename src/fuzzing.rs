//! The checks behind the fuzz targets (`fuzz/`), in the library so that the
//! same code runs under libFuzzer and in `tests/fuzz_corpus.rs`, which
//! replays the committed corpus on every CI run. Each function must not
//! panic for any input; the assertions are the properties fuzzed.

use crate::StateDoc;
use crate::checkpoint::Checkpoint;
use crate::file_store::checkpoint_index::{IndexRecord, RECORD_LEN};
use std::path::Path;

/// Any bytes as a state file; whatever is accepted re-encodes to a document
/// that decodes to the same value.
pub fn state_envelope(data: &[u8]) {
    if let Ok(doc) = StateDoc::decode(data, Path::new("wf.json"), "wf") {
        let mut bytes = Vec::new();
        doc.write_to(&mut bytes).expect("encode");
        let again = StateDoc::decode(&bytes, Path::new("wf.json"), "wf").expect("re-decode");
        assert_eq!(again, doc);
    }
}

/// Any bytes as a checkpoint file; accepted ones round-trip.
pub fn checkpoint(data: &[u8]) {
    // Take the expected id and workflow from the input when it has them, so
    // the fuzzer reaches the checks behind the identity check.
    let v: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    let id = v["id"]
        .as_str()
        .unwrap_or("01a21943-dff6-7084-b4b1-e30552673800");
    let wf = v["workflow"].as_str().unwrap_or("wf");
    if let Ok(cp) = Checkpoint::decode(data, Path::new("cp.json"), id, wf) {
        let again =
            Checkpoint::decode(&cp.to_bytes(), Path::new("cp.json"), id, wf).expect("re-decode");
        assert_eq!(again, cp);
    }
}

/// Any bytes as an audit log, unkeyed and keyed; "valid" means no bad line.
pub fn audit_line(data: &[u8]) {
    for key in [None, Some(&b"fuzzing-key-0123456789"[..])] {
        let report =
            crate::audit::verify_reader(data, key).expect("reading from memory cannot fail");
        assert_eq!(report.valid, report.first_bad.is_none());
    }
}

/// Any bytes as index records; an accepted record encodes back to itself.
pub fn index(data: &[u8]) {
    for chunk in data.chunks(RECORD_LEN) {
        if let Ok(record) = IndexRecord::decode(chunk) {
            assert_eq!(&record.encode()[..], chunk);
        }
    }
}

/// Any bytes as a seed-system state, checkpoint or audit log.
pub fn legacy(data: &[u8]) {
    let state = crate::legacy::parse_state(Ok(data.to_vec()), Path::new("state.json"));
    if state.verdict.is_ok() {
        assert!(state.checksum.is_some());
    }
    let _ = crate::legacy::parse_checkpoint(Ok(data.to_vec()), Path::new("cp_x.json"));
    let audit = crate::legacy::parse_audit(data, Path::new("audit.jsonl"));
    assert!(audit.first_bad.is_none_or(|(line, _)| line >= 1));
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        assert!(
            crate::legacy::python_dumps_sorted(&v).is_ascii(),
            "ensure_ascii output must be ASCII"
        );
    }
}

/// A fuzz target's check.
pub type Check = fn(&[u8]);

/// The targets by name, for the corpus replay.
pub const TARGETS: [(&str, Check); 5] = [
    ("state_envelope", state_envelope),
    ("checkpoint", checkpoint),
    ("audit_line", audit_line),
    ("index", index),
    ("legacy", legacy),
];
