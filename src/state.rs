//! The state envelope: how one workflow's state is laid out as bytes and
//! verified when read back.
//!
//! ```json
//! {
//!   "format": "wfstate.state/1",
//!   "workflow": "release",
//!   "generation": 7,
//!   "updated_at": "2026-11-26T18:35:29.123456Z",
//!   "checksum": "sha256:…",
//!   "data": { … }
//! }
//! ```
//! `checksum` covers the canonical JSON (RFC 8785) of every other member.

use crate::document;
use crate::error::{Error, Result};
use crate::integrity::{self, CHECKSUM_FIELD};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

/// Format id of state documents this build reads and writes.
pub const STATE_FORMAT: &str = "wfstate.state/1";
const FORMAT_FAMILY: &str = "wfstate.state/";

/// One verified version of a workflow's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateDoc {
    pub workflow: String,
    /// 1 for the first save, +1 for every save after it.
    pub generation: u64,
    /// RFC 3339, UTC.
    pub updated_at: String,
    pub checksum: String,
    /// Where this version came from when it was not an ordinary save (for
    /// example `{"restored_from_checkpoint": id, ...}`); covered by the checksum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Value>,
    pub data: Value,
}

/// A saved version's identity, without its data (what a save of JSON
/// text returns, having never held the data as a tree).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SavedVersion {
    pub workflow: String,
    pub generation: u64,
    pub updated_at: String,
    pub checksum: String,
}

impl SavedVersion {
    pub fn of(doc: &StateDoc) -> SavedVersion {
        SavedVersion {
            workflow: doc.workflow.clone(),
            generation: doc.generation,
            updated_at: doc.updated_at.clone(),
            checksum: doc.checksum.clone(),
        }
    }
}

/// A state document sealed from JSON text (`StateDoc::seal_text`): the
/// same fields and checksum as `seal` would give, with the data still text.
#[derive(Debug)]
pub struct SealedText<'a> {
    pub workflow: String,
    pub generation: u64,
    pub updated_at: String,
    pub checksum: String,
    data_text: &'a str,
}

impl SealedText<'_> {
    /// Writes the document as `StateDoc::write_to` lays it out, except that
    /// the data is the text it was given (validated, whitespace around it
    /// trimmed). It reads back as the `StateDoc` that `seal` would give for
    /// that text parsed: same data, same checksum.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        let text = |s: &str| serde_json::to_string(s).expect("a string serializes");
        write!(
            out,
            "{{\n  \"format\": {},\n  \"workflow\": {},\n  \"generation\": {},\n  \
             \"updated_at\": {},\n  \"checksum\": {},\n  \"data\": ",
            text(STATE_FORMAT),
            text(&self.workflow),
            self.generation,
            text(&self.updated_at),
            text(&self.checksum),
        )?;
        out.write_all(self.data_text.as_bytes())?;
        out.write_all(b"\n}\n")
    }
}

/// Field order of the file: metadata first so a human sees it at the top.
#[derive(Serialize)]
struct OnDisk<'a> {
    format: &'a str,
    workflow: &'a str,
    generation: u64,
    updated_at: &'a str,
    checksum: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'a Value>,
    data: &'a Value,
}

impl StateDoc {
    /// Seals `data` into a new document, computing its checksum.
    pub fn seal(
        workflow: &str,
        generation: u64,
        updated_at: String,
        origin: Option<Value>,
        data: Value,
    ) -> StateDoc {
        let mut covered = Map::new();
        covered.insert("format".into(), STATE_FORMAT.into());
        covered.insert("workflow".into(), workflow.into());
        covered.insert("generation".into(), generation.into());
        covered.insert("updated_at".into(), updated_at.clone().into());
        if let Some(origin) = origin {
            covered.insert("origin".into(), origin);
        }
        covered.insert("data".into(), data);
        let checksum = integrity::checksum_of(&covered);
        let data = covered.remove("data").expect("inserted above");
        StateDoc {
            workflow: workflow.to_string(),
            generation,
            updated_at,
            checksum,
            origin: covered.remove("origin"),
            data,
        }
    }

