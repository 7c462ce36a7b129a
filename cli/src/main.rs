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

mod audit;
mod checkpoint;
mod demo;
mod import;
mod lock;
mod progress;
mod state;
mod terminal;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use wfstate::import::{ImportOptions, import_legacy_reporting};
use wfstate::store;
use wfstate::{Error, InitOutcome, STORE_DIR_NAME, Store, StoreOptions};

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
    State(state::StateCommand),
    /// Snapshots of a workflow with lineage: create, list, show, chain, diff, restore, prune
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
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
    Lock(lock::LockCommand),
    /// The tamper-evident log of every change (keyed with WFSTATE_AUDIT_KEY_FILE)
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Verify the whole store; --repair makes safe, reversible repairs
    ///
    /// Checks the format marker, every state, every checkpoint (and lineage,
    /// and index agreement), locks, the audit chain, leftover temp files and
    /// the quarantine. --repair moves damaged files into
    /// .wfstate/quarantine/<time>/ (never deletes), rebuilds indexes, moves
    /// torn audit lines aside, lists each repair, and records it in the
    /// audit log; a second run finds nothing to repair.
    ///
    /// Exit 3, error: damage a person must look at, such as a state, a
    ///   checkpoint or an audit entry that does not verify.
    /// Exit 1, warning: what a crash or a hand edit leaves, which readers
    ///   work around and --repair fixes or records, such as a missing index,
    ///   a torn audit line, an old temp file, a checkpoint whose parent
    ///   vanished without a prune.
    /// Exit 0, ok: nothing needs anyone. Facts of normal use (a lineage
    ///   that a prune cut, locks held) are listed in --json details.
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
    JSON_OUTPUT.store(json, std::sync::atomic::Ordering::Relaxed);
    let result = run(cli, json, &matches);
    progress::finish();
    match result {
        Ok(mut outcome) => {
            let warnings = std::mem::take(&mut *reported_warnings());
            if let (false, Value::Object(fields)) = (warnings.is_empty(), &mut outcome.output.json)
            {
                fields.insert("warnings".into(), json!(warnings));
            }
            print_output(&outcome.output, json);
            ExitCode::from(outcome.code)
        }
        Err(err) => {
            let code = err.exit_code();
            say!("wfstate: error: {err}");
            if json {
                let kind = err.kind();
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
            let outcome = checkpoint::run(&store, &path, command);
            report_index_repairs(&store);
            outcome
        }
        Command::Resume { workflow, from } => {
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            let store = open_store(&path, None)?;
            let outcome = checkpoint::resume(&store, &path, workflow, from);
            report_index_repairs(&store);
            outcome
        }
        Command::Audit(command) => {
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            let store = open_store(&path, None)?;
            audit::run(&store, command)
        }
        Command::Health { repair } => {
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            let store = open_store(&path, None)?;
            let report = if repair {
                store.repair()?
            } else {
                store.health()?
            };
            Ok(audit::health_outcome(&report))
        }
        Command::ImportLegacy {
            dir,
            dry_run,
            accept_invalid,
        } => {
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            let store = open_store(&path, None)?;
            let report = import_legacy_reporting(
                &store,
                &dir,
                ImportOptions {
                    dry_run,
                    accept_invalid,
                },
                progress::hook(json).as_ref(),
            )?;
            report_index_repairs(&store);
            Ok(import::outcome(&report, accept_invalid))
        }
        Command::Lock(command) => {
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            lock::run(&path, command)
        }
        Command::State(command) => {
            let state_matches = matches
                .subcommand_matches("state")
                .expect("clap matched the state subcommand");
            let path = store::locate(cli.store.as_deref(), &cwd)?;
            state::run(&path, command, json, state_matches)
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

/// Whether `--json` was given: progress is then never drawn.
static JSON_OUTPUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Warnings reported while the command ran (see `open_store`).
fn reported_warnings() -> std::sync::MutexGuard<'static, Vec<String>> {
    static WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    WARNINGS.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn open_store(path: &Path, wait: Option<&WaitArgs>) -> wfstate::Result<Store> {
    let mut options = StoreOptions::default();
    if let Some(wait) = wait {
        options.lock_timeout = Some(seconds(wait.timeout)?);
    }
    options.on_lock_wait = Some(Arc::new(|notice| {
        say!("wfstate: {}", notice.describe());
    }));
    // A change that was made is reported as made (exit 0); what failed
    // after it goes to stderr now and into the `--json` output.
    options.on_warning = Some(Arc::new(|warning| {
        say!("wfstate: warning: {warning}");
        reported_warnings().push(warning.to_string());
    }));
    options.on_progress = progress::hook(JSON_OUTPUT.load(std::sync::atomic::Ordering::Relaxed));
    if let Some(key_file) = std::env::var_os("WFSTATE_AUDIT_KEY_FILE") {
        options.audit_key = Some(wfstate::audit::read_key_file(Path::new(&key_file))?);
    }
    Store::open(path, options)
}
