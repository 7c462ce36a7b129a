//! The `wfstate` command: argument parsing and output only; everything it
//! does is a library call.

/// `eprintln!` for text that may hold what someone else stored (a name, a
/// message, a holder's purpose, a path): shown through
/// [`terminal::for_terminal`].
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("{}", $crate::terminal::for_terminal(&format!($($arg)*)))
    };
}

mod checkpoint_cli;
mod demo;
mod terminal;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{Value, json};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use wfstate::audit::AuditLog;
use wfstate::import::{ImportOptions, ImportReport, import_legacy};
use wfstate::lock::{LockRequest, Notice, Recording, WaitNotice};
use wfstate::pointer::{self, Edit};
use wfstate::store::{self, DEFAULT_MAX_STATE_BYTES};
use wfstate::{
    Error, InitOutcome, LockMode, STORE_DIR_NAME, SavedVersion, Size, StateDoc, Store, StoreOptions,
};

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  not found, or another failure (I/O, database, lock misuse, size limit)
  2  usage error, invalid name or invalid input
  3  integrity error: corrupt, truncated or unsupported data (left untouched)
  4  conflict: the generation moved (--expect-generation)
  5  timed out waiting for a lock";

#[derive(Parser)]
#[command(name = "wfstate", version, about = "Durable, verifiable state for long-running workflows", after_help = AFTER_HELP)]
struct Cli {
    /// The store folder itself (default: nearest .wfstate/ up from the current
    /// directory), or a PostgreSQL URL: postgres://user:password@host:port/db
    #[arg(
        long,
        global = true,
        env = "WFSTATE_STORE",
        hide_env_values = true,
        value_name = "DIR|URL"
    )]
    store: Option<PathBuf>,
    /// Print exactly one JSON value on stdout
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a store (./.wfstate, or the folder --store names)
    Init,
    /// Read and write workflow state
    #[command(subcommand)]
    State(StateCommand),
    /// Snapshots of a workflow with lineage: create, list, show, chain, diff, restore, prune
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// A prompt for a person or an LLM taking a workflow over from its latest checkpoint
    Resume {
        /// Default: the workflow with the newest checkpoint
        workflow: Option<String>,
        /// Resume from this checkpoint instead of the latest
        #[arg(long, value_name = "ID")]
        from: Option<String>,
    },
    /// Named shared/exclusive locks that cannot go stale
    #[command(subcommand)]
    Lock(LockCommand),
    /// The tamper-evident log of every change (keyed with WFSTATE_AUDIT_KEY_FILE)
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Verify the whole store; --repair makes safe, reversible repairs
    ///
    /// Checks the format marker, every state, every checkpoint (and lineage,
    /// and index agreement), locks, the audit chain, leftover temp files and
    /// the quarantine. Exit 0 ok, 1 warnings, 3 errors. --repair moves damaged
    /// files into .wfstate/quarantine/<time>/ (never deletes), rebuilds
    /// indexes, moves torn audit lines aside, lists each repair, and records
    /// it in the audit log; a second run finds nothing to repair.
    #[command(verbatim_doc_comment)]
    Health {
        #[arg(long)]
        repair: bool,
    },
    /// Import a seed-system (V3) project: state, checkpoints with lineage, audit log
    ///
    /// Verifies every file with the seed system's own checksums and hash chain
    /// first and reports each invalid file with the reason. Exit 3 if invalid
    /// files were found and skipped, 4 if existing state blocked an import,
    /// else 0. Running it again adds nothing.
    #[command(name = "import-legacy", verbatim_doc_comment)]
    ImportLegacy {
        dir: PathBuf,
        /// Report what would be imported; write nothing
        #[arg(long)]
        dry_run: bool,
        /// Also import data that fails verification, marked legacy_valid: false
        #[arg(long)]
        accept_invalid: bool,
    },
    /// A short tour in a temporary store
    Demo,
}

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
    Show { id: String },
    /// Lineage of a checkpoint, newest first
    Chain {
        id: String,
        #[arg(long, value_name = "N", default_value_t = 1000)]
        max_depth: usize,
    },
    /// What changed from ID_A to ID_B (state as a JSON Patch with --json)
    Diff { id_a: String, id_b: String },
    /// Make a checkpoint's state the workflow's current state (a new generation)
    Restore {
        id: String,
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

#[derive(Subcommand)]
enum AuditCommand {
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

#[derive(Subcommand)]
enum LockCommand {
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

#[derive(Subcommand)]
enum StateCommand {
    /// List workflows with their generation (exit 3 if any state is corrupt)
    List,
    /// Print a workflow's state data
    Get {
        workflow: String,
        /// Print only the value at this JSON pointer (RFC 6901)
        #[arg(long, value_name = "/json/pointer")]
        pointer: Option<String>,
    },
    /// Replace a workflow's state with a JSON document
    #[command(group = clap::ArgGroup::new("source").required(true))]
    Set {
        workflow: String,
        /// Read the document from this file
        #[arg(long, group = "source", value_name = "F")]
        file: Option<PathBuf>,
        /// `-`: read the document from stdin
        #[arg(group = "source", value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
        stdin: Option<String>,
        /// Save only if the current generation is N (0: only if no state exists)
        #[arg(long, value_name = "N")]
        expect_generation: Option<u64>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Edit a workflow's state in one locked read-modify-write
    #[command(group = clap::ArgGroup::new("edits").required(true).multiple(true))]
    Update {
        workflow: String,
        /// Put a JSON value at a pointer, e.g. --set '/phase="test"' (repeatable)
        #[arg(long = "set", value_name = "/pointer=JSON", group = "edits")]
        sets: Vec<String>,
        /// Add N (default 1) to the integer at a pointer (repeatable)
        #[arg(long = "incr", value_name = "/pointer[=N]", group = "edits")]
        incrs: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Verify a workflow's state (format, checksum, name)
    Verify { workflow: String },
}

#[derive(Args)]
pub(crate) struct WaitArgs {
    /// Seconds to wait for the workflow's lock
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    timeout: f64,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let json = cli.json;
    match run(cli, json, &matches) {
        Ok(outcome) => {
            print_output(&outcome.output, json);
            ExitCode::from(outcome.code)
        }
        Err(err) => {
            let code = exit_code(&err);
            say!("wfstate: error: {err}");
            if json {
                let kind = error_kind(&err);
                println!(
                    "{}",
                    json!({"error": {"kind": kind, "message": err.to_string(), "exit_code": code}})
                );
            }
            ExitCode::from(code)
        }
    }
}

/// What a command produced: a JSON value, and text for humans.
pub(crate) struct Output {
    json: Value,
    text: Text,
}

/// The human-readable form of an output.
pub(crate) enum Text {
    Plain(String),
    /// A document, streamed to stdout as pretty JSON (no copy as a string).
    Document(Value),
}

pub(crate) struct Outcome {
    output: Output,
    code: u8,
}

impl Outcome {
    fn ok(json: Value, text: String) -> Outcome {
        Outcome {
            output: Output {
                json,
                text: Text::Plain(text),
            },
            code: 0,
        }
    }
}

fn print_output(output: &Output, json: bool) {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // A closed stdout (e.g. `| head`) is not an error worth reporting.
    let _ = match (&output.text, json) {
        (_, true) if output.json.is_null() => Ok(()),
        (_, true) => writeln!(out, "{}", output.json),
        (Text::Plain(text), false) if text.is_empty() => Ok(()),
        (Text::Plain(text), false) => {
            writeln!(
                out,
                "{}",
                terminal::for_terminal(text.trim_end_matches('\n'))
            )
        }
        (Text::Document(doc), false) => {
            let mut pretty =
                serde_json::Serializer::with_formatter(&mut out, terminal::SafeJson::pretty());
            serde::Serialize::serialize(doc, &mut pretty)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        }
    };
    let _ = out.flush();
}

/// The documented exit code of each error kind.
fn exit_code(err: &Error) -> u8 {
    match err {
        Error::NotFound { .. }
        | Error::StoreNotFound(_)
        | Error::LockMisuse { .. }
        | Error::TooLarge { .. }
        | Error::Database { .. }
        | Error::Io { .. } => 1,
        Error::InvalidName { .. } | Error::InvalidInput(_) => 2,
        Error::Integrity { .. } => 3,
        Error::Conflict { .. } => 4,
        Error::LockTimeout { .. } => 5,
    }
}

fn error_kind(err: &Error) -> &'static str {
    match err {
        Error::NotFound { .. } => "not_found",
        Error::StoreNotFound(_) => "store_not_found",
        Error::LockMisuse { .. } => "lock_misuse",
        Error::TooLarge { .. } => "too_large",
        Error::Io { .. } => "io",
        Error::Database { .. } => "database",
        Error::InvalidName { .. } => "invalid_name",
        Error::InvalidInput(_) => "invalid_input",
        Error::Integrity { .. } => "integrity",
        Error::Conflict { .. } => "conflict",
        Error::LockTimeout { .. } => "lock_timeout",
    }
}

fn run(cli: Cli, json: bool, matches: &ArgMatches) -> wfstate::Result<Outcome> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("get current directory", ".", e))?;
    match cli.command {
        Command::Init => {
            let path = cli.store.unwrap_or_else(|| cwd.join(STORE_DIR_NAME));
            let (store, outcome) = Store::init(&path, StoreOptions::default())?;
            // The store's own description: for a database URL it leaves out
            // the password.
            let location = store.location();
            let created = outcome == InitOutcome::Created;
            let text = if created {
                format!("Initialized wfstate store at {location}")
            } else {
                format!("{location} is already a wfstate store (schema up to date)")
            };
            Ok(Outcome::ok(
                json!({"store": location, "created": created}),
                text,
            ))
        }
        Command::Demo => demo::run(json),
        Command::Checkpoint(command) => {
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            let store = open_store(&path, None)?;
            let outcome = checkpoint_cli::run(&store, &path, command);
            report_index_repairs(&store);
            outcome
        }
        Command::Resume { workflow, from } => {
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            let store = open_store(&path, None)?;
            let outcome = checkpoint_cli::resume(&store, &path, workflow, from);
            report_index_repairs(&store);
            outcome
        }
        Command::Audit(command) => {
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            let store = open_store(&path, None)?;
            run_audit(&store, command)
        }
        Command::Health { repair } => {
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            let store = open_store(&path, None)?;
            let report = if repair {
                wfstate::health::repair(&store)?
            } else {
                wfstate::health::check(&store)?
            };
            Ok(health_outcome(&report))
        }
        Command::ImportLegacy {
            dir,
            dry_run,
            accept_invalid,
        } => {
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            let store = open_store(&path, None)?;
            let report = import_legacy(
                &store,
                &dir,
                ImportOptions {
                    dry_run,
                    accept_invalid,
                },
            )?;
            report_index_repairs(&store);
            Ok(import_outcome(&report, accept_invalid))
        }
        Command::Lock(command) => {
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            run_lock(&path, command)
        }
        Command::State(command) => {
            let state_matches = matches
                .subcommand_matches("state")
                .expect("clap matched the state subcommand");
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            run_state(&path, command, json, state_matches)
        }
    }
}

/// Says on stderr when a checkpoint index had to be rebuilt to answer.
fn report_index_repairs(store: &Store) {
    if let Ok(checkpoints) = store.checkpoints() {
        for repair in checkpoints.take_repairs() {
            say!(
                "wfstate: checkpoint index of {}: {}; rebuilt it from {} checkpoint file(s)",
                repair.workflow,
                repair.problem,
                repair.checkpoints
            );
        }
    }
}

pub(crate) fn seconds(value: f64) -> wfstate::Result<Duration> {
    // Refuses what `Duration` cannot hold (negative, NaN, infinite, or
    // more than 2^64 seconds) instead of panicking on it.
    Duration::try_from_secs_f64(value).map_err(|_| {
        Error::InvalidInput(format!(
            "--timeout must be a non-negative number of seconds below 2^64, got {value}"
        ))
    })
}

pub(crate) fn open_store(path: &Path, wait: Option<&WaitArgs>) -> wfstate::Result<Store> {
    let mut options = StoreOptions::default();
    if let Some(wait) = wait {
        options.lock_timeout = Some(seconds(wait.timeout)?);
    }
    options.on_lock_wait = Some(Arc::new(|notice| {
        say!("wfstate: {}", notice.describe());
    }));
    if let Some(key_file) = std::env::var_os("WFSTATE_AUDIT_KEY_FILE") {
        options.audit_key = Some(AuditLog::read_key_file(Path::new(&key_file))?);
    }
    Store::open(path, options)
}

fn health_outcome(report: &wfstate::health::HealthReport) -> Outcome {
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

fn import_outcome(report: &ImportReport, accept_invalid: bool) -> Outcome {
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

fn run_audit(store: &Store, command: AuditCommand) -> wfstate::Result<Outcome> {
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

fn run_lock(path: &Path, command: LockCommand) -> wfstate::Result<Outcome> {
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

fn saved(doc: &StateDoc) -> Outcome {
    saved_version_outcome(&SavedVersion::of(doc))
}

fn saved_version_outcome(saved: &SavedVersion) -> Outcome {
    Outcome::ok(
        json!({
            "workflow": saved.workflow,
            "generation": saved.generation,
            "updated_at": saved.updated_at,
            "checksum": saved.checksum,
        }),
        format!(
            "saved {} generation {} ({})",
            saved.workflow, saved.generation, saved.checksum
        ),
    )
}

fn run_state(
    path: &Path,
    command: StateCommand,
    json: bool,
    matches: &ArgMatches,
) -> wfstate::Result<Outcome> {
    match command {
        StateCommand::List => {
            let store = open_store(path, None)?;
            let mut rows = Vec::new();
            let mut text = String::new();
            let mut corrupt = 0;
            for name in store.list_workflows()? {
                match store.load(&name) {
                    Ok(doc) => {
                        text.push_str(&format!(
                            "{name}\tgeneration {}\t{}\n",
                            doc.generation, doc.updated_at
                        ));
                        rows.push(json!({"workflow": name, "generation": doc.generation, "updated_at": doc.updated_at}));
                    }
                    Err(err) => {
                        corrupt += 1;
                        say!("wfstate: {err}");
                        text.push_str(&format!("{name}\tCORRUPT\n"));
                        rows.push(json!({"workflow": name, "error": err.to_string()}));
                    }
                }
            }
            let mut outcome = Outcome::ok(Value::Array(rows), text);
            if corrupt > 0 {
                outcome.code = 3;
            }
            Ok(outcome)
        }
        StateCommand::Get { workflow, pointer } => {
            let store = open_store(path, None)?;
            let doc = store.load(&workflow)?;
            let value = match &pointer {
                None => doc.data,
                Some(p) => pointer::get(&doc.data, p)?
                    .cloned()
                    .ok_or_else(|| Error::NotFound {
                        what: format!("pointer {p} in workflow {workflow:?}"),
                        path: None,
                    })?,
            };
            // Only the form that will be printed is built: a large state is
            // never held twice.
            let output = if json {
                let mut envelope = json!({
                    "workflow": doc.workflow,
                    "generation": doc.generation,
                    "updated_at": doc.updated_at,
                    "checksum": doc.checksum,
                });
                if let Some(origin) = doc.origin {
                    envelope["origin"] = origin;
                }
                if let Some(p) = pointer {
                    envelope["pointer"] = p.into();
                }
                envelope["data"] = value;
                Output {
                    json: envelope,
                    text: Text::Plain(String::new()),
                }
            } else {
                Output {
                    json: Value::Null,
                    text: Text::Document(value),
                }
            };
            Ok(Outcome { output, code: 0 })
        }
        StateCommand::Set {
            workflow,
            file,
            stdin: _,
            expect_generation,
            wait,
        } => {
            let store = open_store(path, Some(&wait))?;
            let (label, text) = read_document(file.as_deref())?;
            // As text: a large document is saved without being parsed into
            // a tree (`Store::save_json`).
            let saved_version = store
                .save_json(&workflow, &text, expect_generation)
                .map_err(|e| match e {
                    Error::InvalidInput(message) => Error::InvalidInput(format!(
                        "{label} {}",
                        message.trim_start_matches("the document ")
                    )),
                    other => other,
                })?;
            Ok(saved_version_outcome(&saved_version))
        }
        StateCommand::Update { workflow, wait, .. } => {
            let update_matches = matches
                .subcommand_matches("update")
                .expect("clap matched the update subcommand");
            let edits = edits_in_command_line_order(update_matches)?;
            let store = open_store(path, Some(&wait))?;
            let doc = store.update(&workflow, |data| {
                edits.iter().try_for_each(|edit| edit.apply(data))
            })?;
            Ok(saved(&doc))
        }
        StateCommand::Verify { workflow } => {
            let store = open_store(path, None)?;
            let doc = store.verify(&workflow)?;
            Ok(Outcome::ok(
                json!({"workflow": doc.workflow, "ok": true, "generation": doc.generation, "checksum": doc.checksum}),
                format!(
                    "{}: ok (generation {}, {})",
                    doc.workflow, doc.generation, doc.checksum
                ),
            ))
        }
    }
}

/// `--set` and `--incr` apply in the order they were given, so
/// `--set /n=5 --incr /n` yields 6.
fn edits_in_command_line_order(matches: &ArgMatches) -> wfstate::Result<Vec<Edit>> {
    let mut indexed: Vec<(usize, Edit)> = Vec::new();
    for (id, parse) in [
        ("sets", parse_set as fn(&str) -> wfstate::Result<Edit>),
        ("incrs", parse_incr),
    ] {
        let (Some(values), Some(indices)) =
            (matches.get_many::<String>(id), matches.indices_of(id))
        else {
            continue;
        };
        for (value, index) in values.zip(indices) {
            indexed.push((index, parse(value)?));
        }
    }
    indexed.sort_by_key(|(index, _)| *index);
    Ok(indexed.into_iter().map(|(_, edit)| edit).collect())
}

fn parse_set(arg: &str) -> wfstate::Result<Edit> {
    let (pointer, raw) = arg
        .split_once('=')
        .ok_or_else(|| Error::InvalidInput(format!("--set {arg:?}: expected /pointer=JSON")))?;
    pointer::parse(pointer)?;
    let value = serde_json::from_str(raw).map_err(|e| {
        Error::InvalidInput(format!(
            "--set {arg:?}: the value is not JSON ({e}); quote strings, e.g. --set '{pointer}=\"text\"'"
        ))
    })?;
    Ok(Edit::Set {
        pointer: pointer.to_string(),
        value,
    })
}

fn parse_incr(arg: &str) -> wfstate::Result<Edit> {
    let (pointer, by) = match arg.split_once('=') {
        Some((p, n)) => {
            let by = n.parse::<i64>().map_err(|_| {
                Error::InvalidInput(format!("--incr {arg:?}: {n:?} is not an integer"))
            })?;
            (p, by)
        }
        None => (arg, 1),
    };
    pointer::parse(pointer)?;
    Ok(Edit::Increment {
        pointer: pointer.to_string(),
        by,
    })
}

/// Reads a JSON document from `file`, or from stdin when `None`, refusing
/// more than the state size limit before parsing anything.
/// The document's text and a label naming where it came from.
fn read_document(file: Option<&Path>) -> wfstate::Result<(String, String)> {
    let limit = DEFAULT_MAX_STATE_BYTES;
    let (label, reader): (String, Box<dyn Read>) = match file {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
            // A regular file says how large it is: refuse it unread.
            let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
            if meta.is_file() && meta.len() > limit {
                return Err(Error::TooLarge {
                    what: path.display().to_string(),
                    size: Size::Exactly(meta.len()),
                    limit,
                });
            }
            (path.display().to_string(), Box::new(file))
        }
        None => {
            if std::io::stdin().is_terminal() {
                say!("wfstate: reading the JSON document from stdin (end with Ctrl-D)");
            }
            ("stdin".to_string(), Box::new(std::io::stdin()))
        }
    };
    let read = wfstate::durable::read_at_most(reader, limit, 0)
        .map_err(|e| Error::io("read", &label, e))?;
    let Some(bytes) = read else {
        // Read only until it passed the limit (stdin, a pipe, a growing file).
        return Err(Error::TooLarge {
            what: label,
            size: Size::AtLeast(limit + 1),
            limit,
        });
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok((label, text)),
        Err(e) => Err(Error::InvalidInput(format!(
            "{label} is not a JSON document: not UTF-8 (at byte {})",
            e.utf8_error().valid_up_to()
        ))),
    }
}
