//! `wfstate checkpoint ...` and `wfstate resume`: argument handling and
//! output; the work is in `wfstate::checkpoint`.

use crate::{Outcome, Output, Text, WaitArgs, open_store, seconds};
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use wfstate::checkpoint::context;
use wfstate::checkpoint::diff::diff_checkpoints;
use wfstate::checkpoint::{ListContent, ListQuery, NewCheckpoint, ParentChoice, PrunePolicy};
use wfstate::{Error, Store};

#[derive(Subcommand)]
pub(crate) enum CheckpointCommand {
    /// Snapshot the workflow's current state with context for resuming it
    Create {
        workflow: String,
        #[arg(short, long, value_name = "MSG")]
        message: Option<String>,
        /// Default: the state's "phase"
        #[arg(long, value_name = "P")]
        phase: Option<String>,
        #[arg(long, value_name = "I")]
        item: Option<String>,
        /// Default: derived from the state (phase, items completed)
        #[arg(long, value_name = "S")]
        summary: Option<String>,
        /// A key decision (repeatable)
        #[arg(short = 'd', long = "decision", value_name = "DECISION")]
        decisions: Vec<String>,
        /// Record this file's size and SHA-256 (repeatable)
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<PathBuf>,
        /// Also record modified/untracked files (git), or recently modified ones
        #[arg(long)]
        detect_files: bool,
        /// Continue from this checkpoint instead of the latest (branches the lineage)
        #[arg(long, value_name = "ID", conflicts_with = "root")]
        parent: Option<String>,
        /// Start a new lineage (no parent)
        #[arg(long)]
        root: bool,
    },
    /// Checkpoints, newest first (exit 3 if any listed one is corrupt)
    List {
        workflow: Option<String>,
        #[arg(long, value_name = "P")]
        phase: Option<String>,
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
        /// Only checkpoints older than this one (the next page)
        #[arg(long, value_name = "ID")]
        before: Option<String>,
    },
    /// One checkpoint in full, verified
    Show {
        id: String,
        /// The workflow that holds it (needed when a copied thread shares the id)
        #[arg(long, value_name = "WORKFLOW")]
        workflow: Option<String>,
    },
    /// Lineage of a checkpoint, newest first
    Chain {
        id: String,
        #[arg(long, value_name = "N", default_value_t = 1000)]
        max_depth: usize,
        /// The workflow that holds it (needed when a copied thread shares the id)
        #[arg(long, value_name = "WORKFLOW")]
        workflow: Option<String>,
    },
    /// What changed from ID_A to ID_B (state as a JSON Patch with --json)
    Diff {
        id_a: String,
        id_b: String,
        /// The workflow that holds both (needed when a copied thread shares the ids)
        #[arg(long, value_name = "WORKFLOW")]
        workflow: Option<String>,
    },
    /// Make a checkpoint's state the workflow's current state (a new generation)
    Restore {
        id: String,
        /// The workflow that holds it (needed when a copied thread shares the id)
        #[arg(long, value_name = "WORKFLOW")]
        workflow: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove old checkpoints (never a workflow's latest)
    Prune {
        workflow: Option<String>,
        /// Checkpoints created more than DAYS days ago
        #[arg(long, value_name = "DAYS")]
        older_than: Option<f64>,
        /// Keep the newest N of each workflow
        #[arg(long, value_name = "N")]
        keep_last: Option<usize>,
        /// Say what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// The folder that holds the store: file paths are recorded relative to it.
fn project_root(store_path: &Path) -> PathBuf {
    let absolute = std::fs::canonicalize(store_path).unwrap_or_else(|_| store_path.to_path_buf());
    absolute
        .parent()
        .map_or(absolute.clone(), Path::to_path_buf)
}

fn document(value: Value) -> Outcome {
    Outcome {
        output: Output {
            json: value.clone(),
            text: Text::Document(value),
        },
        code: 0,
    }
}

pub fn run(
    store: &Store,
    store_path: &Path,
    command: CheckpointCommand,
) -> wfstate::Result<Outcome> {
    let checkpoints = store.checkpoints()?;
    match command {
        CheckpointCommand::Create {
            workflow,
            message,
            phase,
            item,
            summary,
            decisions,
            files,
            detect_files,
            parent,
            root,
        } => {
            let project = project_root(store_path);
            let mut records = Vec::new();
            for path in &files {
                records.push(context::fingerprint(path, &project)?);
            }
            if detect_files {
                for relative in context::detect_files(&project) {
                    if let Ok(record) = context::fingerprint(&project.join(&relative), &project)
                        && !records.iter().any(|r| r.path == record.path)
                    {
                        records.push(record);
                    }
                }
            }
            let parent = match (parent, root) {
                (Some(id), _) => ParentChoice::Id(id),
                (None, true) => ParentChoice::Root,
                (None, false) => ParentChoice::Latest,
            };
            let cp = store.create_checkpoint(NewCheckpoint {
                workflow,
                phase,
                item,
                message,
                context_summary: summary,
                key_decisions: decisions,
                files: records,
                parent,
                origin: None,
                ..NewCheckpoint::default()
            })?;
            Ok(Outcome::ok(
                json!({"id": cp.id, "workflow": cp.workflow, "parent": cp.parent,
                       "created_at": cp.created_at, "files": cp.files.len(), "checksum": cp.checksum}),
                format!(
                    "created checkpoint {} of {} (parent {})",
                    cp.id,
                    cp.workflow,
                    cp.parent.as_deref().unwrap_or("none: a new lineage")
                ),
            ))
        }
        CheckpointCommand::List {
            workflow,
            phase,
            limit,
            before,
        } => {
            let entries = checkpoints.list(&ListQuery {
                workflow,
                phase,
                limit,
                before,
            })?;
            let mut corrupt = 0;
            let text = entries
                .iter()
                .map(|e| match &e.content {
                    ListContent::Ok { phase, message, .. } => format!(
                        "{}  {}  {}  {}  {}",
                        e.id,
                        e.created_at,
                        e.workflow,
                        phase.as_deref().unwrap_or("-"),
                        message.as_deref().unwrap_or("")
                    ),
                    ListContent::Corrupt { error } => {
                        corrupt += 1;
                        say!("wfstate: {error}");
                        format!("{}  {}  {}  CORRUPT", e.id, e.created_at, e.workflow)
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            let mut outcome =
                Outcome::ok(serde_json::to_value(&entries).expect("serializes"), text);
            if corrupt > 0 {
                outcome.code = 3;
            }
            Ok(outcome)
        }
        CheckpointCommand::Show { id, workflow } => {
            let cp = checkpoints.lookup(&id, workflow.as_deref())?;
            Ok(document(serde_json::to_value(&cp).expect("serializes")))
        }
        CheckpointCommand::Chain {
            id,
            max_depth,
            workflow,
        } => {
            let chain = match &workflow {
                None => checkpoints.chain(&id, max_depth)?,
                Some(workflow) => checkpoints.chain_in(workflow, &id, max_depth)?,
            };
            let mut text = chain
                .links
                .iter()
                .map(|l| format!("{}  {}", l.id, l.created_at))
                .collect::<Vec<_>>()
                .join("\n");
            if let Some(stop) = &chain.stopped {
                say!("wfstate: warning: {}", stop.describe());
                text.push_str(&format!("\n({})", stop.describe()));
            }
            Ok(Outcome::ok(
                serde_json::to_value(&chain).expect("serializes"),
                text,
            ))
        }
        CheckpointCommand::Diff {
            id_a,
            id_b,
            workflow,
        } => {
            let a = checkpoints.lookup(&id_a, workflow.as_deref())?;
            let b = checkpoints.lookup(&id_b, workflow.as_deref())?;
            let diff = diff_checkpoints(&a, &b);
            Ok(Outcome::ok(
                serde_json::to_value(&diff).expect("serializes"),
                diff.describe(),
            ))
        }
        CheckpointCommand::Restore { id, workflow, wait } => {
            // Reopen with the caller's lock timeout for the state write.
            let store = open_store(store_path, Some(&wait))?;
            let (cp, doc) = match &workflow {
                None => store.restore(&id)?,
                Some(workflow) => store.restore_in(workflow, &id)?,
            };
            Ok(Outcome::ok(
                json!({"workflow": doc.workflow, "restored_from": cp.id,
                       "generation": doc.generation, "checksum": doc.checksum}),
                format!(
                    "restored {} to checkpoint {}: now generation {}",
                    doc.workflow, cp.id, doc.generation
                ),
            ))
        }
        CheckpointCommand::Prune {
            workflow,
            older_than,
            keep_last,
            dry_run,
        } => {
            let older_than = older_than
                .map(|days| seconds(days * 86_400.0))
                .transpose()
                .map_err(|_| {
                    Error::InvalidInput("--older-than must be a non-negative number of days".into())
                })?;
            let pruned = checkpoints.prune(&PrunePolicy {
                workflow,
                older_than,
                keep_last,
                dry_run,
            })?;
            let (verb, total) = if dry_run {
                ("would prune", "would be pruned")
            } else {
                ("pruned", "pruned")
            };
            let mut text: Vec<String> = pruned
                .iter()
                .map(|p| format!("{verb} {} ({}, {})", p.id, p.workflow, p.created_at))
                .collect();
            text.push(format!("{} checkpoint(s) {total}", pruned.len()));
            Ok(Outcome::ok(
                json!({"dry_run": dry_run, "pruned": pruned}),
                text.join("\n"),
            ))
        }
    }
}

pub fn resume(
    store: &Store,
    store_path: &Path,
    workflow: Option<String>,
    from: Option<String>,
) -> wfstate::Result<Outcome> {
    let resume = store.resume(
        workflow.as_deref(),
        from.as_deref(),
        &project_root(store_path),
    )?;
    Ok(Outcome::ok(
        serde_json::to_value(&resume).expect("serializes"),
        resume.prompt(),
    ))
}
