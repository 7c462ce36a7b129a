//! `wfstate._native.Store`: one opened store. Each method converts its
//! arguments while holding the GIL, then releases the GIL for everything
//! that touches the disk, the database or a lock (`Python::detach`), so
//! other threads run while one waits.

use crate::convert::{serialized, to_py, to_value};
use crate::errors::{OrRaise, exception, invalid_input};
use crate::lock::Lock;
use crate::state::State;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wfstate::checkpoint::context;
use wfstate::checkpoint::diff::diff_checkpoints;
use wfstate::checkpoint::{
    Checkpoint, FindQuery, ListQuery, NewCheckpoint, ParentChoice, PendingWrite, PrunePolicy,
    Removal, WriteRule,
};
use wfstate::{Error, StoreOptions};

/// How many stores with other lock timeouts one `Store` keeps open (see
/// `Store::with_timeout`).
const MAX_TIMEOUT_VARIANTS: usize = 4;

#[pyclass(module = "wfstate._native", frozen)]
pub struct Store {
    /// The folder or URL it was opened at.
    path: PathBuf,
    options: StoreOptions,
    /// The store with the default lock timeout.
    main: Arc<wfstate::Store>,
    /// The same store opened with other lock timeouts: the library takes a
    /// store's lock timeout from its options, and a per-call `timeout=` is
    /// rare enough that a few extra handles cost less than threading a
    /// timeout through every backend call.
    variants: Mutex<Vec<(Option<Duration>, Arc<wfstate::Store>)>>,
}

/// A timeout in seconds as the library takes it; `None` waits as long as
/// the holder lives.
pub fn seconds(py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Duration>> {
    timeout
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                invalid_input(
                    py,
                    format!("timeout must be a non-negative number of seconds below 2^64, got {s}"),
                )
            })
        })
        .transpose()
}