    /// Seals data given as JSON text, without parsing it into a tree (for
    /// large states: see `canonical::write_json_text`). The text is not
    /// kept: write the document with [`SealedText::write_to`].
    pub fn seal_text<'a>(
        workflow: &str,
        generation: u64,
        updated_at: String,
        data_text: &'a str,
    ) -> serde_json::Result<SealedText<'a>> {
        let mut covered = Map::new();
        covered.insert("format".into(), STATE_FORMAT.into());
        covered.insert("workflow".into(), workflow.into());
        covered.insert("generation".into(), generation.into());
        covered.insert("updated_at".into(), updated_at.clone().into());
        let checksum = integrity::checksum_with_data_text(&covered, data_text)?;
        // Valid JSON (the checksum parsed it), so what surrounds the value
        // can only be JSON whitespace.
        let data_text = data_text.trim_matches([' ', '\t', '\n', '\r']);
        Ok(SealedText {
            workflow: workflow.to_string(),
            generation,
            updated_at,
            checksum,
            data_text,
        })
    }

    /// The document as one line of compact JSON with its newline: a
    /// record of the file store's state log (same fields, same checksum).
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(&self.on_disk()).expect("a document serializes");
        line.push(b'\n');
        line
    }

    fn on_disk(&self) -> OnDisk<'_> {
        OnDisk {
            format: STATE_FORMAT,
            workflow: &self.workflow,
            generation: self.generation,
            updated_at: &self.updated_at,
            checksum: &self.checksum,
            origin: self.origin.as_ref(),
            data: &self.data,
        }
    }

    /// Writes the document as pretty-printed JSON.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, &self.on_disk())?;
        out.write_all(b"\n")
    }

    /// Verifies a state file's bytes as [`StateDoc::decode`] does and returns
    /// the version without its data, never parsing the data into a tree
    /// (its checksum is computed from the text: `canonical::write_json_text`),
    /// so memory stays near the file's size. Anything unusual takes the
    /// full decode, whose errors are the ones reported.
    pub fn decode_version(
        bytes: &[u8],
        path: &Path,
        expected_workflow: &str,
    ) -> Result<SavedVersion> {
        match version_from_text(bytes, expected_workflow) {
            Some(version) => Ok(version),
            None => StateDoc::decode(bytes, path, expected_workflow).map(|d| SavedVersion::of(&d)),
        }
    }

    /// Parses and verifies a state file's bytes. `path` is named in every
    /// error; `expected_workflow` guards against a file copied to the wrong
    /// name.
    pub fn decode(bytes: &[u8], path: &Path, expected_workflow: &str) -> Result<StateDoc> {
        let bad = |problem: String| Error::integrity(path, problem);
        let mut doc = document::open(bytes, path, STATE_FORMAT, FORMAT_FAMILY, "state")?;
        let workflow = take_string(&mut doc, "workflow").map_err(bad)?;
        if workflow != expected_workflow {
            return Err(bad(format!(
                "holds workflow {workflow:?}, expected {expected_workflow:?}"
            )));
        }
        let generation = match doc.get("generation").and_then(Value::as_u64) {
            Some(g) if g >= 1 => g,
            _ => return Err(bad("generation is missing or not a positive integer".into())),
        };
        let updated_at = take_string(&mut doc, "updated_at").map_err(bad)?;
        let checksum = take_string(&mut doc, CHECKSUM_FIELD).map_err(bad)?;
        let origin = doc.remove("origin");
        let data = doc
            .remove("data")
            .ok_or_else(|| bad("data member is missing".into()))?;
        Ok(StateDoc {
            workflow,
            generation,
            updated_at,
            checksum,
            origin,
            data,
        })
    }
}

/// The light path of `decode_version`: `None` unless the document is a
/// well-formed state of `expected_workflow` whose checksum verifies.
fn version_from_text(bytes: &[u8], expected_workflow: &str) -> Option<SavedVersion> {
    let text = std::str::from_utf8(bytes).ok()?;
    // A map, so a repeated member keeps its last value, as in `decode`.
    let members: BTreeMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    let mut covered = Map::new();
    let mut data = None;
    for (key, raw) in members {
        if key == "data" {
            data = Some(raw);
        } else {
            covered.insert(key, serde_json::from_str(raw.get()).ok()?);
        }
    }
    let data = data?;
    let Some(Value::String(stored)) = covered.remove(CHECKSUM_FIELD) else {
        return None;
    };
    if covered.get("format")?.as_str()? != STATE_FORMAT
        || covered.get("workflow")?.as_str()? != expected_workflow
        || !covered.keys().all(|k| k.as_str() > "data")
    {
        return None;
    }
    let computed = integrity::checksum_with_data_text(&covered, data.get()).ok()?;
    if !integrity::constant_time_eq(stored.as_bytes(), computed.as_bytes()) {
        return None;
    }
    Some(SavedVersion {
        workflow: expected_workflow.to_string(),
        generation: covered.get("generation")?.as_u64().filter(|g| *g >= 1)?,
        updated_at: covered.get("updated_at")?.as_str()?.to_string(),
        checksum: stored,
    })
}

fn take_string(doc: &mut Map<String, Value>, key: &str) -> std::result::Result<String, String> {
    match doc.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{key} is not a string")),
        None => Err(format!("{key} member is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encoded(doc: &StateDoc) -> Vec<u8> {
        let mut out = Vec::new();
        doc.write_to(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trips_through_bytes() {
        for origin in [None, Some(json!({"restored_from_checkpoint": "x"}))] {
            let doc = StateDoc::seal(
                "wf",
                3,
                "2026-01-01T00:00:00Z".into(),
                origin,
                json!({"n": [1, 2.5]}),
            );
            let back = StateDoc::decode(&encoded(&doc), Path::new("wf.json"), "wf").unwrap();
            assert_eq!(back, doc);
        }
    }

    #[test]
    fn any_flipped_byte_fails_decoding() {
        let doc = StateDoc::seal(
            "wf",
            1,
            "2026-01-01T00:00:00Z".into(),
            Some(json!({"restored_from_checkpoint": "c"})),
            json!({"k": "value"}),
        );
        let bytes = encoded(&doc);
        for i in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x01;
            // Flipping whitespace can leave valid, identical JSON; every other
            // flip must be caught.
            if let Ok(back) = StateDoc::decode(&corrupt, Path::new("wf.json"), "wf") {
                assert_eq!(back, doc, "byte {i} changed the content undetected");
            }
        }
    }

    #[test]
    fn unknown_format_version_is_named() {
        let bytes = br#"{"format":"wfstate.state/2","workflow":"wf"}"#;
        let err = StateDoc::decode(bytes, Path::new("wf.json"), "wf").unwrap_err();
        assert!(err.to_string().contains("wfstate.state/2"), "{err}");
    }

    #[test]
    fn state_copied_under_another_name_is_refused() {
        let doc = StateDoc::seal("a", 1, "2026-01-01T00:00:00Z".into(), None, json!(null));
        let err = StateDoc::decode(&encoded(&doc), Path::new("b.json"), "b").unwrap_err();
        assert!(err.to_string().contains("expected \"b\""), "{err}");
    }
}
