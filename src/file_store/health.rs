//! `wfstate health` on the file store: verifies the whole store and, on
//! request, makes safe repairs.
//!
//! Safe means reversible: damaged files are *moved* into
//! `quarantine/<time>/` under their store-relative path, never deleted;
//! indexes (caches) are rebuilt from the files; nothing that verifies is
//! touched. Each repair takes the lock its writers take, and the whole
//! repair is recorded in the audit log (a repair killed before its entry
//! leaves a quarantine batch no entry names, which the next repair
//! records). A second repair finds nothing to do.

use crate::backend::{Backend, load_existing, report_progress};
use crate::checkpoint::{Checkpoint, CheckpointBackend, validate_id};
use crate::durable::{self, ReadOutcome, TEMP_MARKER};
use crate::error::{Error, Result};
use crate::file_store::FileBackend;
use crate::file_store::audit_log::AuditLog;
use crate::file_store::checkpoint_index::{IndexProblem, IndexReader};
use crate::file_store::checkpoint_writes;
use crate::file_store::in_flight;
use crate::file_store::state_log;
use crate::health::{
    Component, HealthReport, REPAIR_EVENT, Status, component, finish, missing_parent,
    pruned_checkpoints,
};
use crate::lock::{Held, LockManager};
use crate::name::validate_name;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Folder of quarantined files, inside the store.
pub const QUARANTINE_DIR: &str = "quarantine";

/// A new folder `quarantine/<time>/` in the store at `root`, made durably,
/// for files moved aside outside a repair (a torn audit tail, what a power
/// cut left after the audit log's durable prefix).
pub(crate) fn new_quarantine_batch(root: &Path) -> Result<PathBuf> {
    let quarantine = root.join(QUARANTINE_DIR);
    let batch = quarantine.join(batch_name());
    durable::create_dir(&quarantine)?;
    durable::create_dir(&batch)?;
    Ok(batch)
}

/// A quarantine batch's name: the time, without the characters some
/// filesystems and tools dislike.
fn batch_name() -> String {
    crate::clock::now_rfc3339().replace([':', '-'], "")
}

/// A temp file is only taken for a crashed writer's once it is this old and
/// its writer's pid no longer exists.
const TEMP_GRACE: Duration = Duration::from_secs(5);

/// Something a repair can fix, found by a check.
enum Fix {
    /// Move this damaged file to quarantine (with the lock to hold).
    Quarantine {
        path: PathBuf,
        lock: LockFor,
        why: String,
    },
    RebuildIndex {
        workflow: String,
        why: String,
    },
    /// Rewrite the audit log without its unparsable (torn) lines.
    AuditTornLines,
    /// Move an `audit.intent` wfstate did not write to quarantine.
    QuarantineAuditIntent,
    /// Move a damaged `audit.pointer` (a symlink, a device, oversized) to
    /// quarantine; the next open rebuilds it as after a reboot.
    QuarantineAuditPointer,
    /// Name in this repair's audit entry a quarantine batch that no entry
    /// names: what a repair (or an audit recovery) moved before it was
    /// killed.
    RecordBatch {
        batch: String,
    },
    /// Rewrite a workflow's current state as its base and empty its log,
    /// dropping superseded lines that do not verify (see `state_log`).
    CompactStateLog {
        workflow: String,
        why: String,
    },
}

enum LockFor {
    Workflow(String),
    Checkpoints(String),
    Nothing,
}

struct Checker<'a> {
    root: &'a Path,
    files: &'a FileBackend,
    fixes: Vec<Fix>,
}

