//! Reading and verifying the seed system's ("V3") files, with that system's
//! exact algorithms (see `docs/LEGACY-FORMATS.md`):
//! truncated SHA-256 over Python's `json.dumps(obj, sort_keys=True)`.

use crate::durable::{self, ReadOutcome};
use crate::error::{Error, Result};
use crate::integrity::hex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Largest legacy file read.
const LEGACY_FILE_LIMIT: u64 = 64 * 1024 * 1024;
const META_FIELDS: [&str; 3] = ["_checksum", "_updated_at", "_version"];

/// Python's `json.dumps(value, sort_keys=True)` with default arguments:
/// `", "` and `": "` separators, `ensure_ascii`, floats as `repr(float)`.
pub fn python_dumps_sorted(value: &Value) -> String {
    let mut out = String::new();
    write_py(value, &mut out);
    out
}

fn write_py(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                out.push_str(&python_float_repr(n.as_f64().expect("f64")));
            }
        }
        Value::String(s) => write_py_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Python sorts str keys by code point, which is UTF-8 byte order.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_string(key, out);
                out.push_str(": ");
                write_py(&map[key], out);
            }
            out.push('}');
        }
    }
}

/// `ensure_ascii` escaping: everything outside printable ASCII (0x20..=0x7E)
/// becomes `\uXXXX` (lowercase; UTF-16 surrogate pairs above U+FFFF), with
/// the short forms for `"` `\` `\n` `\r` `\t` `\b` `\f`. DEL (0x7F) is
/// escaped too: Python's pattern is `[^\ -~]`.
fn write_py_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional
/// when 1e-4 <= |x| < 1e16 (always with a fractional part), else scientific
/// with a signed exponent of at least two digits.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    let (digits, exp) = crate::canonical::shortest_digits(f.abs());
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let exp_sign = if exp < 0 { '-' } else { '+' };
        let mantissa = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs())
    }
}

/// First 32 hex digits of SHA-256 of `text`.
fn short_sha(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))[..32].to_string()
}

/// A legacy state file, read and checked.
#[derive(Debug, Clone)]
pub struct LegacyState {
    pub path: PathBuf,
    /// The workflow fields, without `_version`, `_checksum`, `_updated_at`.
    pub data: Map<String, Value>,
    pub workflow_id: Option<String>,
    pub version: String,
    pub checksum: Option<String>,
    pub updated_at: Option<String>,
    /// `Err(reason)` if the file fails the seed system's own checks.
    pub verdict: std::result::Result<(), String>,
}

/// A legacy file's bytes, or why they are unusable (symlink, too large);
/// a missing file or an I/O failure is an error.
fn read_bytes(path: &Path) -> Result<std::result::Result<Vec<u8>, String>> {
    match durable::read_file(path, LEGACY_FILE_LIMIT) {
        Ok(ReadOutcome::Found(bytes)) => Ok(Ok(bytes)),
        Ok(ReadOutcome::Missing) => Err(Error::NotFound {
            what: "legacy file".into(),
            path: Some(path.to_path_buf()),
        }),
        Err(Error::Integrity { problem, .. }) => Ok(Err(problem)),
        Err(Error::TooLarge { size, limit, .. }) => {
            Ok(Err(format!("{size}, over the {limit}-byte limit")))
        }
        Err(e) => Err(e),
    }
}

/// Reads a state file and verifies it as the seed system did: version must
/// start with "3." (missing means "1.0"), and `_checksum` must equal the
/// first 32 hex digits of SHA-256 over the sorted dump of the other fields.
pub fn read_state(path: &Path) -> Result<LegacyState> {
    Ok(parse_state(read_bytes(path)?, path))
}

fn parse_json(bytes: std::result::Result<Vec<u8>, String>) -> std::result::Result<Value, String> {
    serde_json::from_slice(&bytes?).map_err(|e| format!("not valid JSON ({e})"))
}

