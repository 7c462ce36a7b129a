//! Checkpoints in the embedded file store.
//!
//! ```text
//! <store>/checkpoints/<workflow>/<id>.json   one sealed checkpoint per file
//! <store>/checkpoints/<workflow>/index       the rebuildable index
//! <store>/checkpoints/<workflow>/journal     checkpoints not yet synced as files
//! ```
//!
//! Creation, under the workflow's checkpoint lock (`checkpoint@<wf>`), of a
//! checkpoint under `JOURNAL_RECORD_LIMIT` (DESIGN section 5):
//! 1. append `<checkpoint>\t<audit entry>` to the journal, a preallocated
//!    log like the state log, with one `fdatasync`: the commit point, which
//!    makes the checkpoint and its audit entry durable together;
//! 2. publish `<id>.json` and append its index record, both without sync:
//!    readers see the checkpoint from now on, and only a power cut can
//!    take these copies away;
//! 3. when the journal has grown past `state_log::COMPACT_AT`, settle it:
//!    make every file it lists durable (rewriting any that is missing or does not
//!    verify), the index and the directory, then empty it.
//!
//! The journal also commits pending writes (`checkpoint_writes`): a record
//! holding a batch, published unsynced to `<id>.writes` and made durable
//! there when the journal is settled. Settling syncs the files it checked
//! together (`durable::sync_files`: one `syncfs`).
//!
//! After a power cut, the first open settles every journal before the store
//! counts as recovered (`replay_journals`, run by the audit recovery), so
//! no reader ever sees a checkpoint file that a crash tore. Prune settles
//! the journal first, so a pruned checkpoint is never brought back.
//!
//! Larger checkpoints are written as before: the file to a temp file and
//! fsynced, its index record appended and fsynced, then the rename and a
//! directory fsync, which is their commit point.

use crate::backend::WarningHook;
use crate::checkpoint::{
    Chain, ChainLink, ChainStop, Checkpoint, CheckpointBackend, FindQuery, IndexRepair,
    ListContent, ListEntry, ListQuery, NewCheckpoint, ParentChoice, PendingWrite, PrunePolicy,
    Pruned, Removal, StateSnapshot, WriteRule, decode_writes, fold_writes, only_holder,
    parent_may_be_gone, same_checkpoint_again, validate_id, validate_writes, writes_to_store,
};
use crate::clock;
use crate::durable::{self, FileId, ReadOutcome};
use crate::error::{Error, Result, Size};
use crate::file_store::audit_log::{AuditLog, Carrier, Evidence};
use crate::file_store::checkpoint_index::{self as index, IndexProblem, IndexReader, IndexRecord};
use crate::file_store::checkpoint_writes as writes;
use crate::file_store::state_cache::Kept;
use crate::file_store::state_log::{self, OpenLog};
use crate::file_store::{after_the_change, warn, warn_unaudited};
use crate::id;
use crate::lock::{LockGuard, LockManager};
use crate::name::validate_name;
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

const INDEX_FILE: &str = "index";
/// The journal of checkpoints committed but not yet synced as files.
pub(crate) const JOURNAL_FILE: &str = "journal";
/// Checkpoints this large or larger skip the journal (a journal of them
/// would be settled after nearly every one anyway).
const JOURNAL_RECORD_LIMIT: usize = 64 * 1024;
/// Checkpoints embed a state snapshot, so they get the state limit plus room
/// for the metadata.
const METADATA_ALLOWANCE: u64 = 16 * 1024 * 1024;

pub struct FileCheckpoints {
    root: PathBuf,
    locks: LockManager,
    audit: AuditLog,
    max_bytes: u64,
    lock_timeout: Option<Duration>,
    /// Told of housekeeping that failed after a change was made.
    on_warning: Option<WarningHook>,
    repairs: Mutex<Vec<IndexRepair>>,
    tails: Kept<KnownTail>,
}

/// What this process knows of a workflow's journal and index after its own
/// creation through the journal, so that the next creation need not read
/// them again (as `state_cache` does for states): about thirty system calls
/// and a checkpoint decode fewer per creation.
///
/// Checked before use under the checkpoint lock, which excludes every
/// other writer of both files (`still_true`). A writer changes them only
/// by appending (the journal's byte at our end is then no longer zero; the
/// index grows) or by replacing them (settling, rebuilding, repair, prune),
/// which gives the name a new inode while our descriptors keep the old
/// inodes' numbers from being reused.
struct KnownTail {
    journal: OpenLog,
    index: File,
    index_id: FileId,
    index_len: u64,
    /// The newest record of both: the checkpoint this process created
    /// last, published.
    newest: String,
}

impl KnownTail {
    /// After a creation that read the files: opens them to be kept.
    fn open(journal: &Path, journal_end: u64, index: &Path, newest: String) -> Result<KnownTail> {
        let journal = OpenLog::open(journal, journal_end)?;
        let file = durable::open_for_writes(index)?;
        let (index_id, index_len) = FileId::of_file(&file, index)?;
        Ok(KnownTail {
            journal,
            index: file,
            index_id,
            index_len,
            newest,
        })
    }

    fn still_true(&self, checkpoints: &FileCheckpoints, workflow: &str) -> Result<bool> {
        let dir = checkpoints.workflow_dir(workflow)?;
        Ok(self.journal.unchanged(&dir.join(JOURNAL_FILE))?
            && FileId::at(&dir.join(INDEX_FILE))? == Some((self.index_id, self.index_len))
            // Repair or a user may have moved it aside: a parent must exist.
            && checkpoints.committed(workflow, &self.newest)?)
    }
}

impl FileCheckpoints {
    pub fn new(
        root: PathBuf,
        locks: LockManager,
        audit: AuditLog,
        max_state_bytes: u64,
        lock_timeout: Option<Duration>,
        on_warning: Option<WarningHook>,
    ) -> Self {
        FileCheckpoints {
            root,
            locks,
            audit,
            max_bytes: max_state_bytes + METADATA_ALLOWANCE,
            lock_timeout,
            on_warning,
            repairs: Mutex::new(Vec::new()),
            tails: Kept::default(),
        }
    }

    fn workflow_dir(&self, workflow: &str) -> Result<PathBuf> {
        validate_name(workflow)?;
        Ok(self.root.join(workflow))
    }

