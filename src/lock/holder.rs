//! Who holds a lock: the record a holder leaves beside the lock file.
//!
//! Records are for people and diagnostics only. Whether a lock is held is
//! always decided by the kernel (see `status`), never by a record: a record
//! can outlive its holder (SIGKILL, power cut) and is then shown as left by
//! a holder that exited.

use crate::clock;
use crate::durable::{self, ReadOutcome};
use crate::error::Result;
use crate::lock::LockMode;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Suffix of holder record files: `<lock name>.lock.<pid>-<n>.holder`.
pub const RECORD_SUFFIX: &str = ".holder";
const RECORD_LIMIT: u64 = 64 * 1024;

static RECORD_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What a holder says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HolderRecord {
    pub lock: String,
    pub mode: String,
    pub pid: u32,
    /// When the holding process started (RFC 3339), which tells a reused
    /// pid apart from the original holder.
    pub process_started_at: Option<String>,
    pub host: String,
    pub user: String,
    pub uid: u32,
    /// The caller's purpose, or the holding process's command line.
    pub purpose: String,
    /// When the lock was acquired (RFC 3339).
    pub since: String,
}

impl HolderRecord {
    /// A record describing the calling process.
    pub fn for_current_process(lock: &str, mode: LockMode, purpose: Option<&str>) -> Self {
        let purpose = purpose
            .map(str::to_string)
            .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
        let uid = rustix::process::getuid().as_raw();
        HolderRecord {
            lock: lock.to_string(),
            mode: mode.as_str().to_string(),
            pid: std::process::id(),
            process_started_at: own_start_time(),
            host: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            user: user_name(uid).unwrap_or_else(|| format!("uid {uid}")),
            uid,
            purpose,
            since: clock::now_rfc3339(),
        }
    }

    /// One line for people: `pid 123 (alice@build-1, since …): deploy`.
    pub fn describe(&self) -> String {
        format!(
            "pid {} ({}@{}, since {}): {}",
            self.pid, self.user, self.host, self.since, self.purpose
        )
    }
}

/// The path of a fresh record file for the lock file `lock_path`.
pub fn new_record_path(lock_path: &Path) -> PathBuf {
    let n = RECORD_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = lock_path
        .file_name()
        .expect("lock paths have a name")
        .to_os_string();
    name.push(format!(".{}-{n}{RECORD_SUFFIX}", std::process::id()));
    lock_path.with_file_name(name)
}

/// Writes `record` durably at `path`.
pub fn write(path: &Path, record: &HolderRecord) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(record).expect("a record always serializes");
    durable::replace_file_with_bytes(path, &bytes)
}

/// Record files of the lock file named `lock_file_name` in `dir`, sorted.
pub fn record_paths(dir: &Path, lock_file_name: &str) -> Result<Vec<PathBuf>> {
    let prefix = format!("{lock_file_name}.");
    let entries = std::fs::read_dir(dir).map_err(|e| crate::Error::io("list", dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| crate::Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let tail = name
            .strip_prefix(&prefix)
            .and_then(|t| t.strip_suffix(RECORD_SUFFIX));
        // The tail is `<pid>-<n>`; anything else (a temp file of a record
        // being written, a longer lock name sharing the prefix) is not ours.
        if tail.is_some_and(|t| {
            t.split_once('-')
                .is_some_and(|(p, n)| is_number(p) && is_number(n))
        }) {
            paths.push(entry.path());
        }
    }
    paths.sort();
    Ok(paths)
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Reads a record; a record that vanished (its holder released) is `None`,
/// and so is an unreadable one: records are only diagnostics.
pub fn read(path: &Path) -> Option<HolderRecord> {
    match durable::read_file(path, RECORD_LIMIT) {
        Ok(ReadOutcome::Found(bytes)) => serde_json::from_slice(&bytes).ok(),
        _ => None,
    }
}

/// The account name of `uid` from the password database (`/etc/passwd`).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let uid_field = fields.nth(1)?;
        (uid_field.parse() == Ok(uid)).then(|| name.to_string())
    })
}

/// Start time of this process from `/proc/self/stat` (field 22, in clock
/// ticks after boot) and the boot time in `/proc/stat`.
fn own_start_time() -> Option<String> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces and parentheses, so
    // count fields from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start_ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot_secs: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let ticks_per_sec = rustix::param::clock_ticks_per_second();
    let started_nanos = i128::from(boot_secs) * 1_000_000_000
        + i128::from(start_ticks) * 1_000_000_000 / i128::from(ticks_per_sec);
    let when = time::OffsetDateTime::from_unix_timestamp_nanos(started_nanos).ok()?;
    when.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_describes_this_process() {
        let r = HolderRecord::for_current_process("res", LockMode::Shared, Some("deploy"));
        assert_eq!(r.pid, std::process::id());
        assert_eq!(r.purpose, "deploy");
        assert!(r.process_started_at.is_some());
        assert!(r.describe().contains("deploy"));
    }

    #[test]
    fn record_paths_match_only_their_own_lock() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "a.lock.12-0.holder",
            "a.lock.13-4.holder",
            "a.b.lock.12-0.holder",
            ".a.lock.12-0.holder.tmp-1-2",
            "a.lock",
        ] {
            std::fs::write(dir.path().join(name), b"{}").unwrap();
        }
        let names: Vec<_> = record_paths(dir.path(), "a.lock")
            .unwrap()
            .into_iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.lock.12-0.holder", "a.lock.13-4.holder"]);
    }
}
