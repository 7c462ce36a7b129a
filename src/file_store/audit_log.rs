//! The file store's audit log, `audit.jsonl`: how entries of the chain
//! (see [`crate::audit`]) are appended durably by any number of processes,
//! carried by the logs of the changes they record, and recovered after a
//! crash or a power cut (DESIGN §6).
//!
//! Appends take the audit lock and read the tail under it, so any number of
//! processes keep one chain; each append is fsynced before it returns.

use crate::audit::{
    AuditEntry, AuditTrail, GENESIS_HASH, VerifyReport, chain_entries, redact,
    verify_reader_reporting,
};
use crate::backend::{Progress, ProgressHook};
use crate::durable::{self, FileId};
use crate::error::{Error, Result};
use crate::lock::{LockGuard, LockManager};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

mod pipeline;

/// The log of one store.
#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    locks: LockManager,
    key: Option<Vec<u8>>,
    lock_timeout: Option<Duration>,
    /// Where the state logs that carry entries of state changes live (see
    /// "Entries carried by state logs" below); `None`: every append is
    /// synced on its own.
    state_dir: Option<PathBuf>,
    /// Where the checkpoint journals that carry entries live.
    checkpoint_root: Option<PathBuf>,
    /// Descriptors kept from one append to the next (shared by clones).
    kept: Arc<Mutex<KeptFiles>>,
    /// Told how far `verify` has come.
    on_progress: Option<ProgressHook>,
}

/// What an appender keeps open between appends, so that the next one,
/// under the audit lock, need not reopen and reread: each with the identity
/// of the file its name referred to, checked before use. Only used under
/// the audit lock, when nobody else changes these files.
#[derive(Default)]
struct KeptFiles {
    log: Option<KeptLog>,
    pointer: Option<(File, FileId)>,
    /// The pointer was checked in this hold of the audit lock (by the read
    /// that precedes every write), so the write need not check it again.
    pointer_checked: bool,
    /// The in-flight table of pipelined commits (`pipeline`).
    table: Option<crate::file_store::in_flight::Table>,
    /// The `seq`, hash and line of the last entry this process put in
    /// flight, which the next settle copies without reading it back.
    last_in_flight: Option<(u64, String, String)>,
}

/// The log as this process last saw or left it. The log only grows (or is
/// replaced, which changes its identity), so the same file at the same
/// length still ends with the same entry.
struct KeptLog {
    file: File,
    id: FileId,
    len: u64,
    last: Option<AuditEntry>,
}

/// Written (without fsync) before a state change's entry is made durable
/// in its workflow's state log: which entry is on its way, in which boot.
#[derive(Debug, Serialize, Deserialize)]
struct Pointer {
    boot: String,
    seq: u64,
    workflow: Option<String>,
    /// Which of the workflow's logs carries the entry (absent: its state
    /// log, as pointers written before checkpoints carried entries say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    carrier: Option<Carrier>,
}

/// A log that carries audit entries in its records (see "Entries carried
/// by state logs" below).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Carrier {
    /// `state/<wf>.log`.
    StateLog,
    /// `checkpoints/<wf>/journal`.
    CheckpointJournal,
    /// `audit.intent`, for a change whose commit cannot carry the entry
    /// (a rename, removals): the entry counts only while its `Evidence`
    /// holds (see `append_with_intent`).
    Intent,
}

/// What shows that the change an intent's entry records took place. Each
/// is false before the change and stays true after it until another change
/// (which settles the intent first) moves on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Evidence {
    /// The workflow's base `state/<wf>.json` holds this generation with
    /// this checksum (a checksum covers the time of the save, so no other
    /// save produces it).
    Base {
        workflow: String,
        generation: u64,
        checksum: String,
    },
    /// The checkpoint file `checkpoints/<wf>/<id>.json` exists (ids are
    /// never reused).
    CheckpointFile { workflow: String, id: String },
    /// At least one of these checkpoint files is gone: all of them existed,
    /// under the checkpoint lock, when the intent was written.
    CheckpointsRemoved { workflow: String, ids: Vec<String> },
}

impl Evidence {
    fn workflow(&self) -> &str {
        match self {
            Evidence::Base { workflow, .. }
            | Evidence::CheckpointFile { workflow, .. }
            | Evidence::CheckpointsRemoved { workflow, .. } => workflow,
        }
    }
}

/// `audit.intent`: the entry of the newest change committed without a
/// carrying log, and what shows that change took place.
#[derive(Serialize, Deserialize)]
struct Intent {
    evidence: Evidence,
    /// The entry's line, exactly as it is to appear in the log.
    entry: String,
}

/// The log's last parsable entry, and whether the file ends with a newline.
type Tail = (Option<AuditEntry>, bool);

/// An intent holds one entry; a longer file is not one this code wrote.
const MAX_INTENT_BYTES: u64 = 16 * 1024 * 1024;

/// The pointer file is overwritten in place, so it has a fixed length.
const POINTER_LEN: usize = 512;

impl AuditTrail for AuditLog {
    fn location(&self) -> String {
        self.path.display().to_string()
    }
    fn is_keyed(&self) -> bool {
        AuditLog::is_keyed(self)
    }
    fn append_batch(&self, events: Vec<(String, Value)>) -> Result<Vec<AuditEntry>> {
        AuditLog::append_batch(self, events)
    }
    fn verify(&self) -> Result<VerifyReport> {
        AuditLog::verify(self)
    }
    fn read(&self, event: Option<&str>, limit: Option<usize>) -> Result<Vec<AuditEntry>> {
        AuditLog::read(self, event, limit)
    }
}

impl AuditLog {
    pub fn new(
        path: PathBuf,
        locks: LockManager,
        key: Option<Vec<u8>>,
        lock_timeout: Option<Duration>,
    ) -> Self {
        AuditLog {
            path,
            locks,
            key,
            lock_timeout,
            state_dir: None,
            checkpoint_root: None,
            kept: Arc::default(),
            on_progress: None,
        }
    }

    /// Tells `hook` how far each `verify` has come.
    pub(crate) fn with_progress(mut self, hook: Option<ProgressHook>) -> Self {
        self.on_progress = hook;
        self
    }

    /// Lets state changes carry their entries in the state logs of
    /// `state_dir` (one fsync per change; see `append_with`).
    pub(crate) fn with_state_logs(mut self, state_dir: PathBuf, checkpoint_root: PathBuf) -> Self {
        self.state_dir = Some(state_dir);
        self.checkpoint_root = Some(checkpoint_root);
        self
    }

