//! `audit.in-flight`: the entries whose state records have been written
//! but whose commit has not finished, so that updates of different
//! workflows sync their logs at the same time instead of in turn
//! (DESIGN §13, "The pipelined commit").
//!
//! A fixed-size file: a header (the boot it was written in) and
//! [`SLOTS`] slots of [`SLOT_LEN`] bytes. Each slot's first byte is its
//! state; then a JSON [`Slot`] padded with spaces says which entry is on
//! its way and where its record lies; then, if it fits, the entry's line. It is never synced: what it says
//! only matters in the boot that wrote it (unsynced writes survive the
//! death of a process, not a power cut, and recovery after a reboot reads
//! the state logs instead, then resets this file).
//!
//! Who writes what: a slot is claimed and freed only under the audit lock;
//! its owner, outside that lock, only changes the state byte (a one-byte
//! write, which no reader can see torn). Each slot is 1 KiB at a 1 KiB
//! offset, so a slot's write never spans two pages and a SIGKILL cannot
//! tear it either.

use crate::durable::{self, FileId};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many commits can be in flight at once; a writer that finds every
/// slot taken commits the serial way (holding the audit lock across its
/// sync), which is always correct.
pub(crate) const SLOTS: usize = 16;
const SLOT_LEN: usize = 1024;
/// A slot's first part: its state byte and its JSON record, padded.
const META_LEN: usize = 384;
const HEADER_LEN: usize = 1024;
pub(crate) const TABLE_LEN: usize = HEADER_LEN + SLOTS * SLOT_LEN;
pub(crate) const FILE_NAME: &str = "audit.in-flight";

/// An entry on its way: its record in `workflow`'s state log at `at`,
/// `len` bytes long, carries entry `seq` whose hash is `hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Slot {
    pub seq: u64,
    pub hash: String,
    pub workflow: String,
    pub at: u64,
    pub len: u64,
    /// The entry's line is in the slot too, after the record (it fit):
    /// settling copies it from there, so it never depends on the state log
    /// still being where it was. A longer entry is read from its record.
    #[serde(default)]
    pub entry_in_table: bool,
}

/// Where a slot's commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    Free,
    /// Claimed by a writer that holds the audit lock while it writes the
    /// record. Seen by anyone else (who must hold the audit lock), the
    /// record may not be whole: its claimer died or failed before marking
    /// it `Written`, so a settler checks the record before anything is
    /// chained after it.
    Claimed,
    /// The record is whole (its claimer wrote it before releasing the
    /// audit lock), not known durable.
    Written,
    /// The owner's sync of the record succeeded.
    Synced,
    /// The owner's sync failed: the record's durability is unknown.
    Failed,
}

impl SlotState {
    fn byte(self) -> u8 {
        match self {
            SlotState::Free => 0,
            SlotState::Claimed => b'C',
            SlotState::Written => b'W',
            SlotState::Synced => b'S',
            SlotState::Failed => b'F',
        }
    }

    fn from_byte(byte: u8) -> Option<SlotState> {
        match byte {
            0 => Some(SlotState::Free),
            b'C' => Some(SlotState::Claimed),
            b'W' => Some(SlotState::Written),
            b'S' => Some(SlotState::Synced),
            b'F' => Some(SlotState::Failed),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    boot: String,
}

/// One taken slot, as read.
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub index: usize,
    pub state: SlotState,
    pub slot: Slot,
    /// The entry's line kept in the slot, if it fit.
    pub entry: Option<String>,
}

/// The table as read at one moment.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// The boot the table was last reset in (`None`: no header).
    pub boot: Option<String>,
    /// Taken slots, lowest `seq` first.
    pub taken: Vec<Taken>,
    /// Indexes of free slots.
    pub free: Vec<usize>,
    /// Slots that do not parse: a claim whose write failed part way (its
    /// claimer got the error and wrote no record), since a claim is written
    /// whole in one write within a page otherwise. Settling frees them.
    pub broken: Vec<usize>,
}

/// The table file, kept open by one process.
#[derive(Clone)]
pub(crate) struct Table {
    path: PathBuf,
    file: Arc<File>,
    id: FileId,
}

impl Table {
    /// Opens the table at `path`; `None` if there is none.
    pub fn open(path: &Path) -> Result<Option<Table>> {
        match durable::open_for_reading(path, TABLE_LEN as u64) {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(Error::TooLarge { size, .. }) => {
                return Err(Error::integrity(
                    path,
                    format!("{size}, not the {TABLE_LEN} bytes of an in-flight table"),
                ));
            }
            Err(e) => return Err(e),
        }
        let file = durable::open_for_writes(path)?;
        let (id, len) = FileId::of_file(&file, path)?;
        if len != TABLE_LEN as u64 {
            return Err(Error::integrity(
                path,
                format!("{len} bytes, not the {TABLE_LEN} of an in-flight table"),
            ));
        }
        Ok(Some(Table {
            path: path.to_path_buf(),
            file: Arc::new(file),
            id,
        }))
    }

    /// Writes an empty table for `boot` at `path`, durably (recovery after
    /// a reboot, or the first use in a store made before this file).
    pub fn reset(path: &Path, boot: &str) -> Result<()> {
        durable::replace_file_with_bytes(path, &empty_table(boot))
    }

