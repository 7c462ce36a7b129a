//! The embedded file backend: one directory per store.
//!
//! ```text
//! <store>/format              {"format": "wfstate.store/1"}, written last by init
//! <store>/state/<wf>.json     one state envelope per workflow
//! <store>/locks/<name>.lock   lock files (never deleted)
//! <store>/checkpoints/<wf>/   checkpoints (see `checkpoints`)
//! <store>/audit.jsonl         the hash-chained audit log (see `audit_log`)
//! ```
//! Every write goes through `durable`; every state write happens under the
//! workflow's exclusive lock.
//!
//! Everything in this folder exists only for this backend; what it shares
//! with PostgreSQL (the state envelope, the checkpoint model, the audit
//! chain, the health report, the [`Backend`] contract) lives outside it.

pub(crate) mod audit_log;
pub(crate) mod checkpoint_index;
pub(crate) mod checkpoint_writes;
pub(crate) mod checkpoints;
pub(crate) mod health;
pub(crate) mod in_flight;
pub(crate) mod state_cache;
pub(crate) mod state_log;

use crate::audit::AuditTrail;
use crate::backend::{Backend, InitOutcome, StoreOptions, WarningHook};
use crate::checkpoint::CheckpointBackend;
use crate::clock;
use crate::durable::{self, ReadOutcome, TEMP_MARKER};
use crate::error::{Error, Result, Size};
use crate::file_store::audit_log::{AuditLog, Evidence};
use crate::file_store::checkpoints::FileCheckpoints;
use crate::file_store::state_cache::{Known, StateCache};
use crate::health::HealthReport;
use crate::lock::{LockGuard, LockManager, NamedLocks, Notice, WaitNotice};
use crate::name::validate_name;
use crate::state::{SavedVersion, StateDoc};
use serde_json::{Map, Value};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Format id of the store marker.
pub const STORE_FORMAT: &str = "wfstate.store/1";
const FORMAT_FILE: &str = "format";
const STATE_DIR: &str = "state";
const LOCK_DIR: &str = "locks";
const CHECKPOINT_DIR: &str = "checkpoints";
const AUDIT_FILE: &str = "audit.jsonl";
const MARKER_LIMIT: u64 = 4096;
/// Writers hold a workflow's lock for milliseconds; only a wait this long
/// means something is holding it for real and is worth telling the user.
const WORKFLOW_WAIT_NOTICE_AFTER: Duration = Duration::from_secs(1);

pub struct FileBackend {
    root: PathBuf,
    options: StoreOptions,
    locks: LockManager,
    checkpoints: FileCheckpoints,
    audit: AuditLog,
    /// Speeds up locked writes; never consulted without the lock.
    known: StateCache,
}

