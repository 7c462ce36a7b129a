//! A workflow's state in the file store is two files: the base document
//! `state/<wf>.json` (pretty JSON, written by `durable::replace_file`) and
//! the log `state/<wf>.log`, to which later generations are appended, one
//! sealed document per line of compact JSON.
//!
//! Why a log: a record costs one `fdatasync`, where replacing the base
//! costs a temp-file fsync, a rename and a directory fsync (about four
//! times as much on ext4; BENCHMARKS.md). Why it stays verifiable: under the crash
//! model only a prefix of an unsynced append's blocks survives, and a
//! record's newline is its last byte, so a crash can leave only an
//! *unterminated* last line. That line is an append that never returned:
//! it is ignored (and the next append starts a fresh line). A complete line
//! that fails verification cannot come from a crash: if it is the newest
//! record it is an integrity error, as a damaged base is.
//!
//! The log is preallocated: created (and reset by compaction) as
//! `PREALLOCATED` bytes of zeros, written and fsynced once, and records are
//! written over those zeros. Writing over bytes already on disk changes no
//! metadata, so `fdatasync` makes a record durable without an ext4 journal
//! commit (`overwrite_fdatasync_us` vs `append_fsync_us` in BENCHMARKS.md).
//! JSON never contains a NUL byte, so the log's data ends at its last
//! non-zero byte; a torn record is followed by zeros and stays
//! unterminated. The next record is written right after the last newline,
//! over any torn bytes.
//!
//! The current state is the newer of the base and the log's newest record.
//! When the log grows past `COMPACT_AT`, the writer replaces the base with
//! the current generation and then empties the log (both through
//! `replace_file`). Readers read the log *before* the base: a compaction
//! publishes the new base before it empties the log, so a reader that finds
//! the log emptied finds the new base, and one that finds the old log finds
//! the newest record in it.

use crate::durable::{self, FileId, ReadOutcome};
use crate::error::{Error, Result};
use crate::state::StateDoc;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const LOG_SUFFIX: &str = ".log";

/// A log longer than this after an append is compacted into the base.
/// (Small in unit tests, so the crash simulator reaches compactions.)
pub(crate) const COMPACT_AT: u64 = if cfg!(test) { 4096 } else { 256 * 1024 };

/// Records longer than this are written as a new base instead: a log of
/// large documents would be compacted after nearly every append anyway.
pub(crate) const RECORD_LIMIT: u64 = 1024 * 1024;

/// The size of a new or reset log: room for `COMPACT_AT` of records and one
/// more. (A longer record extends the file; `fdatasync` then commits the
/// size too, and the compaction that follows resets it.)
const PREALLOCATED: u64 = COMPACT_AT + if cfg!(test) { 4096 } else { 64 * 1024 };

/// The log's data: everything up to its last non-zero byte (the rest is
/// preallocated space never written).
fn data_of(bytes: &[u8]) -> &[u8] {
    // Skip whole zero chunks first (an OR over 64 bytes compiles to a few
    // vector instructions), then the last partial one byte by byte.
    let mut end = bytes.len();
    for chunk in bytes.rchunks(64) {
        if !is_zero(chunk) {
            break;
        }
        end -= chunk.len();
    }
    while end > 0 && bytes[end - 1] == 0 {
        end -= 1;
    }
    &bytes[..end]
}

/// Where the next record goes: right after the last complete record, over
/// whatever a torn append left.
fn append_position(data: &[u8]) -> u64 {
    if data.last() == Some(&b'\n') {
        return data.len() as u64; // the usual case: no torn tail
    }
    data.iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i as u64 + 1)
}

/// What a read of the log found.
pub(crate) struct LogRead {
    /// The newest complete record, verified.
    pub newest: Option<StateDoc>,
    /// Where the next record is to be written.
    pub append_at: u64,
}

/// The largest log any writer leaves: one compaction threshold plus one
/// record, with room for a torn line.
fn read_limit() -> u64 {
    2 * (COMPACT_AT + RECORD_LIMIT)
}

/// Reads `path` (missing: `None`) and verifies its newest complete record.
pub(crate) fn read(path: &Path, workflow: &str) -> Result<Option<LogRead>> {
    let Some(found) = newest_record(path)? else {
        return Ok(None);
    };
    let Some((at, line)) = found.line else {
        return Ok(Some(LogRead {
            newest: None,
            append_at: found.append_at,
        }));
    };
    let (state, _audit) = split_record(&line);
    let doc = StateDoc::decode(state, path, workflow).map_err(|e| match e {
        Error::Integrity { path, problem } => Error::Integrity {
            path,
            problem: format!("newest record (at byte {at}): {problem}"),
        },
        other => other,
    })?;
    Ok(Some(LogRead {
        newest: Some(doc),
        append_at: found.append_at,
    }))
}