impl Checker<'_> {
    fn progress(&self, task: &str, done: usize, total: usize) {
        report_progress(self.files.options.on_progress.as_ref(), task, done, total);
    }

    fn states(&mut self) -> Result<Component> {
        let mut problems = Vec::new();
        let names = self.files.list_workflows()?;
        for (checked, name) in names.iter().enumerate() {
            self.progress("checking states", checked, names.len());
            if let Err(e) = load_existing(self.files, name) {
                problems.push((Status::Error, e.to_string()));
                // The damaged file (the base, or the log whose newest record
                // is damaged) goes to quarantine.
                if let Error::Integrity { path, .. } = &e {
                    self.fixes.push(Fix::Quarantine {
                        path: path.clone(),
                        lock: LockFor::Workflow(name.clone()),
                        why: e.to_string(),
                    });
                }
                continue;
            }
            // Superseded log lines that do not verify, and a torn last line,
            // are what interrupted appends leave: nothing current is
            // affected, so they are warnings, and repair compacts them away.
            let log = self
                .root
                .join("state")
                .join(format!("{name}{}", state_log::LOG_SUFFIX));
            let found = state_log::leftovers(&log, name)?;
            if found.torn_tail || !found.bad_lines.is_empty() {
                let why = format!(
                    "{}: {}{}",
                    log.display(),
                    if found.torn_tail {
                        "its last line is unfinished: an update that did not complete (a crash, or a write that failed, for example on a full disk); readers ignore it"
                    } else {
                        ""
                    },
                    if found.bad_lines.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "{}superseded line(s) {:?} do not verify",
                            if found.torn_tail { "; " } else { "" },
                            found.bad_lines
                        )
                    }
                );
                problems.push((Status::Warning, why.clone()));
                self.fixes.push(Fix::CompactStateLog {
                    workflow: name.clone(),
                    why,
                });
            }
        }
        Ok(component(
            "states",
            &problems,
            format!("{} state(s) verified", names.len()),
        ))
    }

    fn checkpoints(&mut self) -> Result<Component> {
        let mut problems = Vec::new();
        let cps = self.files.file_checkpoints();
        // An audit log that cannot be read is the audit component's
        // problem; here every missing parent then counts as unexplained.
        let pruned = pruned_checkpoints(self.files.audit_log()).unwrap_or_default();
        let mut total = 0;
        let workflows = cps.workflows()?;
        for (checked, workflow) in workflows.iter().cloned().enumerate() {
            self.progress("checking checkpoints", checked, workflows.len());
            let dir = self.root.join("checkpoints").join(&workflow);
            let mut parents: BTreeMap<String, Option<String>> = BTreeMap::new();
            let mut corrupt = 0;
            for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
                let path = entry.map_err(|e| Error::io("list", &dir, e))?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if let Some(id) = name.strip_suffix(checkpoint_writes::SUFFIX)
                    && validate_id(id).is_ok()
                {
                    // Damaged writes are reported and left in place: they
                    // may be the only record of a task's work.
                    if let Err(e) = checkpoint_writes::read(&path, &workflow, id) {
                        problems.push((Status::Error, e.to_string()));
                    }
                    continue;
                }
                let Some(id) = name.strip_suffix(".json") else {
                    continue;
                };
                if validate_id(id).is_err() {
                    continue;
                }
                total += 1;
                let verdict = match durable::read_file(&path, u64::MAX) {
                    Ok(ReadOutcome::Found(bytes)) => {
                        Checkpoint::decode(&bytes, &path, id, &workflow)
                    }
                    Ok(ReadOutcome::Missing) => continue,
                    Err(e) => Err(e),
                };
                match verdict {
                    Ok(cp) => {
                        parents.insert(cp.id, cp.parent);
                    }
                    Err(e) => {
                        corrupt += 1;
                        problems.push((Status::Error, e.to_string()));
                        self.fixes.push(Fix::Quarantine {
                            path: path.clone(),
                            lock: LockFor::Checkpoints(workflow.clone()),
                            why: e.to_string(),
                        });
                    }
                }
            }
            // A damaged journal record cannot be repaired here (it may be
            // the only copy of a checkpoint): reported, left in place.
            if dir
                .join(crate::file_store::checkpoints::JOURNAL_FILE)
                .exists()
                && let Err(e @ Error::Integrity { .. }) =
                    self.files.file_checkpoints().journal_entries(&workflow)
            {
                problems.push((Status::Error, e.to_string()));
            }
            for (id, parent) in &parents {
                if let Some(p) = parent.as_ref().filter(|p| !parents.contains_key(*p)) {
                    problems.push(missing_parent(&workflow, id, p, &pruned));
                }
            }
            for id in parents.keys() {
                let mut seen = HashSet::new();
                let mut at = Some(id.clone());
                while let Some(cur) = at {
                    if !seen.insert(cur.clone()) {
                        problems.push((
                            Status::Warning,
                            format!("{workflow}: the lineage of {id} has a cycle at {cur}"),
                        ));
                        break;
                    }
                    at = parents.get(&cur).cloned().flatten();
                }
            }
            // Missing, torn or damaged indexes and records without files are
            // what a crash can leave (readers rebuild or skip them): warnings.
            // A readable checkpoint missing from its index cannot come from a
            // crash under the creation protocol: an error.
            let index_path = dir.join("index");
            let index_problem = match IndexReader::open(&index_path)? {
                Err(IndexProblem::Missing) if parents.is_empty() && corrupt == 0 => None,
                Err(IndexProblem::Missing) => Some((Status::Warning, "index missing".to_string())),
                Err(IndexProblem::Damaged(why)) => {
                    Some((Status::Warning, format!("index damaged: {why}")))
                }
                Ok(mut reader) => {
                    reader.load()?;
                    let mut listed = HashSet::new();
                    let mut damaged = None;
                    for i in 0..reader.count() {
                        match reader.record(i)? {
                            Ok(r) => {
                                listed.insert(r.id);
                            }
                            Err(why) => {
                                damaged = Some(why);
                                break;
                            }
                        }
                    }
                    let missing = parents.keys().filter(|id| !listed.contains(*id)).count();
                    let extra = listed
                        .iter()
                        .filter(|id| !parents.contains_key(*id))
                        .count();
                    match (damaged, missing, extra) {
                        (Some(why), _, _) => {
                            Some((Status::Warning, format!("index damaged: {why}")))
                        }
                        (None, 0, 0) => None,
                        (None, 0, extra) => Some((
                            Status::Warning,
                            format!(
                                "index lists {extra} checkpoint(s) without a readable file (an interrupted creation, or quarantined)"
                            ),
                        )),
                        (None, missing, _) => Some((
                            Status::Error,
                            format!(
                                "index disagrees with the files: {missing} readable checkpoint(s) not indexed"
                            ),
                        )),
                    }
                }
            };
            if let Some((status, why)) = index_problem {
                problems.push((status, format!("{workflow}: {why}")));
                self.fixes.push(Fix::RebuildIndex {
                    workflow: workflow.clone(),
                    why,
                });
            }
        }
        Ok(component(
            "checkpoints",
            &problems,
            format!("{total} checkpoint(s) verified, indexes agree"),
        ))
    }

    fn locks(&mut self, locks: &LockManager) -> Result<Component> {
        let mut problems = Vec::new();
        let mut details = Vec::new();
        let statuses = locks.list()?;
        for s in &statuses {
            details.push(format!("{}: {}", s.name, s.describe()));
            let leftovers = s
                .records
                .iter()
                .filter(|r| r.holding == Some(false))
                .count();
            if leftovers > 0 && s.held == Held::Free {
                problems.push((Status::Ok, format!("{}: {leftovers} record(s) left by holders that exited (harmless; cleared by the next exclusive holder)", s.name)));
            }
        }
        let held = statuses.iter().filter(|s| s.held != Held::Free).count();
        let mut c = component(
            "locks",
            &problems,
            format!("{} lock(s), {held} held", statuses.len()),
        );
        c.details = details;
        Ok(c)
    }

    fn audit(&mut self, audit: &AuditLog) -> Result<Component> {
        let report = audit.verify()?;
        let mut problems = Vec::new();
        if let Some(bad) = &report.first_bad {
            // A torn final line is what an append cut short by a crash or a
            // SIGKILL leaves: that append never returned, nothing
            // acknowledged is lost, and later appends skip it. Like other
            // leftovers of unacknowledged work it is a warning. Anything
            // else (a damaged or edited entry) is an error.
            let status = if report.torn_tail == Some(bad.line) {
                Status::Warning
            } else {
                Status::Error
            };
            problems.push((
                status,
                format!(
                    "{} line {}: {}",
                    audit.path().display(),
                    bad.line,
                    bad.reason
                ),
            ));
        }
        if let Some(why) = audit.intent_problem()? {
            problems.push((
                Status::Error,
                format!(
                    "{}: {why}; wfstate writes this file whole, so something else did, and \
                     a change made behind it would have no audit entry",
                    audit.path().with_file_name("audit.intent").display()
                ),
            ));
            self.fixes.push(Fix::QuarantineAuditIntent);
        }
        if let Some(why) = audit.pointer_problem()? {
            problems.push((
                Status::Error,
                format!(
                    "{}: {why}; appends refuse to run until it is moved aside (the next open \
                     then rebuilds it from the logs, as after a reboot)",
                    audit.path().with_file_name("audit.pointer").display()
                ),
            ));
            self.fixes.push(Fix::QuarantineAuditPointer);
        }
        problems.extend(in_flight_problems(audit));
        // Unparsable lines (torn appends) can be moved aside; entries that
        // parse but do not verify are evidence and stay where they are.
        if !torn_lines(audit.path())?.is_empty() {
            self.fixes.push(Fix::AuditTornLines);
        }
        Ok(component(
            "audit",
            &problems,
            format!(
                "{} entries, chain valid ({})",
                report.entries,
                if report.keyed { "keyed" } else { "unkeyed" }
            ),
        ))
    }

    fn temp_files(&mut self) -> Result<Component> {
        let mut problems = Vec::new();
        let mut dirs = vec![
            self.root.to_path_buf(),
            self.root.join("state"),
            self.root.join("locks"),
        ];
        if let Ok(entries) = std::fs::read_dir(self.root.join("checkpoints")) {
            dirs.push(self.root.join("checkpoints"));
            dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(tail) = name.split(TEMP_MARKER).nth(1) else {
                    continue;
                };
                let pid = tail.split('-').next().and_then(|p| p.parse::<u32>().ok());
                let age = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .unwrap_or_default();
                let writer_alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                if writer_alive || age < TEMP_GRACE {
                    problems.push((
                        Status::Ok,
                        format!("{}: a write in progress", entry.path().display()),
                    ));
                } else {
                    problems.push((
                        Status::Warning,
                        format!(
                            "{}: left by a writer that is gone (pid {})",
                            entry.path().display(),
                            pid.map_or("?".into(), |p| p.to_string())
                        ),
                    ));
                    self.fixes.push(Fix::Quarantine {
                        path: entry.path(),
                        lock: LockFor::Nothing,
                        why: "temp file of a crashed writer".into(),
                    });
                }
            }
        }
        Ok(component(
            "temp_files",
            &problems,
            "no leftover temp files".into(),
        ))
    }

    fn quarantine(&mut self) -> Result<Component> {
        let entries = quarantine_entries(self.root);
        if entries.is_empty() {
            return Ok(component("quarantine", &[], "empty".into()));
        }
        let dir = self.root.join(QUARANTINE_DIR);
        let batches: Vec<String> = entries
            .iter()
            .filter(|(_, is_dir)| *is_dir)
            .map(|(name, _)| name.clone())
            .collect();
        let unrecorded = batches_without_entry(self.files.audit_log(), &batches)?;
        let mut problems = Vec::new();
        for (name, _) in &entries {
            let path = dir.join(name).display().to_string();
            if unrecorded.contains(name) {
                problems.push((
                    Status::Warning,
                    format!(
                        "{path} holds files moved aside, but no audit entry names it: the repair \
                         (or audit recovery) that moved them stopped before recording it; \
                         `health --repair` records it"
                    ),
                ));
                self.fixes.push(Fix::RecordBatch {
                    batch: name.clone(),
                });
            } else {
                problems.push((
                    Status::Warning,
                    format!(
                        "{path} holds files moved aside by a repair; inspect, then delete them \
                         yourself"
                    ),
                ));
            }
        }
        Ok(component("quarantine", &problems, String::new()))
    }
}

