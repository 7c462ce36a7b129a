//! The tamper-evident audit log: one JSON line per change the store makes,
//! each chained to the one before by a hash.
//!
//! ```text
//! {"seq":7,"time":"…","event":"state_update","actor":{…},"data":{…},
//!  "alg":"sha256","prev_hash":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! `hash` = SHA-256 (or, with a key, HMAC-SHA256) over `prev_hash`, a
//! newline, and the canonical JSON (RFC 8785) of the entry without `hash`.
//! The first entry's `prev_hash` is 64 zeros.
//!
//! What each mode proves: **unkeyed**, the chain detects accidental damage
//! and any edit by someone who does not recompute every later hash; someone
//! who can write the file *can* rewrite it into a new valid chain. **Keyed**
//! (`WFSTATE_AUDIT_KEY_FILE`), nobody without the key can produce a chain
//! that verifies, so edits, insertions and re-hashing are all detected;
//! truncation of the newest entries is not detectable from the log alone
//! (compare `seq` with an external record for that).
//!
//! This module is the chain that every backend shares: the entry, its
//! hash, verification, and the [`AuditTrail`] each backend implements. How
//! the embedded file store keeps its log durable is in
//! `file_store::audit_log`; PostgreSQL keeps it in a table.

use crate::canonical;
use crate::durable;
use crate::error::{Error, Result};
use crate::integrity::{constant_time_eq, hex};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::io::BufRead;
use std::path::Path;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Shortest key accepted for the keyed mode.
pub const MIN_KEY_LEN: usize = 16;
/// The longest key file read: far more than any HMAC key needs (64 bytes
/// already fill SHA-256's block), and a bound on what a wrong name costs.
pub const MAX_KEY_LEN: usize = 4096;
pub(crate) const ALG_PLAIN: &str = "sha256";
const ALG_KEYED: &str = "hmac-sha256";
const REDACTED: &str = "[REDACTED]";
/// Substrings that mark a path-like string as pointing at secrets.
const SECRET_MARKERS: [&str; 8] = [
    ".ssh",
    ".gnupg",
    ".secrets",
    ".env",
    "credential",
    "password",
    "api_key",
    "token",
];

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    pub pid: u32,
    pub host: String,
    pub user: String,
}

