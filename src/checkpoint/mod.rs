//! Checkpoints: immutable snapshots of a workflow with what a successor
//! needs to resume it, linked into lineages by parent ids.
//!
//! A checkpoint is one sealed JSON document (`wfstate.checkpoint/1`). This
//! module is the model every backend shares; each backend implements
//! [`CheckpointBackend`] (the file store in `file_store::checkpoints`, with
//! one file per checkpoint plus a rebuildable index; see `docs/DESIGN.md`).

pub mod context;
pub mod diff;

use crate::document;
use crate::error::{Error, Result};
use crate::id;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// Format id of checkpoint documents this build reads and writes.
pub const CHECKPOINT_FORMAT: &str = "wfstate.checkpoint/1";
const FORMAT_FAMILY: &str = "wfstate.checkpoint/";

/// A file as it was when the checkpoint was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Relative to the project root (the folder holding the store) when the
    /// file is inside it, else absolute.
    pub path: String,
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
}

/// The workflow's state when the checkpoint was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSnapshot {
    pub generation: u64,
    pub data: Value,
}

/// One checkpoint, verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: String,
    /// UUIDv7: unique, and sorts by creation time.
    pub id: String,
    pub workflow: String,
    /// The checkpoint this one continues from; `None` starts a lineage.
    pub parent: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub phase: Option<String>,
    pub item: Option<String>,
    pub message: Option<String>,
    pub context_summary: Option<String>,
    pub key_decisions: Vec<String>,
    pub files: Vec<FileRecord>,
    /// `None` if the workflow had no state when the checkpoint was taken.
    pub state: Option<StateSnapshot>,
    /// Where the checkpoint came from when it was not created here (for
    /// example an import); covered by the checksum like everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Value>,
    /// Content the caller gave instead of (or beside) a state snapshot,
    /// such as a LangGraph checkpoint with its channel values; sealed like
    /// everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The caller's keys and values for this checkpoint, which listings
    /// can filter on ([`FindQuery::metadata`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    pub checksum: String,
}

/// What a caller provides to create a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct NewCheckpoint {
    pub workflow: String,
    pub phase: Option<String>,
    pub item: Option<String>,
    pub message: Option<String>,
    /// Derived from the state when `None` (see `context::summarize`).
    pub context_summary: Option<String>,
    pub key_decisions: Vec<String>,
    pub files: Vec<FileRecord>,
    pub parent: ParentChoice,
    pub origin: Option<Value>,
    /// The id to give the checkpoint (a canonical UUID not yet used in the
    /// workflow); `None`: a new UUIDv7 that sorts after every earlier one.
    /// Callers that name their own checkpoints (LangGraph does) give ids
    /// that sort by creation, because "latest" is the greatest id.
    pub id: Option<String>,
    pub payload: Option<Value>,
    pub metadata: Option<Map<String, Value>>,
}

/// Which checkpoint a new one continues from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The workflow's latest checkpoint (none if it has none).
    #[default]
    Latest,
    /// A given checkpoint of the same workflow: branches the lineage.
    Id(String),
    /// No parent: a new lineage.
    Root,
}

impl Checkpoint {
    /// A new sealed checkpoint of `new.workflow` from what the caller gave
    /// and what the backend decided (id, parent, time).
    pub(crate) fn assemble(
        new: NewCheckpoint,
        id: String,
        parent: Option<String>,
        created_at: String,
        state: Option<StateSnapshot>,
    ) -> Checkpoint {
        Checkpoint {
            format: CHECKPOINT_FORMAT.to_string(),
            id,
            workflow: new.workflow,
            parent,
            created_at,
            phase: new.phase,
            item: new.item,
            message: new.message,
            context_summary: new.context_summary,
            key_decisions: new.key_decisions,
            files: new.files,
            state,
            origin: new.origin,
            payload: new.payload,
            metadata: new.metadata,
            checksum: String::new(),
        }
        .seal()
    }

    /// Serializes the sealed document: one line of compact JSON, the same
    /// bytes a checkpoint journal record holds (so settling a journal
    /// compares bytes instead of decoding the file again).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("a checkpoint always serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Computes and sets `checksum` over all other fields.
    pub fn seal(mut self) -> Checkpoint {
        self.checksum = String::new();
        let Value::Object(map) = serde_json::to_value(&self).expect("serializes") else {
            unreachable!("a struct serializes to an object")
        };
        let sealed = document::seal(map);
        self.checksum = sealed[crate::integrity::CHECKSUM_FIELD]
            .as_str()
            .expect("seal sets a string")
            .to_string();
        self
    }

