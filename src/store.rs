//! The store: where a caller opens, finds and creates state storage. A
//! [`Store`] is one backend behind the [`Backend`] contract: the embedded
//! file store (`file_store`) or PostgreSQL (`postgres`), chosen by the
//! location it is opened at.

use crate::audit::AuditTrail;
pub use crate::backend::{
    Backend, DEFAULT_MAX_STATE_BYTES, InitOutcome, Progress, ProgressHook, StoreOptions, WaitHook,
    WarningHook,
};
use crate::checkpoint::{Checkpoint, CheckpointBackend, NewCheckpoint, StateSnapshot, context};
use crate::error::{Error, Result};
use crate::file_store::FileBackend;
use crate::health::HealthReport;
use crate::lock::NamedLocks;
use crate::state::{SavedVersion, StateDoc};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Name of the store folder `init` creates and discovery looks for.
pub const STORE_DIR_NAME: &str = ".wfstate";
/// Whether `location` names a PostgreSQL database rather than a folder.
pub fn is_database_url(location: &Path) -> bool {
    location
        .to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// An opened store.
///
/// ```no_run
/// use wfstate::{Store, StoreOptions};
/// let store = Store::open(".wfstate".as_ref(), StoreOptions::default())?;
/// let doc = store.update("release", |data| {
///     let n = data["builds"].as_i64().unwrap_or(0);
///     data["builds"] = (n + 1).into();
///     Ok(())
/// })?;
/// println!("generation {}", doc.generation);
/// # Ok::<(), wfstate::Error>(())
/// ```
pub struct Store {
    backend: Box<dyn Backend>,
}

impl Store {
    /// Creates a store at `path`, or accepts (and, for a database,
    /// migrates) an existing one. `path` is the store folder itself, or a
    /// `postgres://` URL (see [`is_database_url`]).
    pub fn init(path: &Path, options: StoreOptions) -> Result<(Store, InitOutcome)> {
        let outcome = if is_database_url(path) {
            database_init(path)?
        } else {
            FileBackend::init(path)?
        };
        Ok((Store::open(path, options)?, outcome))
    }

    /// Opens the store at `path`: a store folder, or a `postgres://` URL.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store> {
        if is_database_url(path) {
            return database_open(path, options);
        }
        Ok(Store::with_backend(Box::new(FileBackend::open(
            path, options,
        )?)))
    }

    /// A store over any backend.
    pub fn with_backend(backend: Box<dyn Backend>) -> Store {
        Store { backend }
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The verified current state; `NotFound` if the workflow has none.
    pub fn load(&self, workflow: &str) -> Result<StateDoc> {
        crate::backend::load_existing(self.backend.as_ref(), workflow)
    }

    /// Verifies the stored state (format, checksum, name) and returns it.
    pub fn verify(&self, workflow: &str) -> Result<StateDoc> {
        self.load(workflow)
    }

    /// See [`Backend::save`].
    pub fn save(
        &self,
        workflow: &str,
        data: Value,
        expected_generation: Option<u64>,
    ) -> Result<StateDoc> {
        self.backend.save(workflow, data, expected_generation)
    }

    /// Saves the JSON text `json` as the workflow's state, as [`Store::save`]
    /// saves a `Value`. On the file store a document of 1 MiB or more is
    /// checksummed and written straight from the text, never held as a
    /// tree, so saving 10 MiB takes tens of MiB of memory, not hundreds.
    /// Text that is not one JSON value is refused (`InvalidInput`).
    pub fn save_json(
        &self,
        workflow: &str,
        json: &str,
        expected_generation: Option<u64>,
    ) -> Result<SavedVersion> {
        self.backend.save_json(workflow, json, expected_generation)
    }

    /// See [`Backend::update`].
    pub fn update<F>(&self, workflow: &str, mut edit: F) -> Result<StateDoc>
    where
        F: FnMut(&mut Value) -> Result<()>,
    {
        self.backend.update(workflow, &mut edit)
    }

    pub fn list_workflows(&self) -> Result<Vec<String>> {
        self.backend.list_workflows()
    }

    /// The store's checkpoints.
    pub fn checkpoints(&self) -> Result<&dyn CheckpointBackend> {
        self.backend.checkpoints().ok_or_else(|| {
            Error::InvalidInput(format!(
                "the store at {} has no checkpoints",
                self.backend.location()
            ))
        })
    }

    /// Snapshots the workflow's current (verified) state into a new
    /// checkpoint. Without a phase or summary, both are derived from the
    /// state.
    pub fn create_checkpoint(&self, mut new: NewCheckpoint) -> Result<Checkpoint> {
        let state = self.backend.load(&new.workflow)?;
        if new.phase.is_none() {
            new.phase = state.as_ref().and_then(|s| context::phase_of(&s.data));
        }
        if new.context_summary.is_none() {
            new.context_summary = Some(context::summarize(state.as_ref(), new.phase.as_deref()));
        }
        let snapshot = state.map(|s| StateSnapshot {
            generation: s.generation,
            data: s.data,
        });
        self.checkpoints()?.create(new, snapshot)
    }

    /// Records a checkpoint whose content the caller gives (`payload`,
    /// `metadata`, and optionally its `id`) instead of a snapshot of the
    /// workflow's state: what a framework with its own state model (such
    /// as LangGraph) stores. Durable, audited and verified like every
    /// checkpoint.
    pub fn record_checkpoint(&self, mut new: NewCheckpoint) -> Result<Checkpoint> {
        // Metadata (if only empty) marks a recorded checkpoint
        // (`FindQuery::recorded_only`).
        new.metadata.get_or_insert_with(Default::default);
        self.checkpoints()?.create(new, None)
    }

    /// Makes checkpoint `id`'s state the workflow's current state: a new
    /// generation, written under the workflow's lock, whose `origin` records
    /// the checkpoint. A checkpoint that fails verification is refused.
    pub fn restore(&self, id: &str) -> Result<(Checkpoint, StateDoc)> {
        self.restore_checkpoint(self.checkpoints()?.get(id)?)
    }

    /// [`restore`](Self::restore) of checkpoint `id` of `workflow`: for an
    /// id that a copied thread shares with another workflow.
    pub fn restore_in(&self, workflow: &str, id: &str) -> Result<(Checkpoint, StateDoc)> {
        self.restore_checkpoint(self.checkpoints()?.lookup(id, Some(workflow))?)
    }

    fn restore_checkpoint(&self, checkpoint: Checkpoint) -> Result<(Checkpoint, StateDoc)> {
        let id = &checkpoint.id;
        let Some(snapshot) = &checkpoint.state else {
            return Err(Error::InvalidInput(format!(
                "checkpoint {id} holds no state (workflow {:?} had none when it was taken)",
                checkpoint.workflow
            )));
        };
        let origin = serde_json::json!({
            "restored_from_checkpoint": checkpoint.id,
            "checkpoint_created_at": checkpoint.created_at,
            "checkpoint_state_generation": snapshot.generation,
        });
        let doc = self.backend.save_with_origin(
            &checkpoint.workflow,
            snapshot.data.clone(),
            origin,
            "state_restore",
            None,
        )?;
        Ok((checkpoint, doc))
    }

    /// What a successor needs to take a workflow over: the checkpoint
    /// `from` if given (of `workflow` when that is given too), else the
    /// latest of `workflow`, else the newest
    /// checkpoint of the store; with its files checked against
    /// `project_root` (the folder file paths are recorded relative to).
    pub fn resume(
        &self,
        workflow: Option<&str>,
        from: Option<&str>,
        project_root: &Path,
    ) -> Result<context::Resume> {
        let checkpoints = self.checkpoints()?;
        let checkpoint = match (from, workflow) {
            (Some(id), workflow) => checkpoints.lookup(id, workflow)?,
            (None, Some(wf)) => checkpoints.latest(wf)?.ok_or_else(|| Error::NotFound {
                what: format!("checkpoint of workflow {wf:?}"),
                path: None,
            })?,
            (None, None) => {
                let mut newest: Option<Checkpoint> = None;
                for wf in checkpoints.workflows()? {
                    if let Some(cp) = checkpoints.latest(&wf)?
                        && newest.as_ref().is_none_or(|n| cp.id > n.id)
                    {
                        newest = Some(cp);
                    }
                }
                newest.ok_or_else(|| Error::NotFound {
                    what: "any checkpoint in this store".into(),
                    path: None,
                })?
            }
        };
        let current = self
            .backend
            .load(&checkpoint.workflow)?
            .map(|doc| doc.generation);
        Ok(context::Resume::new(&checkpoint, current, project_root))
    }

    /// The store's audit log.
    pub fn audit(&self) -> Result<&dyn AuditTrail> {
        self.backend.audit().ok_or_else(|| {
            Error::InvalidInput(format!(
                "the store at {} has no audit log",
                self.backend.location()
            ))
        })
    }

    /// See [`Backend::save_with_origin`].
    pub fn save_with_origin(
        &self,
        workflow: &str,
        data: Value,
        origin: Value,
        event: &str,
        expected_generation: Option<u64>,
    ) -> Result<StateDoc> {
        self.backend
            .save_with_origin(workflow, data, origin, event, expected_generation)
    }

    /// The store's named locks (`wfstate lock`).
    pub fn locks(&self) -> Result<&dyn NamedLocks> {
        self.backend.locks().ok_or_else(|| {
            Error::InvalidInput(format!(
                "the store at {} has no named locks",
                self.backend.location()
            ))
        })
    }

    /// Checks the whole store; see `health`.
    pub fn health(&self) -> Result<HealthReport> {
        self.backend.health(false)
    }

    /// Checks, makes the safe repairs, and checks again; see `health`.
    pub fn repair(&self) -> Result<HealthReport> {
        self.backend.health(true)
    }
}

#[cfg(feature = "postgres")]
fn database_init(url: &Path) -> Result<InitOutcome> {
    crate::postgres::PgBackend::init(url_str(url))
}

#[cfg(feature = "postgres")]
fn database_open(url: &Path, options: StoreOptions) -> Result<Store> {
    Ok(Store::with_backend(Box::new(
        crate::postgres::PgBackend::open(url_str(url), options)?,
    )))
}

#[cfg(feature = "postgres")]
fn url_str(url: &Path) -> &str {
    url.to_str().expect("is_database_url checked it is UTF-8")
}

#[cfg(not(feature = "postgres"))]
fn database_init(url: &Path) -> Result<InitOutcome> {
    Err(no_database_support(url))
}

#[cfg(not(feature = "postgres"))]
fn database_open(url: &Path, _options: StoreOptions) -> Result<Store> {
    Err(no_database_support(url))
}

#[cfg(not(feature = "postgres"))]
fn no_database_support(url: &Path) -> Error {
    let _ = url;
    Error::InvalidInput(
        "this build of wfstate has no PostgreSQL support (it was built without the \
         `postgres` feature)"
            .into(),
    )
}

/// Finds the store folder: `explicit` (from `--store` or `WFSTATE_STORE`) if
/// given, else the nearest `.wfstate/` in `start` or one of its ancestors.
pub fn locate(explicit: Option<&Path>, start: &Path) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    for dir in start.ancestors() {
        let candidate = dir.join(STORE_DIR_NAME);
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    Err(Error::StoreNotFound(format!(
        "no wfstate store in {} or any parent directory; create one with `wfstate init` \
         (or name an existing one with --store DIR or WFSTATE_STORE)",
        start.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_walks_up_to_the_nearest_store() {
        let top = tempfile::tempdir().unwrap();
        let store = top.path().join(STORE_DIR_NAME);
        std::fs::create_dir(&store).unwrap();
        let deep = top.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(locate(None, &deep).unwrap(), store);
        let explicit = top.path().join("elsewhere");
        assert_eq!(locate(Some(&explicit), &deep).unwrap(), explicit);
    }

    #[test]
    fn no_store_found_says_how_to_create_one() {
        let top = tempfile::tempdir().unwrap();
        let err = locate(None, top.path()).unwrap_err();
        assert!(err.to_string().contains("wfstate init"), "{err}");
    }
}
