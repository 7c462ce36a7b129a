//! Pending writes in the file store: `checkpoints/<wf>/<id>.writes`, the
//! writes tasks made against checkpoint `<id>` (see
//! [`PendingWrite`](crate::checkpoint::PendingWrite)).
//!
//! One sealed JSON document per line (`checkpoint::encode_writes`), one
//! line per call that changed something, under the workflow's checkpoint
//! lock. A line is committed as a record of the workflow's checkpoint
//! journal (one `fdatasync`, as a checkpoint is: `checkpoints`), then
//! published here without a sync, after the last complete line. Settling
//! the journal makes the file durable (`settle`): written back from the
//! journal if a power cut lost or tore any of its lines. A batch too large
//! for the journal is appended here durably instead, after settling the
//! journal, so lines never change order: the first line creates the file
//! (`durable::create_synced`), a later one is written after the last
//! complete line and `fdatasync`ed.
//!
//! As in the state log, a line's newline is its last byte, so a process
//! that dies mid-write leaves only an unterminated tail (or an empty file),
//! which readers ignore and the next line overwrites. A complete line that
//! does not verify is damage: an integrity error (a power cut's leftovers
//! are rewritten by the first open, before anyone reads).
//!
//! The current writes are the lines folded in order, a later write
//! replacing an earlier one with the same `(task_id, idx)`.

use crate::checkpoint::{PendingWrite, decode_writes, encode_writes};
use crate::durable::{self, ReadOutcome};
use crate::error::{Error, Result};
use std::path::Path;

pub(crate) const SUFFIX: &str = ".writes";
/// Writes against one checkpoint are read whole; this bounds the file.
const MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The stored writes in the order they were appended, and where the next
/// line goes (`None`: the file does not exist).
pub(crate) struct Stored {
    pub writes: Vec<PendingWrite>,
    pub append_at: Option<u64>,
}

/// Reads and verifies the writes file of checkpoint `id` of `workflow`.
pub(crate) fn read(path: &Path, workflow: &str, id: &str) -> Result<Stored> {
    let bytes = match durable::read_file(path, MAX_BYTES)? {
        ReadOutcome::Missing => {
            return Ok(Stored {
                writes: Vec::new(),
                append_at: None,
            });
        }
        ReadOutcome::Found(bytes) => bytes,
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut writes = Vec::new();
    for (n, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let batch = decode_writes(line, path, workflow, id).map_err(|e| match e {
            Error::Integrity { path, problem } => Error::Integrity {
                path,
                problem: format!("line {}: {problem}", n + 1),
            },
            other => other,
        })?;
        writes.extend(batch);
    }
    Ok(Stored {
        writes,
        append_at: Some(complete as u64),
    })
}

/// One line holding `batch`, with its newline.
pub(crate) fn line_of(workflow: &str, id: &str, batch: &[PendingWrite]) -> Vec<u8> {
    let mut line = encode_writes(workflow, id, batch);
    line.push(b'\n');
    line
}

/// Writes `line` after the last complete line of the file (`append_at`,
/// from [`read`]; `None`: the file does not exist) without a sync: the
/// journal that committed it is its durable copy until it is settled.
pub(crate) fn publish_unsynced(path: &Path, line: &[u8], append_at: Option<u64>) -> Result<()> {
    match append_at {
        None => durable::create_unsynced(path, line),
        Some(at) => durable::write_at_unsynced(path, at, line).map(drop),
    }
}

/// Whether the file's complete lines include `line` (with its newline).
pub(crate) fn holds(path: &Path, line: &[u8]) -> Result<bool> {
    Ok(match durable::read_file(path, MAX_BYTES)? {
        ReadOutcome::Missing => false,
        ReadOutcome::Found(bytes) => bytes.split_inclusive(|&b| b == b'\n').any(|l| l == line),
    })
}

/// Settling the journal, for the writes file of checkpoint `id`: the lines
/// the journal carries for it (`carried`, in order, with newlines) must be
/// in the file after every line that was already durable. In the file
/// after a crash may be anything of them, torn or not; lines that verify
/// and are not carried were synced earlier. Rewrites the file durably if it
/// is not `kept ++ carried`; otherwise returns it for the caller to sync.
pub(crate) fn settle(
    path: &Path,
    workflow: &str,
    id: &str,
    carried: &[Vec<u8>],
) -> Result<Option<std::path::PathBuf>> {
    let bytes = match durable::read_file(path, MAX_BYTES)? {
        ReadOutcome::Missing => Vec::new(),
        ReadOutcome::Found(bytes) => bytes,
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut wanted: Vec<u8> = Vec::with_capacity(complete);
    for line in bytes[..complete].split_inclusive(|&b| b == b'\n') {
        let body = &line[..line.len() - 1];
        let earlier = !body.is_empty()
            && !carried.iter().any(|c| c.as_slice() == line)
            && decode_writes(body, path, workflow, id).is_ok();
        if earlier {
            wanted.extend_from_slice(line);
        }
    }
    for line in carried {
        wanted.extend_from_slice(line);
    }
    if bytes[..complete] == wanted[..] {
        return Ok(Some(path.to_path_buf()));
    }
    // Written from the journal's records: verified first.
    for line in carried {
        decode_writes(&line[..line.len() - 1], path, workflow, id).map_err(|e| match e {
            Error::Integrity { path, problem } => Error::Integrity {
                path,
                problem: format!("a journal record of these writes: {problem}"),
            },
            other => other,
        })?;
    }
    durable::replace_file_with_bytes(path, &wanted)?;
    Ok(None)
}

/// Appends one line holding `batch` durably (see the module documentation).
pub(crate) fn append(
    path: &Path,
    workflow: &str,
    id: &str,
    batch: &[PendingWrite],
    append_at: Option<u64>,
) -> Result<()> {
    let line = line_of(workflow, id, batch);
    match append_at {
        None => durable::create_synced(path, &line),
        Some(at) => durable::write_at_synced(path, at, &line),
    }
}