impl FileBackend {
    /// Creates the store layout at `root`. The format marker is written
    /// last, so a crash mid-init leaves a folder that init accepts again.
    pub fn init(root: &Path) -> Result<InitOutcome> {
        if let Some(kind) = plain_file_kind(root) {
            return Err(Error::InvalidInput(format!(
                "cannot create a store at {}: it is {kind}, not a folder",
                root.display()
            )));
        }
        if root.exists() {
            durable::require_real_dir(root)?;
            if root.join(FORMAT_FILE).exists() {
                read_marker(root)?;
                return Ok(InitOutcome::AlreadyInitialized);
            }
            refuse_foreign_contents(root)?;
        } else if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(Error::NotFound {
                what: format!("parent directory of store {}", root.display()),
                path: Some(parent.to_path_buf()),
            });
        }
        durable::create_dir(root)?;
        durable::create_dir(&root.join(STATE_DIR))?;
        durable::create_dir(&root.join(LOCK_DIR))?;
        let marker = serde_json::json!({ "format": STORE_FORMAT });
        durable::replace_file_with_bytes(
            &root.join(FORMAT_FILE),
            format!("{marker}\n").as_bytes(),
        )?;
        Ok(InitOutcome::Created)
    }

    pub fn open(root: &Path, options: StoreOptions) -> Result<FileBackend> {
        if let Some(kind) = plain_file_kind(root) {
            return Err(Error::StoreNotFound(format!(
                "{} is {kind}, not a wfstate store folder (name the store folder itself \
                 with --store DIR or WFSTATE_STORE)",
                root.display()
            )));
        }
        durable::require_real_dir(root).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Error::StoreNotFound(format!(
                    "no wfstate store at {}; create one with `wfstate init`",
                    root.display()
                ))
            }
            other => other,
        })?;
        read_marker(root)?;
        durable::require_real_dir(&root.join(STATE_DIR))?;
        let locks = LockManager::open(root.join(LOCK_DIR))?;
        let audit = AuditLog::new(
            root.join(AUDIT_FILE),
            locks.clone(),
            options.audit_key.clone(),
            options.lock_timeout,
        )
        .with_state_logs(root.join(STATE_DIR), root.join(CHECKPOINT_DIR))
        .with_progress(options.on_progress.clone());
        let checkpoints = FileCheckpoints::new(
            root.join(CHECKPOINT_DIR),
            locks.clone(),
            audit.clone(),
            options.max_state_bytes,
            options.lock_timeout,
            options.on_warning.clone(),
        );
        // Finish what a crash or a killed writer left (see `audit`; after a
        // reboot, the checkpoint journals too). A reader without write
        // access cannot, and need not: states read the same either way; the
        // audit log is brought level by the next process that can write.
        let recovered = audit
            .recover(|| checkpoints.replay_journals())
            .and_then(|journal| match journal {
                // A creator died after committing to this journal: its
                // checkpoint is published with the entry just recovered.
                Some(workflow) => checkpoints.publish_left_pending(&workflow),
                None => Ok(()),
            });
        match recovered {
            Err(Error::Io { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(errno) if errno == rustix::io::Errno::ACCESS.raw_os_error()
                        || errno == rustix::io::Errno::ROFS.raw_os_error()
                        || errno == rustix::io::Errno::PERM.raw_os_error()
                ) => {}
            other => other?,
        }
        Ok(FileBackend {
            root: root.to_path_buf(),
            options,
            locks,
            checkpoints,
            audit,
            known: StateCache::default(),
        })
    }

    /// The store folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The kernel locks of this store, internal ones included (for repair).
    pub(crate) fn lock_manager(&self) -> &LockManager {
        &self.locks
    }

    pub(crate) fn file_checkpoints(&self) -> &FileCheckpoints {
        &self.checkpoints
    }

    pub(crate) fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    fn state_path(&self, workflow: &str) -> Result<PathBuf> {
        validate_name(workflow)?;
        Ok(self.root.join(STATE_DIR).join(format!("{workflow}.json")))
    }

    fn lock_workflow(&self, workflow: &str) -> Result<LockGuard> {
        let notify = |n: &WaitNotice| {
            if let Some(hook) = &self.options.on_lock_wait {
                hook(n)
            }
        };
        let notice = Notice {
            after: WORKFLOW_WAIT_NOTICE_AFTER,
            notify: &notify,
        };
        self.locks
            .workflow_exclusive(workflow, self.options.lock_timeout, Some(notice))
    }

    /// The verified current state and what the next write needs to know
    /// about the files holding it (see `state_log`).
    fn current(&self, workflow: &str) -> Result<Current> {
        let base_path = self.state_path(workflow)?;
        // The log before the base: see `state_log` on compaction.
        let log = state_log::read(&self.log_path(workflow)?, workflow)?;
        let base = match durable::read_file(&base_path, self.options.max_state_bytes)? {
            ReadOutcome::Missing => None,
            ReadOutcome::Found(bytes) => Some(StateDoc::decode(&bytes, &base_path, workflow)?),
        };
        let base_exists = base.is_some();
        let log_exists = log.is_some();
        let log_append_at = log.as_ref().map_or(0, |l| l.append_at);
        let newest = log.and_then(|l| l.newest);
        let doc = match (base, newest) {
            (Some(base), Some(logged)) if logged.generation > base.generation => Some(logged),
            (Some(base), _) => Some(base),
            (None, logged) => logged,
        };
        Ok(Current {
            generation: doc.as_ref().map_or(0, |d| d.generation),
            doc,
            base_exists,
            log_exists,
            log_append_at,
            known: None,
        })
    }

    /// `current`, for a caller holding the workflow's lock: from what this
    /// process knows when the files still say the same (`state_cache`),
    /// else read, with the log opened to be kept after the write.
    fn current_locked(&self, workflow: &str) -> Result<Current> {
        let log_path = self.log_path(workflow)?;
        let base_path = self.state_path(workflow)?;
        let mut known = match self.known.take(workflow, &log_path, &base_path) {
            Some(known) => known,
            None => {
                let current = self.current(workflow)?;
                if !current.log_exists {
                    return Ok(current);
                }
                match Known::open(
                    &log_path,
                    &base_path,
                    current.doc,
                    current.base_exists,
                    current.log_append_at,
                ) {
                    Some(known) => known,
                    // Not kept: read again (rare: an oversized document, or
                    // a file that cannot be opened for writing).
                    None => return self.current(workflow),
                }
            }
        };
        Ok(Current {
            generation: known.doc.as_ref().map_or(0, |d| d.generation),
            doc: known.doc.take(),
            base_exists: known.base_exists,
            log_exists: true,
            log_append_at: known.log.append_at,
            known: Some(known),
        })
    }

    /// The current generation, verified as `current` verifies, without
    /// holding the base's data as a tree (for saving large documents).
    fn current_generation(&self, workflow: &str) -> Result<u64> {
        // The log before the base, as in `current`.
        let logged = state_log::read(&self.log_path(workflow)?, workflow)?
            .and_then(|log| log.newest)
            .map_or(0, |doc| doc.generation);
        let base_path = self.state_path(workflow)?;
        let base = match durable::read_file(&base_path, self.options.max_state_bytes)? {
            ReadOutcome::Missing => 0,
            ReadOutcome::Found(bytes) => {
                StateDoc::decode_version(&bytes, &base_path, workflow)?.generation
            }
        };
        Ok(logged.max(base))
    }

    fn log_path(&self, workflow: &str) -> Result<PathBuf> {
        validate_name(workflow)?;
        Ok(self
            .root
            .join(STATE_DIR)
            .join(format!("{workflow}{}", state_log::LOG_SUFFIX)))
    }

    /// Writes the next generation after `current`, which the caller read
    /// under the workflow's lock and still holds it. A first generation, or
    /// one too large for the log, becomes the base; any other is appended
    /// to the log (one fsync), which is compacted when it has grown.
    fn write_next(
        &self,
        workflow: &str,
        current: Current,
        origin: Option<Value>,
        data: Value,
        (event, audit_data): (&str, Value),
    ) -> Result<StateDoc> {
        let doc = StateDoc::seal(
            workflow,
            current.generation + 1,
            clock::now_rfc3339(),
            origin,
            data,
        );
        let audit_data = audit_fields(&doc, audit_data);
        let limit = self.options.max_state_bytes.min(state_log::RECORD_LIMIT);
        // Serialized once: its length decides where it goes, and the log
        // record is built from it.
        let line = doc.to_line();
        if !current.base_exists || line.len() as u64 >= limit {
            self.write_base_audited(
                (workflow, doc.generation, &doc.checksum),
                (event, audit_data),
                |out| doc.write_to(out),
            )?;
            return Ok(doc);
        }
        // One fsync makes the new generation and its audit entry durable
        // together: the record carries the entry (see `audit`).
        // The record is written under the audit lock and synced outside
        // it, so that updates of other workflows sync at the same time
        // (the pipelined commit, `audit_log::pipeline`).
        let log_path = self.log_path(workflow)?;
        let mut known = current.known;
        let at = match &known {
            Some(known) => known.log.append_at,
            None => current.log_append_at,
        };
        if known.is_none() && !durable::name_exists(&log_path)? {
            state_log::clear(&log_path)?;
        }
        // Without a kept log, the descriptor the record was written through,
        // to sync it.
        let mut written_through = None;
        let (record_len, mut commit) = self.audit.begin_commit(
            (workflow, at),
            event,
            audit_data,
            |entry| state_log::record_line(line, entry),
            |record| {
                match &mut known {
                    Some(known) => known.log.write_unsynced(&log_path, record)?,
                    None => {
                        written_through = Some(state_log::write_unsynced(&log_path, record, at)?)
                    }
                }
                Ok(record.len())
            },
        )?;
        #[cfg(test)]
        durable::sim::phase("written");
        let synced = match (&known, &written_through) {
            (Some(known), _) => durable::sync_data_in(&known.log.file, &log_path),
            (None, Some(file)) => durable::sync_data_in(file, &log_path),
            (None, None) => durable::sync_data(&log_path),
        };
        if let Some(e) =
            commit.synced(&self.audit, synced.map_err(state_log::durability_unknown))?
        {
            warn(
                self.options.on_warning.as_ref(),
                &after_the_change(
                    e,
                    "record the commit's progress in audit.in-flight",
                    &format!(
                        "workflow {workflow:?} generation {} was saved; its log is synced \
                         again before the commit finishes",
                        doc.generation
                    ),
                ),
            );
        }
        #[cfg(test)]
        durable::sim::phase("synced");
        let entry = commit.finish(&self.audit)?;
        #[cfg(test)]
        durable::sim::phase("done");
        let log_len = at + record_len as u64;
        if let Some(known) = known
            && log_len <= state_log::COMPACT_AT
            && let Some(known) = known.after_append(doc.clone(), record_len)
        {
            self.known.keep(workflow, known);
        }
        // The new generation and its entry are durable from here on: what
        // fails after this is housekeeping, reported as a warning.
        if let Err(e) = entry {
            warn_unaudited(
                self.options.on_warning.as_ref(),
                e,
                &format!(
                    "workflow {workflow:?} generation {} was saved",
                    doc.generation
                ),
                "state log",
            );
        }
        if log_len > state_log::COMPACT_AT
            && let Err(e) = self.compact_with(workflow, &doc, &log_path)
        {
            warn(
                self.options.on_warning.as_ref(),
                &after_the_change(
                    e,
                    "compact state log",
                    &format!(
                        "workflow {workflow:?} generation {} was saved; compacting its log \
                     failed (the next write tries again)",
                        doc.generation
                    ),
                ),
            );
        }
        Ok(doc)
    }

    /// Makes `doc` (durable in the log already) the base and empties the
    /// log. The audit log is synced first: the log's records carry entries
    /// that may not be durable anywhere else. A crash anywhere leaves the
    /// log's record or the new base, and readers take the newer.
    fn compact_with(&self, workflow: &str, doc: &StateDoc, log_path: &Path) -> Result<()> {
        self.known.forget(workflow);
        // Pipelined commits leave copying their entries to the next holder
        // of the audit lock: copy them before the records go.
        self.audit.settle_now(false)?;
        self.audit.sync()?;
        self.write_base(workflow, doc.clone())?;
        state_log::clear(log_path)
    }

    /// Replaces the base document with `doc`.
    fn write_base(&self, workflow: &str, doc: StateDoc) -> Result<StateDoc> {
        self.write_base_with(workflow, |out| doc.write_to(out))
            .map(|()| doc)
    }

    /// Replaces the base document with what `write` writes, refusing more
    /// than `max_state_bytes`.
    fn write_base_with(
        &self,
        workflow: &str,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<()> {
        self.known.forget(workflow);
        let path = self.state_path(workflow)?;
        let limit = self.options.max_state_bytes;
        let written = durable::replace_file(&path, |out| {
            let mut limited = LimitedWriter {
                inner: out,
                written: 0,
                limit,
            };
            write(&mut limited)
        });
        match written {
            Err(Error::Io { source, .. })
                if source.get_ref().is_some_and(|e| e.is::<OverLimit>()) =>
            {
                Err(Error::TooLarge {
                    what: format!("state of workflow {workflow:?}"),
                    // Writing stopped as soon as the document passed the limit.
                    size: Size::AtLeast(
                        source
                            .into_inner()
                            .and_then(|e| e.downcast::<OverLimit>().ok())
                            .map_or(limit + 1, |o| o.0),
                    ),
                    limit,
                })
            }
            other => other,
        }
    }

    /// Rewrites the workflow's current state as its base and empties its
    /// log (repair of a log with leftovers). The caller holds the lock.
    pub(crate) fn compact(&self, workflow: &str) -> Result<()> {
        let log_path = self.log_path(workflow)?;
        // A writer of this workflow may have died with its entry in flight.
        self.audit.drain_now()?;
        match self.current(workflow)?.doc {
            Some(doc) => self.compact_with(workflow, &doc, &log_path),
            None => {
                self.known.forget(workflow);
                self.audit.sync()?;
                state_log::clear(&log_path)
            }
        }
    }
}

