//! `wfstate import-legacy`: moves a seed-system project into a store.
//!
//! Everything is verified with the seed system's own algorithms first
//! (`legacy`). Valid data is imported; invalid data only with
//! `accept_invalid`, and then marked `legacy_valid: false`. Original ids and
//! timestamps are kept in each imported item's `origin`. A second import of
//! the same tree adds nothing: states, checkpoints and audit entries already
//! imported are recognized by their legacy checksum, id and hash.

use crate::backend::report_progress;
use crate::checkpoint::{ListQuery, NewCheckpoint, ParentChoice, StateSnapshot};
use crate::error::{Error, Result};
use crate::legacy::{self, LegacyCheckpoint};
use crate::name::validate_name;
use crate::store::ProgressHook;
use crate::store::Store;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Report what would happen; write nothing.
    pub dry_run: bool,
    /// Import data that fails the legacy checks too, marked as such.
    pub accept_invalid: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct InvalidFile {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StateOutcome {
    pub path: String,
    pub workflow: Option<String>,
    pub valid: bool,
    pub action: String,
    pub generation: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointOutcome {
    pub path: String,
    pub legacy_id: String,
    pub workflow: String,
    pub action: String,
    pub id: Option<String>,
    pub parent: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditOutcome {
    pub path: String,
    pub entries: usize,
    pub valid: bool,
    pub first_bad_line: Option<usize>,
    pub reason: Option<String>,
    pub imported: usize,
    pub already_imported: usize,
    pub skipped_invalid: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub source: String,
    pub dry_run: bool,
    pub state: Option<StateOutcome>,
    pub checkpoints: Vec<CheckpointOutcome>,
    pub audit: Option<AuditOutcome>,
    /// Every file that failed the legacy checks, with the reason.
    pub invalid: Vec<InvalidFile>,
    /// Data not imported because the store already holds something else.
    pub conflicts: Vec<String>,
}

impl ImportReport {
    /// Whether anything was written.
    fn imported_anything(&self) -> bool {
        let state = self.state.as_ref().is_some_and(|s| s.action == IMPORTED);
        let checkpoints = self.checkpoints.iter().any(|c| c.action == IMPORTED);
        let audit = self.audit.as_ref().is_some_and(|a| a.imported > 0);
        state || checkpoints || audit
    }
}

const IMPORTED: &str = "imported";

fn verb(options: ImportOptions) -> &'static str {
    if options.dry_run {
        "would import"
    } else {
        IMPORTED
    }
}

/// Imports the seed-system project at `root` into `store`.
pub fn import_legacy(store: &Store, root: &Path, options: ImportOptions) -> Result<ImportReport> {
    import_legacy_reporting(store, root, options, None)
}

/// [`import_legacy`], telling `progress` how far the reading and the
/// import of the checkpoints, the bulk of a large project, have come.
pub fn import_legacy_reporting(
    store: &Store,
    root: &Path,
    options: ImportOptions,
    progress: Option<&ProgressHook>,
) -> Result<ImportReport> {
    let tree = legacy::discover(root)?;
    if tree.state.is_none() && tree.checkpoints.is_empty() && tree.audit.is_none() {
        return Err(Error::NotFound {
            what: format!(
                "seed-system files under {} (looked for .orchestrator/ state, checkpoints and audit.jsonl, \
                 .workflow_state.json and .workflow_checkpoints/)",
                root.display()
            ),
            path: None,
        });
    }
    let mut report = ImportReport {
        source: root.display().to_string(),
        dry_run: options.dry_run,
        state: None,
        checkpoints: Vec::new(),
        audit: None,
        invalid: Vec::new(),
        conflicts: Vec::new(),
    };
    let audit = store.audit()?;
    let previous_imports = audit.read(Some("state_import"), None)?;
    if let Some(path) = &tree.state {
        report.state = Some(import_state(
            store,
            path,
            options,
            &previous_imports,
            &mut report,
        )?);
    }
    import_checkpoints(store, &tree.checkpoints, options, progress, &mut report)?;
    if let Some(path) = &tree.audit {
        report.audit = Some(import_audit(store, path, options, &mut report)?);
    }
    if !options.dry_run && report.imported_anything() {
        let summary = json!({
            "source": report.source,
            "state": report.state.as_ref().map(|s| &s.action),
            "checkpoints": report.checkpoints.iter().filter(|c| c.action == IMPORTED).count(),
            "audit_entries": report.audit.as_ref().map_or(0, |a| a.imported),
            "invalid_files": report.invalid.len(),
        });
        audit.append("import", summary)?;
    }
    Ok(report)
}

fn import_state(
    store: &Store,
    path: &Path,
    options: ImportOptions,
    previous_imports: &[crate::audit::AuditEntry],
    report: &mut ImportReport,
) -> Result<StateOutcome> {
    let legacy = legacy::read_state(path)?;
    let valid = legacy.verdict.is_ok();
    let mut outcome = StateOutcome {
        path: path.display().to_string(),
        workflow: legacy.workflow_id.clone(),
        valid,
        action: String::new(),
        generation: None,
    };
    if let Err(reason) = &legacy.verdict {
        report.invalid.push(InvalidFile {
            path: outcome.path.clone(),
            reason: reason.clone(),
        });
        if !options.accept_invalid {
            outcome.action =
                "skipped: invalid (use --accept-invalid to import it marked as such)".into();
            return Ok(outcome);
        }
    }
    let Some(workflow) = legacy
        .workflow_id
        .clone()
        .filter(|w| validate_name(w).is_ok())
    else {
        outcome.action = format!(
            "skipped: workflow_id {:?} is not a valid workflow name",
            legacy.workflow_id
        );
        report.invalid.push(InvalidFile {
            path: outcome.path.clone(),
            reason: outcome.action.clone(),
        });
        return Ok(outcome);
    };
    let data = Value::Object(legacy.data.clone());
    let already = previous_imports.iter().any(|e| {
        e.data["workflow"] == workflow.as_str()
            && e.data["origin"]["legacy_checksum"] == json!(legacy.checksum)
            && e.data["origin"]["imported_from"] == outcome.path.as_str()
    });
    let current = match store.load(&workflow) {
        Ok(doc) => Some(doc),
        Err(Error::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    if already || current.as_ref().is_some_and(|d| d.data == data) {
        outcome.action = "already imported".into();
        outcome.generation = current.map(|d| d.generation);
        return Ok(outcome);
    }
    if let Some(doc) = current {
        let why = format!(
            "workflow {workflow:?} already has state (generation {}) that differs from {}; not overwritten",
            doc.generation, outcome.path
        );
        report.conflicts.push(why.clone());
        outcome.action = format!("conflict: {why}");
        return Ok(outcome);
    }
    outcome.action = verb(options).into();
    if !options.dry_run {
        let origin = json!({
            "imported_from": outcome.path,
            "legacy_version": legacy.version,
            "legacy_checksum": legacy.checksum,
            "legacy_updated_at": legacy.updated_at,
            "legacy_valid": valid,
        });
        // Expect no state: a concurrent writer since the check is a conflict.
        let doc = store.save_with_origin(&workflow, data, origin, "state_import", Some(0))?;
        outcome.generation = Some(doc.generation);
    }
    Ok(outcome)
}

fn import_checkpoints(
    store: &Store,
    paths: &[std::path::PathBuf],
    options: ImportOptions,
    progress: Option<&ProgressHook>,
    report: &mut ImportReport,
) -> Result<()> {
    let mut by_workflow: BTreeMap<String, Vec<LegacyCheckpoint>> = BTreeMap::new();
    for (read, path) in paths.iter().enumerate() {
        report_progress(progress, "reading checkpoints", read, paths.len());
        match legacy::read_checkpoint(path)? {
            Ok(cp) if validate_name(&cp.workflow_id).is_ok() => by_workflow
                .entry(cp.workflow_id.clone())
                .or_default()
                .push(cp),
            Ok(cp) => report.invalid.push(InvalidFile {
                path: path.display().to_string(),
                reason: format!(
                    "workflow_id {:?} is not a valid workflow name",
                    cp.workflow_id
                ),
            }),
            Err(reason) => report.invalid.push(InvalidFile {
                path: path.display().to_string(),
                reason: format!("{reason} (not importable even with --accept-invalid)"),
            }),
        }
    }
    let checkpoints = store.checkpoints()?;
    for (workflow, mut legacy) in by_workflow {
        // Legacy ids already imported into this workflow, and their new ids.
        let mut mapped: HashMap<String, String> = HashMap::new();
        let existing = checkpoints.list(&ListQuery {
            workflow: Some(workflow.clone()),
            limit: usize::MAX,
            ..ListQuery::default()
        })?;
        for entry in existing {
            // Every existing checkpoint must be readable: one that is not
            // might be an earlier import of one of these files, and
            // importing it again would duplicate it.
            let cp = checkpoints.get(&entry.id).map_err(|e| Error::Integrity {
                path: std::path::PathBuf::from(format!("checkpoint {}", entry.id)),
                problem: format!(
                    "cannot tell whether it was already imported ({e}); \
                         run `wfstate health --repair` to quarantine it, then import again"
                ),
            })?;
            if let Some(old) = cp
                .origin
                .as_ref()
                .and_then(|o| o["legacy_checkpoint_id"].as_str())
            {
                mapped.insert(old.to_string(), cp.id.clone());
            }
        }
        // Oldest first, and every parent before its children, so the new
        // (time-ordered) ids keep the lineage's order.
        legacy.sort_by(|a, b| (&a.timestamp, &a.id).cmp(&(&b.timestamp, &b.id)));
        let by_id: HashMap<String, LegacyCheckpoint> =
            legacy.iter().map(|c| (c.id.clone(), c.clone())).collect();
        let mut visiting = HashSet::new();
        for (imported, cp) in legacy.iter().enumerate() {
            report_progress(
                progress,
                &format!("importing the checkpoints of {workflow}"),
                imported,
                legacy.len(),
            );
            ensure_imported(
                store,
                cp,
                &by_id,
                &mut mapped,
                &mut visiting,
                options,
                report,
            )?;
        }
    }
    Ok(())
}

fn ensure_imported(
    store: &Store,
    cp: &LegacyCheckpoint,
    by_id: &HashMap<String, LegacyCheckpoint>,
    mapped: &mut HashMap<String, String>,
    visiting: &mut HashSet<String>,
    options: ImportOptions,
    report: &mut ImportReport,
) -> Result<Option<String>> {
    if let Some(id) = mapped.get(&cp.id) {
        if !report.checkpoints.iter().any(|c| c.legacy_id == cp.id) {
            report.checkpoints.push(CheckpointOutcome {
                path: cp.path.display().to_string(),
                legacy_id: cp.id.clone(),
                workflow: cp.workflow_id.clone(),
                action: "already imported".into(),
                id: Some(id.clone()),
                parent: None,
            });
        }
        return Ok(Some(id.clone()));
    }
    if !visiting.insert(cp.id.clone()) {
        return Ok(None); // a cycle in hand-edited files: break it here
    }
    let parent = match cp.parent.as_ref().and_then(|p| by_id.get(p)) {
        Some(parent) => ensure_imported(store, parent, by_id, mapped, visiting, options, report)?,
        None => None,
    };
    let mut outcome = CheckpointOutcome {
        path: cp.path.display().to_string(),
        legacy_id: cp.id.clone(),
        workflow: cp.workflow_id.clone(),
        action: verb(options).into(),
        id: None,
        parent: parent.clone(),
    };
    if !options.dry_run {
        let new = NewCheckpoint {
            workflow: cp.workflow_id.clone(),
            phase: cp.phase_id.clone(),
            item: cp.item_id.clone(),
            message: cp.message.clone(),
            context_summary: cp.context_summary.clone(),
            key_decisions: cp.key_decisions.clone(),
            files: Vec::new(),
            parent: match &parent {
                Some(id) => ParentChoice::Id(id.clone()),
                None => ParentChoice::Root,
            },
            origin: Some(json!({
                "imported_from": cp.path.display().to_string(),
                "legacy_checkpoint_id": cp.id,
                "legacy_timestamp": cp.timestamp,
                "legacy_parent_checkpoint_id": cp.parent,
                "legacy_file_manifest": cp.file_manifest,
            })),
            ..NewCheckpoint::default()
        };
        // Legacy snapshots have no generation; 0 says "unknown".
        let snapshot = cp.snapshot.clone().map(|data| StateSnapshot {
            generation: 0,
            data,
        });
        let created = store.checkpoints()?.create(new, snapshot)?;
        outcome.id = Some(created.id.clone());
        mapped.insert(cp.id.clone(), created.id.clone());
    } else {
        mapped.insert(cp.id.clone(), format!("(new id for {})", cp.id));
    }
    report.checkpoints.push(outcome);
    Ok(mapped.get(&cp.id).cloned())
}

fn import_audit(
    store: &Store,
    path: &Path,
    options: ImportOptions,
    report: &mut ImportReport,
) -> Result<AuditOutcome> {
    let legacy = legacy::read_audit(path)?;
    let bad_line = legacy.first_bad.as_ref().map(|(line, _)| *line);
    let mut outcome = AuditOutcome {
        path: path.display().to_string(),
        entries: legacy.entries.len(),
        valid: legacy.first_bad.is_none(),
        first_bad_line: bad_line,
        reason: legacy.first_bad.as_ref().map(|(_, r)| r.clone()),
        imported: 0,
        already_imported: 0,
        skipped_invalid: 0,
    };
    if let Some((line, reason)) = &legacy.first_bad {
        report.invalid.push(InvalidFile {
            path: outcome.path.clone(),
            reason: format!("line {line}: {reason}"),
        });
    }
    let audit = store.audit()?;
    let seen: HashSet<String> = audit
        .read(Some("legacy_audit"), None)?
        .into_iter()
        .filter_map(|e| e.data["legacy"]["hash"].as_str().map(String::from))
        .collect();
    let mut batch = Vec::new();
    for (line, entry) in legacy.entries {
        let valid = bad_line.is_none_or(|bad| line < bad);
        if !valid && !options.accept_invalid {
            outcome.skipped_invalid += 1;
            continue;
        }
        if entry
            .get("hash")
            .and_then(Value::as_str)
            .is_some_and(|h| seen.contains(h))
        {
            outcome.already_imported += 1;
            continue;
        }
        batch.push((
            "legacy_audit".to_string(),
            json!({"legacy": entry, "legacy_line": line, "legacy_valid": valid, "source": outcome.path}),
        ));
    }
    outcome.imported = batch.len();
    if !options.dry_run && !batch.is_empty() {
        audit.append_batch(batch)?;
    }
    Ok(outcome)
}
