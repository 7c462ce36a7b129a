//! A workflow's state in the file store is two files: the base document
//! `state/<wf>.json` (pretty JSON, written by `durable::replace_file`) and
//! the log `state/<wf>.log`, to which later generations are appended, one
//! sealed document per line of compact JSON.
//!
//! Why a log: an append costs one fsync, where replacing the base costs a
//! temp-file fsync, a rename and a directory fsync (about four times as
//! much on ext4; BENCHMARKS.md). Why it stays verifiable: under the crash
//! model only a prefix of an unsynced append's blocks survives, and a
//! record's newline is its last byte, so a crash can leave only an
//! *unterminated* last line. That line is an append that never returned:
//! it is ignored (and the next append starts a fresh line). A complete line
//! that fails verification cannot come from a crash: if it is the newest
//! record it is an integrity error, as a damaged base is.
//!
//! The current state is the newer of the base and the log's newest record.
//! When the log grows past `COMPACT_AT`, the writer replaces the base with
//! the current generation and then empties the log (both through
//! `replace_file`). Readers read the log *before* the base: a compaction
//! publishes the new base before it empties the log, so a reader that finds
//! the log emptied finds the new base, and one that finds the old log finds
//! the newest record in it.

use crate::durable::{self, ReadOutcome};
use crate::error::{Error, Result};
use crate::state::StateDoc;
use std::path::Path;

pub const LOG_SUFFIX: &str = ".log";

/// A log longer than this after an append is compacted into the base.
/// (Small in unit tests, so the crash simulator reaches compactions.)
pub(crate) const COMPACT_AT: u64 = if cfg!(test) { 4096 } else { 256 * 1024 };

/// Records longer than this are written as a new base instead: a log of
/// large documents would be compacted after nearly every append anyway.
pub(crate) const RECORD_LIMIT: u64 = 1024 * 1024;

/// What a read of the log found.
pub(crate) struct LogRead {
    /// The newest complete record, verified.
    pub newest: Option<StateDoc>,
    /// The audit entry line that record carries, if any (see `audit`).
    pub newest_audit: Option<String>,
    /// Whether the file ends with a newline (false after a torn append, so
    /// the next append must start a new line).
    pub ends_clean: bool,
}

/// The largest log any writer leaves: one compaction threshold plus one
/// record, with room for a torn line.
fn read_limit() -> u64 {
    2 * (COMPACT_AT + RECORD_LIMIT)
}

/// Reads `path` (missing: `None`) and verifies its newest complete record.
/// Reads from the end, so it costs the size of the newest records, not of
/// the log.
pub(crate) fn read(path: &Path, workflow: &str) -> Result<Option<LogRead>> {
    let mut tail = 16 * 1024;
    loop {
        let Some((bytes, len)) = durable::read_file_tail(path, tail, read_limit())? else {
            return Ok(None);
        };
        let offset = len - bytes.len() as u64;
        let whole = offset == 0;
        let ends_clean = bytes.last().is_none_or(|b| *b == b'\n');
        match newest_line(&bytes, whole) {
            Newest::None => {
                return Ok(Some(LogRead {
                    newest: None,
                    newest_audit: None,
                    ends_clean,
                }));
            }
            Newest::ReadMore => tail = tail.saturating_mul(4),
            Newest::At(start, end) => {
                let at = offset + start as u64;
                let (state, audit) = split_record(&bytes[start..end]);
                let doc = StateDoc::decode(state, path, workflow).map_err(|e| match e {
                    Error::Integrity { path, problem } => Error::Integrity {
                        path,
                        problem: format!("newest record (at byte {at}): {problem}"),
                    },
                    other => other,
                })?;
                return Ok(Some(LogRead {
                    newest: Some(doc),
                    newest_audit: audit.map(|a| String::from_utf8_lossy(a).into_owned()),
                    ends_clean,
                }));
            }
        }
    }
}

/// A record is the state envelope, then, for records written with their
/// audit entry, a tab and the entry's line. Compact JSON never contains a
/// raw tab (serde_json escapes control characters in strings), so the
/// first tab is the boundary.
fn split_record(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    match line.iter().position(|b| *b == b'\t') {
        Some(tab) => (&line[..tab], Some(&line[tab + 1..])),
        None => (line, None),
    }
}

/// The record line for `doc` carrying `audit_line`.
pub(crate) fn record_line(doc: &StateDoc, audit_line: &str) -> Vec<u8> {
    let mut line = doc.to_line();
    line.pop(); // the newline goes after the audit entry
    line.push(b'\t');
    line.extend_from_slice(audit_line.as_bytes());
    line.push(b'\n');
    line
}