/// A workflow's current state as the writer found it.
pub(crate) struct Current {
    pub doc: Option<StateDoc>,
    generation: u64,
    base_exists: bool,
    log_exists: bool,
    log_append_at: u64,
    /// The kept log and base (`state_cache`), their document moved out to
    /// `doc`: put back after a successful write.
    known: Option<Known>,
}

impl FileBackend {
    /// Saves under the workflow's lock, checking the expected generation
    /// against the one read under that lock, then audits the change.
    fn locked_save(
        &self,
        workflow: &str,
        data: Value,
        origin: Option<Value>,
        expected_generation: Option<u64>,
        event: &str,
        audit_data: Value,
    ) -> Result<StateDoc> {
        let _guard = self.lock_workflow(workflow)?;
        // A corrupt current state stops the save: overwriting it would
        // silently destroy the evidence and whatever could be recovered.
        let current = self.current_locked(workflow)?;
        let generation = current.generation;
        expect_generation(workflow, expected_generation, generation)?;
        self.write_next(workflow, current, origin, data, (event, audit_data))
    }

    /// Replaces the base with what `write` writes, a change audited by
    /// `event`. A rename cannot carry the entry as a log record does, so
    /// the audit log makes the entry durable first as its intent and counts
    /// it once this base is in place (see "Entries carried by state logs"
    /// in `audit`). Runs under the workflow's lock, so the audit log orders
    /// a workflow's generations as they happened.
    fn write_base_audited(
        &self,
        (workflow, generation, checksum): (&str, u64, &str),
        (event, audit_data): (&str, Value),
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<()> {
        let evidence = Evidence::Base {
            workflow: workflow.to_string(),
            generation,
            checksum: checksum.to_string(),
        };
        let ((), entry) = self
            .audit
            .append_with_intent(evidence, event, audit_data, || {
                self.write_base_with(workflow, write)
            })?;
        if let Err(e) = entry {
            warn_unaudited(
                self.options.on_warning.as_ref(),
                e,
                &format!("workflow {workflow:?} generation {generation} was saved"),
                "audit intent",
            );
        }
        Ok(())
    }
}

/// The compare-and-swap of a save: `Conflict` unless the generation found
/// under the lock is the one the caller expected (if it said).
fn expect_generation(workflow: &str, expected: Option<u64>, actual: u64) -> Result<()> {
    match expected {
        Some(expected) if expected != actual => Err(Error::Conflict {
            workflow: workflow.to_string(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// The audit data of a state change: the caller's, plus what identifies
/// the new generation.
fn audit_fields(doc: &StateDoc, mut data: Value) -> Value {
    data["workflow"] = doc.workflow.clone().into();
    data["generation"] = doc.generation.into();
    data["checksum"] = doc.checksum.clone().into();
    data
}

/// Reports `error` to `hook`: a housekeeping step that failed after a
/// change was made and is durable (see `WarningHook`).
pub(crate) fn warn(hook: Option<&WarningHook>, error: &Error) {
    if let Some(hook) = hook {
        hook(&error.to_string());
    }
}

/// Warns that the change `made` describes is durable but its audit entry
/// was not copied to the audit log; the `carrier` (the log that carries
/// the entry, or the audit intent) gives it back on the next open.
pub(crate) fn warn_unaudited(hook: Option<&WarningHook>, error: Error, made: &str, carrier: &str) {
    let what_happened = format!(
        "{made}, but its audit entry was not copied to the audit log yet (it is recovered \
         from the {carrier} when the store is next opened)"
    );
    warn(
        hook,
        &after_the_change(error, "append audit entry", &what_happened),
    );
}

/// An I/O failure of `op`, a step that came after the change itself was
/// made: the error names the step and says what did happen.
pub(crate) fn after_the_change(error: Error, op: &'static str, what_happened: &str) -> Error {
    match error {
        Error::Io { path, source, .. } => Error::Io {
            op,
            path,
            source: std::io::Error::new(source.kind(), format!("{what_happened}: {source}")),
        },
        other => other,
    }
}

impl Backend for FileBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn load(&self, workflow: &str) -> Result<Option<StateDoc>> {
        Ok(self.current(workflow)?.doc)
    }

    fn save(
        &self,
        workflow: &str,
        data: Value,
        expected_generation: Option<u64>,
    ) -> Result<StateDoc> {
        let audit_data = serde_json::json!({"expected_generation": expected_generation});
        self.locked_save(
            workflow,
            data,
            None,
            expected_generation,
            "state_save",
            audit_data,
        )
    }

    fn save_with_origin(
        &self,
        workflow: &str,
        data: Value,
        origin: Value,
        event: &str,
        expected_generation: Option<u64>,
    ) -> Result<StateDoc> {
        let audit_data = serde_json::json!({"origin": origin.clone()});
        self.locked_save(
            workflow,
            data,
            Some(origin),
            expected_generation,
            event,
            audit_data,
        )
    }

    /// Documents that would go to the base anyway (1 MiB or more) are
    /// sealed and written from the text, never parsed into a tree: memory
    /// stays near the text's size (DESIGN §12). Smaller ones take the
    /// ordinary path.
    fn save_json(
        &self,
        workflow: &str,
        json: &str,
        expected_generation: Option<u64>,
    ) -> Result<SavedVersion> {
        let limit = self.options.max_state_bytes.min(state_log::RECORD_LIMIT);
        if (json.len() as u64) < limit {
            return crate::backend::save_parsed(self, workflow, json, expected_generation);
        }
        let _guard = self.lock_workflow(workflow)?;
        let generation = self.current_generation(workflow)?;
        expect_generation(workflow, expected_generation, generation)?;
        let sealed = StateDoc::seal_text(workflow, generation + 1, clock::now_rfc3339(), json)
            .map_err(crate::backend::not_json)?;
        let saved = SavedVersion {
            workflow: sealed.workflow.clone(),
            generation: sealed.generation,
            updated_at: sealed.updated_at.clone(),
            checksum: sealed.checksum.clone(),
        };
        let audit_data = serde_json::json!({
            "expected_generation": expected_generation,
            "workflow": saved.workflow,
            "generation": saved.generation,
            "checksum": saved.checksum,
        });
        self.write_base_audited(
            (workflow, saved.generation, &saved.checksum),
            ("state_save", audit_data),
            |out| sealed.write_to(out),
        )?;
        Ok(saved)
    }

    fn checkpoints(&self) -> Option<&dyn CheckpointBackend> {
        Some(&self.checkpoints)
    }

    fn update(
        &self,
        workflow: &str,
        edit: &mut dyn FnMut(&mut Value) -> Result<()>,
    ) -> Result<StateDoc> {
        let _guard = self.lock_workflow(workflow)?;
        let mut current = self.current_locked(workflow)?;
        let mut data = match current.doc.take() {
            Some(doc) => doc.data,
            None => Value::Object(Map::new()),
        };
        edit(&mut data)?;
        self.write_next(
            workflow,
            current,
            None,
            data,
            ("state_update", serde_json::json!({})),
        )
    }

    fn locks(&self) -> Option<&dyn NamedLocks> {
        Some(&self.locks)
    }

    fn audit(&self) -> Option<&dyn AuditTrail> {
        Some(&self.audit)
    }

    fn health(&self, repair: bool) -> Result<HealthReport> {
        health::run(self, repair)
    }

    fn list_workflows(&self) -> Result<Vec<String>> {
        let dir = self.root.join(STATE_DIR);
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.contains(TEMP_MARKER) {
                continue;
            }
            if let Some(stem) = file_name.strip_suffix(".json")
                && validate_name(stem).is_ok()
            {
                names.push(stem.to_string());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// What the path named as the store folder is, when it is neither a folder
/// nor a symlink: a mistyped `--store` (a regular file, a device), not damage
/// to a store. (A symlink is refused as an integrity error, like every
/// symlink where a store's own file belongs: DESIGN section 2.)
fn plain_file_kind(root: &Path) -> Option<&'static str> {
    let meta = std::fs::symlink_metadata(root).ok()?;
    let kind = meta.file_type();
    if kind.is_dir() || kind.is_symlink() {
        None
    } else if kind.is_file() {
        Some("a regular file")
    } else {
        Some("a special file (a device, FIFO or socket)")
    }
}

fn read_marker(root: &Path) -> Result<()> {
    let path = root.join(FORMAT_FILE);
    let bytes = match durable::read_file(&path, MARKER_LIMIT)? {
        ReadOutcome::Found(b) => b,
        ReadOutcome::Missing => {
            return Err(Error::StoreNotFound(format!(
                "{} is not a wfstate store (no format marker at {}); create one with `wfstate init`",
                root.display(),
                path.display()
            )));
        }
    };
    let format = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("format").and_then(Value::as_str).map(str::to_string));
    match format {
        Some(f) if f == STORE_FORMAT => Ok(()),
        Some(f) => Err(Error::integrity(
            &path,
            format!(
                "store format {f:?} is not supported by this build (it reads {STORE_FORMAT:?})"
            ),
        )),
        None => Err(Error::integrity(
            &path,
            format!(
                "format marker is not JSON with a \"format\" member (expected {STORE_FORMAT:?})"
            ),
        )),
    }
}

/// `init` adopts an existing folder only if it is empty or holds what an
/// interrupted init leaves behind; anything else is someone's data.
fn refuse_foreign_contents(root: &Path) -> Result<()> {
    let entries = std::fs::read_dir(root).map_err(|e| Error::io("list", root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", root, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let leftover_of_init = name == STATE_DIR
            || name == LOCK_DIR
            || name.starts_with(&format!(".{FORMAT_FILE}{TEMP_MARKER}"));
        if !leftover_of_init {
            return Err(Error::InvalidInput(format!(
                "{} exists, is not empty and is not a wfstate store (found {name:?}); \
                 refusing to turn it into one",
                root.display()
            )));
        }
    }
    Ok(())
}

/// Marks the write error raised when a document outgrows the size limit.
#[derive(Debug)]
struct OverLimit(u64);

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document exceeds the size limit after {} bytes", self.0)
    }
}

impl std::error::Error for OverLimit {}

/// Stops a write as soon as it passes the limit, so an oversized state is
/// refused without first filling the disk with it.
struct LimitedWriter<'a> {
    inner: &'a mut dyn Write,
    written: u64,
    limit: u64,
}

impl Write for LimitedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len() as u64;
        if self.written > self.limit {
            return Err(io::Error::other(OverLimit(self.written)));
        }
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