    /// The log of `workflow` that `carrier` names.
    fn carrier_path(&self, carrier: Carrier, workflow: &str) -> Option<PathBuf> {
        match carrier {
            Carrier::StateLog => Some(self.state_dir.as_ref()?.join(format!(
                "{workflow}{}",
                crate::file_store::state_log::LOG_SUFFIX
            ))),
            Carrier::CheckpointJournal => Some(
                self.checkpoint_root
                    .as_ref()?
                    .join(workflow)
                    .join(crate::file_store::checkpoints::JOURNAL_FILE),
            ),
            Carrier::Intent => Some(self.intent_path()),
        }
    }

    fn intent_path(&self) -> PathBuf {
        self.path.with_file_name("audit.intent")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_keyed(&self) -> bool {
        self.key.is_some()
    }

    fn lock(&self) -> Result<LockGuard> {
        self.locks
            .internal_exclusive_brief("audit", "log", self.lock_timeout)
    }

    /// Appends one entry (`data` is redacted first) and returns it once it
    /// is durable.
    pub fn append(&self, event: &str, mut data: Value) -> Result<AuditEntry> {
        redact(&mut data);
        let mut entries = self.append_batch(vec![(event.to_string(), data)])?;
        Ok(entries.pop().expect("one entry appended"))
    }

    /// Appends entries in order under one lock hold and one fsync, without
    /// redaction (imported entries keep what they said).
    pub fn append_batch(&self, events: Vec<(String, Value)>) -> Result<Vec<AuditEntry>> {
        let _guard = self.lock()?;
        let known = self.reconcile_pending()?;
        if !self.path.exists() {
            durable::replace_file_with_bytes(&self.path, b"")?;
        }
        let last = self.settled_tail(known)?;
        let last = self.drain_for_append(last)?;
        let mut bytes = Vec::new();
        let tail = last.map(|e| (e.seq, e.hash));
        let appended = chain_entries(tail, events, self.key.as_deref());
        for (_, line) in &appended {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        durable::append(&self.path, &bytes)?;
        Ok(appended.into_iter().map(|(entry, _)| entry).collect())
    }

    // Entries carried by state logs.
    //
    // A state change appended to its workflow's log carries its audit entry
    // in the same record, so the record's one fsync makes both durable. The
    // entry is then appended to this log *without* an fsync. What can go
    // wrong, and how it is put right (under the audit lock):
    //
    // * the appender dies between its state fsync and its log append (a
    //   kill): the pointer, written just before the state fsync, names the
    //   entry; unsynced writes survive a kill, so the next appender (or the
    //   next open) finds the log's tail one entry short and copies the entry
    //   from the workflow's newest record (`reconcile_pending`);
    // * a power cut or OS crash, which can lose or tear unsynced appends:
    //   that always starts a new boot, and the pointer carries the boot id,
    //   so the first open after it rebuilds the log's tail from the state
    //   logs (`recover_after_boot`).
    //
    // The order that makes this sound: an entry reaches this log only after
    // its state record is durable, and a state log is compacted (its
    // records dropped) only after this log is fsynced.
    //
    // A change committed by a rename or by removals carries nothing: its
    // entry is made durable beforehand as the intent, and counts only while
    // the intent's evidence holds (`append_with_intent`).

    /// The last entry, after making sure the log ends with a whole line. A
    /// torn last line is what an append cut short leaves (a crash, or a
    /// SIGKILL inside a `write`; DESIGN §1): that append never returned.
    /// If the fragment is a whole entry missing only its newline, the
    /// newline is added; otherwise the fragment is moved to
    /// `quarantine/<time>/audit.torn-tail.txt` and the log rewritten
    /// without it, so the next entry starts a clean line and the torn one
    /// never ends up in the middle of the log.
    fn settled_tail(&self, known: Option<Tail>) -> Result<Option<AuditEntry>> {
        let (last, ends_with_newline) = match known {
            Some(tail) => tail,
            None => self.tail_checked()?,
        };
        if ends_with_newline {
            return Ok(last);
        }
        let bytes = match durable::read_file(&self.path, u64::MAX)? {
            durable::ReadOutcome::Found(b) => b,
            durable::ReadOutcome::Missing => return Ok(last),
        };
        let cut = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let torn = &bytes[cut..];
        if serde_json::from_slice::<AuditEntry>(torn).is_ok() {
            durable::append(&self.path, b"\n")?;
            return Ok(last);
        }
        let root = self.path.parent().expect("the log lives in a folder");
        let batch = crate::file_store::health::new_quarantine_batch(root)?;
        durable::replace_file_with_bytes(&batch.join("audit.torn-tail.txt"), torn)?;
        durable::replace_file_with_bytes(&self.path, &bytes[..cut])?;
        Ok(last)
    }

    /// Under the audit lock, before an entry that does not go through the
    /// pipeline: everything in flight is made durable and copied first, so
    /// that this entry follows them in `audit.jsonl` (when the store has an
    /// in-flight table; a store of only serial commits has none).
    fn drain_for_append(&self, tail: Option<AuditEntry>) -> Result<Option<AuditEntry>> {
        if self.state_dir.is_none()
            || !durable::name_exists(
                &self
                    .path
                    .with_file_name(crate::file_store::in_flight::FILE_NAME),
            )?
        {
            return Ok(tail);
        }
        let table = self.table()?;
        self.drain(&table, tail)
    }

    fn pointer_path(&self) -> PathBuf {
        self.path.with_file_name("audit.pointer")
    }

    /// The pointer, if there is one that parses (one that does not is
    /// rewritten by the recovery at the next open). Anything but a regular
    /// file of at most [`POINTER_LEN`] bytes is damage: an integrity error,
    /// and nothing is read through it (a symlink to `/dev/zero` would
    /// otherwise be read forever).
    fn read_pointer(&self) -> Result<Option<Pointer>> {
        let path = self.pointer_path();
        match durable::read_file(&path, POINTER_LEN as u64) {
            Ok(durable::ReadOutcome::Found(bytes)) => Ok(serde_json::from_slice(&bytes).ok()),
            Ok(durable::ReadOutcome::Missing) => Ok(None),
            Err(Error::TooLarge { size, .. }) => Err(Error::integrity(
                &path,
                format!("{size}, more than a pointer holds ({POINTER_LEN})"),
            )),
            Err(e) => Err(e),
        }
    }

    /// What is wrong with `audit.pointer`, if it is damage that
    /// [`Self::read_pointer`] refuses: `health` reports it, and `--repair`
    /// moves it aside (the next open then rebuilds it as after a reboot).
    pub(crate) fn pointer_problem(&self) -> Result<Option<String>> {
        match self.read_pointer() {
            Ok(_) => Ok(None),
            Err(Error::Integrity { problem, .. }) => Ok(Some(problem)),
            Err(e) => Err(e),
        }
    }

    /// Moves an `audit.pointer` that `pointer_problem` rejects into the
    /// folder `to`, under the audit lock. Returns the new path, or `None`
    /// if the file was fine or gone by then.
    pub(crate) fn quarantine_bad_pointer(&self, to: &Path, root: &Path) -> Result<Option<PathBuf>> {
        self.quarantine_if(Self::pointer_problem, &self.pointer_path(), to, root)
    }

    /// Moves `file` into the folder `to` if `problem` still finds one once
    /// the audit lock is held (a check before it may be stale).
    fn quarantine_if(
        &self,
        problem: fn(&Self) -> Result<Option<String>>,
        file: &Path,
        to: &Path,
        root: &Path,
    ) -> Result<Option<PathBuf>> {
        let _guard = self.lock()?;
        if problem(self)?.is_none() {
            return Ok(None);
        }
        let target = to.join(file.file_name().expect("a store file has a name"));
        durable::move_file(file, &target, root)?;
        Ok(Some(target))
    }

    fn pointer_bytes(pointer: &Pointer) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(pointer).expect("a pointer serializes");
        // Names are at most 128 characters from a set JSON never escapes,
        // and boot ids are 36: a pointer is far below the fixed length.
        assert!(bytes.len() < POINTER_LEN, "audit pointer too long");
        bytes.resize(POINTER_LEN - 1, b' ');
        bytes.push(b'\n');
        bytes
    }

    /// `read_pointer` under the audit lock, through the kept descriptor
    /// when the name still refers to its file (and keeping one if not).
    fn read_pointer_checked(&self) -> Result<Option<Pointer>> {
        let path = self.pointer_path();
        let now = FileId::at(&path)?.map(|(id, _)| id);
        let mut kept = self.kept();
        match &kept.pointer {
            Some((file, id)) if Some(*id) == now => {
                let mut bytes = [0u8; POINTER_LEN];
                let n = file
                    .read_at(&mut bytes, 0)
                    .map_err(|e| Error::io("read", &path, e))?;
                kept.pointer_checked = true;
                return Ok(serde_json::from_slice(&bytes[..n]).ok());
            }
            _ => {
                kept.pointer = None;
                kept.pointer_checked = false;
            }
        }
        let pointer = self.read_pointer()?;
        if let Ok(file) = durable::open_for_writes(&path)
            && let Ok((id, _)) = FileId::of_file(&file, &path)
            && Some(id) == now
        {
            kept.pointer = Some((file, id));
            kept.pointer_checked = true;
        }
        Ok(pointer)
    }

    fn kept(&self) -> MutexGuard<'_, KeptFiles> {
        // A panic while holding this leaves only descriptors behind.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records (without fsync) that entry `seq` of `workflow` is on its way
    /// in the log `carrier` names.
    fn write_pointer(&self, seq: u64, workflow: &str, carrier: Carrier) -> Result<()> {
        let bytes = Self::pointer_bytes(&Pointer {
            boot: durable::boot_id(),
            seq,
            workflow: Some(workflow.to_string()),
            carrier: Some(carrier).filter(|c| *c != Carrier::StateLog),
        });
        let path = self.pointer_path();
        {
            let mut kept = self.kept();
            let checked = std::mem::take(&mut kept.pointer_checked);
            if let Some((file, id)) = &kept.pointer {
                if checked || FileId::at(&path)?.map(|(now, _)| now) == Some(*id) {
                    return durable::write_at_unsynced_in(file, &path, 0, &bytes);
                }
                kept.pointer = None;
            }
        }
        match durable::overwrite_unsynced(&path, &bytes) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                durable::replace_file_with_bytes(&path, &bytes)
            }
            other => other,
        }
    }

    /// Appends one entry for a state change, making it durable through
    /// `write_durably`, which receives the entry's line and must make it
    /// durable with the state change (one fsync for both). Then the entry
    /// is appended here without an fsync. The audit lock is held
    /// throughout, so entries are chained in the order they become durable.
    pub(crate) fn append_with<T>(
        &self,
        (workflow, carrier): (&str, Carrier),
        event: &str,
        data: Value,
        write_durably: impl FnOnce(&str) -> Result<T>,
    ) -> Result<(T, Result<AuditEntry>)> {
        self.append_carried((workflow, carrier), None, event, data, write_durably)
    }

    /// Appends one entry for a change whose commit cannot carry it (a base
    /// replaced by a rename, checkpoint files published or removed): the
    /// entry is made durable first as the intent (`write_intent`), then
    /// `change` runs, then the entry is appended here without an fsync. The
    /// intent's entry counts only while `evidence` holds, so a writer that
    /// dies on either side of its commit leaves its change audited or
    /// absent, never one without the other. Pending entries are settled
    /// before `change` runs, while the evidence of theirs still stands.
    pub(crate) fn append_with_intent<T>(
        &self,
        evidence: Evidence,
        event: &str,
        data: Value,
        change: impl FnOnce() -> Result<T>,
    ) -> Result<(T, Result<AuditEntry>)> {
        let workflow = evidence.workflow().to_string();
        self.append_carried(
            (&workflow, Carrier::Intent),
            Some(evidence),
            event,
            data,
            |_| change(),
        )
    }

    fn append_carried<T>(
        &self,
        (workflow, carrier): (&str, Carrier),
        evidence: Option<Evidence>,
        event: &str,
        mut data: Value,
        write_durably: impl FnOnce(&str) -> Result<T>,
    ) -> Result<(T, Result<AuditEntry>)> {
        redact(&mut data);
        let _guard = self.lock()?;
        let known = self.reconcile_pending()?;
        let last = self.settled_tail(known)?;
        let last = self.drain_for_append(last)?;
        let tail = last.map(|e| (e.seq, e.hash));
        let (entry, line) =
            chain_entries(tail, vec![(event.to_string(), data)], self.key.as_deref())
                .pop()
                .expect("one entry chained");
        self.write_pointer(entry.seq, workflow, carrier)?;
        if let Some(evidence) = evidence {
            self.write_intent(evidence, &line)?;
        }
        let value = write_durably(&line)?;
        // The change is durable; what follows only copies its entry here.
        // If that fails, the entry is recovered from the state log later,
        // and the caller is told.
        let copied = self.copy_unsynced(&[line.as_str()], &entry);
        Ok((value, copied.map(|()| entry)))
    }

    /// Appends `lines` (the last holding `last`) to this log without an
    /// fsync: copies of entries durable elsewhere. Under the audit lock,
    /// after the tail was checked in this hold.
    fn copy_unsynced(&self, lines: &[&str], last: &AuditEntry) -> Result<()> {
        let mut bytes = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        match self.append_kept(&bytes, last) {
            Some(done) => done,
            None if self.path.exists() => durable::append_unsynced(&self.path, &bytes),
            None => durable::replace_file_with_bytes(&self.path, &bytes),
        }
    }

    /// Makes `line` durable as the intent, with its evidence. Entries
    /// appended so far are synced first: the intent being replaced may be
    /// the only durable copy of the previous one's entry.
    fn write_intent(&self, evidence: Evidence, line: &str) -> Result<()> {
        self.sync()?;
        let intent = Intent {
            evidence,
            entry: line.to_string(),
        };
        let mut bytes = serde_json::to_vec(&intent).expect("an intent serializes");
        bytes.push(b'\n');
        durable::replace_file_with_bytes(&self.intent_path(), &bytes)
    }

    /// What is wrong with `audit.intent`, if it is there and is not an
    /// intent this code wrote (which is whole or absent: `replace_file`).
    /// Such a file counts for nothing (`committed_intent`), so a change
    /// a dead writer made behind it would have no entry: `health` reports
    /// it and `--repair` moves it aside.
    pub(crate) fn intent_problem(&self) -> Result<Option<String>> {
        let path = self.intent_path();
        let bytes = match durable::read_file(&path, MAX_INTENT_BYTES) {
            Ok(durable::ReadOutcome::Found(bytes)) => bytes,
            Ok(durable::ReadOutcome::Missing) => return Ok(None),
            Err(Error::TooLarge { size, limit, .. }) => {
                return Ok(Some(format!(
                    "{size}, more than an intent can hold ({limit})"
                )));
            }
            // Not a regular file (a symlink, a folder), or unreadable.
            Err(Error::Integrity { problem, .. }) => return Ok(Some(problem)),
            Err(Error::Io { source, .. }) => return Ok(Some(format!("cannot be read ({source})"))),
            Err(e) => return Err(e),
        };
        Ok(match serde_json::from_slice::<Intent>(&bytes) {
            Err(e) => Some(format!("not an audit intent ({e})")),
            Ok(intent) => serde_json::from_str::<AuditEntry>(&intent.entry)
                .err()
                .map(|e| format!("its entry is not an audit entry ({e})")),
        })
    }

    /// Moves an `audit.intent` that `intent_problem` rejects into the
    /// folder `to`, under the audit lock (so that no writer is between
    /// writing its intent and making its change). Returns the new path, or
    /// `None` if the file was fine or gone by then.
    pub(crate) fn quarantine_bad_intent(&self, to: &Path, root: &Path) -> Result<Option<PathBuf>> {
        self.quarantine_if(Self::intent_problem, &self.intent_path(), to, root)
    }

    /// The intent's entry and its line, if the change it records took
    /// place (its evidence holds).
    fn committed_intent(&self) -> Result<Option<(AuditEntry, String)>> {
        let bytes = match durable::read_file(&self.intent_path(), MAX_INTENT_BYTES)? {
            durable::ReadOutcome::Found(bytes) => bytes,
            durable::ReadOutcome::Missing => return Ok(None),
        };
        // Written by `replace_file`, so whole or absent. A file that does
        // not parse was not written by this code and counts for nothing:
        // if a change of a dead writer stood behind it, that change stays
        // without its entry.
        let Ok(intent) = serde_json::from_slice::<Intent>(&bytes) else {
            return Ok(None);
        };
        let Ok(entry) = serde_json::from_str::<AuditEntry>(&intent.entry) else {
            return Ok(None);
        };
        if self.evidence_holds(&intent.evidence)? {
            Ok(Some((entry, intent.entry)))
        } else {
            Ok(None)
        }
    }

    /// Whether `evidence` holds. Evidence naming a file no valid name
    /// leads to (not something this code writes) never holds.
    fn evidence_holds(&self, evidence: &Evidence) -> Result<bool> {
        use crate::name::validate_name;
        if validate_name(evidence.workflow()).is_err() {
            return Ok(false);
        }
        let checkpoint_file = |workflow: &str, id: &str| -> Option<PathBuf> {
            validate_name(id).ok()?;
            let root = self.checkpoint_root.as_ref()?;
            Some(root.join(workflow).join(format!("{id}.json")))
        };
        match evidence {
            Evidence::Base {
                workflow,
                generation,
                checksum,
            } => {
                let Some(state_dir) = &self.state_dir else {
                    return Ok(false);
                };
                let base = state_dir.join(format!("{workflow}.json"));
                Ok(match durable::read_file(&base, u64::MAX)? {
                    durable::ReadOutcome::Found(bytes) => {
                        crate::state::StateDoc::decode_version(&bytes, &base, workflow)
                            // A damaged base shows nothing; health reports it.
                            .is_ok_and(|v| v.generation == *generation && v.checksum == *checksum)
                    }
                    durable::ReadOutcome::Missing => false,
                })
            }
            Evidence::CheckpointFile { workflow, id } => match checkpoint_file(workflow, id) {
                Some(path) => durable::name_exists(&path),
                None => Ok(false),
            },
            Evidence::CheckpointsRemoved { workflow, ids } => {
                for id in ids {
                    match checkpoint_file(workflow, id) {
                        Some(path) if !durable::name_exists(&path)? => return Ok(true),
                        _ => {}
                    }
                }
                Ok(false)
            }
        }
    }

    /// Appends `bytes` (holding `entry`) unsynced through the kept log
    /// descriptor; `None` if none is kept. The caller holds the audit lock
    /// and checked the log in this hold (`tail_checked`, which every
    /// append calls first); nothing it did since touched the log.
    fn append_kept(&self, bytes: &[u8], entry: &AuditEntry) -> Option<Result<()>> {
        let mut kept = self.kept();
        let log = kept.log.as_mut()?;
        let written = durable::write_at_unsynced_in(&log.file, &self.path, log.len, bytes);
        match written {
            Ok(()) => {
                log.len += bytes.len() as u64;
                log.last = Some(entry.clone());
            }
            Err(_) => kept.log = None,
        }
        Some(written)
    }

    /// `tail` under the audit lock: from what this process kept when the log
    /// is the same file at the same length, else read (and kept).
    fn tail_checked(&self) -> Result<Tail> {
        let now = FileId::at(&self.path)?;
        {
            let mut kept = self.kept();
            match (&kept.log, now) {
                (Some(log), Some((id, len))) if log.id == id && log.len == len => {
                    return Ok((log.last.clone(), true));
                }
                _ => kept.log = None,
            }
        }
        let tail = self.tail()?;
        if let (true, Some(seen)) = (tail.1, now)
            && let Ok(file) = durable::open_for_writes(&self.path)
            && let Ok(opened) = FileId::of_file(&file, &self.path)
            && opened == seen
        {
            self.kept().log = Some(KeptLog {
                file,
                id: seen.0,
                len: seen.1,
                last: tail.0.clone(),
            });
        }
        Ok(tail)
    }

    /// Makes every entry appended so far durable (before a state log drops
    /// the records that carry them).
    pub(crate) fn sync(&self) -> Result<()> {
        if self.path.exists() {
            durable::sync_file(&self.path)?;
        }
        Ok(())
    }

    /// Under the audit lock: if the pointer names an entry this log lacks
    /// (its appender died after making the state change durable), copy the
    /// entry from the workflow's state log. When it read the log's tail and
    /// changed nothing, returns that tail, so the caller need not read it
    /// again (this runs before every append).
    fn reconcile_pending(&self) -> Result<Option<Tail>> {
        if self.state_dir.is_none() {
            return Ok(None);
        }
        let Some(pointer) = self.read_pointer_checked()? else {
            return Ok(None);
        };
        let Some(workflow) = pointer
            .workflow
            .filter(|_| pointer.boot == durable::boot_id())
        else {
            return Ok(None);
        };
        let (last, ends_with_newline) = self.tail_checked()?;
        let have = last.as_ref().map_or(0, |e| e.seq);
        if pointer.seq != have + 1 {
            // Nothing missing (or not ours to fix: health reports gaps).
            return Ok(Some((last, ends_with_newline)));
        }
        crate::name::validate_name(&workflow)?;
        let carrier = pointer.carrier.unwrap_or(Carrier::StateLog);
        let follows = (
            pointer.seq,
            last.as_ref().map_or(GENESIS_HASH, |e| e.hash.as_str()),
        );
        let Some(line) = self.carried_entry(carrier, &workflow, follows)? else {
            return Ok(None); // the state change never became durable
        };
        let mut whole = line.into_bytes();
        whole.push(b'\n');
        let bytes = if ends_with_newline {
            whole
        } else {
            // The dead writer may have written part of this very line:
            // finish it rather than leave a torn line in the middle.
            let torn = match durable::read_file_tail(&self.path, 64 * 1024, u64::MAX)? {
                Some((tail, _)) => match tail.iter().rposition(|b| *b == b'\n') {
                    Some(newline) => tail[newline + 1..].to_vec(),
                    None => Vec::new(),
                },
                None => Vec::new(),
            };
            if !torn.is_empty() && whole.starts_with(&torn) {
                whole[torn.len()..].to_vec()
            } else {
                self.settled_tail(None)?;
                whole
            }
        };
        if self.path.exists() {
            durable::append(&self.path, &bytes)?;
        } else {
            durable::replace_file_with_bytes(&self.path, &bytes)?;
        }
        Ok(None)
    }

    /// The line of the entry that `follows` (its `seq` and the previous
    /// entry's hash), if the change it records is durable in `workflow`'s
    /// log that `carrier` names (for an intent: if its evidence holds).
    fn carried_entry(
        &self,
        carrier: Carrier,
        workflow: &str,
        (seq, prev_hash): (u64, &str),
    ) -> Result<Option<String>> {
        let line = if carrier == Carrier::Intent {
            self.committed_intent()?.map(|(_, line)| line)
        } else {
            let Some(log) = self.carrier_path(carrier, workflow) else {
                return Ok(None);
            };
            crate::file_store::state_log::newest_record(&log)?
                .and_then(|r| r.line)
                .and_then(|(_, record)| {
                    crate::file_store::state_log::split_record(&record)
                        .1
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                })
        };
        Ok(line.filter(|line| {
            serde_json::from_str::<AuditEntry>(line)
                .is_ok_and(|entry| entry.seq == seq && entry.prev_hash == prev_hash)
        }))
    }

    /// Run when the store is opened: after a new boot, rebuild the tail of
    /// this log from the state logs; in the same boot, finish an append a
    /// dead process left undone. Cheap when there is nothing to do: one
    /// read of the pointer (and of the log's tail when an entry is pending).
    ///
    /// Returns the workflow whose checkpoint journal carried the entry a
    /// dead writer left pending in this boot: that creator may have died
    /// before publishing its checkpoint, which the caller then publishes
    /// (the entry is copied only after publication, so a copied entry
    /// always has its checkpoint visible).
    pub(crate) fn recover(
        &self,
        before_settling: impl FnOnce() -> Result<()>,
    ) -> Result<Option<String>> {
        if self.state_dir.is_none() {
            return Ok(None);
        }
        #[cfg(test)]
        if durable::sim::mutation_skips_audit_recovery() {
            return Ok(None);
        }
        let boot = durable::boot_id();
        // A damaged pointer is left where it is, for `health` to report and
        // `--repair` to move aside: until then appends refuse (they read
        // it too) and reads work.
        let pointer = match self.read_pointer() {
            Err(Error::Integrity { .. }) => return Ok(None),
            other => other?,
        };
        match pointer {
            Some(p) if p.boot == boot && boot != "unknown" => {
                let mut journal = None;
                if let Some(workflow) = p.workflow {
                    let have = self.tail()?.0.map_or(0, |e| e.seq);
                    if p.seq > have {
                        let _guard = self.lock()?;
                        self.reconcile_pending()?;
                        journal =
                            (p.carrier == Some(Carrier::CheckpointJournal)).then_some(workflow);
                    }
                }
                // Commits that dead writers left in flight, or whose copy
                // failed (their warning says the next open copies them): a
                // torn tail in the log, left by that failed copy, does not
                // stop this one (appends start a fresh line after it). A
                // damaged table is left for the next commit to report
                // (exit 3): reads and `health` still work.
                match self.settle_now(false) {
                    Err(Error::Integrity { .. }) => {}
                    other => other?,
                }
                Ok(journal)
            }
            _ => {
                let _guard = self.lock()?;
                // Another process may have finished it while we waited.
                let pointer = match self.read_pointer() {
                    Err(Error::Integrity { .. }) => return Ok(None),
                    other => other?,
                };
                if let Some(p) = pointer
                    && p.boot == boot
                    && boot != "unknown"
                {
                    return Ok(None);
                }
                self.recover_after_boot(&boot, before_settling)
                    .map(|()| None)
            }
        }
    }

    /// Under the audit lock, after a boot the pointer does not name (or
    /// with no pointer): keep the longest prefix of this log that chains,
    /// check that everything after it is either unreadable (a torn or lost
    /// unsynced append) or an entry a state log carries, move that rest to
    /// quarantine, and append the carried entries that follow the prefix.
    fn recover_after_boot(
        &self,
        boot: &str,
        before_settling: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let state_dir = self.state_dir.as_ref().expect("checked by recover");
        // In the same boot (a damaged pointer was moved aside), what is in
        // flight is finished first, as any append would.
        self.drain_if_this_boot()?;
        let mut carried: std::collections::BTreeMap<u64, String> = Default::default();
        // The newest entry each state log carries, to find records written
        // after an entry the crash lost.
        let mut state_logs: Vec<(PathBuf, u64)> = Vec::new();
        for entry in std::fs::read_dir(state_dir).map_err(|e| Error::io("list", state_dir, e))? {
            let path = entry.map_err(|e| Error::io("list", state_dir, e))?.path();
            let is_log = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.ends_with(crate::file_store::state_log::LOG_SUFFIX) && !n.starts_with('.')
            });
            if is_log {
                let lines = crate::file_store::state_log::audit_lines(&path)?;
                if let Some(newest) = lines.iter().map(|(seq, _)| *seq).max() {
                    state_logs.push((path, newest));
                }
                carried.extend(lines);
            }
        }
        if let Some(root) = &self.checkpoint_root {
            for workflow in crate::file_store::checkpoints::workflows_in(root)? {
                if let Some(journal) = self.carrier_path(Carrier::CheckpointJournal, &workflow) {
                    carried.extend(crate::file_store::state_log::audit_lines(&journal)?);
                }
            }
        }
        // An entry the state logs carry takes precedence over the intent's
        // with the same `seq` (which then never took place).
        if let Some((entry, line)) = self.committed_intent()? {
            carried.entry(entry.seq).or_insert(line);
        }
        let bytes = match durable::read_file(&self.path, u64::MAX)? {
            durable::ReadOutcome::Found(b) => b,
            durable::ReadOutcome::Missing => Vec::new(),
        };
        // The prefix that chains: whole lines, each the next seq, each
        // naming the previous hash. (Hashes are not recomputed: that needs
        // the key, and finding damage is `verify`'s job, not recovery's.)
        let mut cut = 0;
        let mut last: Option<(u64, String)> = None;
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let Some(text) = line.strip_suffix(b"\n") else {
                break;
            };
            let Ok(entry) = serde_json::from_slice::<AuditEntry>(text) else {
                break;
            };
            let (want_seq, want_prev) = match &last {
                Some((seq, hash)) => (seq + 1, hash.as_str()),
                None => (1, GENESIS_HASH),
            };
            if entry.seq != want_seq || entry.prev_hash != want_prev {
                break;
            }
            cut += line.len();
            last = Some((entry.seq, entry.hash));
        }
        // After the prefix, only what a lost or torn unsynced append leaves:
        // unreadable bytes, or entries the state logs hold. Anything else is
        // damage to durable entries: leave it all for `health` to report.
        for line in bytes[cut..].split(|b| *b == b'\n') {
            if let Ok(entry) = serde_json::from_slice::<AuditEntry>(line)
                && carried.get(&entry.seq).map(String::as_bytes) != Some(line)
            {
                return before_settling();
            }
        }
        let (mut next, mut prev_hash) = match &last {
            Some((seq, hash)) => (seq + 1, hash.clone()),
            None => (1, GENESIS_HASH.to_string()),
        };
        let mut missing = Vec::new();
        while let Some(line) = carried.get(&next) {
            // Carried entries extend the chain only where they link to it.
            match serde_json::from_str::<AuditEntry>(line) {
                Ok(entry) if entry.prev_hash == prev_hash => prev_hash = entry.hash,
                _ => break,
            }
            missing.extend_from_slice(line.as_bytes());
            missing.push(b'\n');
            next += 1;
        }
        // Records whose entries come after the end of the chain follow an
        // entry the crash lost: pipelined commits sync their logs
        // independently, and the page cache may write a later record back
        // before an earlier one. None of them was acknowledged (a commit
        // returns only once every entry before its own is durable), so
        // they are dropped, and the chain and each workflow's generations
        // stay whole (DESIGN §13).
        #[cfg(test)]
        let skip_rollback = durable::sim::mutation_skips_rollback();
        #[cfg(not(test))]
        let skip_rollback = false;
        if !skip_rollback {
            for (log, newest) in &state_logs {
                if *newest >= next {
                    crate::file_store::state_log::drop_records_from(log, next)?;
                }
            }
        }
        if cut < bytes.len() {
            let root = self.path.parent().expect("the log lives in the store");
            let batch = crate::file_store::health::new_quarantine_batch(root)?;
            durable::replace_file_with_bytes(
                &batch.join("audit.jsonl.after-power-loss"),
                &bytes[cut..],
            )?;
            let mut rebuilt = bytes[..cut].to_vec();
            rebuilt.extend_from_slice(&missing);
            durable::replace_file_with_bytes(&self.path, &rebuilt)?;
        } else if !missing.is_empty() {
            if self.path.exists() {
                durable::append(&self.path, &missing)?;
            } else {
                durable::replace_file_with_bytes(&self.path, &missing)?;
            }
        }
        // What else must be put right before the store counts as recovered
        // in this boot (the checkpoint journals' unsynced files).
        before_settling()?;
        // Nothing is in flight in a recovered store: the table starts empty
        // in this boot (before the pointer says the boot is recovered).
        self.kept().table = None;
        crate::file_store::in_flight::Table::reset(
            &self
                .path
                .with_file_name(crate::file_store::in_flight::FILE_NAME),
            boot,
        )?;
        durable::replace_file_with_bytes(
            &self.pointer_path(),
            &Self::pointer_bytes(&Pointer {
                boot: boot.to_string(),
                seq: next - 1,
                workflow: None,
                carrier: None,
            }),
        )
    }

    /// Copies acknowledged entries still in flight (pipelined commits leave
    /// the copy to the next holder of the audit lock) so that a read sees
    /// them. Best effort: a reader that cannot write (or finds the table
    /// damaged, which `health` reports) reads what the log holds.
    fn settle_before_reading(&self) {
        let _ = self.settle_now(true);
    }

    /// The log for reading; only a regular file (a symlink, FIFO or device
    /// in its place is an integrity error). Any length: readers stream it.
    fn open(&self) -> Result<Option<File>> {
        Ok(durable::open_for_reading(&self.path, u64::MAX)?.map(|(file, _)| file))
    }

    /// The last entry that parses, and whether the file ends with a newline.
    /// Reads backwards from the end, so it costs the size of the last few
    /// lines, not of the log.
    fn tail(&self) -> Result<Tail> {
        let Some(mut file) = self.open()? else {
            return Ok((None, true));
        };
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("seek", &self.path, e))?;
        if len == 0 {
            return Ok((None, true));
        }
        let mut end = len;
        let mut buf: Vec<u8> = Vec::new();
        let mut ends_with_newline = None;
        loop {
            // Most entries are a few hundred bytes: a small first read; the
            // loop reads further back for longer ones.
            let start = end.saturating_sub(8 * 1024);
            let mut chunk = vec![0u8; (end - start) as usize];
            file.seek(SeekFrom::Start(start))
                .and_then(|_| file.read_exact(&mut chunk))
                .map_err(|e| Error::io("read", &self.path, e))?;
            chunk.extend_from_slice(&buf);
            buf = chunk;
            if ends_with_newline.is_none() {
                ends_with_newline = Some(buf.last() == Some(&b'\n'));
            }
            // Try complete lines from the newest back; keep the partial
            // first line of the buffer for the next, earlier chunk.
            let first_partial = if start > 0 {
                buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len())
            } else {
                0
            };
            let mut end_of_line = buf.len();
            while end_of_line > first_partial {
                let line_start = buf[first_partial..end_of_line]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(first_partial, |i| first_partial + i + 1);
                let line = &buf[line_start..end_of_line];
                if let Ok(entry) = serde_json::from_slice::<AuditEntry>(line) {
                    return Ok((Some(entry), ends_with_newline.unwrap_or(true)));
                }
                end_of_line = line_start.saturating_sub(1);
            }
            if start == 0 {
                return Ok((None, ends_with_newline.unwrap_or(true)));
            }
            buf.truncate(first_partial);
            end = start;
        }
    }

    /// Checks every line: it parses, `seq` counts up by one, `prev_hash` is
    /// the previous entry's hash, `alg` matches the mode, and `hash`
    /// recomputes. Reports the first bad line.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.settle_before_reading();
        let Some(file) = self.open()? else {
            return Ok(VerifyReport {
                entries: 0,
                valid: true,
                first_bad: None,
                torn_tail: None,
                keyed: self.key.is_some(),
            });
        };
        let total = file.metadata().map_or(0, |m| m.len());
        let mut checked = |done: u64| {
            if let Some(hook) = &self.on_progress {
                hook(&Progress {
                    task: "verifying the audit log",
                    done,
                    total,
                    bytes: true,
                });
            }
        };
        verify_reader_reporting(
            BufReader::with_capacity(256 * 1024, file),
            self.key.as_deref(),
            &mut checked,
        )
        .map_err(|e| Error::io("read", &self.path, e))
    }

    /// Entries, oldest first, optionally only of one event, the newest
    /// `limit` of them. Lines that do not parse are skipped (verify reports them).
    pub fn read(&self, event: Option<&str>, limit: Option<usize>) -> Result<Vec<AuditEntry>> {
        self.settle_before_reading();
        let Some(file) = self.open()? else {
            return Ok(Vec::new());
        };
        let mut entries = std::collections::VecDeque::new();
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| Error::io("read", &self.path, e))?;
            let Ok(entry) = serde_json::from_slice::<AuditEntry>(&line) else {
                continue;
            };
            if event.is_some_and(|e| e != entry.event) {
                continue;
            }
            entries.push_back(entry);
            if limit.is_some_and(|l| entries.len() > l) {
                entries.pop_front();
            }
        }
        Ok(entries.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ALG_PLAIN, VERIFY_BATCH_BYTES, hash_entry};
    use serde_json::json;

    fn log(dir: &Path, key: Option<&[u8]>) -> AuditLog {
        let locks_dir = dir.join("locks");
        std::fs::create_dir_all(&locks_dir).unwrap();
        AuditLog::new(
            dir.join("audit.jsonl"),
            LockManager::open(locks_dir).unwrap(),
            key.map(<[u8]>::to_vec),
            None,
        )
    }

    #[test]
    fn appended_entries_chain_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let audit = log(dir.path(), None);
        for i in 0..5 {
            let e = audit.append("state_update", json!({"n": i})).unwrap();
            assert_eq!(e.seq, i + 1);
        }
        let report = audit.verify().unwrap();
        assert!(report.valid, "{report:?}");
        assert_eq!(report.entries, 5);
        assert_eq!(audit.read(None, Some(2)).unwrap().len(), 2);
    }

    #[test]
    fn entries_larger_than_the_tail_read_chunk_still_chain() {
        let dir = tempfile::tempdir().unwrap();
        let audit = log(dir.path(), None);
        let big = "x".repeat(200 * 1024); // over three 64 KiB chunks
        audit.append("big", json!({"blob": big})).unwrap();
        let next = audit.append("after", json!({})).unwrap();
        assert_eq!(next.seq, 2);
        assert!(audit.verify().unwrap().valid);
    }

    #[test]
    fn verification_across_batches_keeps_line_numbers_and_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let audit = log(dir.path(), None);
        let pad = "p".repeat(100 * 1024);
        let batch = (0..60)
            .map(|i| ("big".to_string(), json!({"i": i, "pad": pad})))
            .collect();
        audit.append_batch(batch).unwrap(); // about 6 MiB: two verify batches
        assert!(std::fs::metadata(audit.path()).unwrap().len() > VERIFY_BATCH_BYTES as u64);
        assert!(audit.verify().unwrap().valid);
        let text = std::fs::read_to_string(audit.path()).unwrap();
        let edited = text.replacen("{\"i\":55,", "{\"i\":56,", 1);
        assert_ne!(edited, text);
        std::fs::write(audit.path(), edited).unwrap();
        let report = audit.verify().unwrap();
        assert_eq!(report.entries, 60);
        assert_eq!(report.first_bad.unwrap().line, 56);
    }

    /// The one file a repair or an append moved aside, if any.
    fn quarantined(dir: &Path) -> Vec<Vec<u8>> {
        let Ok(batches) = std::fs::read_dir(dir.join("quarantine")) else {
            return Vec::new();
        };
        batches
            .flatten()
            .flat_map(|b| std::fs::read_dir(b.path()).unwrap().flatten())
            .map(|f| std::fs::read(f.path()).unwrap())
            .collect()
    }

    #[test]
    fn a_zero_filled_tail_from_a_crash_does_not_break_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let audit = log(dir.path(), None);
        audit.append("a", json!(1)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(audit.path())
            .unwrap();
        std::io::Write::write_all(&mut f, &[0u8; 300]).unwrap();
        let report = audit.verify().unwrap();
        assert_eq!(report.torn_tail, Some(2), "reported until the next append");
        let e = audit.append("b", json!(2)).unwrap();
        assert_eq!(e.seq, 2);
        let report = audit.verify().unwrap();
        assert!(report.valid, "{report:?}");
        assert_eq!(report.entries, 2);
        assert_eq!(
            quarantined(dir.path()),
            [vec![0u8; 300]],
            "moved aside, not lost"
        );
    }

    #[test]
    fn a_torn_tail_is_reported_then_moved_aside_by_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let audit = log(dir.path(), None);
        audit.append("a", json!(1)).unwrap();
        audit.append("b", json!(2)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(audit.path())
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"seq\":3,\"ti").unwrap();
        let report = audit.verify().unwrap();
        assert_eq!(report.torn_tail, Some(3));
        assert_eq!(report.first_bad.as_ref().unwrap().line, 3);
        let e = audit.append("c", json!(3)).unwrap();
        assert_eq!(e.seq, 3, "continues from the last whole entry");
        let report = audit.verify().unwrap();
        assert!(
            report.valid,
            "the torn line is not left in the middle: {report:?}"
        );
        assert_eq!(report.entries, 3);
        assert_eq!(quarantined(dir.path()), [b"{\"seq\":3,\"ti".to_vec()]);
    }

    #[test]
    fn a_whole_last_entry_missing_only_its_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let audit = log(dir.path(), None);
        audit.append("a", json!(1)).unwrap();
        let text = std::fs::read(audit.path()).unwrap();
        std::fs::write(audit.path(), &text[..text.len() - 1]).unwrap();
        let e = audit.append("b", json!(2)).unwrap();
        assert_eq!(e.seq, 2);
        let report = audit.verify().unwrap();
        assert!(report.valid && report.entries == 2, "{report:?}");
        assert!(quarantined(dir.path()).is_empty());
    }

    #[test]
    fn keyed_logs_reject_entries_rehashed_without_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = b"0123456789abcdef-secret";
        let audit = log(dir.path(), Some(key));
        for i in 0..3 {
            audit.append("e", json!({"n": i})).unwrap();
        }
        assert!(audit.verify().unwrap().valid);
        // An attacker without the key edits entry 2 and recomputes the chain
        // with plain SHA-256, marking the entries as unkeyed.
        let text = std::fs::read_to_string(audit.path()).unwrap();
        let mut prev = GENESIS_HASH.to_string();
        let mut forged = String::new();
        for line in text.lines() {
            let mut e: AuditEntry = serde_json::from_str(line).unwrap();
            if e.seq == 2 {
                e.data = json!({"n": 99});
            }
            e.alg = ALG_PLAIN.into();
            e.prev_hash = prev.clone();
            let Value::Object(body) = serde_json::to_value(&e).unwrap() else {
                unreachable!()
            };
            e.hash = hash_entry(None, &prev, &body);
            prev = e.hash.clone();
            forged.push_str(&serde_json::to_string(&e).unwrap());
            forged.push('\n');
        }
        std::fs::write(audit.path(), forged).unwrap();
        let report = audit.verify().unwrap();
        assert!(!report.valid);
        assert_eq!(report.first_bad.unwrap().line, 1);
        // Without the key the forgery would have passed: that is what the key buys.
        assert!(log(dir.path(), None).verify().unwrap().valid);
    }
}

