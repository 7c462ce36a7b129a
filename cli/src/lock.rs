//! `wfstate lock ...`: argument handling and output; the work is in
//! `wfstate::lock`.

use crate::{Outcome, Output, Text, open_store, seconds};
use clap::Subcommand;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use wfstate::LockMode;
use wfstate::lock::{LockRequest, Notice, Recording, WaitNotice};

#[derive(Subcommand)]
pub(crate) enum LockCommand {
    /// Run CMD while holding the lock NAME; exit with CMD's exit code
    ///
    /// CMD inherits the lock (as with flock(1)): if wfstate itself is killed
    /// while CMD runs, the lock stays held until CMD exits, so CMD never runs
    /// unprotected. A daemon that CMD forks keeps the lock too; use
    /// --no-inherit to keep the lock to wfstate alone. Prints nothing on
    /// stdout (stdout belongs to CMD). If CMD cannot be started: exit 127
    /// (not found) or 126; if it dies of a signal: 128 + the signal number.
    ///
    /// On a PostgreSQL store the lock lives in wfstate's own database
    /// session, so it cannot be inherited: it ends when wfstate ends. If the
    /// session is lost while CMD runs (server restart, pg_terminate_backend),
    /// wfstate says so and exits 1 even if CMD succeeded.
    #[command(verbatim_doc_comment)]
    Run {
        name: String,
        /// Take the lock shared (any number of shared holders at once)
        #[arg(long)]
        shared: bool,
        /// Give up after SECS seconds (exit 5, CMD not run); default: wait as long as the holder lives
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Recorded as the holder's purpose (default: the command line)
        #[arg(long, value_name = "TEXT")]
        purpose: Option<String>,
        /// Do not let CMD (and what it forks) inherit the lock
        #[arg(long)]
        no_inherit: bool,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Show every lock (or NAME): free or held, how, and by whom
    Status { name: Option<String> },
}

pub(crate) fn run(path: &Path, command: LockCommand) -> wfstate::Result<Outcome> {
    let store = open_store(path, None)?;
    let locks = store.locks()?;
    match command {
        LockCommand::Status { name } => {
            let statuses = match &name {
                Some(name) => vec![locks.status(name)?],
                None => locks.list()?,
            };
            let text = statuses
                .iter()
                .map(|s| match s.waiters.filter(|w| *w > 0) {
                    Some(w) => format!("{}\t{} ({w} waiting)", s.name, s.describe()),
                    None => format!("{}\t{}", s.name, s.describe()),
                })
                .collect::<Vec<_>>()
                .join("\n");
            let json = match name {
                Some(_) => serde_json::to_value(&statuses[0]),
                None => serde_json::to_value(&statuses),
            }
            .expect("statuses serialize");
            Ok(Outcome::ok(json, text))
        }
        LockCommand::Run {
            name,
            shared,
            timeout,
            purpose,
            no_inherit,
            command,
        } => {
            let purpose = purpose.unwrap_or_else(|| {
                command
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            let notify = |notice: &WaitNotice| say!("wfstate: {}", notice.describe());
            let guard = locks.acquire(
                &name,
                LockRequest {
                    mode: if shared {
                        LockMode::Shared
                    } else {
                        LockMode::Exclusive
                    },
                    timeout: timeout.map(seconds).transpose()?,
                    purpose: Some(&purpose),
                    recording: Recording::Durable,
                    notice: Some(Notice {
                        after: Duration::ZERO,
                        notify: &notify,
                    }),
                },
            )?;
            if !no_inherit {
                // A database lock cannot be handed to CMD: it ends with
                // this process either way (see `lock run --help`).
                guard.share_with_children()?;
            }
            let status = std::process::Command::new(&command[0])
                .args(&command[1..])
                .status();
            // A database lock can be lost while CMD runs (its session was
            // terminated); then CMD did not run under the lock, and a zero
            // exit must not claim it did.
            let lost = guard.still_held().err();
            drop(guard);
            if let Some(lost) = &lost {
                say!("wfstate: error: {lost}");
            }
            let code = match status {
                Ok(status) if status.success() && lost.is_some() => 1,
                Ok(status) => exit_status_code(status),
                Err(e) => {
                    say!(
                        "wfstate: error: cannot run {:?}: {e}",
                        command[0].to_string_lossy()
                    );
                    if e.kind() == std::io::ErrorKind::NotFound {
                        127
                    } else {
                        126
                    }
                }
            };
            Ok(Outcome {
                output: Output {
                    json: Value::Null,
                    text: Text::Plain(String::new()),
                },
                code,
            })
        }
    }
}

/// CMD's exit code, or 128 + signal number as shells report a signal death.
fn exit_status_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => (128 + signal) as u8,
        (None, None) => 1,
    }
}