thread_local! {
    /// Warnings the library reported on this thread during the current
    /// call (it reports them on the calling thread, inside `detach`).
    static WARNINGS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Issues the warnings of the call that just returned as Python warnings
/// (`wfstate.StoreWarning`): the change was made, a step after it failed.
fn issue_warnings(py: Python<'_>) -> PyResult<()> {
    let warnings = WARNINGS.with(|w| std::mem::take(&mut *w.borrow_mut()));
    if warnings.is_empty() {
        return Ok(());
    }
    let category = py.import("wfstate._errors")?.getattr("StoreWarning")?;
    let warn = py.import("warnings")?.getattr("warn")?;
    for message in warnings {
        warn.call1((message, &category, 2))?;
    }
    Ok(())
}

fn options(timeout: Option<Duration>) -> wfstate::Result<StoreOptions> {
    let mut options = StoreOptions {
        lock_timeout: timeout,
        on_warning: Some(Arc::new(|warning: &str| {
            WARNINGS.with(|w| w.borrow_mut().push(warning.to_string()))
        })),
        ..StoreOptions::default()
    };
    if let Some(key_file) = std::env::var_os("WFSTATE_AUDIT_KEY_FILE") {
        options.audit_key = Some(wfstate::audit::read_key_file(Path::new(&key_file))?);
    }
    Ok(options)
}

fn current_dir() -> wfstate::Result<PathBuf> {
    std::env::current_dir().map_err(|e| Error::io("get current directory", ".", e))
}

/// `path` made absolute, so that the store stays the same one if the
/// process changes its directory later (a URL is kept as it is).
fn absolute(path: PathBuf) -> wfstate::Result<PathBuf> {
    if wfstate::store::is_database_url(&path) {
        return Ok(path);
    }
    std::path::absolute(&path).map_err(|e| Error::io("make absolute", &path, e))
}

impl Store {
    fn opened(path: PathBuf, options: StoreOptions, store: wfstate::Store) -> Store {
        Store {
            path,
            options,
            main: Arc::new(store),
            variants: Mutex::new(Vec::new()),
        }
    }

    /// The store whose lock timeout is `timeout`.
    fn with_timeout(&self, timeout: Option<Duration>) -> wfstate::Result<Arc<wfstate::Store>> {
        if timeout == self.options.lock_timeout {
            return Ok(self.main.clone());
        }
        let mut variants = self.variants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, store)) = variants.iter().find(|(t, _)| *t == timeout) {
            return Ok(store.clone());
        }
        let options = StoreOptions {
            lock_timeout: timeout,
            ..self.options.clone()
        };
        let store = Arc::new(wfstate::Store::open(&self.path, options)?);
        if variants.len() == MAX_TIMEOUT_VARIANTS {
            variants.remove(0);
        }
        variants.push((timeout, store.clone()));
        Ok(store)
    }

    /// The folder file paths are recorded relative to: the one that holds
    /// the store folder (as the CLI does), or the current directory for a
    /// database.
    fn project_root(&self) -> PathBuf {
        if wfstate::store::is_database_url(&self.path) {
            return current_dir().unwrap_or_else(|_| PathBuf::from("."));
        }
        let absolute = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        absolute
            .parent()
            .map_or(absolute.clone(), Path::to_path_buf)
    }

    /// The checkpoint as a dict with the field names of the CLI's `--json`,
    /// built field by field: going through `serde_json::to_value` would
    /// copy the state and payload once more before converting them.
    fn checkpoint_dict<'py>(
        py: Python<'py>,
        checkpoint: &Checkpoint,
    ) -> PyResult<Bound<'py, PyAny>> {
        let dict = PyDict::new(py);
        dict.set_item("format", &checkpoint.format)?;
        dict.set_item("id", &checkpoint.id)?;
        dict.set_item("workflow", &checkpoint.workflow)?;
        dict.set_item("parent", &checkpoint.parent)?;
        dict.set_item("created_at", &checkpoint.created_at)?;
        dict.set_item("phase", &checkpoint.phase)?;
        dict.set_item("item", &checkpoint.item)?;
        dict.set_item("message", &checkpoint.message)?;
        dict.set_item("context_summary", &checkpoint.context_summary)?;
        dict.set_item("key_decisions", &checkpoint.key_decisions)?;
        dict.set_item("files", serialized(py, &checkpoint.files)?)?;
        let state = match &checkpoint.state {
            None => py.None().into_bound(py),
            Some(snapshot) => {
                let state = PyDict::new(py);
                state.set_item("generation", snapshot.generation)?;
                state.set_item("data", to_py(py, &snapshot.data)?)?;
                state.into_any()
            }
        };
        dict.set_item("state", state)?;
        if let Some(origin) = &checkpoint.origin {
            dict.set_item("origin", to_py(py, origin)?)?;
        }
        if let Some(payload) = &checkpoint.payload {
            dict.set_item("payload", to_py(py, payload)?)?;
        }
        if let Some(metadata) = &checkpoint.metadata {
            let m = PyDict::new(py);
            for (key, value) in metadata {
                m.set_item(key, to_py(py, value)?)?;
            }
            dict.set_item("metadata", m)?;
        }
        dict.set_item("checksum", &checkpoint.checksum)?;
        Ok(dict.into_any())
    }
}

#[pymethods]
impl Store {
    /// Opens the store at `path` (a store folder or a `postgres://` URL);
    /// without one, `WFSTATE_STORE`, else the nearest `.wfstate/` upwards.
    #[staticmethod]
    #[pyo3(signature = (path=None, timeout=Some(60.0)))]
    fn open(py: Python<'_>, path: Option<PathBuf>, timeout: Option<f64>) -> PyResult<Store> {
        let timeout = seconds(py, timeout)?;
        py.detach(|| {
            let explicit = path.or_else(|| std::env::var_os("WFSTATE_STORE").map(PathBuf::from));
            let path = absolute(wfstate::store::locate(
                explicit.as_deref(),
                &current_dir()?,
            )?)?;
            let options = options(timeout)?;
            let store = wfstate::Store::open(&path, options.clone())?;
            Ok(Store::opened(path, options, store))
        })
        .or_raise(py)
    }

    /// Creates a store at `path` (default `./.wfstate`), or accepts an
    /// existing one. Returns the store and whether it was created.
    #[staticmethod]
    #[pyo3(signature = (path=None, timeout=Some(60.0)))]
    fn init(
        py: Python<'_>,
        path: Option<PathBuf>,
        timeout: Option<f64>,
    ) -> PyResult<(Store, bool)> {
        let timeout = seconds(py, timeout)?;
        py.detach(|| {
            let path = match path {
                Some(path) => absolute(path)?,
                None => current_dir()?.join(wfstate::STORE_DIR_NAME),
            };
            let options = options(timeout)?;
            let (store, outcome) = wfstate::Store::init(&path, options.clone())?;
            let created = outcome == wfstate::InitOutcome::Created;
            Ok((Store::opened(path, options, store), created))
        })
        .or_raise(py)
    }

