//! `wfstate audit ...` and `wfstate health`: argument handling and output;
//! the work is in `wfstate::audit` and `wfstate::health`.

use crate::Outcome;
use clap::Subcommand;
use wfstate::Store;

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Entries, oldest first
    Log {
        /// Only the newest N
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Only entries of this event (e.g. state_update, checkpoint_create)
        #[arg(long, value_name = "E")]
        event: Option<String>,
    },
    /// Check the whole chain: exit 0 if valid, 3 naming the first bad line
    Verify,
}

pub(crate) fn run(store: &Store, command: AuditCommand) -> wfstate::Result<Outcome> {
    let audit = store.audit()?;
    match command {
        AuditCommand::Log { limit, event } => {
            let entries = audit.read(event.as_deref(), limit)?;
            let text = entries
                .iter()
                .map(|e| format!("{:>6}  {}  {:<18} {}", e.seq, e.time, e.event, e.data))
                .collect::<Vec<_>>()
                .join("\n");
            Ok(Outcome::ok(
                serde_json::to_value(&entries).expect("serializes"),
                text,
            ))
        }
        AuditCommand::Verify => {
            let report = audit.verify()?;
            let mode = if report.keyed {
                "HMAC-SHA256 (keyed)"
            } else {
                "SHA-256 (unkeyed)"
            };
            let json = serde_json::to_value(&report).expect("serializes");
            match &report.first_bad {
                None => Ok(Outcome::ok(
                    json,
                    format!(
                        "audit log valid: {} entries, {mode} chain intact",
                        report.entries
                    ),
                )),
                Some(bad) => {
                    say!(
                        "wfstate: audit log {} is not valid: line {}: {}",
                        audit.location(),
                        bad.line,
                        bad.reason
                    );
                    let mut outcome = Outcome::ok(
                        json,
                        format!("audit log INVALID at line {}: {}", bad.line, bad.reason),
                    );
                    outcome.code = 3;
                    Ok(outcome)
                }
            }
        }
    }
}

pub(crate) fn health_outcome(report: &wfstate::health::HealthReport) -> Outcome {
    let mut lines = Vec::new();
    for c in &report.components {
        let status = serde_json::to_value(c.status).expect("serializes");
        lines.push(format!(
            "{:<8} {:<12} {}",
            status.as_str().unwrap_or("?"),
            c.name,
            c.message
        ));
        for d in c
            .details
            .iter()
            .filter(|_| c.status != wfstate::health::Status::Ok || c.name == "locks")
        {
            lines.push(format!("           - {d}"));
        }
    }
    for r in &report.repairs {
        lines.push(format!("repaired: {r}"));
    }
    let overall = serde_json::to_value(report.status).expect("serializes");
    lines.push(format!("overall: {}", overall.as_str().unwrap_or("?")));
    let mut outcome = Outcome::ok(
        serde_json::to_value(report).expect("serializes"),
        lines.join("\n"),
    );
    outcome.code = report.exit_code();
    outcome
}