#[cfg(test)]
mod kept_file_tests {
    use crate::store::{Store, StoreOptions};
    use serde_json::{Value, json};

    fn pointer_seq(root: &std::path::Path) -> u64 {
        let bytes = std::fs::read(root.join("audit.pointer")).unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["seq"]
            .as_u64()
            .unwrap()
    }

    /// An appender keeps the pointer open between appends. When the file is
    /// replaced meanwhile (recovery after a reboot replaces it), the next
    /// append must write the new file: a pointer written into the old one
    /// would name nothing, and a killed writer's entry would not be found.
    /// (Checkpoints write the pointer; pipelined updates use the in-flight
    /// table instead.)
    #[test]
    fn a_replaced_pointer_is_written_anew_not_through_the_kept_descriptor() {
        use crate::checkpoint::NewCheckpoint;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::init(dir.path(), StoreOptions::default()).unwrap();
        store.save("wf", json!({"n": 0}), None).unwrap();
        let checkpoint = || {
            store
                .create_checkpoint(NewCheckpoint {
                    workflow: "wf".into(),
                    ..NewCheckpoint::default()
                })
                .unwrap();
            store.audit().unwrap().read(None, Some(1)).unwrap()[0].seq
        };
        for _ in 0..3 {
            checkpoint();
        }
        let path = dir.path().join("audit.pointer");
        let replacement = dir.path().join("pointer.new");
        std::fs::copy(&path, &replacement).unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        let seq = checkpoint();
        assert_eq!(pointer_seq(dir.path()), seq);
    }