/// Every audit entry line carried by a complete record of the log at
/// `path`, with its `seq` (entries that do not parse are skipped: they are
/// reported by health as lines that do not verify).
pub(crate) fn audit_lines(path: &Path) -> Result<Vec<(u64, String)>> {
    let bytes = match durable::read_file(path, read_limit())? {
        ReadOutcome::Missing => return Ok(Vec::new()),
        ReadOutcome::Found(bytes) => bytes,
    };
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for line in bytes[..end].split(|b| *b == b'\n') {
        if let (_, Some(audit)) = split_record(line)
            && let Ok(entry) = serde_json::from_slice::<crate::audit::AuditEntry>(audit)
        {
            found.push((entry.seq, String::from_utf8_lossy(audit).into_owned()));
        }
    }
    Ok(found)
}

enum Newest {
    /// No complete record in the log.
    None,
    /// The buffer (a tail of the log) holds no whole line: read further back.
    ReadMore,
    /// The newest complete record is `buffer[start..end]`.
    At(usize, usize),
}

/// The last non-empty line before the final newline of `buffer`, the tail
/// of a log (`whole`: the entire log).
fn newest_line(buffer: &[u8], whole: bool) -> Newest {
    let Some(mut end) = buffer.iter().rposition(|b| *b == b'\n') else {
        return if whole {
            Newest::None
        } else {
            Newest::ReadMore
        };
    };
    loop {
        let start = match buffer[..end].iter().rposition(|b| *b == b'\n') {
            Some(newline) => newline + 1,
            None if whole => 0,
            None => return Newest::ReadMore,
        };
        if start < end {
            return Newest::At(start, end);
        }
        if start == 0 {
            return Newest::None;
        }
        end = start - 1; // an empty line: look further back
    }
}

/// Problems in the log that do not affect the current state: complete
/// lines before the newest that do not verify, and a torn last line.
#[derive(Debug, Default)]
pub(crate) struct LogLeftovers {
    pub bad_lines: Vec<usize>,
    pub torn_tail: bool,
}

pub(crate) fn leftovers(path: &Path, workflow: &str) -> Result<LogLeftovers> {
    let bytes = match durable::read_file(path, read_limit())? {
        ReadOutcome::Missing => return Ok(LogLeftovers::default()),
        ReadOutcome::Found(bytes) => bytes,
    };
    let mut found = LogLeftovers {
        torn_tail: bytes.last().is_some_and(|b| *b != b'\n'),
        ..LogLeftovers::default()
    };
    let complete = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(end) => &bytes[..end],
        None => return Ok(found),
    };
    for (number, line) in complete.split(|b| *b == b'\n').enumerate() {
        if !line.is_empty() && StateDoc::decode(split_record(line).0, path, workflow).is_err() {
            found.bad_lines.push(number + 1);
        }
    }
    Ok(found)
}

/// Appends `line` (a document's `to_line`) to the log at `path` durably (creating the log durably if
/// it does not exist), starting a new line if a torn append left the log
/// without its final newline. Returns the log's length afterwards.
pub(crate) fn append(path: &Path, line: Vec<u8>, ends_clean: bool) -> Result<u64> {
    let exists = match std::fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io("stat", path, e)),
    };
    if !exists {
        durable::replace_file_with_bytes(path, b"")?;
    }
    let bytes = if ends_clean {
        line
    } else {
        let mut fresh = Vec::with_capacity(line.len() + 1);
        fresh.push(b'\n');
        fresh.extend_from_slice(&line);
        fresh
    };
    durable::append(path, &bytes).map_err(|e| match e {
        // The record is complete in the file, so readers see it; whether it
        // reached the disk is unknown. (A failed write leaves at most an
        // unterminated line, which readers ignore: the previous version.)
        Error::Io {
            op: "fsync",
            path,
            source,
        } => Error::Io {
            op: "fsync state log (new version visible, durability unknown)",
            path,
            source,
        },
        other => other,
    })?;
    std::fs::symlink_metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::io("stat", path, e))
}

/// Empties the log (after its newest record was made the base).
pub(crate) fn clear(path: &Path) -> Result<()> {
    durable::replace_file_with_bytes(path, b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(buffer: &[u8], whole: bool) -> Option<&[u8]> {
        match newest_line(buffer, whole) {
            Newest::At(start, end) => Some(&buffer[start..end]),
            _ => None,
        }
    }

    #[test]
    fn the_newest_complete_line_is_found_from_the_end() {
        assert_eq!(at(b"a\nb\n", true), Some(&b"b"[..]));
        assert_eq!(
            at(b"a\nb\ntorn", true),
            Some(&b"b"[..]),
            "a torn tail is skipped"
        );
        assert_eq!(
            at(b"a\n\n", true),
            Some(&b"a"[..]),
            "empty lines are skipped"
        );
        assert_eq!(at(b"only", true), None);
        assert!(matches!(newest_line(b"only", true), Newest::None));
        assert!(matches!(newest_line(b"\n\n", true), Newest::None));
        // In a tail that is not the whole log, the first line may be cut.
        assert!(matches!(newest_line(b"rtial\n", false), Newest::ReadMore));
        assert_eq!(at(b"rtial\nb\n", false), Some(&b"b"[..]));
        assert!(matches!(
            newest_line(b"no newline", false),
            Newest::ReadMore
        ));
    }
}
