//! The per-workflow checkpoint index: a cache that makes `latest`, a page of
//! `list` and `chain` fast at 100,000 checkpoints. It is never the only copy
//! of anything: every field comes from a checkpoint file, and the index is
//! rebuilt from those files whenever it is missing or fails a check.
//!
//! Layout: fixed 128-byte records, the first a header. Each record is
//!
//! ```text
//! <id:36> <parent:36 or 36 '-'> <created µs:16> <phase tag:16> <check:16><pad>\n
//! ```
//!
//! Records are in id order, which is creation order (ids are UUIDv7 forced
//! monotonic under the workflow's checkpoint lock), so a record is found by
//! binary search and the newest are at the end. `check` is the first 64 bits
//! of SHA-256 over the record's first 107 bytes; only the records a query
//! actually uses are checked, so a 10,000-link chain does not pay for the
//! other 90,000.

use crate::error::{Error, Result};
use crate::id::ID_LEN;
use crate::integrity::hex;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

pub const RECORD_LEN: usize = 128;
const HEADER: &str = "wfstate.checkpoint-index/1";
const CHECKED_LEN: usize = ID_LEN + 1 + ID_LEN + 1 + 16 + 1 + 16; // 107
const NONE_ID: [u8; ID_LEN] = [b'-'; ID_LEN];
const NO_PHASE: &str = "----------------";

/// One index record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRecord {
    pub id: String,
    pub parent: Option<String>,
    /// Creation time, Unix microseconds.
    pub created_us: u64,
    /// First 16 hex digits of SHA-256 of the phase, or `None`.
    pub phase_tag: Option<String>,
}

/// Tag that `--phase` filters compare: exact phases, fixed width.
pub fn phase_tag(phase: Option<&str>) -> Option<String> {
    phase.map(|p| hex(&Sha256::digest(p.as_bytes())[..8]))
}

fn record_check(bytes: &[u8]) -> String {
    hex(&Sha256::digest(&bytes[..CHECKED_LEN])[..8])
}

impl IndexRecord {
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [b' '; RECORD_LEN];
        let parent = self.parent.as_deref().map_or(&NONE_ID[..], str::as_bytes);
        let created = format!("{:016}", self.created_us);
        let tag = self.phase_tag.as_deref().unwrap_or(NO_PHASE);
        let mut at = 0;
        for (field, sep) in [
            (self.id.as_bytes(), true),
            (parent, true),
            (created.as_bytes(), true),
            (tag.as_bytes(), true),
        ] {
            out[at..at + field.len()].copy_from_slice(field);
            at += field.len() + usize::from(sep);
        }
        let check = record_check(&out);
        out[at..at + 16].copy_from_slice(check.as_bytes());
        out[RECORD_LEN - 1] = b'\n';
        out
    }

    /// Decodes and checks one record.
    pub fn decode(bytes: &[u8]) -> std::result::Result<IndexRecord, String> {
        if bytes.len() != RECORD_LEN || bytes[RECORD_LEN - 1] != b'\n' {
            return Err("record is not 128 bytes ending in a newline".into());
        }
        let check = &bytes[CHECKED_LEN + 1..CHECKED_LEN + 17];
        if check != record_check(bytes).as_bytes() {
            return Err("record check digits do not match its content".into());
        }
        let text = std::str::from_utf8(&bytes[..CHECKED_LEN]).map_err(|_| "record is not UTF-8")?;
        let id = &text[..ID_LEN];
        let parent = &text[ID_LEN + 1..2 * ID_LEN + 1];
        let created = &text[2 * ID_LEN + 2..2 * ID_LEN + 18];
        let tag = &text[2 * ID_LEN + 19..CHECKED_LEN];
        let record = IndexRecord {
            id: id.to_string(),
            parent: (parent.as_bytes() != NONE_ID).then(|| parent.to_string()),
            created_us: created
                .parse()
                .map_err(|_| "creation time is not a number")?,
            phase_tag: (tag != NO_PHASE).then(|| tag.to_string()),
        };
        // Separators and padding carry no data but must be exactly as
        // written: a record is valid only if it encodes back to itself.
        if record.encode()[..] != *bytes {
            return Err("record layout is damaged".into());
        }
        Ok(record)
    }
}

/// The header record.
pub fn header() -> [u8; RECORD_LEN] {
    let mut out = [b' '; RECORD_LEN];
    out[..HEADER.len()].copy_from_slice(HEADER.as_bytes());
    out[RECORD_LEN - 1] = b'\n';
    out
}

/// An opened index. Reads records on demand (`pread`) or from a buffer once
/// the whole file has been loaded.
pub struct IndexReader {
    file: File,
    count: usize,
    loaded: Option<Vec<u8>>,
    path: std::path::PathBuf,
}

/// Why an index cannot be used as it is.
#[derive(Debug)]
pub enum IndexProblem {
    Missing,
    Damaged(String),
}