impl Actor {
    /// This process. Host and user are looked up once per process (the
    /// user lookup reads /etc/passwd, which every append would otherwise
    /// pay for); the pid is read each time, so a forked child is itself.
    pub fn current() -> Actor {
        static WHO: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
        let (host, user) = WHO.get_or_init(|| {
            let record = crate::lock::holder::HolderRecord::for_current_process(
                "",
                crate::LockMode::Exclusive,
                Some(""),
            );
            (record.host, record.user)
        });
        Actor {
            pid: std::process::id(),
            host: host.clone(),
            user: user.clone(),
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub time: String,
    pub event: String,
    pub actor: Actor,
    pub data: Value,
    pub alg: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The first line that failed verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadLine {
    /// 1-based physical line number.
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub entries: usize,
    pub valid: bool,
    pub first_bad: Option<BadLine>,
    /// A final line without its newline that does not parse: what a crash
    /// in the middle of an append leaves. Repair moves it aside.
    pub torn_tail: Option<usize>,
    pub keyed: bool,
}

pub(crate) fn hash_entry(key: Option<&[u8]>, prev_hash: &str, body: &Map<String, Value>) -> String {
    let mut canonical_body = Vec::new();
    canonical::write_object_except(body, Some("hash"), &mut canonical_body)
        .expect("writing to a Vec cannot fail");
    match key {
        None => {
            let mut h = Sha256::new();
            h.update(prev_hash.as_bytes());
            h.update(b"\n");
            h.update(&canonical_body);
            hex(&h.finalize())
        }
        Some(key) => {
            let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .expect("HMAC accepts keys of any length");
            mac.update(prev_hash.as_bytes());
            mac.update(b"\n");
            mac.update(&canonical_body);
            hex(&mac.finalize().into_bytes())
        }
    }
}

/// Replaces path-like strings that point at secrets with `[REDACTED]`, in
/// objects and arrays at any depth.
pub fn redact(value: &mut Value) {
    match value {
        Value::String(s) => {
            let lower = s.to_lowercase();
            let path_like = s.contains('/') || s.contains('\\');
            if path_like && SECRET_MARKERS.iter().any(|m| lower.contains(m)) {
                *s = REDACTED.to_string();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::Object(map) => map.values_mut().for_each(redact),
        _ => {}
    }
}

/// Builds the entries that continue a chain whose last entry is `tail`
/// (`(seq, hash)`, `None` for an empty log), each with its JSON line
/// (without the newline). Every backend chains through here, so all logs
/// verify with [`verify_reader`].
pub(crate) fn chain_entries(
    tail: Option<(u64, String)>,
    events: Vec<(String, Value)>,
    key: Option<&[u8]>,
) -> Vec<(AuditEntry, String)> {
    let (mut seq, mut prev_hash) = tail.unwrap_or((0, GENESIS_HASH.to_string()));
    let actor = Actor::current();
    let alg = if key.is_some() { ALG_KEYED } else { ALG_PLAIN };
    let mut chained = Vec::with_capacity(events.len());
    for (event, data) in events {
        seq += 1;
        let mut entry = AuditEntry {
            seq,
            time: crate::clock::now_rfc3339(),
            event,
            actor: actor.clone(),
            data,
            alg: alg.to_string(),
            prev_hash: prev_hash.clone(),
            hash: String::new(),
        };
        let Value::Object(body) = serde_json::to_value(&entry).expect("serializes") else {
            unreachable!("an entry serializes to an object")
        };
        entry.hash = hash_entry(key, &prev_hash, &body);
        prev_hash = entry.hash.clone();
        let line = serde_json::to_string(&entry).expect("serializes");
        chained.push((entry, line));
    }
    chained
}

/// What every backend's audit log offers.
pub trait AuditTrail: Send + Sync {
    /// Where the log lives, for messages.
    fn location(&self) -> String;
    /// Whether entries are HMAC-keyed (see the module documentation).
    fn is_keyed(&self) -> bool;
    /// Appends one entry (`data` is redacted first) and returns it once it
    /// is durable.
    fn append(&self, event: &str, mut data: Value) -> Result<AuditEntry> {
        redact(&mut data);
        let mut entries = self.append_batch(vec![(event.to_string(), data)])?;
        Ok(entries.pop().expect("one entry appended"))
    }
    /// Appends entries in order, atomically with respect to other
    /// appenders, without redaction (imported entries keep what they said).
    fn append_batch(&self, events: Vec<(String, Value)>) -> Result<Vec<AuditEntry>>;
    /// Checks the whole chain; reports the first bad entry.
    fn verify(&self) -> Result<VerifyReport>;
    /// Entries, oldest first, optionally only of one event, the newest
    /// `limit` of them.
    fn read(&self, event: Option<&str>, limit: Option<usize>) -> Result<Vec<AuditEntry>>;
}

/// Reads a key file for the keyed mode (at least 16 bytes; a trailing
/// newline is not part of the key).
pub fn read_key_file(path: &Path) -> Result<Vec<u8>> {
    // Read with a bound: the name may be a device or a pipe that never
    // ends (`/dev/zero`), which must be refused, not read forever.
    let read = std::fs::File::open(path)
        .and_then(|file| durable::read_at_most(file, MAX_KEY_LEN as u64, 64))
        .map_err(|e| Error::io("read audit key", path, e))?;
    let Some(mut key) = read else {
        return Err(Error::InvalidInput(format!(
            "audit key in {} is more than {MAX_KEY_LEN} bytes: not a key file",
            path.display()
        )));
    };
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < MIN_KEY_LEN {
        return Err(Error::InvalidInput(format!(
            "audit key in {} is {} bytes; at least {MIN_KEY_LEN} are required",
            path.display(),
            key.len()
        )));
    }
    Ok(key)
}

/// What one line says, checked on its own (in parallel with other lines);
/// the chain between lines is checked afterwards, in order.
enum LineCheck {
    Blank,
    Unparsable {
        complete: bool,
    },
    Malformed(String),
    Entry {
        seq: u64,
        alg: String,
        prev_hash: String,
        hash: String,
        /// `hash` recomputes from the entry's own `prev_hash` and content.
        hash_ok: bool,
    },
}

fn check_line(line: &[u8], key: Option<&[u8]>) -> LineCheck {
    let complete = line.last() == Some(&b'\n');
    let text = if complete {
        &line[..line.len() - 1]
    } else {
        line
    };
    if text.is_empty() {
        return LineCheck::Blank;
    }
    let value: Value = match serde_json::from_slice(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => return LineCheck::Unparsable { complete },
    };
    let Value::Object(body) = &value else {
        unreachable!("matched an object above")
    };
    // Deserialize from a reference: no copy of the entry.
    match AuditEntry::deserialize(&value) {
        Ok(entry) => {
            let computed = hash_entry(key, &entry.prev_hash, body);
            LineCheck::Entry {
                hash_ok: constant_time_eq(computed.as_bytes(), entry.hash.as_bytes()),
                seq: entry.seq,
                alg: entry.alg,
                prev_hash: entry.prev_hash,
                hash: entry.hash,
            }
        }
        Err(e) => LineCheck::Malformed(format!("entry fields are malformed: {e}")),
    }
}

/// Lines are checked in batches of about this many bytes, split across
/// threads: parsing each line into a JSON tree is most of the cost.
pub(crate) const VERIFY_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Verifies a log read from any reader (the file, or bytes when fuzzing);
/// see [`AuditLog::verify`]. `key` selects the keyed mode.
pub fn verify_reader(reader: impl BufRead, key: Option<&[u8]>) -> std::io::Result<VerifyReport> {
    verify_reader_reporting(reader, key, &mut |_| {})
}

/// [`verify_reader`], telling `checked` how many bytes have been checked
/// after each batch.
pub fn verify_reader_reporting(
    mut reader: impl BufRead,
    key: Option<&[u8]>,
    checked: &mut dyn FnMut(u64),
) -> std::io::Result<VerifyReport> {
    let mut consumed = 0u64;
    let mut report = VerifyReport {
        entries: 0,
        valid: true,
        first_bad: None,
        torn_tail: None,
        keyed: key.is_some(),
    };
    let expected_alg = if key.is_some() { ALG_KEYED } else { ALG_PLAIN };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut expected_seq = 1u64;
    let mut line_no = 0;
    loop {
        // Read the next batch of whole lines into one buffer (the last line
        // of the file may lack its newline).
        let mut buffer = Vec::with_capacity(VERIFY_BATCH_BYTES + 64 * 1024);
        while buffer.len() < VERIFY_BATCH_BYTES {
            if reader.read_until(b'\n', &mut buffer)? == 0 {
                break;
            }
        }
        if buffer.is_empty() {
            break;
        }
        consumed += buffer.len() as u64;
        let lines: Vec<&[u8]> = buffer.split_inclusive(|b| *b == b'\n').collect();
        let per_thread = lines.len().div_ceil(threads);
        let checks: Vec<LineCheck> = std::thread::scope(|scope| {
            let workers: Vec<_> = lines
                .chunks(per_thread)
                .map(|chunk| {
                    scope
                        .spawn(move || chunk.iter().map(|l| check_line(l, key)).collect::<Vec<_>>())
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("a verify worker panicked"))
                .collect()
        });
        for check in checks {
            line_no += 1;
            let mut bad = |reason: String| {
                if report.first_bad.is_none() {
                    report.first_bad = Some(BadLine {
                        line: line_no,
                        reason,
                    });
                }
                report.valid = false;
            };
            match check {
                LineCheck::Blank => {}
                LineCheck::Unparsable { complete: false } => {
                    report.torn_tail = Some(line_no);
                    bad("torn final line (a crash during an append); `wfstate health --repair` moves it aside".into());
                }
                LineCheck::Unparsable { complete: true } => {
                    bad("not a JSON object (damaged or torn line)".into());
                }
                LineCheck::Malformed(reason) => {
                    report.entries += 1;
                    bad(reason);
                }
                LineCheck::Entry {
                    seq,
                    alg,
                    prev_hash: entry_prev,
                    hash,
                    hash_ok,
                } => {
                    report.entries += 1;
                    if alg != expected_alg {
                        bad(match key {
                            Some(_) => format!(
                                "entry uses {alg:?}, but the log is keyed: not written with the key"
                            ),
                            None => format!(
                                "entry uses {alg:?}; set WFSTATE_AUDIT_KEY_FILE to verify it"
                            ),
                        });
                    } else if seq != expected_seq {
                        bad(format!(
                            "seq is {seq}, expected {expected_seq} (an entry was removed, inserted or reordered)"
                        ));
                    } else if entry_prev != prev_hash {
                        bad("prev_hash does not match the previous entry's hash (the chain is broken here)".into());
                    } else if !hash_ok {
                        bad(
                            "hash does not match the entry's content (the entry was edited)".into(),
                        );
                    }
                    // Continue the chain from what the entry says, so one bad
                    // entry is reported once rather than breaking every later line.
                    prev_hash = hash;
                    expected_seq = seq.saturating_add(1);
                }
            }
        }
        checked(consumed);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_paths_are_redacted_at_any_depth() {
        let mut v = json!({"a": "/home/u/.ssh/id_rsa", "b": ["C:\\\\creds\\\\password.txt", "plain token"],
                           "c": {"d": "config/.env"}, "e": "src/main.rs"});
        redact(&mut v);
        assert_eq!(
            v,
            json!({"a": "[REDACTED]", "b": ["[REDACTED]", "plain token"],
                             "c": {"d": "[REDACTED]"}, "e": "src/main.rs"})
        );
    }
}