/// The names of the entries of the store's quarantine, sorted, each with
/// whether it is a folder (a batch; anything else was put there by hand).
/// What is wrong with the table of commits in flight (`audit.in-flight`,
/// DESIGN section 13). Taken slots are commits under way, or left by
/// writers that died, which the next commit settles: not problems. A
/// slot that does not parse is a claim whose write failed (its writer got
/// the error and acknowledged nothing): a warning, freed by the next
/// commit. A table that cannot be read, or whose header is gone, stops
/// every update commit: an error. Left in place: it may be the only
/// record of entries in flight; the next open after a reboot rebuilds it.
fn in_flight_problems(audit: &AuditLog) -> Vec<(Status, String)> {
    let path = audit.path().with_file_name(in_flight::FILE_NAME);
    let snapshot = match in_flight::Table::open(&path).and_then(|t| t.map(|t| t.read()).transpose())
    {
        Ok(None) => return Vec::new(),
        Ok(Some(snapshot)) => snapshot,
        Err(e) => {
            return vec![(
                Status::Error,
                format!("{e}; state updates fail until it is fixed"),
            )];
        }
    };
    let mut problems = Vec::new();
    if snapshot.boot.is_none() {
        problems.push((
            Status::Error,
            format!(
                "{}: its header is damaged; state updates fail until it is fixed",
                path.display()
            ),
        ));
    }
    if !snapshot.broken.is_empty() {
        problems.push((
            Status::Warning,
            format!(
                "{}: slot(s) {:?} hold a claim whose write failed (nothing was acknowledged \
                 with it); the next update frees them",
                path.display(),
                snapshot.broken
            ),
        ));
    }
    problems
}

