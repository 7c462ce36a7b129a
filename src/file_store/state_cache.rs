//! What this process last read or wrote of each workflow's state files, so
//! that the next locked write need not read them again.
//!
//! A locked update used to open, read and close the log (bisecting its
//! blocks to find the end), the base, and then reopen the log to append:
//! about twenty system calls around one `fdatasync`, which on a virtual
//! disk cost more than the sync itself (DESIGN §13). With this cache a
//! writer checks that its knowledge still holds with three cheap calls and
//! writes through a descriptor it kept.
//!
//! Why the check is enough. Under the workflow's lock (callers hold it) the
//! files change only in these ways, each of which the check sees:
//! * another process appended a record: records are written at the append
//!   position, right after the last newline, which is where our knowledge
//!   ends; the byte there is no longer zero;
//! * a compaction, a base write, a repair or an import replaced or moved a
//!   file: renames give the name a new inode. We keep the old inodes open,
//!   so their numbers cannot be reused while we compare against them.
//!
//! Any doubt (a failed check, an error, an unusual file) falls back to the
//! full read, which is what every reader without the lock does anyway.

use crate::durable::{self, FileId};
use crate::error::Result;
use crate::file_store::state_log::OpenLog;
use crate::state::StateDoc;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

/// Workflows remembered at once (each costs two descriptors).
const MAX_WORKFLOWS: usize = 32;
/// Larger documents are not kept in memory: re-reading them is cheap next
/// to writing them, and a cache of them would be large.
const MAX_DOC_BYTES: usize = 64 * 1024;

/// The file `path` names now, if any.
fn id_at(path: &Path) -> Result<Option<FileId>> {
    Ok(FileId::at(path)?.map(|(id, _)| id))
}

/// A workflow's state as its files held it when this process last looked.
pub(crate) struct Known {
    /// The newest verified version (base or log record), if any.
    pub doc: Option<StateDoc>,
    pub base_exists: bool,
    /// The log, open for writing; records go through it.
    pub log: OpenLog,
    /// The base, held open only so its inode number stays ours.
    base: Option<(File, FileId)>,
}

impl Known {
    /// What a full read under the lock found, with the log opened for
    /// writing and the base pinned; `None` if the document is too large to
    /// keep or the files cannot be opened (the next write reads again).
    pub fn open(
        log_path: &Path,
        base_path: &Path,
        doc: Option<StateDoc>,
        base_exists: bool,
        append_at: u64,
    ) -> Option<Known> {
        if doc
            .as_ref()
            .is_some_and(|d| d.to_line().len() > MAX_DOC_BYTES)
        {
            return None;
        }
        let log = OpenLog::open(log_path, append_at).ok()?;
        let base = if base_exists {
            let (file, _) = durable::open_for_reading(base_path, u64::MAX).ok()??;
            let (id, _) = FileId::of_file(&file, base_path).ok()?;
            Some((file, id))
        } else {
            None
        };
        Some(Known {
            doc,
            base_exists,
            log,
            base,
        })
    }

    /// After the record of `record_len` bytes holding `doc` was appended
    /// through `self.log`: `None` if the document is too large to keep.
    pub fn after_append(mut self, doc: StateDoc, record_len: usize) -> Option<Known> {
        if record_len > MAX_DOC_BYTES {
            return None;
        }
        self.doc = Some(doc);
        Some(self)
    }
}

/// What this process knows, by workflow. A writer takes a workflow's entry
/// (so the document is moved out, not copied) and puts it back after a
/// successful write; any failure leaves no entry, and the next write
/// reads the files again. Also holds the checkpoint journals' tails
/// (`checkpoint::files`).
pub(crate) struct Kept<T> {
    workflows: Mutex<HashMap<String, T>>,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept {
            workflows: Mutex::new(HashMap::new()),
        }
    }
}

pub(crate) type StateCache = Kept<Known>;

impl<T> Kept<T> {
    /// Takes what is known of `workflow` if `still_true` confirms it (an
    /// error counts as no). The caller holds the lock that excludes the
    /// workflow's other writers.
    pub fn take_if(
        &self,
        workflow: &str,
        still_true: impl FnOnce(&T) -> Result<bool>,
    ) -> Option<T> {
        let known = self.entries().remove(workflow)?;
        match still_true(&known) {
            Ok(true) => Some(known),
            _ => None,
        }
    }

