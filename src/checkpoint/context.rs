//! What a successor needs to pick a workflow up: the summary derived from a
//! state, fingerprints of the files a checkpoint covers, which of them
//! changed since, and the resume prompt.

use super::{Checkpoint, FileRecord};
use crate::error::{Error, Result};
use crate::integrity::hex;
use crate::state::StateDoc;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Folders `--detect-files` never descends into.
const SKIPPED_DIRS: [&str; 11] = [
    ".git",
    ".hg",
    ".svn",
    "target",
    "node_modules",
    ".wfstate",
    "__pycache__",
    ".venv",
    "venv",
    ".orchestrator",
    ".tox",
];
/// Bounds of the fallback scan (outside a git work tree).
const SCAN_MAX_DEPTH: usize = 4;
const SCAN_MAX_FILES: usize = 50;
const SCAN_RECENT: Duration = Duration::from_secs(24 * 3600);
/// At most this many files from `git ls-files`.
const GIT_MAX_FILES: usize = 200;

/// The phase a state names (`phase` or `current_phase`, if a string).
pub fn phase_of(data: &Value) -> Option<String> {
    ["phase", "current_phase"]
        .iter()
        .find_map(|k| data.get(*k).and_then(Value::as_str))
        .map(str::to_string)
}

/// Counts items with a `status` member, and those whose status is
/// `completed` (or `done`), in `phases.*.items` and `items` (object or array),
/// the layout the seed system used.
fn count_items(data: &Value) -> (usize, usize) {
    fn tally(items: &Value, done: &mut usize, total: &mut usize) {
        let each: Box<dyn Iterator<Item = &Value>> = match items {
            Value::Object(map) => Box::new(map.values()),
            Value::Array(list) => Box::new(list.iter()),
            _ => return,
        };
        for item in each {
            if let Some(status) = item.get("status").and_then(Value::as_str) {
                *total += 1;
                if matches!(status, "completed" | "done") {
                    *done += 1;
                }
            }
        }
    }
    let (mut done, mut total) = (0, 0);
    if let Some(Value::Object(phases)) = data.get("phases") {
        for phase in phases.values() {
            if let Some(items) = phase.get("items") {
                tally(items, &mut done, &mut total);
            }
        }
    }
    if let Some(items) = data.get("items") {
        tally(items, &mut done, &mut total);
    }
    (done, total)
}

/// A one-line summary derived from the state, used when a checkpoint is
/// created without `--summary`.
pub fn summarize(state: Option<&StateDoc>, phase: Option<&str>) -> String {
    let Some(state) = state else {
        return "No state recorded for this workflow yet.".to_string();
    };
    let mut parts = Vec::new();
    if let Some(phase) = phase {
        parts.push(format!("Phase {phase}"));
    }
    let (done, total) = count_items(&state.data);
    if total > 0 {
        parts.push(format!("{done} of {total} items completed"));
    }
    parts.push(format!("state generation {}", state.generation));
    let mut summary = parts.join("; ");
    summary.push('.');
    summary
}

/// Size and SHA-256 of `path`'s content. `path` may be relative to the
/// current directory; it is recorded relative to `project_root` when inside
/// it, else absolute.
pub fn fingerprint(path: &Path, project_root: &Path) -> Result<FileRecord> {
    let absolute = std::fs::canonicalize(path).map_err(|e| Error::io("resolve", path, e))?;
    let (size, sha256) = hash_file(&absolute)?;
    let root = std::fs::canonicalize(project_root).unwrap_or_else(|_| project_root.to_path_buf());
    let recorded = absolute
        .strip_prefix(&root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| absolute.clone());
    Ok(FileRecord {
        path: recorded.to_string_lossy().into_owned(),
        size,
        sha256,
    })
}