fn quarantine_entries(root: &Path) -> Vec<(String, bool)> {
    let mut entries: Vec<(String, bool)> = std::fs::read_dir(root.join(QUARANTINE_DIR))
        .map(|e| {
            e.flatten()
                .map(|e| {
                    let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                    (e.file_name().to_string_lossy().into_owned(), is_dir)
                })
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries
}

/// Which of `batches` no `repair` entry of the audit log names. A repair
/// appends its entry only after its moves, so a repair killed in between
/// leaves a batch that none names.
fn batches_without_entry(audit: &AuditLog, batches: &[String]) -> Result<Vec<String>> {
    let mut named = HashSet::new();
    for entry in audit.read(Some(REPAIR_EVENT), None)? {
        named.extend(batches_named_in(&entry.data));
    }
    Ok(batches
        .iter()
        .filter(|batch| !named.contains(batch.as_str()))
        .cloned()
        .collect())
}

/// The batches a repair entry names: in `batch` and `recorded`, and, for
/// entries written before those fields existed, in the paths its actions
/// moved files to (`.../quarantine/<batch>/...`).
fn batches_named_in(data: &Value) -> Vec<String> {
    let mut names: Vec<String> = std::iter::once(&data["batch"])
        .chain(
            data["recorded"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| &r["batch"]),
        )
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let marker = format!("{QUARANTINE_DIR}/");
    for action in data["actions"].as_array().into_iter().flatten() {
        let Some(text) = action.as_str() else {
            continue;
        };
        for (at, _) in text.match_indices(&marker) {
            let name: String = text[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .collect();
            names.push(name);
        }
    }
    names
}

/// The store-relative paths of the files in quarantine batch `batch`.
fn batch_files(root: &Path, batch: &str) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&path, base, out),
                Ok(_) => out.push(
                    path.strip_prefix(base)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                ),
                Err(_) => {}
            }
        }
    }
    let mut files = Vec::new();
    walk(&root.join(QUARANTINE_DIR).join(batch), root, &mut files);
    files.sort();
    files
}