    /// Puts back what a writer knows after its write.
    pub fn keep(&self, workflow: &str, known: T) {
        let mut entries = self.entries();
        if entries.len() >= MAX_WORKFLOWS {
            entries.clear();
        }
        entries.insert(workflow.to_string(), known);
    }

    /// After anything else changed the workflow's files (or might have).
    pub fn forget(&self, workflow: &str) {
        self.entries().remove(workflow);
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, T>> {
        // A panic while holding this lock leaves only a cache behind.
        self.workflows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateCache {
    /// Takes what is known of `workflow`, if its files still say the same.
    /// The caller holds the workflow's lock.
    pub fn take(&self, workflow: &str, log_path: &Path, base_path: &Path) -> Option<Known> {
        self.take_if(workflow, |known| still_true(known, log_path, base_path))
    }
}

/// The checks of the module comment.
fn still_true(known: &Known, log_path: &Path, base_path: &Path) -> Result<bool> {
    Ok(known.log.unchanged(log_path)?
        && id_at(base_path)? == known.base.as_ref().map(|(_, id)| *id))
}

#[cfg(test)]
mod tests {
    use crate::store::{Store, StoreOptions};
    use serde_json::{Value, json};

    fn increment(data: &mut Value) -> crate::Result<()> {
        let n = data["n"].as_u64().unwrap_or(0);
        data["n"] = json!(n + 1);
        Ok(())
    }

    /// Two stores in one process stand for two processes: each keeps its
    /// own knowledge, so each must notice what the other wrote. A cache
    /// that trusted itself would lose updates (the count would fall short)
    /// or chain audit entries from a stale tail (verify would fail).
    #[test]
    fn writers_with_their_own_knowledge_notice_each_others_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = Store::init(dir.path(), StoreOptions::default()).unwrap();
        let b = Store::open(dir.path(), StoreOptions::default()).unwrap();
        a.save("wf", json!({"n": 0}), None).unwrap();
        let mut writes = 1;
        let mut expected = 0;
        for round in 0..60 {
            // Alternate single and repeated writes, so each store finds the
            // other's appends, and (the test build compacts every 4 KiB)
            // the other's compactions.
            b.update("wf", increment).unwrap();
            writes += 1;
            expected += 1;
            for _ in 0..(1 + round % 3) {
                a.update("wf", increment).unwrap();
                writes += 1;
                expected += 1;
            }
            // Changes that leave the log's end where `a` left it, each seen
            // by one check only; `a` writes next.
            if round % 20 == 7 {
                // A record over the log's limit replaces the base and
                // leaves the log alone: only the base's identity tells.
                let n = b.load("wf").unwrap().data["n"].clone();
                b.save("wf", json!({"n": n, "big": "x".repeat(1_100_000)}), None)
                    .unwrap();
                writes += 1;
                a.update("wf", increment).unwrap();
                writes += 1;
                expected += 1;
                let data = a.load("wf").unwrap().data;
                assert!(data.get("big").is_some(), "the update built on the save");
                assert_eq!(data["n"], json!(expected), "and it counts");
                // Small again, so the knowledge is kept again.
                let n = b.load("wf").unwrap().data["n"].clone();
                b.save("wf", json!({"n": n}), None).unwrap();
                writes += 1;
            }
            if round % 20 == 13 {
                // The log moved aside (as repair moves a damaged file to
                // quarantine; its newer records go with it) and a new log
                // started: only the log's identity tells.
                let state = dir.path().join("state");
                std::fs::rename(state.join("wf.log"), dir.path().join("moved.log")).unwrap();
                let n = b.load("wf").unwrap().data["n"].as_u64().unwrap();
                b.save("wf", json!({"n": n, "round": round}), None).unwrap();
                writes += 1;
                expected = n;
                a.update("wf", increment).unwrap();
                writes += 1;
                expected += 1;
                let data = a.load("wf").unwrap().data;
                assert_eq!(data["round"], json!(round), "the update built on the save");
                assert_eq!(data["n"], json!(expected), "and it counts");
            }
        }
        let fresh = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let doc = fresh.load("wf").unwrap();
        assert_eq!(doc.data["n"], json!(expected), "no update lost");
        assert_eq!(a.load("wf").unwrap(), doc);
        let report = fresh.audit().unwrap().verify().unwrap();
        assert!(report.first_bad.is_none(), "{report:?}");
        let entries = fresh.audit().unwrap().read(None, None).unwrap();
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=entries.len() as u64).collect::<Vec<_>>());
        assert_eq!(entries.len(), writes, "one entry per write");
    }
}