fn hash_file(path: &Path) -> Result<(u64, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: a FIFO opens at once, and is refused below, instead of
    // waiting for a writer (it changes nothing for regular files).
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

/// Files worth recording without being told: inside a git work tree, what
/// `git ls-files -m --others --exclude-standard` reports; elsewhere, files
/// modified in the last day (bounded depth and count, skipping build and
/// tool folders). Paths are relative to `project_root`.
pub fn detect_files(project_root: &Path) -> Vec<PathBuf> {
    if let Some(files) = git_changed_files(project_root) {
        return files;
    }
    let mut found = Vec::new();
    let cutoff = SystemTime::now() - SCAN_RECENT;
    scan_recent(project_root, project_root, 0, cutoff, &mut found);
    found.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    found.truncate(SCAN_MAX_FILES);
    found.into_iter().map(|(_, p)| p).collect()
}

fn git_changed_files(root: &Path) -> Option<Vec<PathBuf>> {
    let inside = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--is-inside-work-tree"])
        .output()
        .ok()?;
    if !inside.status.success() || !inside.stdout.starts_with(b"true") {
        return None;
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-m", "--others", "--exclude-standard", "-z"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut files: Vec<PathBuf> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
        .filter(|p| {
            !p.components()
                .any(|c| SKIPPED_DIRS.iter().any(|s| c.as_os_str() == *s))
        })
        .collect();
    files.sort();
    files.dedup();
    files.truncate(GIT_MAX_FILES);
    Some(files)
}

fn scan_recent(
    root: &Path,
    dir: &Path,
    depth: usize,
    cutoff: SystemTime,
    found: &mut Vec<(SystemTime, PathBuf)>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name();
        if kind.is_dir() {
            if depth + 1 < SCAN_MAX_DEPTH && !SKIPPED_DIRS.iter().any(|s| name == *s) {
                scan_recent(root, &entry.path(), depth + 1, cutoff, found);
            }
        } else if kind.is_file()
            && let Ok(modified) = entry.metadata().and_then(|m| m.modified())
            && modified >= cutoff
            && let Ok(relative) = entry.path().strip_prefix(root)
        {
            found.push((modified, relative.to_path_buf()));
        }
    }
}

/// A recorded file compared with what is on disk now.
#[derive(Debug, Clone, Serialize)]
pub struct FileCheck {
    #[serde(flatten)]
    pub recorded: FileRecord,
    /// `unchanged`, `changed` or `missing`.
    pub now: &'static str,
}

/// Compares each file of `checkpoint` with its current content.
pub fn check_files(checkpoint: &Checkpoint, project_root: &Path) -> Vec<FileCheck> {
    checkpoint
        .files
        .iter()
        .map(|recorded| {
            let path = project_root.join(&recorded.path);
            let now = match hash_file(&path) {
                Ok((size, sha)) if size == recorded.size && sha == recorded.sha256 => "unchanged",
                Ok(_) => "changed",
                Err(_) => "missing",
            };
            FileCheck {
                recorded: recorded.clone(),
                now,
            }
        })
        .collect()
}

/// Everything the resume prompt says, as data (`resume --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Resume {
    pub workflow: String,
    pub checkpoint: String,
    pub created_at: String,
    pub parent: Option<String>,
    pub phase: Option<String>,
    pub item: Option<String>,
    pub message: Option<String>,
    pub context_summary: Option<String>,
    pub key_decisions: Vec<String>,
    pub files: Vec<FileCheck>,
    pub checkpoint_generation: Option<u64>,
    pub current_generation: Option<u64>,
    pub commands: Vec<String>,
}

impl Resume {
    pub fn new(
        checkpoint: &Checkpoint,
        current_generation: Option<u64>,
        project_root: &Path,
    ) -> Resume {
        let wf = &checkpoint.workflow;
        let id = &checkpoint.id;
        let mut commands = vec![
            format!("wfstate state get {wf}    # the current state"),
            format!("wfstate checkpoint show {id}    # this checkpoint in full"),
        ];
        let checkpoint_generation = checkpoint.state.as_ref().map(|s| s.generation);
        if checkpoint_generation.is_some() && checkpoint_generation != current_generation {
            commands.push(format!(
                "wfstate checkpoint restore {id}    # make the checkpoint's state current again"
            ));
        }
        commands.push(format!(
            "wfstate checkpoint create {wf} -m \"<what you did>\"    # record progress"
        ));
        Resume {
            workflow: wf.clone(),
            checkpoint: id.clone(),
            created_at: checkpoint.created_at.clone(),
            parent: checkpoint.parent.clone(),
            phase: checkpoint.phase.clone(),
            item: checkpoint.item.clone(),
            message: checkpoint.message.clone(),
            context_summary: checkpoint.context_summary.clone(),
            key_decisions: checkpoint.key_decisions.clone(),
            files: check_files(checkpoint, project_root),
            checkpoint_generation,
            current_generation,
            commands,
        }
    }