    /// Parses and verifies a checkpoint file's bytes; `expected_id` and
    /// `expected_workflow` guard against a file renamed or moved by hand.
    pub fn decode(
        bytes: &[u8],
        path: &Path,
        expected_id: &str,
        expected_workflow: &str,
    ) -> Result<Checkpoint> {
        let doc = document::open(bytes, path, CHECKPOINT_FORMAT, FORMAT_FAMILY, "checkpoint")?;
        let cp: Checkpoint = serde_json::from_value(Value::Object(doc))
            .map_err(|e| Error::integrity(path, format!("checkpoint fields are malformed: {e}")))?;
        if cp.id != expected_id || cp.workflow != expected_workflow {
            return Err(Error::integrity(
                path,
                format!(
                    "holds checkpoint {} of workflow {:?}, expected {expected_id} of {expected_workflow:?}",
                    cp.id, cp.workflow
                ),
            ));
        }
        if let Some(parent) = &cp.parent
            && !id::is_valid(parent)
        {
            return Err(Error::integrity(
                path,
                format!("parent {parent:?} is not a checkpoint id"),
            ));
        }
        Ok(cp)
    }
}

/// Checks a checkpoint id given by a user: it must be a canonical UUID, so
/// it can never name a path.
pub fn validate_id(id: &str) -> Result<()> {
    if id::is_valid(id) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{id:?} is not a checkpoint id (expected a lowercase UUID such as 0190b1c2-3d4e-7f00-8000-0123456789ab)"
        )))
    }
}

/// One row of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    pub id: String,
    pub workflow: String,
    pub created_at: String,
    pub parent: Option<String>,
    /// The verified checkpoint, or why it could not be read.
    #[serde(flatten)]
    pub content: ListContent,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ListContent {
    Ok {
        phase: Option<String>,
        item: Option<String>,
        message: Option<String>,
    },
    Corrupt {
        error: String,
    },
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub workflow: Option<String>,
    pub phase: Option<String>,
    pub limit: usize,
    /// Only checkpoints created before this one (paging).
    pub before: Option<String>,
}

/// One link of a lineage, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct ChainLink {
    pub id: String,
    pub created_at: String,
    pub parent: Option<String>,
}

/// Why a lineage walk stopped early.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainStop {
    /// `at`'s parent `missing` does not exist (pruned or never imported).
    MissingParent { at: String, missing: String },
    /// `at`'s parent `repeats` is already in the chain.
    Cycle { at: String, repeats: String },
    /// `--max-depth` reached.
    MaxDepth { depth: usize },
}