    /// Where the data lives (a database URL without its password).
    #[getter]
    fn location(&self) -> String {
        self.main.location()
    }

    /// The path or URL the store was opened at.
    #[getter]
    fn path(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    fn get(&self, py: Python<'_>, workflow: &str) -> PyResult<State> {
        let doc = py.detach(|| self.main.load(workflow)).or_raise(py)?;
        State::of(py, &doc)
    }

    fn verify(&self, py: Python<'_>, workflow: &str) -> PyResult<State> {
        let doc = py.detach(|| self.main.verify(workflow)).or_raise(py)?;
        State::of(py, &doc)
    }

    #[pyo3(signature = (workflow, data, expect_generation=None, timeout=Some(60.0)))]
    fn set<'py>(
        &self,
        py: Python<'py>,
        workflow: &str,
        data: &Bound<'py, PyAny>,
        expect_generation: Option<u64>,
        timeout: Option<f64>,
    ) -> PyResult<State> {
        let value = to_value(data)?;
        let timeout = seconds(py, timeout)?;
        let doc = py
            .detach(|| {
                self.with_timeout(timeout)?
                    .save(workflow, value, expect_generation)
            })
            .or_raise(py)?;
        issue_warnings(py)?;
        State::of(py, &doc)
    }

    /// One locked read-modify-write: `edit` gets the data as a dict it may
    /// change in place, and may return a replacement. An exception in
    /// `edit` writes nothing and propagates unchanged.
    #[pyo3(signature = (workflow, edit, timeout=Some(60.0)))]
    fn update<'py>(
        &self,
        py: Python<'py>,
        workflow: &str,
        edit: Py<PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<State> {
        let timeout = seconds(py, timeout)?;
        let mut raised: Option<PyErr> = None;
        let result = py.detach(|| {
            self.with_timeout(timeout)?.update(workflow, |data| {
                // The lock is held; take the GIL back only to run `edit`.
                Python::attach(|py| {
                    let outcome = (|| -> PyResult<Value> {
                        let current = to_py(py, data)?;
                        let returned = edit.bind(py).call1((current.clone(),))?;
                        to_value(if returned.is_none() {
                            &current
                        } else {
                            &returned
                        })
                    })();
                    match outcome {
                        Ok(value) => {
                            *data = value;
                            Ok(())
                        }
                        Err(err) => {
                            raised = Some(err);
                            Err(Error::InvalidInput("the update function raised".into()))
                        }
                    }
                })
            })
        });
        if let Some(err) = raised {
            return Err(err);
        }
        let doc = result.or_raise(py)?;
        issue_warnings(py)?;
        State::of(py, &doc)
    }