impl IndexReader {
    /// Opens the index and checks its header and size.
    pub fn open(path: &Path) -> Result<std::result::Result<IndexReader, IndexProblem>> {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(crate::durable::store_open_flags())
            .open(path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(IndexProblem::Missing)),
            Err(e) => return Err(Error::io("open", path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        let len = meta.len() as usize;
        if !meta.is_file() {
            return Ok(Err(IndexProblem::Damaged("not a regular file".into())));
        }
        if len < RECORD_LEN || !len.is_multiple_of(RECORD_LEN) {
            return Ok(Err(IndexProblem::Damaged(format!(
                "size {len} is not a whole number of {RECORD_LEN}-byte records"
            ))));
        }
        let mut head = [0u8; RECORD_LEN];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io("read", path, e))?;
        if head != header() {
            return Ok(Err(IndexProblem::Damaged(
                "header is not wfstate.checkpoint-index/1".into(),
            )));
        }
        Ok(Ok(IndexReader {
            file,
            count: len / RECORD_LEN - 1,
            loaded: None,
            path: path.to_path_buf(),
        }))
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Reads the whole file into memory, for walks that touch many records.
    pub fn load(&mut self) -> Result<()> {
        let mut buf = Vec::with_capacity((self.count + 1) * RECORD_LEN);
        (&self.file)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("read", &self.path, e))?;
        // read_to_end continues from the file position, which pread did not move.
        if buf.len() != (self.count + 1) * RECORD_LEN {
            return Err(Error::integrity(
                &self.path,
                "index changed size while being read",
            ));
        }
        self.loaded = Some(buf);
        Ok(())
    }

    fn raw(&self, i: usize, out: &mut [u8; RECORD_LEN]) -> Result<()> {
        let offset = (i + 1) * RECORD_LEN;
        match &self.loaded {
            Some(buf) => out.copy_from_slice(&buf[offset..offset + RECORD_LEN]),
            None => self
                .file
                .read_exact_at(out, offset as u64)
                .map_err(|e| Error::io("read", &self.path, e))?,
        }
        Ok(())
    }

    /// Record `i` (0 = oldest), checked.
    pub fn record(&self, i: usize) -> Result<std::result::Result<IndexRecord, String>> {
        let mut raw = [0u8; RECORD_LEN];
        self.raw(i, &mut raw)?;
        Ok(IndexRecord::decode(&raw).map_err(|e| format!("record {}: {e}", i + 1)))
    }

    /// Position of the first record whose id is >= `id` (binary search on
    /// the unchecked id bytes; the caller checks what it then uses).
    pub fn lower_bound(&self, id: &str) -> Result<usize> {
        let (mut lo, mut hi) = (0, self.count);
        let mut raw = [0u8; RECORD_LEN];
        while lo < hi {
            let mid = (lo + hi) / 2;
            self.raw(mid, &mut raw)?;
            if &raw[..ID_LEN] < id.as_bytes() {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The checked record with exactly this id, if present.
    pub fn find(&self, id: &str) -> Result<Option<std::result::Result<IndexRecord, String>>> {
        let at = self.lower_bound(id)?;
        if at == self.count {
            return Ok(None);
        }
        let rec = self.record(at)?;
        Ok(match rec {
            Ok(r) if r.id == id => Some(Ok(r)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, parent: Option<&str>) -> IndexRecord {
        IndexRecord {
            id: id.into(),
            parent: parent.map(String::from),
            created_us: 1_764_000_000_000_000,
            phase_tag: phase_tag(Some("REVIEW")),
        }
    }

    #[test]
    fn records_round_trip_and_any_flipped_byte_is_caught() {
        let r = rec(&crate::id::new_v7(), Some(&crate::id::new_v7()));
        let bytes = r.encode();
        assert_eq!(IndexRecord::decode(&bytes).unwrap(), r);
        let root = rec(&crate::id::new_v7(), None);
        assert_eq!(IndexRecord::decode(&root.encode()).unwrap(), root);
        for i in 0..RECORD_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x01;
            assert!(
                IndexRecord::decode(&bad).is_err(),
                "flipped byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn reader_finds_records_by_binary_search() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let mut ids = Vec::new();
        let mut prev: Option<String> = None;
        let mut bytes = header().to_vec();
        for _ in 0..1000 {
            let id = crate::id::next_after(prev.as_deref());
            bytes.extend_from_slice(&rec(&id, prev.as_deref()).encode());
            ids.push(id.clone());
            prev = Some(id);
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = IndexReader::open(&path).unwrap().unwrap();
        assert_eq!(reader.count(), 1000);
        for loaded in [false, true] {
            if loaded {
                reader.load().unwrap();
            }
            for (i, id) in ids.iter().enumerate().step_by(37) {
                assert_eq!(reader.lower_bound(id).unwrap(), i);
                assert_eq!(reader.find(id).unwrap().unwrap().unwrap().id, *id);
            }
            assert!(
                reader
                    .find("00000000-0000-7000-8000-000000000000")
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[test]
    fn torn_or_foreign_files_are_reported_as_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let mut bytes = header().to_vec();
        bytes.extend_from_slice(&rec(&crate::id::new_v7(), None).encode()[..50]);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            IndexReader::open(&path).unwrap(),
            Err(IndexProblem::Damaged(_))
        ));
        std::fs::write(&path, [b'x'; RECORD_LEN]).unwrap();
        assert!(matches!(
            IndexReader::open(&path).unwrap(),
            Err(IndexProblem::Damaged(_))
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            IndexReader::open(&path).unwrap(),
            Err(IndexProblem::Missing)
        ));
    }
}
