//! Is a lock held, how, and by whom, without disturbing it.
//!
//! The truth comes from the kernel. On Linux `/proc/locks` lists every flock
//! with its mode, the pid that took it, and the device and inode of the file,
//! so holders can be counted without touching the lock. Where that table
//! cannot be read, the lock is probed with non-blocking attempts instead
//! (which can, for an instant, make another process's `try_` call fail).

use crate::error::{Error, Result};
use crate::lock::LockMode;
use crate::lock::holder::{self, HolderRecord};
use serde::Serialize;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Whether a lock is held, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Held {
    Free,
    /// `holders` is known when the kernel's lock table could be read.
    Shared {
        holders: Option<usize>,
    },
    Exclusive,
}

/// A holder record and whether its process is among the lock's current
/// holders in the kernel's table (`None` when that table is unavailable).
#[derive(Debug, Clone, Serialize)]
pub struct RecordView {
    #[serde(flatten)]
    pub record: HolderRecord,
    pub holding: Option<bool>,
}

/// Everything known about one lock.
#[derive(Debug, Clone, Serialize)]
pub struct LockStatus {
    pub name: String,
    #[serde(flatten)]
    pub held: Held,
    /// Pids the kernel reports as holding the lock, when known.
    pub kernel_pids: Option<Vec<u32>>,
    /// Processes the kernel reports as waiting for it, when known.
    pub waiters: Option<usize>,
    pub records: Vec<RecordView>,
}

impl LockStatus {
    /// One line for people.
    pub fn describe(&self) -> String {
        let current: Vec<String> = self
            .records
            .iter()
            .filter(|r| r.holding != Some(false))
            .map(|r| r.record.describe())
            .collect();
        let exited: Vec<String> = self
            .records
            .iter()
            .filter(|r| r.holding == Some(false))
            .map(|r| r.record.describe())
            .collect();
        // Name holders by their records when there are any, else by the
        // pids the kernel reports.
        let holders = || {
            if !current.is_empty() {
                return format!(" {}", current.join("; "));
            }
            match &self.kernel_pids {
                Some(p) if !p.is_empty() => format!(
                    " pid {}",
                    p.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                ),
                _ => String::new(),
            }
        };
        let mut line = match self.held {
            Held::Free if !self.records.is_empty() => {
                format!("free (last holder exited: {})", exited.join("; "))
            }
            Held::Free => "free".to_string(),
            Held::Exclusive => format!("held exclusive by{}", holders()),
            Held::Shared { holders: Some(n) } => format!("held shared by {n}:{}", holders()),
            Held::Shared { holders: None } => format!("held shared by{}", holders()),
        };
        if self.held != Held::Free && !exited.is_empty() {
            line.push_str(&format!(
                " (records left by exited holders: {})",
                exited.join("; ")
            ));
        }
        line
    }
}

/// The status of the lock whose file is `lock_path`, displayed as `name`.
/// Never creates the lock file.
pub fn status_of(name: &str, lock_path: &Path) -> Result<LockStatus> {
    let dir = lock_path.parent().expect("lock files live in a directory");
    let file_name = lock_path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("lock file names are UTF-8");
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(crate::durable::store_open_flags())
        .open(lock_path);
    let file = match opened {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("open", lock_path, e)),
    };
    let (held, kernel) = match &file {
        None => (Held::Free, Some(KernelView::default())),
        Some(f) => {
            let meta = f.metadata().map_err(|e| Error::io("stat", lock_path, e))?;
            match kernel_view(meta.dev(), meta.ino()) {
                Some(view) => (view.held(), Some(view)),
                None => (
                    probe(f).map_err(|e| Error::io("flock", lock_path, e))?,
                    None,
                ),
            }
        }
    };
    let records = holder::record_paths(dir, file_name)?
        .iter()
        .filter_map(|p| holder::read(p))
        .map(|record| RecordView {
            holding: match (&kernel, held) {
                (_, Held::Free) => Some(false),
                (Some(k), _) => Some(k.holders.iter().any(|(_, pid)| *pid == record.pid)),
                (None, _) => None,
            },
            record,
        })
        .collect();
    Ok(LockStatus {
        name: name.to_string(),
        held,
        kernel_pids: kernel
            .as_ref()
            .map(|k| k.holders.iter().map(|(_, pid)| *pid).collect()),
        waiters: kernel.as_ref().map(|k| k.waiters),
        records,
    })
}