    fn workflows(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.main.list_workflows()).or_raise(py)
    }

    #[pyo3(signature = (workflow, message=None, phase=None, item=None, summary=None,
                        decisions=Vec::new(), files=Vec::new(), parent=None, root=false))]
    #[allow(clippy::too_many_arguments)]
    fn create_checkpoint<'py>(
        &self,
        py: Python<'py>,
        workflow: String,
        message: Option<String>,
        phase: Option<String>,
        item: Option<String>,
        summary: Option<String>,
        decisions: Vec<String>,
        files: Vec<PathBuf>,
        parent: Option<String>,
        root: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if root && parent.is_some() {
            return Err(invalid_input(
                py,
                "give parent or root=True, not both".into(),
            ));
        }
        let checkpoint = py
            .detach(|| {
                let project = self.project_root();
                let files = files
                    .iter()
                    .map(|path| context::fingerprint(path, &project))
                    .collect::<wfstate::Result<Vec<_>>>()?;
                self.main.create_checkpoint(NewCheckpoint {
                    workflow,
                    phase,
                    item,
                    message,
                    context_summary: summary,
                    key_decisions: decisions,
                    files,
                    parent: match (parent, root) {
                        (_, true) => ParentChoice::Root,
                        (Some(id), false) => ParentChoice::Id(id),
                        (None, false) => ParentChoice::Latest,
                    },
                    origin: None,
                    ..NewCheckpoint::default()
                })
            })
            .or_raise(py)?;
        issue_warnings(py)?;
        Self::checkpoint_dict(py, &checkpoint)
    }

    /// Listing rows, newest first: id, workflow, created_at, parent, and
    /// phase/item/message, or `error` for a checkpoint that does not verify.
    #[pyo3(signature = (workflow=None, phase=None, limit=None, before=None))]
    fn checkpoints<'py>(
        &self,
        py: Python<'py>,
        workflow: Option<String>,
        phase: Option<String>,
        limit: Option<usize>,
        before: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let entries = py
            .detach(|| {
                self.main.checkpoints()?.list(&ListQuery {
                    workflow,
                    phase,
                    limit: limit.unwrap_or(usize::MAX),
                    before,
                })
            })
            .or_raise(py)?;
        serialized(py, &entries)
    }

    #[pyo3(signature = (id, workflow=None))]
    fn checkpoint<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        workflow: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let checkpoint = py
            .detach(|| self.main.checkpoints()?.lookup(id, workflow))
            .or_raise(py)?;
        Self::checkpoint_dict(py, &checkpoint)
    }

    /// The lineage of `id`, newest first, each checkpoint verified.
    #[pyo3(signature = (id, max_depth=None, workflow=None))]
    fn chain<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        max_depth: Option<usize>,
        workflow: Option<&str>,
    ) -> PyResult<Bound<'py, PyList>> {
        let checkpoints = py
            .detach(|| {
                let backend = self.main.checkpoints()?;
                let workflow = match workflow {
                    Some(workflow) => workflow.to_string(),
                    None => backend.workflow_of(id)?,
                };
                let chain = backend.chain_in(&workflow, id, max_depth.unwrap_or(usize::MAX))?;
                chain
                    .links
                    .iter()
                    .map(|link| backend.lookup(&link.id, Some(&workflow)))
                    .collect::<wfstate::Result<Vec<_>>>()
            })
            .or_raise(py)?;
        let list = PyList::empty(py);
        for checkpoint in &checkpoints {
            list.append(Self::checkpoint_dict(py, checkpoint)?)?;
        }
        Ok(list)
    }

    /// The state of `b` as an RFC 6902 patch against the state of `a`
    /// (both of `workflow` when given: needed for ids a copied thread
    /// shares).
    #[pyo3(signature = (a, b, workflow=None))]
    fn diff<'py>(
        &self,
        py: Python<'py>,
        a: &str,
        b: &str,
        workflow: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let diff = py
            .detach(|| {
                let backend = self.main.checkpoints()?;
                Ok(diff_checkpoints(
                    &backend.lookup(a, workflow)?,
                    &backend.lookup(b, workflow)?,
                ))
            })
            .or_raise(py)?;
        serialized(py, &diff.state_patch)
    }

    /// Makes checkpoint `id`'s state the workflow's current state (`id` of
    /// `workflow` when given: needed for an id a copied thread shares).
    #[pyo3(signature = (id, timeout=Some(60.0), workflow=None))]
    fn restore<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        timeout: Option<f64>,
        workflow: Option<&str>,
    ) -> PyResult<State> {
        let timeout = seconds(py, timeout)?;
        let (_, doc) = py
            .detach(|| {
                let store = self.with_timeout(timeout)?;
                match workflow {
                    None => store.restore(id),
                    Some(workflow) => store.restore_in(workflow, id),
                }
            })
            .or_raise(py)?;
        issue_warnings(py)?;
        State::of(py, &doc)
    }

    #[pyo3(signature = (workflow=None, older_than_days=None, keep_last=None, dry_run=false))]
    fn prune<'py>(
        &self,
        py: Python<'py>,
        workflow: Option<String>,
        older_than_days: Option<f64>,
        keep_last: Option<usize>,
        dry_run: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let older_than = older_than_days
            .map(|days| {
                Duration::try_from_secs_f64(days * 86_400.0).map_err(|_| {
                    invalid_input(
                        py,
                        format!(
                            "older_than_days must be a non-negative number of days, got {days}"
                        ),
                    )
                })
            })
            .transpose()?;
        let pruned = py
            .detach(|| {
                self.main.checkpoints()?.prune(&PrunePolicy {
                    workflow,
                    older_than,
                    keep_last,
                    dry_run,
                })
            })
            .or_raise(py)?;
        issue_warnings(py)?;
        serialized(py, &pruned)
    }

    #[pyo3(signature = (workflow=None, from_id=None))]
    fn resume_prompt(
        &self,
        py: Python<'_>,
        workflow: Option<String>,
        from_id: Option<String>,
    ) -> PyResult<String> {
        py.detach(|| {
            self.main
                .resume(
                    workflow.as_deref(),
                    from_id.as_deref(),
                    &self.project_root(),
                )
                .map(|resume| resume.prompt())
        })
        .or_raise(py)
    }

    /// Acquires the named lock; the Python layer releases it when its
    /// `with` block ends.
    #[pyo3(signature = (name, shared=false, timeout=Some(60.0), purpose=None))]
    fn lock(
        &self,
        py: Python<'_>,
        name: String,
        shared: bool,
        timeout: Option<f64>,
        purpose: Option<String>,
    ) -> PyResult<Lock> {
        let timeout = seconds(py, timeout)?;
        Lock::acquire(py, self.main.clone(), name, shared, timeout, purpose)
    }

    #[pyo3(signature = (name=None))]
    fn lock_status<'py>(
        &self,
        py: Python<'py>,
        name: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let statuses = py
            .detach(|| {
                let locks = self.main.locks()?;
                match &name {
                    Some(name) => Ok(vec![locks.status(name)?]),
                    None => locks.list(),
                }
            })
            .or_raise(py)?;
        serialized(py, &statuses)
    }

    #[pyo3(signature = (limit=None, event=None))]
    fn audit_log<'py>(
        &self,
        py: Python<'py>,
        limit: Option<usize>,
        event: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let entries = py
            .detach(|| self.main.audit()?.read(event.as_deref(), limit))
            .or_raise(py)?;
        serialized(py, &entries)
    }

    /// Checks the whole chain; a chain that does not verify raises
    /// `IntegrityError` naming the first bad line.
    fn audit_verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (report, location) = py
            .detach(|| {
                let audit = self.main.audit()?;
                Ok((audit.verify()?, audit.location()))
            })
            .or_raise(py)?;
        if let Some(bad) = &report.first_bad {
            return Err(exception(
                py,
                "IntegrityError",
                format!(
                    "audit log {location} is not valid: line {}: {}",
                    bad.line, bad.reason
                ),
                "integrity",
                3,
            ));
        }
        serialized(py, &report)
    }

    // Checkpoints with caller-given content (the LangGraph saver's base).

    /// Records a checkpoint holding `payload` and `metadata` (JSON values)
    /// under the caller's `id`; returns its id, parent and creation time.
    #[pyo3(signature = (workflow, id, parent, payload, metadata, phase=None, message=None, summary=None))]
    #[allow(clippy::too_many_arguments)]
    fn record_checkpoint<'py>(
        &self,
        py: Python<'py>,
        workflow: String,
        id: Option<String>,
        parent: Option<String>,
        payload: &Bound<'py, PyAny>,
        metadata: &Bound<'py, PyAny>,
        phase: Option<String>,
        message: Option<String>,
        summary: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let payload = to_value(payload)?;
        let Value::Object(metadata) = to_value(metadata)? else {
            return Err(invalid_input(py, "metadata must be a dict".into()));
        };
        let checkpoint = py
            .detach(|| {
                self.main.record_checkpoint(NewCheckpoint {
                    workflow,
                    id,
                    parent: parent.map_or(ParentChoice::Root, ParentChoice::Id),
                    payload: Some(payload),
                    metadata: Some(metadata),
                    phase,
                    message,
                    context_summary: summary,
                    ..NewCheckpoint::default()
                })
            })
            .or_raise(py)?;
        issue_warnings(py)?;
        let dict = PyDict::new(py);
        dict.set_item("id", &checkpoint.id)?;
        dict.set_item("parent", &checkpoint.parent)?;
        dict.set_item("created_at", &checkpoint.created_at)?;
        Ok(dict.into_any())
    }

    /// Checkpoints of one workflow, verified, greatest id first, each with
    /// its pending writes under `"writes"` when `with_writes`; with
    /// `recorded_only`, only those `record_checkpoint` made.
    #[pyo3(signature = (workflow, before=None, id=None, metadata=None, limit=None, with_writes=false, recorded_only=false))]
    #[allow(clippy::too_many_arguments)]
    fn find_checkpoints<'py>(
        &self,
        py: Python<'py>,
        workflow: String,
        before: Option<String>,
        id: Option<String>,
        metadata: Option<&Bound<'py, PyAny>>,
        limit: Option<usize>,
        with_writes: bool,
        recorded_only: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let metadata = match metadata.map(to_value).transpose()? {
            None => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(invalid_input(py, "metadata must be a dict".into())),
        };
        let found = py
            .detach(|| {
                let backend = self.main.checkpoints()?;
                let query = FindQuery {
                    workflow,
                    before,
                    id,
                    metadata,
                    limit,
                    recorded_only,
                };
                let mut found = Vec::new();
                for cp in backend.find(&query)? {
                    let writes = if with_writes {
                        Some(backend.writes(&cp.workflow, &cp.id)?)
                    } else {
                        None
                    };
                    found.push((cp, writes));
                }
                Ok(found)
            })
            .or_raise(py)?;
        let list = PyList::empty(py);
        for (cp, writes) in &found {
            let dict = Self::checkpoint_dict(py, cp)?;
            if let Some(writes) = writes {
                dict.set_item("writes", serialized(py, writes)?)?;
            }
            list.append(dict)?;
        }
        Ok(list)
    }

    /// Stores pending writes (dicts with task_id, idx, channel, value,
    /// task_path) against checkpoint `id`, durably; `replace` says a write
    /// replaces a stored one with its key (else the stored one stays).
    /// Returns how many changed something.
    fn put_writes(
        &self,
        py: Python<'_>,
        workflow: String,
        id: String,
        writes: &Bound<'_, PyAny>,
        replace: bool,
    ) -> PyResult<usize> {
        let writes: Vec<PendingWrite> = serde_json::from_value(to_value(writes)?)
            .map_err(|e| invalid_input(py, format!("pending writes are malformed: {e}")))?;
        let rule = if replace {
            WriteRule::Replace
        } else {
            WriteRule::KeepFirst
        };
        let stored = py
            .detach(|| {
                self.main
                    .checkpoints()?
                    .put_writes(&workflow, &id, &writes, rule)
            })
            .or_raise(py)?;
        issue_warnings(py)?;
        Ok(stored)
    }

    /// Removes checkpoints of `workflow` with their writes: `which` is
    /// "all", "all_but_latest", or "metadata_in" (those whose metadata
    /// `key` is one of `values`).
    #[pyo3(signature = (workflow, which, key=None, values=None))]
    fn remove_checkpoints<'py>(
        &self,
        py: Python<'py>,
        workflow: String,
        which: &str,
        key: Option<String>,
        values: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let removal = match (which, key, values) {
            ("all", None, None) => Removal::All,
            ("all_but_latest", None, None) => Removal::AllButLatest,
            ("metadata_in", Some(key), Some(values)) => {
                let Value::Array(values) = to_value(values)? else {
                    return Err(invalid_input(py, "values must be a list".into()));
                };
                Removal::MetadataIn { key, values }
            }
            _ => {
                return Err(invalid_input(
                    py,
                    format!(
                        "which must be \"all\", \"all_but_latest\" or \"metadata_in\" \
                         (with key and values), got {which:?}"
                    ),
                ));
            }
        };
        let removed = py
            .detach(|| self.main.checkpoints()?.remove(&workflow, &removal))
            .or_raise(py)?;
        issue_warnings(py)?;
        serialized(py, &removed)
    }

    /// Workflows that have checkpoints, sorted; with `prefix`, only those
    /// whose name starts with it.
    #[pyo3(signature = (prefix=None))]
    fn checkpoint_workflows(
        &self,
        py: Python<'_>,
        prefix: Option<String>,
    ) -> PyResult<Vec<String>> {
        let mut names = py
            .detach(|| self.main.checkpoints()?.workflows())
            .or_raise(py)?;
        if let Some(prefix) = prefix {
            names.retain(|n| n.starts_with(&prefix));
        }
        Ok(names)
    }

    #[pyo3(signature = (repair=false))]
    fn health<'py>(&self, py: Python<'py>, repair: bool) -> PyResult<Bound<'py, PyAny>> {
        let report = py
            .detach(|| {
                if repair {
                    self.main.repair()
                } else {
                    self.main.health()
                }
            })
            .or_raise(py)?;
        let dict = serialized(py, &report)?;
        dict.cast::<PyDict>()?
            .set_item("exit_code", report.exit_code())?;
        Ok(dict)
    }
}
