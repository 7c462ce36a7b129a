//! The pipelined commit of state-log updates (DESIGN §13): updates of
//! different workflows sync their logs at the same time, not in turn.
//!
//! A commit has three steps:
//!
//! 1. `begin_commit`, under the audit lock: settle what earlier commits
//!    left (`settle`), chain the entry after the newest one (in flight or
//!    copied), claim a slot of the in-flight table for it, and write the
//!    state record carrying it, unsynced. Then the audit lock is released.
//! 2. `Commit::synced`: the caller has synced its log, outside every
//!    store-wide lock, and says how that went; the slot records it and its
//!    lock is released.
//! 3. `Commit::finish`: under the audit lock again, settle, which copies
//!    every durable entry that follows the log's tail, in `seq` order, into
//!    `audit.jsonl`. The commit is acknowledged only once every entry up
//!    to its own is durable; while an earlier one is still being synced by
//!    a live owner, it waits on that slot's lock, without the audit lock.
//!
//! Why nothing acknowledged is lost: an entry is acknowledged only when it
//! and every entry before it are durable, so a crash can lose only entries
//! after the last acknowledged one. A crash can leave a later record
//! durable after a lost earlier one (their logs are synced independently);
//! such records were never acknowledged, and recovery after the reboot
//! drops them (`recover_after_boot`), so the chain and each workflow's
//! generations stay whole. Why the chain stays in order: entries are
//! chained under the audit lock, and copied to `audit.jsonl` only in `seq`
//! order, each after the ones before it; a workflow's lock is held from its
//! read to its commit's end, so its generations take increasing `seq`s.

use super::{AuditLog, Carrier};
use crate::audit::{AuditEntry, chain_entries, redact};
use crate::durable;
use crate::error::{Error, Result};
use crate::file_store::in_flight::{self, Slot, SlotState, Snapshot, Table, Taken};
use crate::file_store::state_log;
use crate::lock::LockGuard;
use serde_json::Value;
use std::os::unix::fs::FileExt;

/// A commit between its steps (see the module documentation).
pub(crate) struct Commit {
    entry: AuditEntry,
    line: String,
    how: How,
    /// Copying earlier entries to `audit.jsonl` failed in step 1: they stay
    /// in flight, durable, for the next settle; the caller is told.
    copy_failed: Option<Error>,
    /// Marking the slot `Written` failed in step 1: it stays `Claimed`,
    /// which costs settlers a look at the record, not correctness; the
    /// caller is told, as a warning, by step 2.
    mark_failed: Option<Error>,
}

enum How {
    /// No slot was free: the audit lock is held from the write to the copy,
    /// as every commit did before the pipeline (the pointer names the
    /// entry for a kill in between).
    Serial(LockGuard),
    /// In flight in slot `index`; its lock is held until the sync is done.
    InFlight {
        index: usize,
        slot_lock: Option<LockGuard>,
        /// Entries before ours that were not yet durable when ours was
        /// chained: only these can hold up its acknowledgment (every later
        /// claim takes a higher `seq`). Usually none.
        waits_for_others: bool,
    },
}

/// What `settle` may do for a `Written` slot whose owner is alive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Help {
    /// Leave it to its owner (who is syncing it).
    DeadOnly,
    /// Sync its log now: everything in flight must be copied before this
    /// caller goes on (a commit that cannot be pipelined, an append that
    /// syncs `audit.jsonl`, a compaction that drops records).
    Everyone,
}

/// What a settle did.
struct Settled {
    tail: Option<AuditEntry>,
    /// The slots still taken, with their states as settled.
    left: Vec<Taken>,
    /// Copying durable entries to `audit.jsonl` failed: they stay in the
    /// table for the next settle, and are durable all the same.
    copy_failed: Option<Error>,
}

/// The simulator's mutant that skips `Claimed` slots unchecked.
fn trusts_claims() -> bool {
    #[cfg(test)]
    return durable::sim::mutation_trusts_claims();
    #[cfg(not(test))]
    false
}

fn slot_lock_name(index: usize) -> String {
    format!("slot-{index}")
}