#[derive(Debug, Default)]
struct KernelView {
    holders: Vec<(LockMode, u32)>,
    waiters: usize,
}

impl KernelView {
    fn held(&self) -> Held {
        match self.holders.first() {
            None => Held::Free,
            Some((LockMode::Exclusive, _)) => Held::Exclusive,
            Some((LockMode::Shared, _)) => Held::Shared {
                holders: Some(self.holders.len()),
            },
        }
    }
}

/// Entries of `/proc/locks` for one file, e.g.
/// `1: FLOCK  ADVISORY  WRITE 4242 fe:00:10011203 0 EOF` (holder) and
/// `1: -> FLOCK  ADVISORY  WRITE 4243 fe:00:10011203 0 EOF` (waiter).
fn kernel_view(dev: u64, ino: u64) -> Option<KernelView> {
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    Some(parse_proc_locks(
        &table,
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        ino,
    ))
}

fn parse_proc_locks(table: &str, major: u32, minor: u32, ino: u64) -> KernelView {
    let mut view = KernelView::default();
    for line in table.lines() {
        let mut fields: Vec<&str> = line.split_whitespace().skip(1).collect();
        let waiting = fields.first() == Some(&"->");
        if waiting {
            fields.remove(0);
        }
        let [kind, _advisory, access, pid, file_id, ..] = fields[..] else {
            continue;
        };
        if kind != "FLOCK" || !same_file(file_id, major, minor, ino) {
            continue;
        }
        if waiting {
            view.waiters += 1;
            continue;
        }
        let mode = if access == "WRITE" {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        if let Ok(pid) = pid.parse() {
            view.holders.push((mode, pid));
        }
    }
    view
}

fn same_file(file_id: &str, major: u32, minor: u32, ino: u64) -> bool {
    let mut parts = file_id.split(':');
    let (Some(ma), Some(mi), Some(i)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    u32::from_str_radix(ma, 16) == Ok(major)
        && u32::from_str_radix(mi, 16) == Ok(minor)
        && i.parse::<u64>() == Ok(ino)
}

/// Fallback without a kernel table: non-blocking attempts on a separate
/// descriptor, released at once.
fn probe(file: &File) -> io::Result<Held> {
    match file.try_lock_shared() {
        Err(TryLockError::WouldBlock) => return Ok(Held::Exclusive),
        Err(TryLockError::Error(e)) => return Err(e),
        Ok(()) => file.unlock()?,
    }
    match file.try_lock() {
        Err(TryLockError::WouldBlock) => Ok(Held::Shared { holders: None }),
        Err(TryLockError::Error(e)) => Err(e),
        Ok(()) => {
            file.unlock()?;
            Ok(Held::Free)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_are_matched_by_device_and_inode() {
        let table = "\
1: FLOCK  ADVISORY  READ 9356 fe:00:10011203 0 EOF
2: FLOCK  ADVISORY  READ 9355 fe:00:10011203 0 EOF
2: -> FLOCK  ADVISORY  WRITE 9361 fe:00:10011203 0 EOF
3: POSIX  ADVISORY  WRITE 77 fe:00:10011203 0 EOF
4: FLOCK  ADVISORY  WRITE 88 fe:00:999 0 EOF
";
        let view = parse_proc_locks(table, 0xfe, 0, 10011203);
        assert_eq!(view.held(), Held::Shared { holders: Some(2) });
        assert_eq!(view.waiters, 1);
        let other = parse_proc_locks(table, 0xfe, 0, 999);
        assert_eq!(other.held(), Held::Exclusive);
        assert_eq!(other.holders, [(LockMode::Exclusive, 88)]);
    }
}