    fn file_of(&self, workflow: &str, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.workflow_dir(workflow)?.join(format!("{id}.json")))
    }

    /// The pending writes against checkpoint `id` (`writes` module).
    fn writes_of(&self, workflow: &str, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self
            .workflow_dir(workflow)?
            .join(format!("{id}{}", writes::SUFFIX)))
    }

    /// Every pending-writes file of `workflow`.
    fn writes_files(&self, workflow: &str) -> Result<Vec<PathBuf>> {
        let dir = self.workflow_dir(workflow)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let name = entry.file_name();
            if name
                .to_str()
                .and_then(|n| n.strip_suffix(writes::SUFFIX))
                .is_some_and(id::is_valid)
            {
                found.push(entry.path());
            }
        }
        Ok(found)
    }

    fn lock(&self, workflow: &str) -> Result<LockGuard> {
        self.locks
            .internal_exclusive("checkpoint", workflow, self.lock_timeout)
    }

    /// Reads and verifies one checkpoint file; `None` if it does not exist.
    fn read(&self, workflow: &str, id: &str) -> Result<Option<Checkpoint>> {
        let path = self.file_of(workflow, id)?;
        match durable::read_file(&path, self.max_bytes)? {
            ReadOutcome::Missing => Ok(None),
            ReadOutcome::Found(bytes) => Checkpoint::decode(&bytes, &path, id, workflow).map(Some),
        }
    }

    fn committed(&self, workflow: &str, id: &str) -> Result<bool> {
        Ok(self.file_of(workflow, id)?.exists())
    }

    /// The workflow's index, rebuilt from the checkpoint files first if it is
    /// missing or damaged. `Ok(None)`: the workflow has no checkpoints.
    fn index(&self, workflow: &str) -> Result<Option<IndexReader>> {
        let dir = self.workflow_dir(workflow)?;
        if !dir.exists() {
            return Ok(None);
        }
        let path = dir.join(INDEX_FILE);
        match IndexReader::open(&path)? {
            Ok(reader) => return Ok(Some(reader)),
            // No index and no checkpoint files: nothing to rebuild.
            Err(IndexProblem::Missing) if !has_checkpoint_files(&dir)? => return Ok(None),
            Err(_) => {}
        }
        // Re-check under the lock: a writer may have been mid-way.
        let _guard = self.lock(workflow)?;
        match IndexReader::open(&path)? {
            Ok(reader) => Ok(Some(reader)),
            Err(problem) => {
                let problem = match problem {
                    IndexProblem::Missing => "index missing".to_string(),
                    IndexProblem::Damaged(why) => format!("index damaged ({why})"),
                };
                self.rebuild_locked(workflow, &problem)?;
                match IndexReader::open(&path)? {
                    Ok(reader) => Ok(Some(reader)),
                    Err(p) => Err(Error::integrity(
                        &path,
                        format!("rebuilt index unusable: {p:?}"),
                    )),
                }
            }
        }
    }

    /// A record the caller needs turned out damaged: rebuild and retry once.
    fn repair_and_reopen(&self, workflow: &str, problem: &str) -> Result<IndexReader> {
        let _guard = self.lock(workflow)?;
        self.rebuild_locked(workflow, problem)?;
        let path = self.workflow_dir(workflow)?.join(INDEX_FILE);
        IndexReader::open(&path)?
            .map_err(|p| Error::integrity(&path, format!("rebuilt index unusable: {p:?}")))
    }

    /// The rule for a damaged index record met mid-walk: the first time,
    /// rebuild the index and return a fresh reader (the caller restarts its
    /// walk); a second time means the disk does not return what was
    /// written, which is an error, not a reason to loop.
    fn rebuild_once(&self, workflow: &str, why: &str, repaired: &mut bool) -> Result<IndexReader> {
        if std::mem::replace(repaired, true) {
            return Err(self.still_damaged(workflow, why));
        }
        self.repair_and_reopen(workflow, why)
    }

    /// A freshly rebuilt index that reads back damaged: the disk is not
    /// returning what was written. Stop rather than loop.
    fn still_damaged(&self, workflow: &str, why: &str) -> Error {
        let path = self
            .workflow_dir(workflow)
            .map(|d| d.join(INDEX_FILE))
            .unwrap_or_default();
        Error::integrity(
            path,
            format!("index still damaged right after a rebuild: {why}"),
        )
    }

    /// Rewrites the index from the checkpoint files. Damaged checkpoint
    /// files are left out (they are reported by `list`, `show` and health);
    /// I/O errors stop the rebuild.
    fn rebuild_locked(&self, workflow: &str, problem: &str) -> Result<usize> {
        let dir = self.workflow_dir(workflow)?;
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !id::is_valid(id) {
                continue;
            }
            match self.read(workflow, id) {
                Ok(Some(cp)) => records.push(record_of(&cp)),
                Ok(None) => {}
                // A damaged checkpoint stays out of the index (list, show
                // and health report it); an I/O failure is not damage and
                // must not silently drop a good checkpoint from the index.
                Err(Error::Integrity { .. } | Error::TooLarge { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        let mut bytes = index::header().to_vec();
        for r in &records {
            bytes.extend_from_slice(&r.encode());
        }
        durable::replace_file_with_bytes(&dir.join(INDEX_FILE), &bytes)?;
        self.repairs
            .lock()
            .expect("repairs lock")
            .push(IndexRepair {
                workflow: workflow.to_string(),
                problem: problem.to_string(),
                checkpoints: records.len(),
            });
        Ok(records.len())
    }

    /// `[workflow]` if one is named (and valid), else every workflow that
    /// has checkpoints.
    fn named_or_all(&self, workflow: Option<&str>) -> Result<Vec<String>> {
        match workflow {
            Some(w) => {
                validate_name(w)?;
                Ok(vec![w.to_string()])
            }
            None => self.workflows(),
        }
    }

    /// The newest committed record, scanning back over uncommitted ones.
    fn latest_record(&self, workflow: &str) -> Result<Option<IndexRecord>> {
        let Some(mut reader) = self.index(workflow)? else {
            return Ok(None);
        };
        let mut i = reader.count();
        let mut repaired = false;
        while i > 0 {
            i -= 1;
            let record = match reader.record(i)? {
                Ok(r) => r,
                Err(why) => {
                    reader = self.rebuild_once(workflow, &why, &mut repaired)?;
                    i = reader.count();
                    continue;
                }
            };
            if self.committed(workflow, &record.id)? {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// Which workflow holds checkpoint `id`.
    fn locate(&self, id: &str) -> Result<String> {
        validate_id(id)?;
        let mut holders = Vec::new();
        for workflow in self.workflows()? {
            if self.committed(&workflow, id)? {
                holders.push(workflow);
            }
        }
        only_holder(id, holders)
    }

    /// Walks `workflow`'s index newest first from `before` (or the end),
    /// collecting what `take` returns for each record until `limit` are
    /// collected. A damaged record rebuilds the index once and restarts.
    fn walk_newest_first<T>(
        &self,
        workflow: &str,
        before: Option<&str>,
        limit: usize,
        mut take: impl FnMut(&IndexRecord) -> Result<Option<T>>,
    ) -> Result<Vec<T>> {
        let Some(mut reader) = self.index(workflow)? else {
            return Ok(Vec::new());
        };
        let start = |reader: &IndexReader| match before {
            Some(before) => reader.lower_bound(before),
            None => Ok(reader.count()),
        };
        let mut taken = Vec::new();
        let mut end = start(&reader)?;
        let mut repaired = false;
        while end > 0 && taken.len() < limit {
            end -= 1;
            let record = match reader.record(end)? {
                Ok(r) => r,
                Err(why) => {
                    reader = self.rebuild_once(workflow, &why, &mut repaired)?;
                    end = start(&reader)?;
                    taken.clear();
                    continue;
                }
            };
            if let Some(t) = take(&record)? {
                taken.push(t);
            }
        }
        Ok(taken)
    }

    fn list_workflow(&self, workflow: &str, query: &ListQuery) -> Result<Vec<ListEntry>> {
        let tag = index::phase_tag(query.phase.as_deref());
        self.walk_newest_first(workflow, query.before.as_deref(), query.limit, |record| {
            if tag.is_some() && record.phase_tag != tag {
                return Ok(None);
            }
            let content = match self.read(workflow, &record.id) {
                Ok(None) => return Ok(None), // never committed
                Ok(Some(cp)) => ListContent::Ok {
                    phase: cp.phase,
                    item: cp.item,
                    message: cp.message,
                },
                Err(e) => ListContent::Corrupt {
                    error: e.to_string(),
                },
            };
            Ok(Some(ListEntry {
                id: record.id.clone(),
                workflow: workflow.to_string(),
                created_at: micros_to_rfc3339(record.created_us),
                parent: record.parent.clone(),
                content,
            }))
        })
    }

    fn prune_workflow(&self, workflow: &str, policy: &PrunePolicy) -> Result<Vec<Pruned>> {
        self.remove_selected(workflow, policy.dry_run, "checkpoint_prune", |records| {
            let ages: Vec<u64> = records.iter().map(|r| r.created_us).collect();
            Ok(crate::checkpoint::select_for_pruning(&ages, policy))
        })
    }

    /// Removes the committed checkpoints of `workflow` that `select` picks
    /// (given them oldest first), with their pending writes, under the
    /// checkpoint lock, with one audit entry `event`.
    fn remove_selected(
        &self,
        workflow: &str,
        dry_run: bool,
        event: &str,
        select: impl FnOnce(&[IndexRecord]) -> Result<Vec<bool>>,
    ) -> Result<Vec<Pruned>> {
        let _guard = self.lock(workflow)?;
        // Settled first: a removed checkpoint must not come back from the
        // journal after a power cut.
        if !dry_run {
            self.settle_journal(workflow)?;
        }
        let Some(mut reader) = self.index(workflow)? else {
            return Ok(Vec::new());
        };
        reader.load()?;
        let mut records = Vec::with_capacity(reader.count());
        let mut repaired = false;
        let mut i = 0;
        while i < reader.count() {
            match reader.record(i)? {
                Ok(r) => records.push(r),
                Err(why) => {
                    reader = self.rebuild_once(workflow, &why, &mut repaired)?;
                    reader.load()?;
                    records.clear();
                    i = 0;
                    continue;
                }
            }
            i += 1;
        }
        let dir = self.workflow_dir(workflow)?;
        // Only committed checkpoints count.
        records.retain(|r| dir.join(format!("{}.json", r.id)).exists());
        let (mut selected, mut kept) = (Vec::new(), Vec::new());
        let choice = select(&records)?;
        for (record, remove) in records.into_iter().zip(choice) {
            if remove {
                selected.push(record);
            } else {
                kept.push(record);
            }
        }
        let removed: Vec<Pruned> = selected
            .iter()
            .map(|r| Pruned {
                workflow: workflow.to_string(),
                id: r.id.clone(),
                created_at: micros_to_rfc3339(r.created_us),
            })
            .collect();
        if dry_run || selected.is_empty() {
            return Ok(removed);
        }
        // Files first: a crash before the index is rewritten leaves records
        // without files, which readers already treat as absent. Writes
        // after their checkpoints, so a checkpoint never loses its writes
        // while it is still there; a crash between the two leaves writes
        // without a checkpoint, which no listing shows (and a removal run
        // again does not find: only a new checkpoint under the same id in
        // the same workflow would see them).
        let mut paths: Vec<PathBuf> = selected
            .iter()
            .map(|r| dir.join(format!("{}.json", r.id)))
            .collect();
        for r in &selected {
            let path = self.writes_of(workflow, &r.id)?;
            if durable::name_exists(&path)? {
                paths.push(path);
            }
        }
        if kept.is_empty() {
            // Nothing is left that writes could belong to: writes without a
            // checkpoint (stored before one that never came, or left by an
            // interrupted removal) go too.
            for path in self.writes_files(workflow)? {
                if !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
        let ids: Vec<String> = removed.iter().map(|p| p.id.clone()).collect();
        let evidence = Evidence::CheckpointsRemoved {
            workflow: workflow.to_string(),
            ids: ids.clone(),
        };
        let data = serde_json::json!({"workflow": workflow, "ids": ids});
        let ((), entry) = self.audit.append_with_intent(evidence, event, data, || {
            durable::remove_files(&dir, &paths)?;
            let mut bytes = index::header().to_vec();
            for r in &kept {
                bytes.extend_from_slice(&r.encode());
            }
            durable::replace_file_with_bytes(&dir.join(INDEX_FILE), &bytes)
        })?;
        self.tails.forget(workflow);
        if let Err(e) = entry {
            warn_unaudited(
                self.on_warning.as_ref(),
                e,
                &format!("{} checkpoint(s) were removed", ids.len()),
                "audit intent",
            );
        }
        Ok(removed)
    }
}

// The journal (see the module documentation).
impl FileCheckpoints {
    fn journal_path(&self, workflow: &str) -> Result<PathBuf> {
        Ok(self.workflow_dir(workflow)?.join(JOURNAL_FILE))
    }

    /// Steps 1 and 2 of a creation through the journal; the caller holds
    /// the checkpoint lock and has checked everything else. The journal's
    /// next record goes at `append_at`, or where `known` says.
    fn create_through_journal(
        &self,
        checkpoint: Checkpoint,
        line: Vec<u8>,
        bytes: &[u8],
        record: &IndexRecord,
        (mut known, append_at): (Option<KnownTail>, u64),
    ) -> Result<Checkpoint> {
        let workflow = checkpoint.workflow.clone();
        let journal = self.journal_path(&workflow)?;
        let audit_data = serde_json::json!({"workflow": workflow, "id": checkpoint.id,
            "parent": checkpoint.parent, "checksum": checkpoint.checksum});
        let id = &checkpoint.id;
        let index_path = self.workflow_dir(&workflow)?.join(INDEX_FILE);
        let encoded = record.encode();
        let file = self.file_of(&workflow, id)?;
        // Set once the journal record, the commit point, is durable.
        let mut committed = false;
        let appended = self.audit.append_with(
            (&workflow, Carrier::CheckpointJournal),
            "checkpoint_create",
            audit_data,
            |entry| {
                let line = state_log::record_line(line, entry);
                let journal_len = match &mut known {
                    Some(known) => known.journal.append(&journal, line),
                    None => state_log::append(&journal, line, append_at),
                }?;
                committed = true;
                // Committed. Published before the entry is copied to the
                // audit log, so that an entry there always has its
                // checkpoint visible: a creator that dies before the copy
                // leaves the entry pending, and the next open of the store
                // publishes the checkpoint as it copies the entry
                // (`FileBackend::open`). The index record first, as in the
                // synced protocol: a record without its file is one readers
                // treat as not there yet.
                let published = match &mut known {
                    Some(known) => durable::write_at_unsynced_in(
                        &known.index,
                        &index_path,
                        known.index_len,
                        &encoded,
                    )
                    .map(|()| known.index_len += encoded.len() as u64),
                    None => durable::append_unsynced(&index_path, &encoded),
                }
                .and_then(|()| durable::publish_unsynced(&file, bytes));
                published.map_err(|e| {
                    after_the_change(
                        e,
                        "publish committed checkpoint",
                        &format!(
                            "checkpoint {id} was committed to the journal but not published; \
                             it appears, with its audit entry, when the store is next opened \
                             or with the next checkpoint of {workflow:?}"
                        ),
                    )
                })?;
                Ok(journal_len)
            },
        );
        let (journal_len, entry) = match appended {
            Ok(appended) => appended,
            // Committed but not published: the change was made, and it
            // becomes visible on the next open or creation.
            Err(e) if committed => {
                self.tails.forget(&workflow);
                warn(self.on_warning.as_ref(), &e);
                return Ok(checkpoint);
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = entry {
            warn_unaudited(
                self.on_warning.as_ref(),
                e,
                &format!("checkpoint {id} was created"),
                "journal",
            );
        }
        if journal_len > state_log::COMPACT_AT {
            if let Err(e) = self.settle_journal(&workflow) {
                warn(
                    self.on_warning.as_ref(),
                    &after_the_change(
                        e,
                        "settle checkpoint journal",
                        &format!(
                            "checkpoint {id} was created; settling the journal failed \
                             (the next creation or prune tries again)"
                        ),
                    ),
                );
            }
            return Ok(checkpoint);
        }
        let known = match known {
            Some(mut known) => {
                known.newest = id.clone();
                Some(known)
            }
            // Not kept if the files cannot be opened: the next creation
            // reads them again.
            None => KnownTail::open(&journal, journal_len, &index_path, id.clone()).ok(),
        };
        if let Some(known) = known {
            self.tails.keep(&workflow, known);
        }
        Ok(checkpoint)
    }

    /// The records in the journal of `workflow`, oldest first, with their
    /// kind and id read but not verified (settling verifies a record only
    /// when it must write from it).
    fn raw_journal(&self, workflow: &str) -> Result<Vec<RawRecord>> {
        let path = self.journal_path(workflow)?;
        state_log::complete_records(&path)?
            .iter()
            .enumerate()
            .map(|(n, record)| {
                let (doc, _) = state_log::split_record(record);
                let (id, writes) = record_keys(&path, doc, n + 1)?;
                let mut line = doc.to_vec();
                line.push(b'\n');
                Ok(RawRecord {
                    writes,
                    id,
                    line,
                    number: n + 1,
                })
            })
            .collect()
    }

    /// The records in the journal of `workflow`, oldest first.
    pub(crate) fn journal_entries(&self, workflow: &str) -> Result<Vec<JournalRecord>> {
        let path = self.journal_path(workflow)?;
        state_log::complete_records(&path)?
            .iter()
            .enumerate()
            .map(|(n, record)| decode_journal_record(&path, record, workflow, n + 1))
            .collect()
    }

    /// Publishes the journal's newest checkpoint if its creator died before
    /// doing so. (Only the newest can be unpublished: every creation first
    /// runs this, under the same lock.) The caller holds the lock.
    /// Returns where the journal's next record goes.
    fn publish_pending(&self, workflow: &str) -> Result<u64> {
        let path = self.journal_path(workflow)?;
        let Some(newest) = state_log::newest_record(&path)? else {
            return Ok(0);
        };
        let append_at = newest.append_at;
        let Some((_, record)) = newest.line else {
            return Ok(append_at);
        };
        let cp = match decode_journal_record(&path, &record, workflow, 0)? {
            JournalRecord::Checkpoint(cp) => *cp,
            JournalRecord::Writes { checkpoint, line } => {
                let file = self.writes_of(workflow, &checkpoint)?;
                if !writes::holds(&file, &line)? {
                    let stored = writes::read(&file, workflow, &checkpoint)?;
                    writes::publish_unsynced(&file, &line, stored.append_at)?;
                }
                return Ok(append_at);
            }
        };
        if self.committed(workflow, &cp.id)? {
            return Ok(append_at);
        }
        let index_path = self.workflow_dir(workflow)?.join(INDEX_FILE);
        let indexed = match IndexReader::open(&index_path)? {
            Ok(reader) if reader.find(&cp.id)?.is_some() => true,
            Ok(reader)
                if reader.count() == 0
                    || reader
                        .record(reader.count() - 1)?
                        .is_ok_and(|r| r.id < cp.id) =>
            {
                durable::append_unsynced(&index_path, &record_of(&cp).encode())?;
                true
            }
            _ => false,
        };
        durable::publish_unsynced(&self.file_of(workflow, &cp.id)?, &cp.to_bytes())?;
        if !indexed {
            self.rebuild_locked(
                workflow,
                "a committed checkpoint was missing from the index",
            )?;
        }
        Ok(append_at)
    }

    /// Step 3: makes every checkpoint in the journal durable as its file
    /// (rewriting, durably, any that is missing or does not verify), then
    /// the index (rebuilt if it lacks any of them), the directory and the
    /// audit entries the journal carries; then empties the journal. The
    /// caller holds the checkpoint lock.
    fn settle_journal(&self, workflow: &str) -> Result<()> {
        let journal = self.journal_path(workflow)?;
        let records = self.raw_journal(workflow)?;
        if records.is_empty() {
            return Ok(());
        }
        let dir = self.workflow_dir(workflow)?;
        // Files whose content is right, synced together at the end.
        let mut to_sync = Vec::new();
        let mut checkpoints = Vec::new();
        let mut carried: std::collections::BTreeMap<String, Vec<Vec<u8>>> = Default::default();
        for record in records {
            if record.writes {
                carried.entry(record.id).or_default().push(record.line);
            } else {
                checkpoints.push(record);
            }
        }
        for record in &checkpoints {
            let path = self.file_of(workflow, &record.id)?;
            // The published file holds the record's bytes unless a power
            // cut lost or tore it: comparing them costs less than decoding
            // it. Anything else is rewritten, durably, from the record,
            // verified first.
            match durable::read_file(&path, self.max_bytes) {
                Ok(ReadOutcome::Found(on_disk)) if on_disk == record.line => to_sync.push(path),
                Ok(_) | Err(Error::Integrity { .. } | Error::TooLarge { .. }) => {
                    let body = &record.line[..record.line.len() - 1];
                    let JournalRecord::Checkpoint(cp) =
                        decode_journal_record(&journal, body, workflow, record.number)?
                    else {
                        unreachable!("the record's keys said checkpoint")
                    };
                    durable::replace_file_with_bytes(&path, &cp.to_bytes())?
                }
                Err(e) => return Err(e),
            }
        }
        for (id, lines) in &carried {
            #[cfg(test)]
            if durable::sim::mutation_skips_writes_replay() {
                continue;
            }
            let path = self.writes_of(workflow, id)?;
            to_sync.extend(writes::settle(&path, workflow, id, lines)?);
        }
        let index_path = dir.join(INDEX_FILE);
        let complete = match IndexReader::open(&index_path)? {
            Ok(reader) => {
                let mut all = true;
                for record in &checkpoints {
                    all &= matches!(reader.find(&record.id)?, Some(Ok(_)));
                }
                all
            }
            // A journal of writes alone needs no index.
            Err(_) => checkpoints.is_empty(),
        };
        if complete {
            if index_path.exists() {
                to_sync.push(index_path);
            }
            durable::sync_files(&to_sync)?;
        } else {
            durable::sync_files(&to_sync)?;
            self.rebuild_locked(
                workflow,
                "checkpoints committed through the journal were not all indexed",
            )?;
        }
        durable::sync_dir(&dir)?;
        // The journal's records carry audit entries that may be durable
        // nowhere else yet.
        self.audit.sync()?;
        state_log::clear(&journal)
    }

    /// Writes checkpoint `id` of `workflow` back from the journal (durably),
    /// if the journal holds it: after repair moved a damaged copy of its
    /// file to quarantine. The caller holds the checkpoint lock.
    pub(crate) fn restore_from_journal(&self, workflow: &str, id: &str) -> Result<bool> {
        let Some(cp) =
            self.journal_entries(workflow)?
                .into_iter()
                .find_map(|record| match record {
                    JournalRecord::Checkpoint(cp) if cp.id == id => Some(*cp),
                    _ => None,
                })
        else {
            return Ok(false);
        };
        durable::replace_file_with_bytes(&self.file_of(workflow, id)?, &cp.to_bytes())?;
        Ok(true)
    }

    /// Publishes the newest checkpoint of `workflow`'s journal if its
    /// creator died before doing so (see `AuditLog::recover`). A creator
    /// holding the lock now publishes it itself, first thing. As in
    /// `replay_journals`, a damaged journal is left for `health` to report:
    /// it must not stop the store from opening.
    pub(crate) fn publish_left_pending(&self, workflow: &str) -> Result<()> {
        if !self.journal_path(workflow)?.exists() {
            return Ok(());
        }
        let Some(_guard) = self.locks.try_internal_exclusive("checkpoint", workflow)? else {
            return Ok(());
        };
        self.tails.forget(workflow);
        match self.publish_pending(workflow) {
            Err(Error::Integrity { .. }) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Run by the first open after a reboot, before the store counts as
    /// recovered: settles every workflow's journal, restoring any checkpoint
    /// file the power cut lost or tore. A workflow whose checkpoint lock is
    /// busy is skipped: a process of this boot is at work there, which
    /// cannot happen after a real reboot (every opener waits for this
    /// recovery). A damaged journal is left for `health` to report.
    pub(crate) fn replay_journals(&self) -> Result<()> {
        for workflow in self.workflows()? {
            if !self.journal_path(&workflow)?.exists() {
                continue;
            }
            let Some(_guard) = self.locks.try_internal_exclusive("checkpoint", &workflow)? else {
                continue;
            };
            match self.settle_journal(&workflow) {
                Err(Error::Integrity { .. }) => {}
                other => other?,
            }
        }
        Ok(())
    }
}

/// A record of a checkpoint journal: a checkpoint (with the audit entry
/// of its creation), or a batch of pending writes (DESIGN section 15).
pub(crate) enum JournalRecord {
    Checkpoint(Box<Checkpoint>),
    /// `line` is the batch's line as its writes file holds it (with the
    /// newline).
    Writes {
        checkpoint: String,
        line: Vec<u8>,
    },
}

/// A journal record as settling first reads it.
struct RawRecord {
    /// Pending writes (else a checkpoint).
    writes: bool,
    /// The checkpoint's id, or the id of the checkpoint the writes are for.
    id: String,
    /// The document, with a newline: the bytes its published file holds.
    line: Vec<u8>,
    number: usize,
}

fn which_record(number: usize) -> String {
    if number == 0 {
        "newest record".to_string()
    } else {
        format!("record {number}")
    }
}

/// The id a journal record is about and whether it holds pending writes.
fn record_keys(path: &Path, doc: &[u8], number: usize) -> Result<(String, bool)> {
    #[derive(serde::Deserialize)]
    struct Keys {
        #[serde(default)]
        format: Option<String>,
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        checkpoint: Option<String>,
    }
    let which = which_record(number);
    let keys = serde_json::from_slice::<Keys>(doc)
        .map_err(|e| Error::integrity(path, format!("{which}: not a journal record ({e})")))?;
    let (id, is_writes) = match keys {
        Keys {
            format: Some(f),
            checkpoint: Some(id),
            ..
        } if f.starts_with("wfstate.writes/") => (id, true),
        Keys { id: Some(id), .. } => (id, false),
        _ => {
            return Err(Error::integrity(
                path,
                format!("{which}: neither a checkpoint nor pending writes"),
            ));
        }
    };
    if !id::is_valid(&id) {
        return Err(Error::integrity(
            path,
            format!("{which}: invalid id {id:?}"),
        ));
    }
    Ok((id, is_writes))
}

/// Decodes and verifies record `number` (0: the newest) of a journal.
fn decode_journal_record(
    path: &Path,
    record: &[u8],
    workflow: &str,
    number: usize,
) -> Result<JournalRecord> {
    let which = which_record(number);
    let in_record = |e: Error| match e {
        Error::Integrity { path, problem } => Error::Integrity {
            path,
            problem: format!("{which}: {problem}"),
        },
        other => other,
    };
    let (doc, _) = state_log::split_record(record);
    let (id, is_writes) = record_keys(path, doc, number)?;
    if is_writes {
        decode_writes(doc, path, workflow, &id).map_err(in_record)?;
        let mut line = doc.to_vec();
        line.push(b'\n');
        return Ok(JournalRecord::Writes {
            checkpoint: id,
            line,
        });
    }
    Checkpoint::decode(doc, path, &id, workflow)
        .map(|cp| JournalRecord::Checkpoint(Box::new(cp)))
        .map_err(in_record)
}

/// The workflows that have a checkpoint folder under `root`, sorted.
pub(crate) fn workflows_in(root: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", root, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", root, e))?;
        if let Some(name) = entry.file_name().to_str()
            && validate_name(name).is_ok()
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn has_checkpoint_files(dir: &Path) -> Result<bool> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .is_some_and(id::is_valid)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn record_of(cp: &Checkpoint) -> IndexRecord {
    IndexRecord {
        id: cp.id.clone(),
        parent: cp.parent.clone(),
        created_us: clock::parse_rfc3339_micros(&cp.created_at).unwrap_or(0),
        phase_tag: index::phase_tag(cp.phase.as_deref()),
    }
}

fn micros_to_rfc3339(us: u64) -> String {
    clock::micros_to_rfc3339(us)
}

impl CheckpointBackend for FileCheckpoints {
    fn create(&self, new: NewCheckpoint, state: Option<StateSnapshot>) -> Result<Checkpoint> {
        let workflow = new.workflow.clone();
        let dir = self.workflow_dir(&workflow)?;
        let index_path = dir.join(INDEX_FILE);
        let _guard = self.lock(&workflow)?;
        let known = self
            .tails
            .take_if(&workflow, |known| known.still_true(self, &workflow));
        // The newest id so far, committed or not, so the new one sorts
        // last; the newest committed one, the default parent; where the
        // journal's next record goes; whether the index exists.
        let (newest_id, latest, journal_append_at, indexed) = match &known {
            Some(known) => (
                Some(known.newest.clone()),
                Some(known.newest.clone()),
                known.journal.append_at,
                true,
            ),
            None => {
                durable::create_dir(&self.root)?;
                durable::create_dir(&dir)?;
                // A creator that died after its commit may have left its
                // checkpoint unpublished: publish it first, so it keeps its
                // place in the order.
                let journal_append_at = self.publish_pending(&workflow)?;
                let reader = self.index(&workflow)?;
                let newest_id = match &reader {
                    Some(r) if r.count() > 0 => match r.record(r.count() - 1)? {
                        Ok(rec) => Some(rec.id),
                        Err(why) => {
                            self.rebuild_locked(&workflow, &why)?;
                            self.latest_record(&workflow)?.map(|r| r.id)
                        }
                    },
                    _ => None,
                };
                let latest = match &newest_id {
                    Some(id) if self.committed(&workflow, id)? => Some(id.clone()),
                    Some(_) => self.latest_record(&workflow)?.map(|r| r.id),
                    None => None,
                };
                (newest_id, latest, journal_append_at, reader.is_some())
            }
        };
        let parent = match &new.parent {
            ParentChoice::Root => None,
            ParentChoice::Latest => latest,
            ParentChoice::Id(parent) => {
                validate_id(parent)?;
                if !parent_may_be_gone(&new) && !self.committed(&workflow, parent)? {
                    return Err(Error::NotFound {
                        what: format!("parent checkpoint {parent} in workflow {workflow:?}"),
                        path: None,
                    });
                }
                Some(parent.clone())
            }
        };
        // A caller's id that does not sort after the newest cannot be
        // appended to the sorted index: it is committed by the synced path,
        // and the index rebuilt in order.
        let (id, in_order) = match new.id.clone() {
            None => (id::next_after(newest_id.as_deref()), true),
            Some(given) => {
                validate_id(&given)?;
                if let Some(existing) = self.read(&workflow, &given)? {
                    return same_checkpoint_again(existing, &new, parent.as_deref());
                }
                let in_order = newest_id.as_deref().is_none_or(|n| n < given.as_str());
                (given, in_order)
            }
        };
        let created_us = clock::now_micros() as u64;
        let checkpoint = Checkpoint::assemble(
            new,
            id.clone(),
            parent,
            micros_to_rfc3339(created_us),
            state,
        );
        let bytes = checkpoint.to_bytes();
        if bytes.len() as u64 > self.max_bytes {
            return Err(Error::TooLarge {
                what: format!("checkpoint of workflow {workflow:?}"),
                size: Size::Exactly(bytes.len() as u64),
                limit: self.max_bytes,
            });
        }
        let record = record_of(&checkpoint);
        if !indexed {
            durable::replace_file_with_bytes(&index_path, &index::header())?;
        }
        if bytes.len() <= JOURNAL_RECORD_LIMIT && in_order {
            let line = bytes.clone();
            return self.create_through_journal(
                checkpoint,
                line,
                &bytes,
                &record,
                (known, journal_append_at),
            );
        }
        let evidence = Evidence::CheckpointFile {
            workflow: workflow.clone(),
            id: id.clone(),
        };
        let data = serde_json::json!({"workflow": workflow, "id": id,
            "parent": checkpoint.parent, "checksum": checkpoint.checksum});
        let file = self.file_of(&workflow, &id)?;
        let ((), entry) =
            self.audit
                .append_with_intent(evidence, "checkpoint_create", data, || {
                    durable::publish_file(&file, &bytes, || {
                        durable::append(&index_path, &record.encode())
                    })
                })?;
        if let Err(e) = entry {
            warn_unaudited(
                self.on_warning.as_ref(),
                e,
                &format!("checkpoint {id} was created"),
                "audit intent",
            );
        }
        if !in_order {
            self.tails.forget(&workflow);
            if let Err(e) = self.rebuild_locked(&workflow, "a checkpoint id given out of order") {
                warn(
                    self.on_warning.as_ref(),
                    &after_the_change(
                        e,
                        "sort the checkpoint index",
                        &format!(
                            "checkpoint {id} was created; its index is rebuilt when next read"
                        ),
                    ),
                );
            }
        }
        Ok(checkpoint)
    }

    fn get(&self, id: &str) -> Result<Checkpoint> {
        let workflow = self.locate(id)?;
        self.read(&workflow, id)?.ok_or_else(|| Error::NotFound {
            what: format!("checkpoint {id}"),
            path: None,
        })
    }

    fn latest(&self, workflow: &str) -> Result<Option<Checkpoint>> {
        match self.latest_record(workflow)? {
            Some(record) => self.read(workflow, &record.id),
            None => Ok(None),
        }
    }

    fn list(&self, query: &ListQuery) -> Result<Vec<ListEntry>> {
        if let Some(before) = &query.before {
            validate_id(before)?;
        }
        let workflows = self.named_or_all(query.workflow.as_deref())?;
        let mut all = Vec::new();
        for workflow in workflows {
            all.extend(self.list_workflow(&workflow, query)?);
        }
        all.sort_by(|a, b| b.id.cmp(&a.id));
        all.truncate(query.limit);
        Ok(all)
    }

    fn workflow_of(&self, id: &str) -> Result<String> {
        self.locate(id)
    }

    fn chain_in(&self, workflow: &str, id: &str, max_depth: usize) -> Result<Chain> {
        validate_id(id)?;
        let workflow = workflow.to_string();
        let mut reader = self.index(&workflow)?.ok_or_else(|| Error::NotFound {
            what: format!("checkpoint {id}"),
            path: None,
        })?;
        reader.load()?;
        let mut links = Vec::new();
        let mut seen = HashSet::new();
        let mut current = id.to_string();
        let mut repaired = false;
        let stopped = loop {
            if links.len() == max_depth {
                break Some(ChainStop::MaxDepth { depth: max_depth });
            }
            let record = match reader.find(&current)? {
                Some(Ok(r)) => r,
                Some(Err(why)) => {
                    reader = self.rebuild_once(&workflow, &why, &mut repaired)?;
                    reader.load()?;
                    links.clear();
                    seen.clear();
                    current = id.to_string();
                    continue;
                }
                None if !repaired && self.committed(&workflow, &current)? => {
                    // Committed (its file exists) but not found: the index is
                    // stale or a damaged record misled the search. Rebuild
                    // once and walk again.
                    repaired = true;
                    reader =
                        self.repair_and_reopen(&workflow, "index lacks a committed checkpoint")?;
                    reader.load()?;
                    links.clear();
                    seen.clear();
                    current = id.to_string();
                    continue;
                }
                None if links.is_empty() => {
                    return Err(Error::NotFound {
                        what: format!("checkpoint {id}"),
                        path: None,
                    });
                }
                None => {
                    let at = links
                        .last()
                        .map(|l: &ChainLink| l.id.clone())
                        .unwrap_or_default();
                    break Some(ChainStop::MissingParent {
                        at,
                        missing: current,
                    });
                }
            };
            seen.insert(record.id.clone());
            let parent = record.parent.clone();
            links.push(ChainLink {
                id: record.id,
                created_at: micros_to_rfc3339(record.created_us),
                parent: parent.clone(),
            });
            match parent {
                None => break None,
                Some(p) if seen.contains(&p) => {
                    let at = links.last().expect("just pushed").id.clone();
                    break Some(ChainStop::Cycle { at, repeats: p });
                }
                Some(p) => current = p,
            }
        };
        Ok(Chain { links, stopped })
    }

    fn prune(&self, policy: &PrunePolicy) -> Result<Vec<Pruned>> {
        crate::checkpoint::require_rule(policy)?;
        let workflows = self.named_or_all(policy.workflow.as_deref())?;
        let mut pruned = Vec::new();
        for workflow in workflows {
            pruned.extend(self.prune_workflow(&workflow, policy)?);
        }
        Ok(pruned)
    }

    fn workflows(&self) -> Result<Vec<String>> {
        workflows_in(&self.root)
    }

    fn rebuild_index(&self, workflow: &str, reason: &str) -> Result<usize> {
        let _guard = self.lock(workflow)?;
        self.rebuild_locked(workflow, reason)
    }

    fn take_repairs(&self) -> Vec<IndexRepair> {
        std::mem::take(&mut *self.repairs.lock().expect("repairs lock"))
    }

    fn get_in(&self, workflow: &str, id: &str) -> Result<Option<Checkpoint>> {
        self.read(workflow, id)
    }

    fn find(&self, query: &FindQuery) -> Result<Vec<Checkpoint>> {
        let workflow = query.workflow.as_str();
        if let Some(before) = &query.before {
            validate_id(before)?;
        }
        let limit = query.limit.unwrap_or(usize::MAX);
        if let Some(id) = &query.id {
            let found = self
                .read(workflow, id)?
                .filter(|cp| query.before.as_ref().is_none_or(|b| cp.id < *b) && query.matches(cp));
            return Ok(found.into_iter().take(limit).collect());
        }
        self.walk_newest_first(workflow, query.before.as_deref(), limit, |record| {
            // `None`: a record whose checkpoint was never committed.
            Ok(self
                .read(workflow, &record.id)?
                .filter(|cp| query.matches(cp)))
        })
    }

    fn put_writes(
        &self,
        workflow: &str,
        id: &str,
        batch: &[PendingWrite],
        rule: WriteRule,
    ) -> Result<usize> {
        validate_writes(batch)?;
        let path = self.writes_of(workflow, id)?;
        let journal = self.journal_path(workflow)?;
        // The checkpoint need not exist yet: LangGraph stores a step's
        // writes while the checkpoint before it is still being stored.
        let _guard = self.lock(workflow)?;
        let mut known = self
            .tails
            .take_if(workflow, |known| known.still_true(self, workflow));
        let append_at = match &known {
            Some(known) => known.journal.append_at,
            None => {
                durable::create_dir(&self.root)?;
                durable::create_dir(&self.workflow_dir(workflow)?)?;
                // As for a checkpoint: a writer that died after its commit
                // may have left its record unpublished.
                self.publish_pending(workflow)?
            }
        };
        let stored = writes::read(&path, workflow, id)?;
        let new = writes_to_store(&stored.writes, batch, rule);
        if new.is_empty() {
            if let Some(known) = known {
                self.tails.keep(workflow, known);
            }
            return Ok(0);
        }
        let line = writes::line_of(workflow, id, &new);
        if line.len() >= JOURNAL_RECORD_LIMIT {
            // Written durably to its file instead, after settling the
            // journal, so that it follows every line the journal carries.
            self.settle_journal(workflow)?;
            let stored = writes::read(&path, workflow, id)?;
            writes::append(&path, workflow, id, &new, stored.append_at)?;
            return Ok(new.len());
        }
        // The commit point: the journal record, one fdatasync.
        let journal_len = match &mut known {
            Some(known) => known.journal.append(&journal, line.clone()),
            None => state_log::append(&journal, line.clone(), append_at),
        }?;
        // Committed. Published for readers without a sync: the journal is
        // the durable copy until it is settled.
        if let Err(e) = writes::publish_unsynced(&path, &line, stored.append_at) {
            warn(
                self.on_warning.as_ref(),
                &after_the_change(
                    e,
                    "publish committed pending writes",
                    &format!(
                        "pending writes against checkpoint {id} were committed to the journal \
                         but not published; they appear when the store is next opened or with \
                         the next checkpoint or writes of {workflow:?}"
                    ),
                ),
            );
            return Ok(new.len());
        }
        if journal_len > state_log::COMPACT_AT {
            if let Err(e) = self.settle_journal(workflow) {
                warn(
                    self.on_warning.as_ref(),
                    &after_the_change(
                        e,
                        "settle checkpoint journal",
                        &format!(
                            "pending writes against checkpoint {id} were stored; settling the \
                             journal failed (the next checkpoint, writes or prune tries again)"
                        ),
                    ),
                );
            }
            return Ok(new.len());
        }
        if let Some(known) = known {
            self.tails.keep(workflow, known);
        }
        Ok(new.len())
    }

    fn writes(&self, workflow: &str, id: &str) -> Result<Vec<PendingWrite>> {
        let path = self.writes_of(workflow, id)?;
        match writes::read(&path, workflow, id) {
            Ok(stored) => Ok(fold_writes(stored.writes)),
            // Read without the lock, a line being written can look whole
            // but torn; under the lock, damage is real.
            Err(Error::Integrity { .. }) => {
                let _guard = self.lock(workflow)?;
                Ok(fold_writes(writes::read(&path, workflow, id)?.writes))
            }
            Err(e) => Err(e),
        }
    }

    fn remove(&self, workflow: &str, which: &Removal) -> Result<Vec<Pruned>> {
        self.remove_selected(workflow, false, "checkpoint_remove", |records| {
            let mut described = Vec::with_capacity(records.len());
            for r in records {
                let metadata = if which.needs_metadata() {
                    self.read(workflow, &r.id)?.and_then(|cp| cp.metadata)
                } else {
                    None
                };
                described.push((r.id.clone(), metadata));
            }
            Ok(which.selects(&described))
        })
    }
}

#[cfg(test)]
mod tail_tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn create(store: &Store, step: usize) -> Checkpoint {
        store
            .create_checkpoint(NewCheckpoint {
                workflow: "wf".into(),
                message: Some(format!("step {step}")),
                ..NewCheckpoint::default()
            })
            .unwrap()
    }

    /// The id of the journal's newest record, if any.
    fn newest_in_journal(dir: &Path) -> Option<String> {
        let path = dir.join(JOURNAL_FILE);
        let records = state_log::complete_records(&path).unwrap();
        let record = records.last()?;
        match decode_journal_record(&path, record, "wf", 0).unwrap() {
            JournalRecord::Checkpoint(cp) => Some(cp.id),
            JournalRecord::Writes { checkpoint, .. } => Some(checkpoint),
        }
    }

    /// Two stores in one process stand for two processes, each with its
    /// own knowledge of the journal's and index's tails. Each change below
    /// is seen by one of the checks only; a creator that trusted its
    /// knowledge instead would write its commit record into a replaced
    /// journal, its index record into a replaced index, or name a parent
    /// whose file is gone, and the assertions after each step say which.
    #[test]
    fn creators_with_their_own_knowledge_notice_each_others_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = Store::init(dir.path(), StoreOptions::default()).unwrap();
        let b = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let cp_dir = dir.path().join("checkpoints").join("wf");
        let mut created: Vec<Checkpoint> = Vec::new();
        let mut step = 0;
        let mut next = |store: &Store, created: &mut Vec<Checkpoint>| {
            step += 1;
            let cp = create(store, step);
            assert_eq!(
                cp.parent.as_deref(),
                created.last().map(|c| c.id.as_str()),
                "step {step}: the parent is the previous checkpoint"
            );
            if let Some(in_journal) = newest_in_journal(&cp_dir) {
                assert_eq!(in_journal, cp.id, "step {step}: committed in the journal");
            }
            created.push(cp);
        };
        for round in 0..40 {
            // Alternating creators find each other's appends; the test
            // build settles the journal every 4 KiB, about every 4 of
            // these, so each also finds the other's settlings.
            next(&b, &mut created);
            for _ in 0..(1 + round % 3) {
                next(&a, &mut created);
            }
            match round % 10 {
                3 => {
                    // The index rebuilt (same records, same length, new
                    // file): only the index's identity tells.
                    b.checkpoints()
                        .unwrap()
                        .rebuild_index("wf", "test")
                        .unwrap();
                    next(&a, &mut created);
                }
                5 => {
                    // The journal settled by a prune that removes nothing:
                    // only the journal's identity tells.
                    b.checkpoints()
                        .unwrap()
                        .prune(&PrunePolicy {
                            workflow: Some("wf".into()),
                            keep_last: Some(1_000_000),
                            ..PrunePolicy::default()
                        })
                        .unwrap();
                    next(&a, &mut created);
                }
                7 => {
                    // The newest file moved aside (as repair quarantines a
                    // damaged one) while the journal still holds it: the
                    // next creation must publish it again before naming it
                    // as the parent.
                    let newest = &created.last().unwrap().id;
                    let file = cp_dir.join(format!("{newest}.json"));
                    std::fs::rename(&file, dir.path().join("aside.json")).unwrap();
                    next(&a, &mut created);
                    assert!(file.exists(), "the moved checkpoint was published again");
                }
                9 => {
                    // A creator that died after its commit, before its
                    // index record and file: its record is in the journal,
                    // the index is as long as before. Only the journal's
                    // byte at `a`'s end tells; `a` must publish it and
                    // make it the parent.
                    let index = cp_dir.join(INDEX_FILE);
                    let mut before;
                    loop {
                        before = std::fs::metadata(&index).unwrap().len();
                        next(&b, &mut created);
                        // (Not one whose creation settled the journal.)
                        if newest_in_journal(&cp_dir).is_some() {
                            break;
                        }
                    }
                    let died = created.last().unwrap();
                    std::fs::remove_file(cp_dir.join(format!("{}.json", died.id))).unwrap();
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&index)
                        .unwrap();
                    file.set_len(before).unwrap();
                    next(&a, &mut created);
                }
                _ => {}
            }
        }
        let fresh = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let backend = fresh.checkpoints().unwrap();
        let newest = created.last().unwrap();
        let chain = backend.chain(&newest.id, usize::MAX).unwrap();
        assert!(chain.stopped.is_none(), "{:?}", chain.stopped);
        let ids: Vec<&str> = chain.links.iter().rev().map(|l| l.id.as_str()).collect();
        let expected: Vec<&str> = created.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, expected, "one unbroken lineage of every checkpoint");
        // The index lists exactly the checkpoints, in order.
        let mut reader = IndexReader::open(&cp_dir.join(INDEX_FILE))
            .unwrap()
            .unwrap();
        reader.load().unwrap();
        let indexed: Vec<String> = (0..reader.count())
            .map(|i| reader.record(i).unwrap().unwrap().id)
            .collect();
        assert_eq!(indexed, expected);
        let report = fresh.audit().unwrap().verify().unwrap();
        assert!(report.first_bad.is_none(), "{report:?}");
    }
}
