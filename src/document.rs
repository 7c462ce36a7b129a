//! Sealed JSON documents: an object with a `format` id and a `checksum`
//! over everything else. States and checkpoints are both stored this way, so
//! opening one (parse, check the format, verify the checksum) is one
//! function with one set of error messages.

use crate::error::{Error, Result};
use crate::integrity::{self, CHECKSUM_FIELD};
use serde_json::{Map, Value};
use std::path::Path;

/// Parses `bytes` as a sealed document of format `format` and verifies its
/// checksum. `family` is the format without its version (e.g.
/// `wfstate.state/`), so another version of a known format is reported as
/// unsupported rather than as foreign. `kind` names the document in errors.
pub fn open(
    bytes: &[u8],
    path: &Path,
    format: &str,
    family: &str,
    kind: &str,
) -> Result<Map<String, Value>> {
    let bad = |problem: String| Error::integrity(path, problem);
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_eof() {
            bad(format!("truncated or incomplete JSON ({e})"))
        } else {
            bad(format!("not valid JSON ({e})"))
        }
    })?;
    let Value::Object(doc) = value else {
        return Err(bad(format!(
            "expected a JSON object with \"format\": {format:?}: not a wfstate {kind} file"
        )));
    };
    match doc.get("format") {
        Some(Value::String(f)) if f == format => {}
        Some(Value::String(f)) if f.starts_with(family) => {
            return Err(bad(format!(
                "{kind} format {f:?} is not supported by this build (it reads {format:?})"
            )));
        }
        Some(other) => {
            return Err(bad(format!(
                "format is {other}, expected {format:?}: not a wfstate {kind} file"
            )));
        }
        None => {
            return Err(bad(format!(
                "no \"format\" member, expected {format:?}: not a wfstate {kind} file"
            )));
        }
    }
    integrity::verify(&doc).map_err(bad)?;
    Ok(doc)
}

/// Adds `checksum` to `doc`, computed over all its other members.
pub fn seal(mut doc: Map<String, Value>) -> Map<String, Value> {
    doc.remove(CHECKSUM_FIELD);
    let checksum = integrity::checksum_of(&doc);
    doc.insert(CHECKSUM_FIELD.into(), checksum.into());
    doc
}
