//! The contract between a [`Store`](crate::Store) and the storage behind
//! it: what every backend provides, and the options a store is opened
//! with. Both backends (`file_store`, `postgres`) implement [`Backend`];
//! this module depends on neither.

use crate::audit::AuditTrail;
use crate::checkpoint::CheckpointBackend;
use crate::error::{Error, Result};
use crate::health::HealthReport;
use crate::lock::{NamedLocks, WaitNotice};
use crate::state::{SavedVersion, StateDoc};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Default limit on one state file: 64 MiB.
pub const DEFAULT_MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// Callback told when a state write has to wait for a workflow's lock.
pub type WaitHook = Arc<dyn Fn(&WaitNotice) + Send + Sync>;

/// How far a long operation (`health`, a repair, `audit verify`, an
/// import) has come: `done` of `total` units of `task`, where a unit is a
/// byte when `bytes` is set and an item (a workflow, a file) otherwise.
/// Reported often; a front end decides what to show.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub task: &'a str,
    pub done: u64,
    pub total: u64,
    pub bytes: bool,
}

/// Callback told of the progress of long operations (see [`Progress`]).
pub type ProgressHook = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

/// Tells `hook`, if any, that `done` of `total` items of `task` are done.
pub(crate) fn report_progress(hook: Option<&ProgressHook>, task: &str, done: usize, total: usize) {
    if let Some(hook) = hook {
        hook(&Progress {
            task,
            done: done as u64,
            total: total as u64,
            bytes: false,
        });
    }
}

/// Callback told when a change was made and is durable but a housekeeping
/// step after it failed (compacting a log, copying an audit entry out of
/// the log that carries it, publishing or settling a checkpoint). The call
/// returns success, because the change was made; the message says what
/// failed and what retries it. Runs on the thread that made the change.
pub type WarningHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Tunables of an opened store.
#[derive(Clone)]
pub struct StoreOptions {
    /// Largest state file accepted on save or load.
    pub max_state_bytes: u64,
    /// How long a save or update waits for the workflow's lock; `None`
    /// waits as long as the holder lives.
    pub lock_timeout: Option<Duration>,
    /// Called once when a save or update starts waiting for a lock.
    pub on_lock_wait: Option<WaitHook>,
    /// Told of housekeeping that failed after a change was made (see
    /// [`WarningHook`]); without it such failures are not reported, and the
    /// next write, the next open or `health --repair` completes them.
    pub on_warning: Option<WarningHook>,
    /// Told of the progress of long operations (see [`Progress`]).
    pub on_progress: Option<ProgressHook>,
    /// Key for the audit log's HMAC mode (see `audit`); `None`: plain SHA-256.
    pub audit_key: Option<Vec<u8>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            lock_timeout: Some(Duration::from_secs(60)),
            on_lock_wait: None,
            on_warning: None,
            on_progress: None,
            audit_key: None,
        }
    }
}

/// `save` of a document given as text, parsed first: what backends that
/// cannot save from the text do.
pub(crate) fn save_parsed<B: Backend + ?Sized>(
    backend: &B,
    workflow: &str,
    json: &str,
    expected_generation: Option<u64>,
) -> Result<SavedVersion> {
    let data = serde_json::from_str(json).map_err(not_json)?;
    backend
        .save(workflow, data, expected_generation)
        .map(|doc| SavedVersion::of(&doc))
}

/// The error for a state document that is not one JSON value.
pub(crate) fn not_json(e: serde_json::Error) -> Error {
    Error::InvalidInput(format!("the document is not valid JSON: {e}"))
}

/// What every storage backend provides. Names passed in are unchecked; each
/// backend validates them where it turns them into storage keys.
pub trait Backend: Send + Sync {
    /// Where the data lives, for messages.
    fn location(&self) -> String;
    /// The verified current state, or `None` if the workflow has none.
    fn load(&self, workflow: &str) -> Result<Option<StateDoc>>;
    /// Saves `data` as the next generation under the workflow's lock. With
    /// `expected_generation`, fails with `Conflict` unless the current
    /// generation is exactly that (0 meaning "no state yet").
    fn save(
        &self,
        workflow: &str,
        data: Value,
        expected_generation: Option<u64>,
    ) -> Result<StateDoc>;
    /// `save` of data given as JSON text. Backends that can, save a large
    /// document without building it in memory; this default parses it.
    fn save_json(
        &self,
        workflow: &str,
        json: &str,
        expected_generation: Option<u64>,
    ) -> Result<SavedVersion> {
        save_parsed(self, workflow, json, expected_generation)
    }
    /// Loads, applies `edit` and saves, all under the workflow's lock, so
    /// concurrent updaters never lose an update. A missing state starts as
    /// `{}`. If `edit` fails nothing is written.
    fn update(
        &self,
        workflow: &str,
        edit: &mut dyn FnMut(&mut Value) -> Result<()>,
    ) -> Result<StateDoc>;
    /// Names of all workflows that have state, sorted.
    fn list_workflows(&self) -> Result<Vec<String>>;
    /// Makes `data` the workflow's next generation under its lock, recording
    /// `origin` (where the data came from) in the state document and `event`
    /// (e.g. `state_restore`, `state_import`) in the audit log. With
    /// `expected_generation`, fails with `Conflict` as `save` does.
    fn save_with_origin(
        &self,
        workflow: &str,
        data: Value,
        origin: Value,
        event: &str,
        expected_generation: Option<u64>,
    ) -> Result<StateDoc>;
    /// The backend's checkpoints, if it stores them.
    fn checkpoints(&self) -> Option<&dyn CheckpointBackend> {
        None
    }
    /// The backend's audit log, if it keeps one.
    fn audit(&self) -> Option<&dyn AuditTrail> {
        None
    }
    /// The backend's named locks, if it has them.
    fn locks(&self) -> Option<&dyn NamedLocks> {
        None
    }
    /// Checks the whole store and, with `repair`, makes the safe repairs;
    /// see `health`.
    fn health(&self, repair: bool) -> Result<HealthReport>;
}

/// Whether `init` made a new store or found one already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyInitialized,
}

/// The verified current state of `workflow`; `NotFound` if it has none.
pub(crate) fn load_existing(backend: &(impl Backend + ?Sized), workflow: &str) -> Result<StateDoc> {
    backend.load(workflow)?.ok_or_else(|| Error::NotFound {
        what: format!("workflow {workflow:?}"),
        path: None,
    })
}