    /// The prompt, for a person or a language model taking the work over.
    pub fn prompt(&self) -> String {
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        let mut out = format!(
            "# Resuming workflow {} from checkpoint {}\n\n",
            self.workflow, self.checkpoint
        );
        out.push_str(&format!("Checkpoint created: {}\n", self.created_at));
        out.push_str(&format!("Phase: {}\n", or_none(&self.phase)));
        out.push_str(&format!("Item: {}\n", or_none(&self.item)));
        out.push_str(&format!("Message: {}\n", or_none(&self.message)));
        out.push_str(&format!("Summary: {}\n", or_none(&self.context_summary)));
        out.push_str("\nKey decisions:\n");
        if self.key_decisions.is_empty() {
            out.push_str("  (none recorded)\n");
        }
        for d in &self.key_decisions {
            out.push_str(&format!("  - {d}\n"));
        }
        let changed = self.files.iter().filter(|f| f.now != "unchanged").count();
        out.push_str(&format!(
            "\nFiles ({}; {changed} changed since the checkpoint, marked *; missing marked !):\n",
            self.files.len()
        ));
        if self.files.is_empty() {
            out.push_str("  (none recorded)\n");
        }
        for f in &self.files {
            let mark = match f.now {
                "changed" => "*",
                "missing" => "!",
                _ => " ",
            };
            out.push_str(&format!("  {mark} {}\n", f.recorded.path));
        }
        out.push_str(&format!(
            "\nState: {}\n",
            match (self.checkpoint_generation, self.current_generation) {
                (Some(c), Some(n)) if c == n =>
                    format!("unchanged since the checkpoint (generation {c})"),
                (Some(c), Some(n)) => format!(
                    "the checkpoint holds generation {c}; the workflow is now at generation {n}"
                ),
                (Some(c), None) =>
                    format!("the checkpoint holds generation {c}; the workflow has no state now"),
                (None, Some(n)) =>
                    format!("the checkpoint holds no state; the workflow is now at generation {n}"),
                (None, None) => "no state, then or now".to_string(),
            }
        ));
        out.push_str("\nTo continue:\n");
        for c in &self.commands {
            out.push_str(&format!("  {c}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_counts_completed_items_like_the_seed_system() {
        let state = StateDoc::seal(
            "wf",
            7,
            "2026-01-01T00:00:00Z".into(),
            None,
            json!({"phase": "REVIEW", "phases": {"PLAN": {"items": {
                "a": {"status": "completed"}, "b": {"status": "pending"}}},
                "BUILD": {"items": {"c": {"status": "completed"}}}}}),
        );
        let phase = phase_of(&state.data);
        assert_eq!(phase.as_deref(), Some("REVIEW"));
        assert_eq!(
            summarize(Some(&state), phase.as_deref()),
            "Phase REVIEW; 2 of 3 items completed; state generation 7."
        );
        assert_eq!(
            summarize(None, None),
            "No state recorded for this workflow yet."
        );
    }

    #[test]
    fn fingerprints_are_relative_to_the_project_and_changes_are_seen() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("notes.txt");
        std::fs::write(&file, b"v1").unwrap();
        let rec = fingerprint(&file, root.path()).unwrap();
        assert_eq!(rec.path, "notes.txt");
        assert_eq!(rec.size, 2);
        assert_eq!(rec.sha256, hex(&Sha256::digest(b"v1")));
        assert!(
            fingerprint(root.path(), root.path()).is_err(),
            "a folder is refused"
        );
    }
}