impl AuditLog {
    /// Step 1 (see the module documentation). `record_for` builds the
    /// record that carries the entry's line; `write` writes it, unsynced,
    /// at `at` of `workflow`'s state log.
    pub(crate) fn begin_commit<T>(
        &self,
        (workflow, at): (&str, u64),
        event: &str,
        mut data: Value,
        record_for: impl FnOnce(&str) -> Vec<u8>,
        write: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<(T, Commit)> {
        redact(&mut data);
        let guard = self.lock()?;
        let known = self.reconcile_pending()?;
        let tail = self.settled_tail(known)?;
        let table = self.table()?;
        let settled = self.settle(&table, tail, Help::DeadOnly, None, Some(workflow))?;
        let free: Vec<usize> = (0..in_flight::SLOTS)
            .filter(|i| settled.left.iter().all(|t| t.index != *i))
            .collect();
        // A free slot whose lock its last owner still holds (it has marked
        // the slot, not yet let go) is not free yet.
        let mut claimed = None;
        for index in free {
            if let Some(lock) = self
                .locks
                .try_internal_exclusive("commit", &slot_lock_name(index))?
            {
                claimed = Some((index, lock));
                break;
            }
        }
        let Some((index, slot_lock)) = claimed else {
            // Every slot busy: drain, then commit the serial way.
            let tail = self.drain(&table, settled.tail)?;
            let (entry, line) = chain_one(tail.map(|e| (e.seq, e.hash)), event, data, self);
            let record = record_for(&line);
            self.write_pointer(entry.seq, workflow, Carrier::StateLog)?;
            let value = write(&record)?;
            return Ok((
                value,
                Commit {
                    entry,
                    line,
                    how: How::Serial(guard),
                    copy_failed: None,
                    mark_failed: None,
                },
            ));
        };
        let head = match settled.left.last() {
            Some(newest) => Some((newest.slot.seq, newest.slot.hash.clone())),
            None => settled.tail.map(|e| (e.seq, e.hash)),
        };
        let waits_for_others = settled.left.iter().any(|t| t.state != SlotState::Synced);
        let (entry, line) = chain_one(head, event, data, self);
        let record = record_for(&line);
        let claimed = table.claim(
            index,
            &Slot {
                seq: entry.seq,
                hash: entry.hash.clone(),
                workflow: workflow.to_string(),
                at,
                len: record.len() as u64,
                entry_in_table: false,
            },
            &line,
        );
        if let Err(e) = claimed {
            // A part of the claim may be there: free it (a settler frees a
            // slot that does not parse anyway).
            let _ = table.set_state(index, SlotState::Free);
            return Err(e);
        }
        #[cfg(test)]
        durable::sim::phase("claimed");
        let value = match write(&record) {
            Ok(value) => value,
            Err(e) => {
                // At most an unterminated line: the entry never happened,
                // and nothing chained after it yet (we hold the lock).
                let _ = table.set_state(index, SlotState::Free);
                return Err(e);
            }
        };
        // The record is whole: nobody needs to check it before chaining
        // after it. (If this mark fails, the slot stays `Claimed` and
        // settlers check the record, which is there: slower, not wrong.)
        let mark_failed = table.set_state(index, SlotState::Written).err();
        self.kept().last_in_flight = Some((entry.seq, entry.hash.clone(), line.clone()));
        drop(guard);
        Ok((
            value,
            Commit {
                entry,
                line,
                how: How::InFlight {
                    index,
                    slot_lock: Some(slot_lock),
                    waits_for_others,
                },
                copy_failed: settled.copy_failed,
                mark_failed,
            },
        ))
    }

    /// The in-flight table, kept open; created (empty, for this boot) in a
    /// store that has none yet. Under the audit lock.
    pub(super) fn table(&self) -> Result<Table> {
        let path = self.path.with_file_name(in_flight::FILE_NAME);
        {
            let kept = self.kept();
            if let Some(table) = &kept.table
                && table.still_at_its_name()?
            {
                return Ok(table.clone());
            }
        }
        let table = match Table::open(&path)? {
            Some(table) => table,
            None => {
                Table::reset(&path, &durable::boot_id())?;
                Table::open(&path)?.ok_or_else(|| {
                    Error::io(
                        "open",
                        &path,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    )
                })?
            }
        };
        self.kept().table = Some(table.clone());
        Ok(table)
    }

    /// The table this process keeps (opened by `begin_commit`), for reads
    /// without the audit lock.
    fn table_unlocked(&self) -> Result<Table> {
        if let Some(table) = &self.kept().table {
            return Ok(table.clone());
        }
        let path = self.path.with_file_name(in_flight::FILE_NAME);
        Table::open(&path)?.ok_or_else(|| {
            Error::io(
                "open",
                &path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
    }

    /// Copies to `audit.jsonl` every durable entry in flight that can be
    /// copied (in `seq` order), when there are any: before a read of the
    /// log, and before a compaction drops records whose entries may not
    /// have been copied yet. Takes the audit lock only if the table lists
    /// entries.
    /// `leave_torn_tail`: a reader's settle copies nothing into a log that
    /// ends with a torn line (a crashed append), which only a writer or
    /// `health --repair` sets right, so that reading and checking change
    /// nothing there.
    pub(crate) fn settle_now(&self, leave_torn_tail: bool) -> Result<()> {
        if self.state_dir.is_none() {
            return Ok(());
        }
        let path = self.path.with_file_name(in_flight::FILE_NAME);
        let table = match &self.kept().table {
            Some(table) => table.clone(),
            None => match Table::open(&path)? {
                Some(table) => table,
                None => return Ok(()),
            },
        };
        let snapshot = table.read()?;
        if snapshot.taken.is_empty()
            || snapshot.boot.as_deref() != Some(durable::boot_id().as_str())
        {
            return Ok(());
        }
        let _guard = self.lock()?;
        let known = match self.reconcile_pending()? {
            Some(tail) => tail,
            None => self.tail_checked()?,
        };
        if leave_torn_tail && !known.1 {
            return Ok(());
        }
        let tail = self.settled_tail(Some(known))?;
        let table = self.table()?;
        match self
            .settle(&table, tail, Help::DeadOnly, None, None)?
            .copy_failed
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The table as it stands, refusing one from another boot: recovery
    /// resets the table in every new boot before anything else is written,
    /// so an old one means recovery has not run.
    fn read_table(&self, table: &Table) -> Result<Snapshot> {
        let snapshot = table.read()?;
        if snapshot.boot.as_deref() != Some(durable::boot_id().as_str()) {
            return Err(Error::integrity(
                table.path(),
                "was written in an earlier boot and not recovered in this one",
            ));
        }
        Ok(snapshot)
    }

    /// Under the audit lock: brings what is in flight as far as it can go.
    /// Slots whose owner died are finished (their log synced) or, if their
    /// record never became whole, dropped; a failed sync is redone;
    /// `Help::Everyone` syncs live owners' logs too. Then every durable
    /// entry that follows the log's tail, in `seq` order up to the first
    /// that is not durable, is copied to `audit.jsonl` and its slot freed.
    /// `own` is the caller's entry and line, which need not be read back.
    fn settle(
        &self,
        table: &Table,
        mut tail: Option<AuditEntry>,
        help: Help,
        own: Option<(&AuditEntry, &str)>,
        caller_workflow: Option<&str>,
    ) -> Result<Settled> {
        let snapshot = self.read_table(table)?;
        for index in &snapshot.broken {
            table.set_state(*index, SlotState::Free)?;
        }
        let mut left: Vec<Taken> = Vec::new();
        let mut lines: Vec<(usize, AuditEntry, String)> = Vec::new();
        let mut next = tail.as_ref().map_or(1, |e| e.seq + 1);
        let mut prev_hash = tail
            .as_ref()
            .map_or(crate::audit::GENESIS_HASH.to_string(), |e| e.hash.clone());
        let mut blocked = false;
        let copied_up_to = next - 1;
        let newest_seq = snapshot.taken.last().map_or(0, |t| t.slot.seq);
        for mut taken in snapshot.taken {
            if taken.slot.seq <= copied_up_to {
                // Copied already, by a settler that died before freeing it
                // (or marked late by an owner whose entry a drain copied).
                table.set_state(taken.index, SlotState::Free)?;
                continue;
            }
            let line = match own {
                Some((entry, line))
                    if entry.seq == taken.slot.seq && entry.hash == taken.slot.hash =>
                {
                    Some(line.to_string())
                }
                _ => None,
            };
            match taken.state {
                SlotState::Synced => {}
                SlotState::Free => unreachable!("only taken slots are listed"),
                SlotState::Claimed | SlotState::Written
                    if (taken.state == SlotState::Written || trusts_claims())
                        && blocked
                        && help == Help::DeadOnly
                        && caller_workflow != Some(taken.slot.workflow.as_str()) =>
                {
                    // Nothing after the first entry that is not durable can
                    // be copied anyway; only a slot of the caller's own
                    // workflow (whose owner must be gone, since the caller
                    // holds the workflow's lock) is finished now, so that
                    // no record is written after one not known durable.
                    // (Its record is whole: `Written` says so. A `Claimed`
                    // slot is checked below even here, since the caller
                    // may chain its entry after it.)
                    left.push(taken);
                    continue;
                }
                SlotState::Claimed | SlotState::Written | SlotState::Failed => {
                    // A live owner holds the slot's lock while it syncs.
                    let owner_gone = if taken.state == SlotState::Failed {
                        None
                    } else {
                        self.locks
                            .try_internal_exclusive("commit", &slot_lock_name(taken.index))?
                    };
                    let alive = taken.state != SlotState::Failed && owner_gone.is_none();
                    if alive && help == Help::DeadOnly {
                        blocked = true;
                        left.push(taken);
                        continue;
                    }
                    let Some(record) = self.record_of(&taken.slot)? else {
                        if alive || newest_seq > taken.slot.seq {
                            // Written before the lock was released: damage.
                            return Err(Error::integrity(
                                table.path(),
                                format!(
                                    "entry {} of workflow {:?} is in flight but its record is \
                                     not in the state log",
                                    taken.slot.seq, taken.slot.workflow
                                ),
                            ));
                        }
                        // Its writer died before the record was whole: the
                        // entry never happened, and nothing chains after it
                        // (its writer held the audit lock until then; an
                        // entry chained after it, above, means the record
                        // was whole once and is gone now: damage, never
                        // dropped).
                        table.set_state(taken.index, SlotState::Free)?;
                        continue;
                    };
                    let log = self.log_of(&taken.slot)?;
                    if taken.state == SlotState::Failed {
                        // Its owner's sync failed, so the pages may be
                        // marked clean without being on disk: write them
                        // again before syncing (never just retry a sync).
                        durable::write_at_synced(&log, taken.slot.at, &record)?;
                    } else {
                        durable::sync_data(&log)?;
                    }
                    table.set_state(taken.index, SlotState::Synced)?;
                    taken.state = SlotState::Synced;
                }
            }
            if blocked || taken.slot.seq != next {
                blocked = true;
                left.push(taken);
                continue;
            }
            let line = line.or_else(|| match &self.kept().last_in_flight {
                Some((seq, hash, line)) if *seq == taken.slot.seq && *hash == taken.slot.hash => {
                    Some(line.clone())
                }
                _ => None,
            });
            // The entry kept with the slot (checked below, with the chain).
            let kept = if line.is_none() {
                taken.entry.take()
            } else {
                None
            };
            let line = match line.or(kept) {
                Some(line) => line,
                None => match self.carried_line_of(&taken.slot)? {
                    Some(line) => line,
                    None => {
                        return Err(Error::integrity(
                            &self.log_of(&taken.slot)?,
                            format!(
                                "the record at byte {} does not carry audit entry {}",
                                taken.slot.at, taken.slot.seq
                            ),
                        ));
                    }
                },
            };
            let entry = match serde_json::from_str::<AuditEntry>(&line) {
                Ok(entry) if entry.seq == taken.slot.seq && entry.hash == taken.slot.hash => entry,
                _ => {
                    return Err(Error::integrity(
                        table.path(),
                        format!(
                            "slot {} names entry {} of workflow {:?}, but the entry found for it \
                             is not that one",
                            taken.index, taken.slot.seq, taken.slot.workflow
                        ),
                    ));
                }
            };
            if entry.prev_hash != prev_hash {
                return Err(Error::integrity(
                    &self.path,
                    format!(
                        "in-flight entry {} does not follow entry {} (its prev_hash differs)",
                        entry.seq,
                        next - 1
                    ),
                ));
            }
            next += 1;
            prev_hash = entry.hash.clone();
            lines.push((taken.index, entry, line));
            left.push(taken);
        }
        let mut copy_failed = None;
        if let Some((_, last, _)) = lines.last() {
            let last = last.clone();
            let texts: Vec<&str> = lines.iter().map(|(_, _, line)| line.as_str()).collect();
            let copied = self.copy_unsynced(&texts, &last);
            match copied {
                Ok(()) => {
                    for (index, _, _) in &lines {
                        table.set_state(*index, SlotState::Free)?;
                    }
                    left.retain(|t| lines.iter().all(|(index, _, _)| *index != t.index));
                    tail = Some(last);
                }
                Err(e) => copy_failed = Some(e),
            }
        }
        Ok(Settled {
            tail,
            left,
            copy_failed,
        })
    }

    /// Under the audit lock: makes everything in flight durable and copies
    /// it, so that the caller's entry comes next in `audit.jsonl`.
    pub(super) fn drain(
        &self,
        table: &Table,
        tail: Option<AuditEntry>,
    ) -> Result<Option<AuditEntry>> {
        let settled = self.settle(table, tail, Help::Everyone, None, None)?;
        if let Some(e) = settled.copy_failed {
            return Err(e);
        }
        if let Some(stuck) = settled.left.first() {
            return Err(Error::integrity(
                table.path(),
                format!(
                    "in-flight entry {} does not follow the audit log's last entry",
                    stuck.slot.seq
                ),
            ));
        }
        Ok(settled.tail)
    }

    /// `drain` for a caller that does not hold the audit lock, when there
    /// is a table: before a compaction drops a log's records.
    pub(crate) fn drain_now(&self) -> Result<()> {
        if self.state_dir.is_none() {
            return Ok(());
        }
        match Table::open(&self.path.with_file_name(in_flight::FILE_NAME))? {
            Some(table) if !table.read()?.taken.is_empty() => {}
            _ => return Ok(()), // nothing in flight
        }
        let _guard = self.lock()?;
        let known = self.reconcile_pending()?;
        let tail = self.settled_tail(known)?;
        let table = self.table()?;
        self.drain(&table, tail).map(drop)
    }

    /// Under the audit lock, when the table is from this boot: everything
    /// in flight made durable and copied (before recovery rebuilds the
    /// log's tail from the state logs, in the same boot).
    pub(super) fn drain_if_this_boot(&self) -> Result<()> {
        let path = self.path.with_file_name(in_flight::FILE_NAME);
        let Some(table) = Table::open(&path)? else {
            return Ok(());
        };
        match table.read() {
            Ok(s)
                if s.boot.as_deref() == Some(durable::boot_id().as_str())
                    && !s.taken.is_empty() => {}
            _ => return Ok(()),
        }
        let tail = self.settled_tail(None)?;
        self.drain(&table, tail).map(drop)
    }

    fn log_of(&self, slot: &Slot) -> Result<std::path::PathBuf> {
        crate::name::validate_name(&slot.workflow)?;
        self.carrier_path(Carrier::StateLog, &slot.workflow)
            .ok_or_else(|| Error::integrity(&self.path, "no state folder for an in-flight entry"))
    }

    /// The whole record `slot` names, if the log holds it (a complete line
    /// carrying the slot's entry).
    fn record_of(&self, slot: &Slot) -> Result<Option<Vec<u8>>> {
        let log = self.log_of(slot)?;
        let Some((file, size)) = durable::open_for_reading(&log, u64::MAX)? else {
            return Ok(None);
        };
        let end = slot.at.saturating_add(slot.len);
        if slot.len == 0 || end > size || slot.len > state_log::RECORD_LIMIT * 2 {
            return Ok(None);
        }
        let mut record = vec![0u8; slot.len as usize];
        file.read_exact_at(&mut record, slot.at)
            .map_err(|e| Error::io("read", &log, e))?;
        let carries = record.last() == Some(&b'\n')
            && record[..record.len() - 1].iter().all(|b| *b != b'\n')
            && carried(&record).is_some_and(|e| e.seq == slot.seq && e.hash == slot.hash);
        Ok(carries.then_some(record))
    }

    /// The entry line the record `slot` names carries.
    fn carried_line_of(&self, slot: &Slot) -> Result<Option<String>> {
        Ok(self.record_of(slot)?.and_then(|record| {
            state_log::split_record(&record[..record.len() - 1])
                .1
                .map(|a| String::from_utf8_lossy(a).into_owned())
        }))
    }
}

/// The audit entry a record (with its newline) carries.
fn carried(record: &[u8]) -> Option<AuditEntry> {
    let (_, audit) = state_log::split_record(&record[..record.len().checked_sub(1)?]);
    serde_json::from_slice(audit?).ok()
}

fn chain_one(
    head: Option<(u64, String)>,
    event: &str,
    data: Value,
    log: &AuditLog,
) -> (AuditEntry, String) {
    chain_entries(head, vec![(event.to_string(), data)], log.key.as_deref())
        .pop()
        .expect("one entry chained")
}

/// How a commit whose own record is durable can still fail: an entry
/// before it could not be made durable, so a crash could drop it.
fn earlier_entry_not_durable(e: Error) -> Error {
    match e {
        Error::Io { path, source, .. } => Error::Io {
            op: "make an earlier audit entry durable (new version visible, durability unknown)",
            path,
            source,
        },
        other => other,
    }
}

impl Commit {
    /// Step 2: the caller synced its log; `outcome` is how that went.
    /// `Ok(Some(e))`: recording that in the table failed (or marking the
    /// claim `Written` did, in step 1), which costs another sync of the
    /// log (the slot stays `Claimed` or `Written`, and once its lock is
    /// free settlers take the owner for gone and sync the log again), not
    /// the commit; the caller reports it as a warning.
    pub(crate) fn synced(&mut self, log: &AuditLog, outcome: Result<()>) -> Result<Option<Error>> {
        let mut marking = None;
        if let How::InFlight {
            index, slot_lock, ..
        } = &mut self.how
        {
            let state = if outcome.is_ok() {
                SlotState::Synced
            } else {
                SlotState::Failed
            };
            if let Some(table) = log.kept().table.clone() {
                marking = table.set_state(*index, state).err();
            }
            slot_lock.take();
        }
        outcome.map(|()| self.mark_failed.take().or(marking))
    }

    /// Step 3. `Err`: the commit is not acknowledged (an earlier entry
    /// could not be made durable; the new version is visible). `Ok(Err)`:
    /// acknowledged, durable, but copying the entry to `audit.jsonl`
    /// failed (the next settle or open copies it).
    pub(crate) fn finish(self, log: &AuditLog) -> Result<Result<AuditEntry>> {
        let Commit {
            entry,
            line,
            how,
            copy_failed,
            ..
        } = self;
        match how {
            How::Serial(guard) => {
                let copied = log.copy_unsynced(&[line.as_str()], &entry);
                drop(guard);
                Ok(copied.map(|()| entry))
            }
            How::InFlight {
                waits_for_others: false,
                ..
            } if copy_failed.is_none() => {
                // Ours is durable (step 2 succeeded) and nothing before it
                // was still in flight: acknowledged without another look.
                Ok(Ok(entry))
            }
            How::InFlight { index, .. } => {
                // Acknowledged once every entry up to ours is durable. The
                // table is read without the audit lock: entries before ours
                // were claimed whole before ours was, and their states and
                // frees are one-byte writes. (A read torn by a later claim
                // can only make us wait for that claimer's sync, then read
                // again.) Copying to `audit.jsonl` is left to the next
                // holder of the audit lock: the next commit, or any reader,
                // which settles first.
                let mut waited_for = None;
                loop {
                    let table = log.table_unlocked().map_err(earlier_entry_not_durable)?;
                    let snapshot = table.read().map_err(earlier_entry_not_durable)?;
                    let not_durable = snapshot.taken.iter().find(|t| {
                        t.state != SlotState::Synced
                            && (t.slot.seq < entry.seq
                                || (t.index == index && t.slot.seq == entry.seq))
                    });
                    let Some(blocking) = not_durable else {
                        return Ok(match copy_failed {
                            Some(e) => Err(e),
                            None => Ok(entry),
                        });
                    };
                    #[cfg(test)]
                    if durable::sim::mutation_acks_without_waiting() {
                        return Ok(Ok(entry));
                    }
                    let key = (blocking.index, blocking.slot.seq);
                    if matches!(blocking.state, SlotState::Claimed | SlotState::Written)
                        && waited_for != Some(key)
                    {
                        // Its owner is syncing: wait for it to let go of
                        // the slot (at once if it is gone).
                        waited_for = Some(key);
                        drop(
                            log.locks
                                .internal_exclusive("commit", &slot_lock_name(blocking.index), None)
                                .map_err(earlier_entry_not_durable)?,
                        );
                        continue;
                    }
                    // Its owner is gone or its sync failed: finish it under
                    // the audit lock.
                    let guard = log.lock().map_err(earlier_entry_not_durable)?;
                    let settled = (|| {
                        let known = log.reconcile_pending()?;
                        let tail = log.settled_tail(known)?;
                        let table = log.table()?;
                        log.settle(&table, tail, Help::DeadOnly, Some((&entry, &line)), None)
                    })()
                    .map_err(earlier_entry_not_durable)?;
                    drop(guard);
                    if let Some(e) = settled.copy_failed
                        && settled
                            .left
                            .iter()
                            .all(|t| t.slot.seq > entry.seq || t.state == SlotState::Synced)
                    {
                        return Ok(Err(e));
                    }
                }
            }
        }
    }
}