    /// Whether `path` still names the file this table was opened from.
    pub fn still_at_its_name(&self) -> Result<bool> {
        Ok(FileId::at(&self.path)?.map(|(id, _)| id) == Some(self.id))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every slot (not the entries). (`open` refuses a table of the
    /// wrong length: an integrity error.)
    pub fn read(&self) -> Result<Snapshot> {
        let mut bytes = vec![0u8; TABLE_LEN];
        let mut filled = 0;
        while filled < TABLE_LEN {
            let n = self
                .file
                .read_at(&mut bytes[filled..], filled as u64)
                .map_err(|e| Error::io("read", &self.path, e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled != TABLE_LEN {
            return Err(Error::integrity(
                &self.path,
                format!("{filled} bytes, not the {TABLE_LEN} of an in-flight table"),
            ));
        }
        let boot = serde_json::from_slice::<Header>(trimmed(&bytes[..HEADER_LEN]))
            .ok()
            .map(|h| h.boot);
        let mut snapshot = Snapshot {
            boot,
            ..Snapshot::default()
        };
        for index in 0..SLOTS {
            let raw = &bytes[HEADER_LEN + index * SLOT_LEN..][..SLOT_LEN];
            let state = SlotState::from_byte(raw[0]);
            if state == Some(SlotState::Free) {
                snapshot.free.push(index);
                continue;
            }
            match (
                state,
                serde_json::from_slice::<Slot>(trimmed(&raw[1..META_LEN])),
            ) {
                (Some(state), Ok(slot)) => {
                    let entry = if slot.entry_in_table {
                        let kept = &raw[META_LEN..];
                        kept.iter()
                            .position(|b| *b == b'\n')
                            .and_then(|end| String::from_utf8(kept[..end].to_vec()).ok())
                    } else {
                        None
                    };
                    snapshot.taken.push(Taken {
                        index,
                        state,
                        slot,
                        entry,
                    })
                }
                _ => snapshot.broken.push(index),
            }
        }
        snapshot.taken.sort_by_key(|t| t.slot.seq);
        Ok(snapshot)
    }

    /// Claims slot `index` for `slot`, in state `Claimed` (under the audit
    /// lock, before the record is written: a claimer that dies in between
    /// leaves a slot whose record is missing, which settling drops).
    pub fn claim(&self, index: usize, slot: &Slot, entry_line: &str) -> Result<()> {
        let mut slot = slot.clone();
        slot.entry_in_table = entry_line.len() < SLOT_LEN - META_LEN;
        let mut bytes = serde_json::to_vec(&slot).expect("a slot serializes");
        // Names are at most 128 characters that JSON never escapes: a
        // slot's record is far below its fixed length.
        assert!(bytes.len() < META_LEN - 1, "in-flight slot too long");
        bytes.insert(0, SlotState::Claimed.byte());
        bytes.resize(META_LEN, b' ');
        if slot.entry_in_table {
            bytes.extend_from_slice(entry_line.as_bytes());
            bytes.push(b'\n');
        }
        // One write, within one page (slots sit at 1 KiB offsets): a
        // SIGKILL cannot tear it.
        durable::write_at_unsynced_in(&self.file, &self.path, slot_offset(index), &bytes)
    }

    /// Sets slot `index`'s state (its owner, or a settler under the lock).
    pub fn set_state(&self, index: usize, state: SlotState) -> Result<()> {
        durable::write_at_unsynced_in(&self.file, &self.path, slot_offset(index), &[state.byte()])
    }
}

fn slot_offset(index: usize) -> u64 {
    (HEADER_LEN + index * SLOT_LEN) as u64
}

fn empty_table(boot: &str) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&Header {
        boot: boot.to_string(),
    })
    .expect("a header serializes");
    assert!(bytes.len() < HEADER_LEN, "boot id too long");
    bytes.resize(HEADER_LEN, b' ');
    bytes.resize(TABLE_LEN, 0);
    bytes
}

/// The bytes before the padding.
fn trimmed(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ' && *b != 0)
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_come_back_in_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        Table::reset(&path, "boot-1").unwrap();
        let table = Table::open(&path).unwrap().unwrap();
        let slot = |seq: u64| Slot {
            seq,
            hash: "ab".repeat(32),
            workflow: "w".repeat(128),
            at: u64::MAX,
            len: u64::MAX,
            entry_in_table: true,
        };
        table.claim(5, &slot(9), "entry nine").unwrap();
        table.claim(2, &slot(10), &"x".repeat(700)).unwrap();
        table.set_state(5, SlotState::Synced).unwrap();
        let read = table.read().unwrap();
        assert_eq!(read.boot.as_deref(), Some("boot-1"));
        assert_eq!(read.free.len(), SLOTS - 2);
        let got: Vec<(usize, SlotState, u64)> = read
            .taken
            .iter()
            .map(|t| (t.index, t.state, t.slot.seq))
            .collect();
        assert_eq!(
            got,
            [(5, SlotState::Synced, 9), (2, SlotState::Claimed, 10)]
        );
        assert_eq!(read.taken[0].slot, slot(9));
        assert_eq!(read.taken[0].entry.as_deref(), Some("entry nine"));
        assert!(!read.taken[1].slot.entry_in_table, "too long for the table");
        table.set_state(5, SlotState::Free).unwrap();
        assert_eq!(table.read().unwrap().taken.len(), 1);
    }

    #[test]
    fn a_short_table_is_an_integrity_error_and_a_broken_slot_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        Table::reset(&path, "boot-1").unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN] = b'?';
        std::fs::write(&path, &bytes).unwrap();
        let table = Table::open(&path).unwrap().unwrap();
        assert_eq!(table.read().unwrap().broken, [0]);
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(Table::open(&path), Err(Error::Integrity { .. })));
        std::fs::write(&path, vec![0u8; TABLE_LEN + 1]).unwrap();
        assert!(matches!(Table::open(&path), Err(Error::Integrity { .. })));
    }
}
