//! What `wfstate health` reports, for every backend: a status per
//! component of the store and what a repair did. How each backend checks
//! and repairs itself is its own (`file_store::health`,
//! `postgres::health`).

use crate::audit::AuditTrail;
use crate::error::Result;
use serde::Serialize;
use std::collections::HashSet;

/// The audit event of a repair.
pub const REPAIR_EVENT: &str = "repair";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub name: &'static str,
    pub status: Status,
    pub message: String,
    pub details: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub status: Status,
    pub components: Vec<Component>,
    /// What `--repair` did (empty without it, or when nothing needed doing).
    pub repairs: Vec<String>,
}

impl HealthReport {
    /// 0 ok, 1 warnings, 3 errors.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Error => 3,
        }
    }
}

/// A component whose status is the worst of its `problems` (each with a
/// message); `ok_message` when there are none.
pub(crate) fn component(
    name: &'static str,
    problems: &[(Status, String)],
    ok_message: String,
) -> Component {
    let status = problems.iter().map(|(s, _)| *s).max().unwrap_or(Status::Ok);
    let message = match status {
        Status::Ok => ok_message,
        _ => format!(
            "{} problem(s): {}",
            problems.iter().filter(|(s, _)| *s != Status::Ok).count(),
            problems
                .first()
                .map(|(_, m)| m.as_str())
                .unwrap_or_default()
        ),
    };
    Component {
        name,
        status,
        message,
        details: problems.iter().map(|(_, m)| m.clone()).collect(),
    }
}

/// The report of `components`, whose status is the worst of theirs.
pub(crate) fn finish(components: Vec<Component>, repairs: Vec<String>) -> HealthReport {
    HealthReport {
        status: components
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok),
        components,
        repairs,
    }
}

/// The ids of every checkpoint a prune or a removal took, from the audit
/// log. A checkpoint whose parent is among them starts its lineage where an
/// audited removal cut it: information, not a warning.
pub(crate) fn pruned_checkpoints(audit: &dyn AuditTrail) -> Result<HashSet<String>> {
    let mut ids = HashSet::new();
    for event in ["checkpoint_prune", "checkpoint_remove"] {
        ids.extend(
            audit
                .read(Some(event), None)?
                .iter()
                .filter_map(|entry| entry.data["ids"].as_array())
                .flatten()
                .filter_map(|id| id.as_str().map(str::to_owned)),
        );
    }
    Ok(ids)
}

/// How health reports checkpoint `id` of `workflow` whose parent `parent`
/// does not exist: pruned (by the audit log), a fact; otherwise a warning,
/// since nothing wfstate does removes a checkpoint without saying so.
pub(crate) fn missing_parent(
    workflow: &str,
    id: &str,
    parent: &str,
    pruned: &HashSet<String>,
) -> (Status, String) {
    if pruned.contains(parent) {
        (
            Status::Ok,
            format!(
                "{workflow}: checkpoint {id} starts its lineage: its parent {parent} was pruned"
            ),
        )
    } else {
        (
            Status::Warning,
            format!(
                "{workflow}: checkpoint {id} names parent {parent}, which does not exist and was not pruned: its lineage is truncated"
            ),
        )
    }
}