    /// An intent whose evidence names no valid file (not something this
    /// code writes) counts for nothing and does not stop the store: the
    /// next append takes the entry's place.
    #[test]
    fn an_intent_naming_a_hostile_path_is_ignored() {
        use super::{AuditEntry, AuditLog, Carrier, Evidence, Intent, Pointer, chain_entries};
        use crate::durable;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::init(dir.path(), StoreOptions::default()).unwrap();
        store.save("wf", json!({"n": 0}), None).unwrap();
        let have = store.audit().unwrap().read(None, None).unwrap().len() as u64;
        let (entry, _) = chain_entries(
            None,
            vec![("state_save".to_string(), json!({"workflow": "../x"}))],
            None,
        )
        .pop()
        .unwrap();
        let entry = AuditEntry {
            seq: have + 1,
            ..entry
        };
        let line = serde_json::to_string(&entry).unwrap();
        for evidence in [
            Evidence::Base {
                workflow: "../x".into(),
                generation: 1,
                checksum: "sha256:00".into(),
            },
            Evidence::CheckpointsRemoved {
                workflow: "wf".into(),
                ids: vec!["../../state/wf".into()],
            },
        ] {
            let intent = Intent {
                evidence,
                entry: line.clone(),
            };
            std::fs::write(
                dir.path().join("audit.intent"),
                serde_json::to_vec(&intent).unwrap(),
            )
            .unwrap();
            std::fs::write(
                dir.path().join("audit.pointer"),
                AuditLog::pointer_bytes(&Pointer {
                    boot: durable::boot_id(),
                    seq: have + 1,
                    workflow: Some("wf".into()),
                    carrier: Some(Carrier::Intent),
                }),
            )
            .unwrap();
            let reopened = Store::open(dir.path(), StoreOptions::default()).unwrap();
            reopened.save("wf", json!({"n": 1}), None).unwrap();
            let entries = reopened.audit().unwrap().read(None, None).unwrap();
            assert!(entries.iter().all(|e| e.data["workflow"] != "../x"));
            assert!(reopened.audit().unwrap().verify().unwrap().valid);
        }
    }
}