/// [`read_state`] on bytes already read (or the reason they could not be).
pub fn parse_state(bytes: std::result::Result<Vec<u8>, String>, path: &Path) -> LegacyState {
    let mut state = LegacyState {
        path: path.to_path_buf(),
        data: Map::new(),
        workflow_id: None,
        version: "1.0".into(),
        checksum: None,
        updated_at: None,
        verdict: Ok(()),
    };
    let mut object = match parse_json(bytes) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            state.verdict = Err("not a JSON object".into());
            return state;
        }
        Err(why) => {
            state.verdict = Err(why);
            return state;
        }
    };
    state.version = object
        .get("_version")
        .and_then(Value::as_str)
        .unwrap_or("1.0")
        .to_string();
    state.checksum = object
        .get("_checksum")
        .and_then(Value::as_str)
        .map(String::from);
    state.updated_at = object
        .get("_updated_at")
        .and_then(Value::as_str)
        .map(String::from);
    for field in META_FIELDS {
        object.remove(field);
    }
    state.workflow_id = object
        .get("workflow_id")
        .and_then(Value::as_str)
        .map(String::from);
    let computed = short_sha(&python_dumps_sorted(&Value::Object(object.clone())));
    state.verdict = if !state.version.starts_with("3.") {
        Err(format!("version {:?} is not 3.x", state.version))
    } else {
        match &state.checksum {
            None => Err("no _checksum".into()),
            Some(c) if *c == computed => Ok(()),
            Some(c) => Err(format!(
                "checksum mismatch: file says {c}, content hashes to {computed}"
            )),
        }
    };
    state.data = object;
    state
}

/// A legacy checkpoint file.
#[derive(Debug, Clone)]
pub struct LegacyCheckpoint {
    pub path: PathBuf,
    pub id: String,
    pub workflow_id: String,
    pub phase_id: Option<String>,
    pub item_id: Option<String>,
    pub message: Option<String>,
    pub context_summary: Option<String>,
    pub timestamp: String,
    pub key_decisions: Vec<String>,
    pub file_manifest: Vec<String>,
    pub snapshot: Option<Value>,
    pub parent: Option<String>,
}

/// Reads a checkpoint file: `Ok(Err(reason))` if it is not a well-formed
/// checkpoint (legacy checkpoints carry no checksum, so form is all there is
/// to check).
pub fn read_checkpoint(path: &Path) -> Result<std::result::Result<LegacyCheckpoint, String>> {
    Ok(parse_checkpoint(read_bytes(path)?, path))
}

/// [`read_checkpoint`] on bytes already read (or the reason they could not be).
pub fn parse_checkpoint(
    bytes: std::result::Result<Vec<u8>, String>,
    path: &Path,
) -> std::result::Result<LegacyCheckpoint, String> {
    let object = match parse_json(bytes) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("not a JSON object".into()),
        Err(why) => return Err(why),
    };
    let text = |k: &str| object.get(k).and_then(Value::as_str).map(String::from);
    let list = |k: &str| -> std::result::Result<Vec<String>, String> {
        match object.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(String::from)
                        .ok_or(format!("{k} holds a non-string"))
                })
                .collect(),
            Some(_) => Err(format!("{k} is not an array")),
        }
    };
    let Some(id) = text("checkpoint_id") else {
        return Err("no checkpoint_id".into());
    };
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != id {
        return Err(format!("checkpoint_id {id:?} does not match the file name"));
    }
    let (Some(workflow_id), Some(timestamp)) = (text("workflow_id"), text("timestamp")) else {
        return Err("workflow_id or timestamp missing".into());
    };
    let key_decisions = list("key_decisions")?;
    let file_manifest = list("file_manifest")?;
    Ok(LegacyCheckpoint {
        path: path.to_path_buf(),
        id,
        workflow_id,
        phase_id: text("phase_id"),
        item_id: text("item_id"),
        message: text("message"),
        context_summary: text("context_summary"),
        timestamp,
        key_decisions,
        file_manifest,
        snapshot: object
            .get("workflow_state_snapshot")
            .filter(|v| !v.is_null())
            .cloned(),
        parent: text("parent_checkpoint_id"),
    })
}

/// A legacy audit log, verified with the seed system's chain rule.
#[derive(Debug, Clone)]
pub struct LegacyAudit {
    pub path: PathBuf,
    /// (line number, entry) for every non-blank line that parsed.
    pub entries: Vec<(usize, Map<String, Value>)>,
    /// The first bad line (1-based, blank lines skipped) and why.
    pub first_bad: Option<(usize, String)>,
}

/// Verifies a legacy `audit.jsonl`: `hash` = first 32 hex of SHA-256 of
/// `content` (first entry) or of `prev_hash + ":" + content`, where
/// `content` = sorted dump of `{timestamp, event, data}` (`data` null when
/// absent), and each `prev_hash` equals the previous entry's `hash`.
pub fn read_audit(path: &Path) -> Result<LegacyAudit> {
    let bytes = match durable::read_file(path, LEGACY_FILE_LIMIT)? {
        ReadOutcome::Found(b) => b,
        ReadOutcome::Missing => {
            return Err(Error::NotFound {
                what: "legacy audit log".into(),
                path: Some(path.to_path_buf()),
            });
        }
    };
    Ok(parse_audit(&bytes, path))
}

