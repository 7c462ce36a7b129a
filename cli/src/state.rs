//! `wfstate state ...`: argument handling and output; the work is in
//! `wfstate::Store`.

use crate::{Outcome, Output, Text, WaitArgs, open_store};
use clap::{ArgMatches, Subcommand};
use serde_json::{Value, json};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use wfstate::pointer::{self, Edit};
use wfstate::store::DEFAULT_MAX_STATE_BYTES;
use wfstate::{Error, SavedVersion, Size, StateDoc};

#[derive(Subcommand)]
pub(crate) enum StateCommand {
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

pub(crate) fn run(
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
