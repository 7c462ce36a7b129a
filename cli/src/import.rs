//! `wfstate import-legacy`: output of the import's report; the work is in
//! `wfstate::import`.

use crate::Outcome;
use wfstate::import::ImportReport;

pub(crate) fn outcome(report: &ImportReport, accept_invalid: bool) -> Outcome {
    let mut lines = vec![format!(
        "{} {}",
        if report.dry_run {
            "dry run: nothing written for"
        } else {
            "imported from"
        },
        report.source
    )];
    if let Some(state) = &report.state {
        lines.push(format!(
            "state {} (workflow {}): {}",
            state.path,
            state.workflow.as_deref().unwrap_or("?"),
            state.action
        ));
    }
    for cp in &report.checkpoints {
        lines.push(format!(
            "checkpoint {} -> {}: {}",
            cp.legacy_id,
            cp.id.as_deref().unwrap_or("-"),
            cp.action
        ));
    }
    if let Some(audit) = &report.audit {
        lines.push(format!(
            "audit {}: {} entries, {}; {} imported, {} already imported, {} skipped as invalid",
            audit.path,
            audit.entries,
            match audit.first_bad_line {
                None => "chain valid".to_string(),
                Some(line) => format!("chain broken at line {line}"),
            },
            audit.imported,
            audit.already_imported,
            audit.skipped_invalid
        ));
    }
    for invalid in &report.invalid {
        say!(
            "wfstate: invalid legacy file {}: {}",
            invalid.path,
            invalid.reason
        );
    }
    for conflict in &report.conflicts {
        say!("wfstate: conflict: {conflict}");
    }
    let mut outcome = Outcome::ok(
        serde_json::to_value(report).expect("serializes"),
        lines.join("\n"),
    );
    outcome.code = if !report.conflicts.is_empty() {
        4
    } else if !report.invalid.is_empty() && !accept_invalid {
        3
    } else {
        0
    };
    outcome
}