/// [`read_audit`] on bytes already read.
pub fn parse_audit(bytes: &[u8], path: &Path) -> LegacyAudit {
    let text = String::from_utf8_lossy(bytes);
    let mut audit = LegacyAudit {
        path: path.to_path_buf(),
        entries: Vec::new(),
        first_bad: None,
    };
    let mut previous: Option<String> = None;
    let mut line_no = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        line_no += 1;
        let mut bad = |reason: String| {
            if audit.first_bad.is_none() {
                audit.first_bad = Some((line_no, reason));
            }
        };
        let Ok(Value::Object(entry)) = serde_json::from_str::<Value>(line) else {
            bad("not a JSON object".into());
            continue;
        };
        let content = python_dumps_sorted(&serde_json::json!({
            "timestamp": entry.get("timestamp").cloned().unwrap_or(Value::Null),
            "event": entry.get("event").cloned().unwrap_or(Value::Null),
            "data": entry.get("data").cloned().unwrap_or(Value::Null),
        }));
        let prev_hash = entry.get("prev_hash").and_then(Value::as_str);
        let hash = entry.get("hash").and_then(Value::as_str);
        let expected = match (&previous, prev_hash) {
            (None, _) => short_sha(&content),
            (Some(_), Some(p)) => short_sha(&format!("{p}:{content}")),
            (Some(_), None) => String::new(),
        };
        if previous.is_some() && prev_hash != previous.as_deref() {
            bad("prev_hash does not match the previous entry's hash".into());
        } else if hash != Some(expected.as_str()) {
            bad("hash does not match the entry's content".into());
        }
        previous = hash.map(String::from);
        audit.entries.push((line_no, entry));
    }
    audit
}

/// Where a legacy project keeps its files.
#[derive(Debug, Clone, Default)]
pub struct LegacyTree {
    pub state: Option<PathBuf>,
    pub checkpoints: Vec<PathBuf>,
    pub audit: Option<PathBuf>,
}

/// The text of `path` if it is at most `limit` bytes of UTF-8; `None` if it
/// is missing, unreadable, longer or not text.
fn read_bounded_text(path: &Path, limit: u64) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: a FIFO opens (and reads as empty) at once instead of
    // waiting for a writer; nothing changes for regular files.
    let bytes = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .and_then(|file| durable::read_at_most(file, limit, 64))
        .ok()??;
    String::from_utf8(bytes).ok()
}

/// Finds the legacy files under `root`, newest layout first.
pub fn discover(root: &Path) -> Result<LegacyTree> {
    let orch = root.join(".orchestrator");
    let mut tree = LegacyTree::default();
    let mut checkpoint_dirs = Vec::new();
    // The text of `current` is a session id: read with a small bound, so a
    // name that leads to a device (`/dev/zero`) or a huge file costs nothing.
    let session = read_bounded_text(&orch.join("current"), 4096)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains(['/', '\\']) && s != "." && s != "..");
    if let Some(session) = &session {
        let dir = orch.join("sessions").join(session);
        tree.state = Some(dir.join("state.json")).filter(|p| p.is_file());
        checkpoint_dirs.push(dir.join("checkpoints"));
    }
    for candidate in [
        orch.join("state.json"),
        orch.join("v3").join("state.json"),
        root.join(".workflow_state.json"),
    ] {
        if tree.state.is_none() && candidate.is_file() {
            tree.state = Some(candidate);
        }
    }
    checkpoint_dirs.push(orch.join("checkpoints"));
    checkpoint_dirs.push(root.join(".workflow_checkpoints"));
    for dir in checkpoint_dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                tree.checkpoints.push(path);
            }
        }
    }
    tree.checkpoints.sort();
    let audit = orch.join("audit.jsonl");
    tree.audit = audit.is_file().then_some(audit);
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_follow_python_repr_around_its_switch_points() {
        let cases: [(f64, &str); 15] = [
            (25200386.333007812, "25200386.333007812"),
            (1.0, "1.0"),
            (0.0001, "0.0001"),
            (0.00009999, "9.999e-05"),
            (1e-7, "1e-07"),
            (123456.789, "123456.789"),
            (1e15, "1000000000000000.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (-2.5, "-2.5"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (138.40774964442448, "138.40774964442448"),
            (5e-324, "5e-324"),
        ];
        for (f, expected) in cases {
            assert_eq!(python_float_repr(f), expected, "{f:e}");
        }
    }

    #[test]
    fn strings_escape_like_ensure_ascii() {
        let v = json!({"b": "naïve café \u{1f680} \u{7f} \u{1} \"q\" \\ /", "a": [1, true, null]});
        assert_eq!(
            python_dumps_sorted(&v),
            r#"{"a": [1, true, null], "b": "na\u00efve caf\u00e9 \ud83d\ude80 \u007f \u0001 \"q\" \\ /"}"#
        );
    }
}