impl ChainStop {
    pub fn describe(&self) -> String {
        match self {
            ChainStop::MissingParent { at, missing } => {
                format!("lineage truncated at {at}: its parent {missing} does not exist")
            }
            ChainStop::Cycle { at, repeats } => {
                format!(
                    "lineage has a cycle: {at} names {repeats} as parent, which is already in the chain"
                )
            }
            ChainStop::MaxDepth { depth } => format!("stopped at --max-depth {depth}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    pub links: Vec<ChainLink>,
    pub stopped: Option<ChainStop>,
}

/// What to prune; at least one rule must be given. With both, a checkpoint
/// goes only if both select it. The latest checkpoint of a workflow is
/// never pruned.
#[derive(Debug, Clone, Default)]
pub struct PrunePolicy {
    pub workflow: Option<String>,
    pub older_than: Option<std::time::Duration>,
    pub keep_last: Option<usize>,
    pub dry_run: bool,
}

/// Which of a workflow's committed checkpoints `policy` prunes, given their
/// creation times (Unix microseconds) oldest first. The newest is never
/// pruned.
pub(crate) fn select_for_pruning(created_us: &[u64], policy: &PrunePolicy) -> Vec<bool> {
    let keep_from = policy
        .keep_last
        .map_or(0, |n| created_us.len().saturating_sub(n));
    let cutoff_us = policy
        .older_than
        .map(|age| (crate::clock::now_micros() as u64).saturating_sub(age.as_micros() as u64));
    let newest = created_us.len().saturating_sub(1);
    created_us
        .iter()
        .enumerate()
        .map(|(i, &created)| {
            let by_count = policy.keep_last.is_none() || i < keep_from;
            let by_age = cutoff_us.is_none_or(|cut| created < cut);
            i != newest && by_count && by_age
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub workflow: String,
    pub id: String,
    pub created_at: String,
}

/// Index problems found and fixed while answering, for the caller to report.
#[derive(Debug, Clone, Serialize)]
pub struct IndexRepair {
    pub workflow: String,
    pub problem: String,
    pub checkpoints: usize,
}

/// The workflow among `holders` (those that hold checkpoint `id`).
pub(crate) fn only_holder(id: &str, mut holders: Vec<String>) -> Result<String> {
    match holders.len() {
        0 => Err(Error::NotFound {
            what: format!("checkpoint {id}"),
            path: None,
        }),
        1 => Ok(holders.remove(0)),
        _ => Err(Error::InvalidInput(format!(
            "checkpoint {id} is in several workflows ({}), copies of one thread: name the \
             workflow (--workflow; workflow= in Python)",
            holders.join(", ")
        ))),
    }
}

/// Checks a prune policy names a rule.
pub(crate) fn require_rule(policy: &PrunePolicy) -> Result<()> {
    if policy.older_than.is_none() && policy.keep_last.is_none() {
        return Err(Error::InvalidInput(
            "prune needs a rule: --older-than DAYS and/or --keep-last N".into(),
        ));
    }
    Ok(())
}

/// What [`CheckpointBackend::find`] returns: one workflow's checkpoints,
/// verified, newest (greatest id) first.
#[derive(Debug, Clone, Default)]
pub struct FindQuery {
    pub workflow: String,
    /// Only checkpoints whose id sorts before this one (paging).
    pub before: Option<String>,
    /// Only this checkpoint (if it exists).
    pub id: Option<String>,
    /// Only checkpoints whose metadata has every one of these keys with an
    /// equal value.
    pub metadata: Map<String, Value>,
    /// At most this many (`None`: all).
    pub limit: Option<usize>,
    /// Only checkpoints whose content a caller recorded
    /// ([`Store::record_checkpoint`](crate::Store::record_checkpoint)), not
    /// snapshots of a workflow's state: a workflow may hold both.
    pub recorded_only: bool,
}

impl FindQuery {
    /// Whether `checkpoint` passes the filters (`recorded_only`, metadata).
    pub fn matches(&self, checkpoint: &Checkpoint) -> bool {
        if self.recorded_only && checkpoint.metadata.is_none() {
            return false;
        }
        self.metadata.iter().all(|(key, wanted)| {
            checkpoint
                .metadata
                .as_ref()
                .and_then(|m| m.get(key))
                .is_some_and(|have| have == wanted)
        })
    }
}

/// A value a task wrote against a checkpoint that the next step will
/// read ("pending writes" in LangGraph). Keyed by `(task_id, idx)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingWrite {
    pub task_id: String,
    /// The write's place among its task's writes; callers use negative
    /// numbers for special writes (errors, interrupts).
    pub idx: i64,
    pub channel: String,
    pub value: Value,
    /// Where the task sits in the graph (informational).
    #[serde(default)]
    pub task_path: String,
}

/// What happens to a write whose `(task_id, idx)` is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRule {
    /// The stored write stays (a task's regular writes are kept once).
    KeepFirst,
    /// The new write replaces it (special writes such as errors).
    Replace,
}

/// Applies `batch` to `stored` under `rule`; returns the writes of the
/// batch that change something (an empty result means nothing to store).
pub fn writes_to_store(
    stored: &[PendingWrite],
    batch: &[PendingWrite],
    rule: WriteRule,
) -> Vec<PendingWrite> {
    batch
        .iter()
        .filter(|w| {
            let existing = stored
                .iter()
                .rev()
                .find(|s| s.task_id == w.task_id && s.idx == w.idx);
            match (existing, rule) {
                (None, _) => true,
                (Some(_), WriteRule::KeepFirst) => false,
                (Some(s), WriteRule::Replace) => s != *w,
            }
        })
        .cloned()
        .collect()
}

/// Folds writes stored in order (later ones replace earlier ones with the
/// same key) into the current set, sorted by task and index.
pub fn fold_writes(stored: Vec<PendingWrite>) -> Vec<PendingWrite> {
    let mut current: std::collections::BTreeMap<(String, i64), PendingWrite> =
        std::collections::BTreeMap::new();
    for w in stored {
        current.insert((w.task_id.clone(), w.idx), w);
    }
    current.into_values().collect()
}

/// Which checkpoints of a workflow [`CheckpointBackend::remove`] removes,
/// with their pending writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Removal {
    All,
    /// All but the greatest id.
    AllButLatest,
    /// Those whose metadata value of `key` is one of `values`.
    MetadataIn {
        key: String,
        values: Vec<Value>,
    },
}

impl Removal {
    /// Which of `checkpoints` (ascending by id) go.
    pub(crate) fn selects(
        &self,
        checkpoints: &[(String, Option<Map<String, Value>>)],
    ) -> Vec<bool> {
        let last = checkpoints.len().saturating_sub(1);
        checkpoints
            .iter()
            .enumerate()
            .map(|(i, (_, metadata))| match self {
                Removal::All => true,
                Removal::AllButLatest => i != last,
                Removal::MetadataIn { key, values } => metadata
                    .as_ref()
                    .and_then(|m| m.get(key))
                    .is_some_and(|v| values.contains(v)),
            })
            .collect()
    }

    /// Whether deciding needs each checkpoint's metadata.
    pub(crate) fn needs_metadata(&self) -> bool {
        matches!(self, Removal::MetadataIn { .. })
    }
}

/// Whether a creation may name a parent that no longer exists: one whose
/// caller keeps its own lineage (it gives the id). LangGraph continues a
/// thread from a checkpoint that `prune` or `delete_for_runs` removed; the
/// lineage then starts there, and `health` reports the gap unless the
/// audit log shows the parent's removal.
pub(crate) fn parent_may_be_gone(new: &NewCheckpoint) -> bool {
    new.id.is_some()
}

/// A creation that names an id already taken: the same checkpoint given
/// again (a retry) is returned as it is; anything else is refused, because
/// checkpoints never change once written.
pub(crate) fn same_checkpoint_again(
    existing: Checkpoint,
    new: &NewCheckpoint,
    parent: Option<&str>,
) -> Result<Checkpoint> {
    if existing.payload == new.payload
        && existing.metadata == new.metadata
        && existing.parent.as_deref() == parent
    {
        return Ok(existing);
    }
    Err(Error::InvalidInput(format!(
        "checkpoint {} of workflow {:?} already exists with other content; checkpoints never change",
        existing.id, existing.workflow
    )))
}

/// Format id of a sealed batch of pending writes.
const WRITES_FORMAT: &str = "wfstate.writes/1";

/// A batch of writes against checkpoint `id` of `workflow` as one sealed
/// document (compact JSON, no newline): what both backends store.
pub(crate) fn encode_writes(workflow: &str, id: &str, batch: &[PendingWrite]) -> Vec<u8> {
    let mut doc = Map::new();
    doc.insert("format".into(), WRITES_FORMAT.into());
    doc.insert("workflow".into(), workflow.into());
    doc.insert("checkpoint".into(), id.into());
    doc.insert(
        "writes".into(),
        serde_json::to_value(batch).expect("writes serialize"),
    );
    serde_json::to_vec(&document::seal(doc)).expect("a document serializes")
}

/// Parses and verifies a batch made by [`encode_writes`]; it must be of
/// checkpoint `id` of `workflow`.
pub(crate) fn decode_writes(
    bytes: &[u8],
    path: &Path,
    workflow: &str,
    id: &str,
) -> Result<Vec<PendingWrite>> {
    let doc = document::open(
        bytes,
        path,
        WRITES_FORMAT,
        "wfstate.writes/",
        "pending writes",
    )?;
    let bad = |what: String| Error::integrity(path, what);
    if doc.get("workflow").and_then(Value::as_str) != Some(workflow)
        || doc.get("checkpoint").and_then(Value::as_str) != Some(id)
    {
        return Err(bad(format!(
            "holds writes of another checkpoint than {id} of workflow {workflow:?}"
        )));
    }
    let writes = doc
        .get("writes")
        .cloned()
        .ok_or_else(|| bad("no \"writes\" member".into()))?;
    serde_json::from_value(writes).map_err(|e| bad(format!("writes are malformed: {e}")))
}

/// Checks the writes a caller gives: the key fields must be usable.
pub(crate) fn validate_writes(writes: &[PendingWrite]) -> Result<()> {
    for w in writes {
        if w.task_id.is_empty() || w.channel.is_empty() {
            return Err(Error::InvalidInput(
                "a pending write needs a task id and a channel".into(),
            ));
        }
    }
    Ok(())
}

/// What every checkpoint backend provides.
pub trait CheckpointBackend: Send + Sync {
    /// Creates a checkpoint of `new.workflow` holding `state` (the verified
    /// current state, loaded by the caller).
    fn create(&self, new: NewCheckpoint, state: Option<StateSnapshot>) -> Result<Checkpoint>;
    /// The verified checkpoint `id` (in whichever workflow holds it).
    fn get(&self, id: &str) -> Result<Checkpoint>;
    /// The newest checkpoint of `workflow`, if any.
    fn latest(&self, workflow: &str) -> Result<Option<Checkpoint>>;
    /// Newest first.
    fn list(&self, query: &ListQuery) -> Result<Vec<ListEntry>>;
    /// The lineage of `id`, newest first, at most `max_depth` links.
    fn chain(&self, id: &str, max_depth: usize) -> Result<Chain> {
        let workflow = self.workflow_of(id)?;
        self.chain_in(&workflow, id, max_depth)
    }
    /// The lineage of checkpoint `id` of `workflow`.
    fn chain_in(&self, workflow: &str, id: &str, max_depth: usize) -> Result<Chain>;
    /// The workflow that holds checkpoint `id`. An id in several workflows
    /// (a copied LangGraph thread keeps its ids) is refused: the caller
    /// must name the workflow.
    fn workflow_of(&self, id: &str) -> Result<String>;
    fn prune(&self, policy: &PrunePolicy) -> Result<Vec<Pruned>>;
    /// Workflows that have checkpoints, sorted.
    fn workflows(&self) -> Result<Vec<String>>;
    /// Index repairs made since the backend was opened (for messages).
    fn take_repairs(&self) -> Vec<IndexRepair>;
    /// Rebuilds `workflow`'s index from its checkpoint files (under its
    /// checkpoint lock); returns how many checkpoints it lists.
    fn rebuild_index(&self, workflow: &str, reason: &str) -> Result<usize>;
    /// The verified checkpoint `id` of `workflow`, if it exists.
    fn get_in(&self, workflow: &str, id: &str) -> Result<Option<Checkpoint>>;
    /// The verified checkpoint `id`: of `workflow` when given (needed when
    /// a copied thread shares the id), else of the one workflow that holds
    /// it ([`get`](Self::get)).
    fn lookup(&self, id: &str, workflow: Option<&str>) -> Result<Checkpoint> {
        match workflow {
            None => self.get(id),
            Some(workflow) => self.get_in(workflow, id)?.ok_or_else(|| Error::NotFound {
                what: format!("checkpoint {id} in workflow {workflow:?}"),
                path: None,
            }),
        }
    }
    /// Checkpoints of one workflow, verified, greatest id first.
    fn find(&self, query: &FindQuery) -> Result<Vec<Checkpoint>>;
    /// Stores pending writes against checkpoint `id` of `workflow`, durably
    /// before it returns; `rule` says what happens to a key already
    /// stored. Returns how many writes changed something. The checkpoint
    /// need not exist yet: LangGraph stores a step's writes while the
    /// checkpoint they follow is still being stored.
    fn put_writes(
        &self,
        workflow: &str,
        id: &str,
        writes: &[PendingWrite],
        rule: WriteRule,
    ) -> Result<usize>;
    /// The pending writes against checkpoint `id`, verified, sorted by task
    /// and index.
    fn writes(&self, workflow: &str, id: &str) -> Result<Vec<PendingWrite>>;
    /// Removes the checkpoints `which` selects, with their writes; unlike
    /// `prune` it may remove a workflow's latest. One audit entry.
    fn remove(&self, workflow: &str, which: &Removal) -> Result<Vec<Pruned>>;
}
