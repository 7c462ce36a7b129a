//! Pending writes in the file store: `checkpoints/<wf>/<id>.writes`, the
//! writes tasks made against checkpoint `<id>` (see
//! [`PendingWrite`](crate::checkpoint::PendingWrite)).
//!
//! One sealed JSON document per line (`checkpoint::encode_writes`), one line per
//! call that changed something, appended under the workflow's checkpoint
//! lock. The first line creates the file (written, fsynced, then the
//! directory: `durable::create_synced`); a later line is written right
//! after the last complete one and made durable with `fdatasync` before
//! the call returns. As in the state log, a line's newline is its last
//! byte, so a crash can leave only an unterminated tail (or an empty
//! file): an append that never returned, ignored by readers and
//! overwritten by the next append. A complete line that does not
//! verify cannot come from a crash: it is an integrity error.
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

/// Appends one line holding `batch` durably (see the module documentation).
pub(crate) fn append(
    path: &Path,
    workflow: &str,
    id: &str,
    batch: &[PendingWrite],
    append_at: Option<u64>,
) -> Result<()> {
    let mut line = encode_writes(workflow, id, batch);
    line.push(b'\n');
    match append_at {
        None => durable::create_synced(path, &line),
        Some(at) => durable::write_at_synced(path, at, &line),
    }
}