/// (line number, bytes) of the audit log's lines that do not parse as JSON.
fn torn_lines(path: &Path) -> Result<Vec<(usize, Vec<u8>)>> {
    let bytes = match durable::read_file(path, u64::MAX)? {
        ReadOutcome::Found(b) => b,
        ReadOutcome::Missing => return Ok(Vec::new()),
    };
    Ok(bytes
        .split_inclusive(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| {
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            !text.is_empty() && serde_json::from_slice::<serde_json::Value>(text).is_err()
        })
        .map(|(i, line)| (i + 1, line.to_vec()))
        .collect())
}

/// The file store's health check, and with `repair` its repairs.
pub(crate) fn run(files: &FileBackend, repair: bool) -> Result<HealthReport> {
    let root = files.root();
    let mut checker = Checker {
        root,
        files,
        fixes: Vec::new(),
    };
    let components = gather(&mut checker)?;
    if !repair || checker.fixes.is_empty() {
        return Ok(finish(components, Vec::new()));
    }
    let fixes = std::mem::take(&mut checker.fixes);
    // One repair at a time: a repair's batch is named by no entry until
    // its end, and another repair must not take it for an interrupted one.
    let repairing = files.lock_manager().internal_exclusive(
        "health",
        "repair",
        Some(Duration::from_secs(60)),
    )?;
    let (done, entry) = apply(files, fixes)?;
    if !done.is_empty() {
        files.audit_log().append(REPAIR_EVENT, entry)?;
    }
    drop(repairing);
    let mut again = Checker {
        root,
        files,
        fixes: Vec::new(),
    };
    Ok(finish(gather(&mut again)?, done))
}