/// The newest complete line of a log and where the next one goes.
pub(crate) struct NewestRecord {
    /// Its position and bytes (without the newline), if there is one.
    pub line: Option<(u64, Vec<u8>)>,
    pub append_at: u64,
}

/// Finds the newest complete line of the log at `path` (missing: `None`)
/// without reading the log: the end of the data is found by bisecting the
/// 4 KiB blocks (under the crash model the written blocks are a prefix:
/// records are written in order, and what a crash keeps of one is a prefix
/// of its blocks), then the newest line is read backwards from there.
pub(crate) fn newest_record(path: &Path) -> Result<Option<NewestRecord>> {
    let Some((file, len)) = durable::open_for_reading(path, read_limit())? else {
        return Ok(None);
    };
    let read_at = |start: u64, end: u64| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; (end - start) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, start)
            .map_err(|e| Error::io("read", path, e))?;
        Ok(buf)
    };
    // The first block from which on everything is zero.
    let blocks = len.div_ceil(BLOCK);
    let (mut lo, mut hi) = (0u64, blocks);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let block = read_at(mid * BLOCK, ((mid + 1) * BLOCK).min(len))?;
        if is_zero(&block) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let data_block_end = (lo * BLOCK).min(len);
    let mut window = 4 * BLOCK;
    loop {
        let start = data_block_end.saturating_sub(window);
        let bytes = read_at(start, data_block_end)?;
        let data = data_of(&bytes);
        let whole = start == 0;
        // Meaningful once the window holds a newline or the whole log,
        // which is when the match below returns.
        let append_at = start + append_position(data);
        match newest_line(data, whole) {
            Newest::ReadMore => {
                window = window.saturating_mul(4);
                continue;
            }
            Newest::None => {
                return Ok(Some(NewestRecord {
                    line: None,
                    append_at,
                }));
            }
            Newest::At(first, last) => {
                return Ok(Some(NewestRecord {
                    line: Some((start + first as u64, data[first..last].to_vec())),
                    append_at,
                }));
            }
        }
    }
}

/// Every complete line of the log at `path`, oldest first (none if it is
/// missing); a torn last line is not one.
pub(crate) fn complete_records(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = match durable::read_file(path, read_limit())? {
        ReadOutcome::Missing => return Ok(Vec::new()),
        ReadOutcome::Found(bytes) => bytes,
    };
    let data = data_of(&bytes);
    let Some(end) = data.iter().rposition(|b| *b == b'\n') else {
        return Ok(Vec::new());
    };
    Ok(data[..end]
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

const BLOCK: u64 = 4096;

/// Whether every byte is zero (an OR over the bytes vectorizes).
fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |acc, b| acc | b) == 0
}

/// A record is the state envelope, then, for records written with their
/// audit entry, a tab and the entry's line. Compact JSON never contains a
/// raw tab (serde_json escapes control characters in strings), so the
/// first tab is the boundary.
pub(crate) fn split_record(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    match line.iter().position(|b| *b == b'\t') {
        Some(tab) => (&line[..tab], Some(&line[tab + 1..])),
        None => (line, None),
    }
}

