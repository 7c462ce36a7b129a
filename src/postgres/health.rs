//! `wfstate health` on a PostgreSQL store: schema version, every state and
//! checkpoint verified, dangling parents, locks, the audit chain, and the
//! server settings durability depends on.
//!
//! A transaction leaves no torn rows and no temp files, so the only repair
//! is the reversible one: rows that fail verification are moved (in one
//! transaction, with its audit entry) to `wfstate_quarantine`, never deleted.

use super::{PgBackend, SCHEMA_VERSION, TxResult};
use crate::audit::AuditTrail;
use crate::backend::Backend;
use crate::checkpoint::{Checkpoint, decode_writes};
use crate::error::Result;
use crate::health::{
    Component, HealthReport, Status, component, finish, missing_parent, pruned_checkpoints,
};
use crate::lock::{Held, NamedLocks};
use crate::state::StateDoc;
use std::collections::HashSet;

/// A row that failed verification.
struct BadRow {
    table: &'static str,
    key: String,
    reason: String,
}

pub(crate) fn run(backend: &PgBackend, repair: bool) -> Result<HealthReport> {
    let (components, bad) = gather(backend)?;
    if !repair || bad.is_empty() {
        return Ok(finish(components, Vec::new()));
    }
    let done = quarantine(backend, bad)?;
    let (components, _) = gather(backend)?;
    Ok(finish(components, done))
}

fn gather(backend: &PgBackend) -> Result<(Vec<Component>, Vec<BadRow>)> {
    let mut bad = Vec::new();
    let components = vec![
        component(
            "format",
            &[],
            format!(
                "wfstate schema version {SCHEMA_VERSION} in {}",
                backend.location()
            ),
        ),
        states(backend, &mut bad)?,
        checkpoints(backend, &mut bad)?,
        locks(&backend.locks)?,
        audit(backend)?,
        durability(backend)?,
        quarantined(backend)?,
    ];
    Ok((components, bad))
}

fn states(backend: &PgBackend, bad: &mut Vec<BadRow>) -> Result<Component> {
    let rows = backend.db.with("read states", |c| {
        Ok(c.query(
            "SELECT workflow, document FROM wfstate_states WHERE generation > 0 ORDER BY workflow",
            &[],
        )?)
    })?;
    let mut problems = Vec::new();
    for row in &rows {
        let workflow: String = row.get(0);
        let document: Option<String> = row.get(1);
        let verified = match &document {
            Some(text) => backend.decode_state(&workflow, text).map(|_: StateDoc| ()),
            None => Err(crate::Error::integrity(
                backend.db.row_path("wfstate_states", &workflow),
                "a generation without a document",
            )),
        };
        if let Err(e) = verified {
            problems.push((Status::Error, e.to_string()));
            bad.push(BadRow {
                table: "wfstate_states",
                key: workflow,
                reason: e.to_string(),
            });
        }
    }
    Ok(component(
        "states",
        &problems,
        format!("{} state(s) verified", rows.len()),
    ))
}

fn checkpoints(backend: &PgBackend, bad: &mut Vec<BadRow>) -> Result<Component> {
    let rows = backend.db.with("read checkpoints", |c| {
        Ok(c.query(
            "SELECT id, workflow, parent, document FROM wfstate_checkpoints ORDER BY id",
            &[],
        )?)
    })?;
    let ids: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    // An audit log that cannot be read is the audit component's problem;
    // here every missing parent then counts as unexplained.
    let pruned = pruned_checkpoints(&backend.audit).unwrap_or_default();
    let mut problems = Vec::new();
    for row in &rows {
        let id: String = row.get(0);
        let workflow: String = row.get(1);
        let parent: Option<String> = row.get(2);
        let document: &str = row.get(3);
        if let Err(e) = Checkpoint::decode(
            document.as_bytes(),
            &backend.db.row_path("wfstate_checkpoints", &id),
            &id,
            &workflow,
        ) {
            problems.push((Status::Error, e.to_string()));
            bad.push(BadRow {
                table: "wfstate_checkpoints",
                key: format!("{workflow}/{id}"),
                reason: e.to_string(),
            });
        }
        if let Some(parent) = parent.filter(|p| !ids.contains(p)) {
            problems.push(missing_parent(&workflow, &id, &parent, &pruned));
        }
    }
    let writes = backend.db.with("read pending writes", |c| {
        Ok(c.query(
            "SELECT workflow, checkpoint, seq::text, document FROM wfstate_checkpoint_writes",
            &[],
        )?)
    })?;
    for row in &writes {
        let (workflow, id, seq): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let path = backend.db.row_path("wfstate_checkpoint_writes", &seq);
        let document: &str = row.get(3);
        if let Err(e) = decode_writes(document.as_bytes(), &path, &workflow, &id) {
            problems.push((Status::Error, e.to_string()));
            bad.push(BadRow {
                table: "wfstate_checkpoint_writes",
                key: seq,
                reason: e.to_string(),
            });
        }
    }
    Ok(component(
        "checkpoints",
        &problems,
        format!("{} checkpoint(s) verified", rows.len()),
    ))
}