fn gather(checker: &mut Checker<'_>) -> Result<Vec<Component>> {
    Ok(vec![
        component("format", &[], "store format marker wfstate.store/1".into()),
        checker.states()?,
        checker.checkpoints()?,
        checker.locks(checker.files.lock_manager())?,
        checker.audit(checker.files.audit_log())?,
        checker.temp_files()?,
        checker.quarantine()?,
    ])
}

/// Makes the repairs; returns what was done, for the report, and the data
/// of the repair's audit entry: the actions, the quarantine batch this
/// repair moved files to (if any), and the batches of interrupted repairs
/// it records.
fn apply(files: &FileBackend, fixes: Vec<Fix>) -> Result<(Vec<String>, Value)> {
    let root = files.root();
    let batch = batch_name();
    let quarantine = root.join(QUARANTINE_DIR).join(&batch);
    let locks = files.lock_manager();
    let mut done = Vec::new();
    let mut unrecorded = Vec::new();
    let mut rebuild: BTreeMap<String, String> = BTreeMap::new();
    let total = fixes.len();
    for (applied, fix) in fixes.into_iter().enumerate() {
        report_progress(
            files.options.on_progress.as_ref(),
            "repairing",
            applied,
            total,
        );
        match fix {
            Fix::Quarantine { path, lock, why } => {
                let _guard = match &lock {
                    LockFor::Workflow(wf) => {
                        Some(locks.workflow_exclusive(wf, Some(Duration::from_secs(60)), None)?)
                    }
                    LockFor::Checkpoints(wf) => Some(locks.internal_exclusive(
                        "checkpoint",
                        wf,
                        Some(Duration::from_secs(60)),
                    )?),
                    LockFor::Nothing => None,
                };
                if !path.exists() {
                    continue; // gone since the check
                }
                if matches!(lock, LockFor::Workflow(_)) {
                    // A commit in flight may name a record of this log:
                    // finish and copy every one before the log moves.
                    files.audit_log().drain_now()?;
                }
                let relative = path.strip_prefix(root).unwrap_or(&path);
                let target = quarantine.join(relative);
                durable::move_file(&path, &target, root)?;
                done.push(format!(
                    "moved {} to {} ({why})",
                    path.display(),
                    target.display()
                ));
                if let LockFor::Checkpoints(wf) = lock {
                    // The journal may still hold a good copy of it.
                    let id = path
                        .file_stem()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    if crate::id::is_valid(id)
                        && files.file_checkpoints().restore_from_journal(&wf, id)?
                    {
                        done.push(format!("restored checkpoint {id} from the journal of {wf}"));
                    }
                    rebuild.insert(wf, "a damaged checkpoint was quarantined".into());
                }
            }
            Fix::RebuildIndex { workflow, why } => {
                rebuild.insert(workflow, why);
            }
            Fix::CompactStateLog { workflow, why } => {
                let _guard =
                    locks.workflow_exclusive(&workflow, Some(Duration::from_secs(60)), None)?;
                files.compact(&workflow)?;
                done.push(format!("compacted the state log of {workflow} ({why})"));
            }
            Fix::RecordBatch { batch } => unrecorded.push(batch),
            Fix::QuarantineAuditIntent => {
                if let Some(target) = files.audit_log().quarantine_bad_intent(&quarantine, root)? {
                    done.push(format!(
                        "moved the audit intent that wfstate did not write to {}",
                        target.display()
                    ));
                }
            }
            Fix::QuarantineAuditPointer => {
                if let Some(target) = files
                    .audit_log()
                    .quarantine_bad_pointer(&quarantine, root)?
                {
                    done.push(format!(
                        "moved the damaged audit pointer to {}",
                        target.display()
                    ));
                }
            }
            Fix::AuditTornLines => {
                let audit = files.audit_log();
                let _guard =
                    locks.internal_exclusive("audit", "log", Some(Duration::from_secs(60)))?;
                let torn = torn_lines(audit.path())?;
                if torn.is_empty() {
                    continue;
                }
                let bad: HashSet<usize> = torn.iter().map(|(n, _)| *n).collect();
                let bytes = match durable::read_file(audit.path(), u64::MAX)? {
                    ReadOutcome::Found(b) => b,
                    ReadOutcome::Missing => continue,
                };
                let mut kept = Vec::with_capacity(bytes.len());
                for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
                    if !bad.contains(&(i + 1)) {
                        kept.extend_from_slice(line);
                    }
                }
                let mut moved = Vec::new();
                for (n, line) in &torn {
                    moved.extend_from_slice(format!("# line {n}\n").as_bytes());
                    moved.extend_from_slice(line);
                    if !line.ends_with(b"\n") {
                        moved.push(b'\n');
                    }
                }
                // Save what is removed before removing it.
                let saved = quarantine.join("audit.torn-lines.txt");
                for dir in [root.join(QUARANTINE_DIR), quarantine.clone()] {
                    durable::create_dir(&dir)?;
                }
                durable::replace_file_with_bytes(&saved, &moved)?;
                durable::replace_file_with_bytes(audit.path(), &kept)?;
                let lines: Vec<String> = torn.iter().map(|(n, _)| n.to_string()).collect();
                done.push(format!(
                    "moved torn audit line(s) {} to {}",
                    lines.join(", "),
                    saved.display()
                ));
            }
        }
    }
    let cps = files.file_checkpoints();
    for (workflow, why) in rebuild {
        validate_name(&workflow)?;
        let n = cps.rebuild_index(&workflow, &why)?;
        done.push(format!(
            "rebuilt the checkpoint index of {workflow} ({n} checkpoints): {why}"
        ));
    }
    cps.take_repairs();
    let recorded = record_batches(files, unrecorded)?;
    for (name, files) in &recorded {
        done.push(format!(
            "recorded {}, which an interrupted repair or audit recovery left without an audit \
             entry ({} file(s))",
            root.join(QUARANTINE_DIR).join(name).display(),
            files.len()
        ));
    }
    let mut entry = serde_json::json!({ "actions": done });
    if quarantine.exists() {
        entry["batch"] = batch.into();
    }
    if !recorded.is_empty() {
        entry["recorded"] = recorded
            .into_iter()
            .map(|(batch, files)| serde_json::json!({"batch": batch, "files": files}))
            .collect();
    }
    Ok((done, entry))
}

/// The batches among `candidates` that still have no entry, with their
/// files, looked at under the audit lock: an audit recovery at an open
/// fills its batch under that lock, and a repair (excluded by the caller's
/// `health@repair`) is the only other writer of batches.
fn record_batches(
    files: &FileBackend,
    candidates: Vec<String>,
) -> Result<Vec<(String, Vec<String>)>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let _audit =
        files
            .lock_manager()
            .internal_exclusive("audit", "log", Some(Duration::from_secs(60)))?;
    let root = files.root();
    let present: Vec<String> = candidates
        .into_iter()
        .filter(|b| root.join(QUARANTINE_DIR).join(b).is_dir())
        .collect();
    Ok(batches_without_entry(files.audit_log(), &present)?
        .into_iter()
        .map(|batch| {
            let files = batch_files(root, &batch);
            (batch, files)
        })
        .collect())
}
