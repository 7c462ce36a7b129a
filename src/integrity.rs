//! Checksums of stored documents: `sha256:` + 64 lowercase hex digits over
//! the canonical JSON (RFC 8785) of the document without its checksum field.

use crate::canonical;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::io;

/// The member of a stored document that holds its checksum.
pub const CHECKSUM_FIELD: &str = "checksum";
const PREFIX: &str = "sha256:";

/// An `io::Write` that feeds a SHA-256 hasher, so canonical JSON can be
/// hashed as it is produced.
#[derive(Default)]
pub struct HashingWriter(pub Sha256);

impl io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Checksum of `document` computed over every member except `checksum`.
pub fn checksum_of(document: &Map<String, Value>) -> String {
    let mut hasher = HashingWriter::default();
    canonical::write_object_except(document, Some(CHECKSUM_FIELD), &mut hasher)
        .expect("hashing cannot fail");
    format!("{PREFIX}{}", hex(&hasher.0.finalize()))
}

/// The checksum `checksum_of` gives a document made of `members` plus a
/// `data` member whose value is the JSON text `data_text`, computed without
/// parsing that text into a tree (see `canonical::write_json_text`). Every
/// key of `members` must sort after `data`, since `data` is hashed first.
pub fn checksum_with_data_text(
    members: &Map<String, Value>,
    data_text: &str,
) -> serde_json::Result<String> {
    assert!(
        members.keys().all(|k| k.as_str() > "data"),
        "`data` sorts first"
    );
    let mut hasher = HashingWriter::default();
    io::Write::write_all(&mut hasher, b"{\"data\":").expect("hashing cannot fail");
    canonical::write_json_text(data_text, &mut hasher)?;
    let rest = canonical::to_string(&Value::Object(members.clone()));
    // `rest` is `{...}`: continue the object after `data` instead.
    if rest.len() > 2 {
        io::Write::write_all(&mut hasher, b",").expect("hashing cannot fail");
        io::Write::write_all(&mut hasher, &rest.as_bytes()[1..]).expect("hashing cannot fail");
    } else {
        io::Write::write_all(&mut hasher, b"}").expect("hashing cannot fail");
    }
    Ok(format!("{PREFIX}{}", hex(&hasher.0.finalize())))
}

/// Compares two checksums without an early exit, so the time taken says
/// nothing about where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Verifies the `checksum` member of `document`; on failure returns what was
/// wrong, in words.
pub fn verify(document: &Map<String, Value>) -> Result<(), String> {
    let stored = match document.get(CHECKSUM_FIELD) {
        Some(Value::String(s)) => s,
        Some(_) => return Err("checksum field is not a string".into()),
        None => return Err("checksum field is missing".into()),
    };
    if !stored.starts_with(PREFIX) || stored.len() != PREFIX.len() + 64 {
        return Err(format!(
            "checksum {stored:?} is not of the form sha256:<64 hex digits>"
        ));
    }
    let computed = checksum_of(document);
    if constant_time_eq(stored.as_bytes(), computed.as_bytes()) {
        Ok(())
    } else {
        Err(format!(
            "checksum mismatch: file says {stored}, content hashes to {computed}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checksum_is_sha256_of_canonical_form_without_checksum() {
        let doc = json!({"b": 1, "a": "x", "checksum": "ignored"});
        let expected = hex(&Sha256::digest(br#"{"a":"x","b":1}"#));
        assert_eq!(
            checksum_of(doc.as_object().unwrap()),
            format!("sha256:{expected}")
        );
    }

    #[test]
    fn verify_detects_any_change_to_covered_members() {
        let mut doc = json!({"data": {"n": 1}, "generation": 3});
        let sum = checksum_of(doc.as_object().unwrap());
        doc["checksum"] = json!(sum);
        assert!(verify(doc.as_object().unwrap()).is_ok());
        doc["data"]["n"] = json!(2);
        let err = verify(doc.as_object().unwrap()).unwrap_err();
        assert!(err.contains("mismatch"), "{err}");
    }
}
