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
/// and are not carried were synced earlier, so they come first. Rewrites
/// the file durably if it is not `kept ++ carried`; otherwise returns it
/// for the caller to sync. A line that does not verify is dropped only as
/// what a crash left of a carried line: one that follows a durable line's
/// place, or a file holding every carried line whole besides, is damage
/// (an integrity error, the file left as it is).
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
    // The first line that is carried or does not verify: every durable
    // line comes before it.
    let mut first_new = None;
    let mut unverified = None;
    for (n, line) in bytes[..complete]
        .split_inclusive(|&b| b == b'\n')
        .enumerate()
    {
        let body = &line[..line.len() - 1];
        if body.is_empty() {
            continue;
        }
        let is_carried = carried.iter().any(|c| c.as_slice() == line);
        let verifies = is_carried || decode_writes(body, path, workflow, id).is_ok();
        if verifies && !is_carried {
            if let Some(first) = first_new {
                return Err(Error::integrity(
                    path,
                    format!(
                        "line {} was durable, yet follows line {first}, which is not: the file \
                         is damaged",
                        n + 1
                    ),
                ));
            }
            wanted.extend_from_slice(line);
            continue;
        }
        first_new.get_or_insert(n + 1);
        if !verifies {
            unverified.get_or_insert(n + 1);
        }
    }
    let all_carried_whole = carried.iter().all(|c| {
        bytes[..complete]
            .split_inclusive(|&b| b == b'\n')
            .any(|l| l == c.as_slice())
    });
    if let Some(n) = unverified
        && all_carried_whole
    {
        return Err(Error::integrity(
            path,
            format!(
                "line {n} does not verify, and is not what a crash left of a journal record \
                 (they are all in the file whole)"
            ),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch(task: &str) -> Vec<PendingWrite> {
        vec![PendingWrite {
            task_id: task.into(),
            idx: 0,
            channel: "ch".into(),
            value: json!("v"),
            task_path: String::new(),
        }]
    }

    const WF: &str = "lg.t";
    const ID: &str = "1f0c5a00-0000-6000-8000-000000000001";

    /// A file of `lines`, settled against `carried`; returns the outcome
    /// and the file's bytes after it.
    fn settled(lines: &[&[u8]], carried: &[Vec<u8>]) -> (Result<()>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{ID}{SUFFIX}"));
        std::fs::write(&path, lines.concat()).unwrap();
        let outcome = settle(&path, WF, ID, carried).map(drop);
        (outcome, std::fs::read(&path).unwrap())
    }

    fn damaged(line: &[u8]) -> Vec<u8> {
        let mut line = line.to_vec();
        line[20] ^= 1;
        line
    }

    #[test]
    fn a_torn_carried_line_is_rewritten_from_the_journal() {
        let durable = line_of(WF, ID, &batch("a"));
        let carried = line_of(WF, ID, &batch("b"));
        let torn = damaged(&carried);
        let (outcome, after) = settled(&[&durable, &torn], std::slice::from_ref(&carried));
        outcome.unwrap();
        assert_eq!(after, [durable, carried].concat());
    }

    #[test]
    fn a_damaged_durable_line_is_an_error_and_stays() {
        let durable = line_of(WF, ID, &batch("a"));
        let carried = line_of(WF, ID, &batch("b"));
        // Every carried line is whole: the bad line is not a crash's.
        let before = [damaged(&durable), carried.clone()].concat();
        let (outcome, after) = settled(&[&before], std::slice::from_ref(&carried));
        assert!(
            matches!(outcome, Err(Error::Integrity { .. })),
            "{outcome:?}"
        );
        assert_eq!(after, before, "left as it was");
        // A durable line after one that is not: damage too.
        let later = line_of(WF, ID, &batch("c"));
        let before = [damaged(&durable), later].concat();
        let (outcome, after) = settled(&[&before], std::slice::from_ref(&carried));
        let said = outcome.unwrap_err().to_string();
        assert!(said.contains("line 2 was durable"), "{said}");
        assert_eq!(after, before, "left as it was");
    }
}