/// The record carrying `audit_line` for a document's `to_line`.
pub(crate) fn record_line(mut line: Vec<u8>, audit_line: &str) -> Vec<u8> {
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
    let mut found = Vec::new();
    for line in complete_records(path)? {
        if let (_, Some(audit)) = split_record(&line)
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
    let data = data_of(&bytes);
    let mut found = LogLeftovers {
        torn_tail: data.last().is_some_and(|b| *b != b'\n'),
        ..LogLeftovers::default()
    };
    let complete = match data.iter().rposition(|b| *b == b'\n') {
        Some(end) => &data[..end],
        None => return Ok(found),
    };
    for (number, line) in complete.split(|b| *b == b'\n').enumerate() {
        if !line.is_empty() && StateDoc::decode(split_record(line).0, path, workflow).is_err() {
            found.bad_lines.push(number + 1);
        }
    }
    Ok(found)
}

/// Writes `line` (a record) into the log at `path` at `at` (the position
/// `read` gave) and makes it durable with one `fdatasync`, creating the log
/// (preallocated, durably) if it does not exist. Returns where the log's
/// data now ends.
pub(crate) fn append(path: &Path, line: Vec<u8>, at: u64) -> Result<u64> {
    if !durable::name_exists(path)? {
        clear(path)?;
    }
    durable::write_at_synced(path, at, &line).map_err(durability_unknown)?;
    Ok(at + line.len() as u64)
}

/// Writes `line` (a record) into the log at `path` at `at` without a sync:
/// the pipelined commit (`audit_log::pipeline`) syncs it outside the audit
/// lock, through the descriptor returned. The log must exist.
pub(crate) fn write_unsynced(path: &Path, line: &[u8], at: u64) -> Result<File> {
    durable::write_at_unsynced(path, at, line)
}

/// Drops every record of the log at `path` from the first whose audit
/// entry has a `seq` of `first` or more, and whatever follows it: recovery
/// after a reboot, for records written after an entry the crash lost
/// (DESIGN §13). None of them was acknowledged: a pipelined commit returns
/// only once every entry before its own is durable. The log is replaced
/// (`replace_file`), never zeroed in place, so that a process keeping the
/// old one open sees that it changed. Returns how many records were dropped.
pub(crate) fn drop_records_from(path: &Path, first: u64) -> Result<usize> {
    let bytes = match durable::read_file(path, read_limit())? {
        ReadOutcome::Missing => return Ok(0),
        ReadOutcome::Found(bytes) => bytes,
    };
    let data = data_of(&bytes);
    let mut start = 0;
    let mut cut = None;
    let mut dropped = 0;
    for line in data.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") {
            break; // a torn tail: not a record
        }
        let seq = split_record(&line[..line.len() - 1])
            .1
            .and_then(|audit| serde_json::from_slice::<crate::audit::AuditEntry>(audit).ok())
            .map(|entry| entry.seq);
        if seq.is_some_and(|seq| seq >= first) {
            cut.get_or_insert(start);
            dropped += 1;
        }
        start += line.len();
    }
    let Some(cut) = cut else {
        return Ok(0);
    };
    let keep = &data[..cut];
    let size = (bytes.len() as u64).max(PREALLOCATED);
    durable::replace_file(path, |out| {
        out.write_all(keep)?;
        let zeros = [0u8; 64 * 1024];
        let mut left = size - keep.len() as u64;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            out.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        Ok(())
    })?;
    Ok(dropped)
}

/// A log this process keeps open across locked writes, and where it knows
/// the log's data to end (the state cache; the checkpoint journal's tail).
pub(crate) struct OpenLog {
    pub file: File,
    id: FileId,
    /// Where the next record goes.
    pub append_at: u64,
}

impl OpenLog {
    /// Opens the log at `path` for writing; the caller read it (under the
    /// lock that excludes other writers) and found its data ending at
    /// `append_at`.
    pub fn open(path: &Path, append_at: u64) -> Result<OpenLog> {
        let file = durable::open_for_writes(path)?;
        let (id, _) = FileId::of_file(&file, path)?;
        Ok(OpenLog {
            file,
            id,
            append_at,
        })
    }

    /// Whether the log is still as this process left it; the caller holds
    /// the lock that excludes other writers. A writer only ever changes a
    /// log by writing a record at its end, where the byte is then no longer
    /// zero, or by replacing it (compaction, clearing, repair), which gives
    /// the name a new inode: our open descriptor keeps the old inode's
    /// number from being reused, so comparing identities is enough.
    pub fn unchanged(&self, path: &Path) -> Result<bool> {
        if FileId::at(path)?.map(|(id, _)| id) != Some(self.id) {
            return Ok(false);
        }
        let mut next = [0u8; 1];
        let n = self
            .file
            .read_at(&mut next, self.append_at)
            .map_err(|e| Error::io("read", path, e))?;
        Ok(n == 0 || next[0] == 0)
    }

    /// [`write_unsynced`] through the kept descriptor, after `unchanged`
    /// said yes; the caller syncs `file`.
    pub fn write_unsynced(&mut self, path: &Path, line: &[u8]) -> Result<()> {
        durable::write_at_unsynced_in(&self.file, path, self.append_at, line)?;
        self.append_at += line.len() as u64;
        Ok(())
    }

    /// [`append`] through the kept descriptor, after `unchanged` said yes.
    pub fn append(&mut self, path: &Path, line: Vec<u8>) -> Result<u64> {
        durable::write_at_synced_in(&self.file, path, self.append_at, &line)
            .map_err(durability_unknown)?;
        self.append_at += line.len() as u64;
        Ok(self.append_at)
    }
}

/// A failed sync after a complete write: the record is in the file, so
/// readers see it; whether it reached the disk is unknown. (A failed write
/// leaves at most an unterminated line, which readers ignore: the previous
/// version.)
pub(crate) fn durability_unknown(e: Error) -> Error {
    match e {
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
    }
}

/// Resets the log to preallocated zeros (after its newest record was made
/// the base), or creates it so.
pub(crate) fn clear(path: &Path) -> Result<()> {
    durable::replace_file(path, |out| {
        let zeros = [0u8; 64 * 1024];
        let mut left = PREALLOCATED;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            out.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        Ok(())
    })
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