fn locks(locks: &dyn NamedLocks) -> Result<Component> {
    let statuses = locks.list()?;
    let held = statuses.iter().filter(|s| s.held != Held::Free).count();
    let mut c = component(
        "locks",
        &[],
        format!("{} lock(s), {held} held", statuses.len()),
    );
    c.details = statuses
        .iter()
        .map(|s| format!("{}: {}", s.name, s.describe()))
        .collect();
    Ok(c)
}

fn audit(backend: &PgBackend) -> Result<Component> {
    let report = backend.audit.verify()?;
    let problems: Vec<(Status, String)> = report
        .first_bad
        .iter()
        .map(|bad| {
            (
                Status::Error,
                format!("audit entry {}: {}", bad.line, bad.reason),
            )
        })
        .collect();
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

/// A commit is only as durable as the server's settings make it.
fn durability(backend: &PgBackend) -> Result<Component> {
    let settings: Vec<(String, String)> = backend.db.with("read server settings", |c| {
        Ok(c.query(
            "SELECT name, setting FROM pg_settings \
             WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes') ORDER BY name",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
    })?;
    let problems: Vec<(Status, String)> = settings
        .iter()
        .filter(|(_, value)| value == "off")
        .map(|(name, _)| {
            (
                Status::Warning,
                format!("the server runs with {name} = off: a crash can lose committed changes"),
            )
        })
        .collect();
    let mut c = component(
        "durability",
        &problems,
        "fsync, synchronous_commit and full_page_writes are on".into(),
    );
    c.details = settings.iter().map(|(n, v)| format!("{n} = {v}")).collect();
    Ok(c)
}

/// Rows moved aside by earlier repairs wait for a person, as the file
/// store's quarantine folder does.
fn quarantined(backend: &PgBackend) -> Result<Component> {
    let rows: Vec<(String, String, String)> = backend.db.with("read the quarantine", |c| {
        Ok(c.query(
            "SELECT kind, key, moved_at FROM wfstate_quarantine ORDER BY id",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
    })?;
    let problems: Vec<(Status, String)> = rows
        .iter()
        .map(|(kind, key, moved_at)| {
            (
                Status::Warning,
                format!(
                    "wfstate_quarantine holds {kind}[{key}], moved aside by a repair at {moved_at}; \
                     inspect it, then delete the row yourself"
                ),
            )
        })
        .collect();
    Ok(component("quarantine", &problems, "empty".into()))
}

/// Moves each bad row into `wfstate_quarantine`, one transaction in all,
/// recorded in the audit log.
fn quarantine(backend: &PgBackend, bad: Vec<BadRow>) -> Result<Vec<String>> {
    backend.db.transaction(
        "quarantine damaged rows",
        backend.options.lock_timeout,
        |tx| {
            let moved_at = crate::clock::now_rfc3339();
            let mut done = Vec::new();
            for row in &bad {
                let (select, delete) = match row.table {
                    "wfstate_states" => (
                        "SELECT document FROM wfstate_states WHERE workflow = $1 FOR UPDATE",
                        "DELETE FROM wfstate_states WHERE workflow = $1",
                    ),
                    "wfstate_checkpoint_writes" => (
                        "SELECT document FROM wfstate_checkpoint_writes WHERE seq = $1::text::bigint \
                         FOR UPDATE",
                        "DELETE FROM wfstate_checkpoint_writes WHERE seq = $1::text::bigint",
                    ),
                    // Keyed `workflow/id`: a copied thread shares ids.
                    _ => (
                        "SELECT document FROM wfstate_checkpoints \
                         WHERE workflow = split_part($1, '/', 1) AND id = split_part($1, '/', 2) \
                         FOR UPDATE",
                        "DELETE FROM wfstate_checkpoints \
                         WHERE workflow = split_part($1, '/', 1) AND id = split_part($1, '/', 2)",
                    ),
                };
                let Some(found) = tx.query_opt(select, &[&row.key])? else {
                    continue; // gone since the check
                };
                let document: Option<String> = found.get(0);
                tx.execute(
                    "INSERT INTO wfstate_quarantine (kind, key, document, reason, moved_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&row.table, &row.key, &document, &row.reason, &moved_at],
                )?;
                tx.execute(delete, &[&row.key])?;
                done.push(format!(
                    "moved {}[{}] to wfstate_quarantine ({})",
                    row.table, row.key, row.reason
                ));
            }
            if !done.is_empty() {
                backend.audit.append_one_in(
                    tx,
                    "repair",
                    serde_json::json!({ "actions": done }),
                )?;
            }
            TxResult::Ok(done)
        },
    )
}
