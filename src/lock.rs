//! Named shared/exclusive locks that cannot go stale.
//!
//! A lock is a kernel `flock` on a file under the lock directory. The file is
//! created on first use and never deleted by anyone, so there is no window in
//! which two processes lock two different inodes under one name (the seed
//! system's stale-lock cleanup had exactly that window). The kernel drops a
//! flock when the last descriptor of its open file description closes, which
//! happens however the holder dies, so no PID check ever decides ownership.
//!
//! Within a process each acquisition opens its own descriptor, so threads
//! exclude each other like processes do. Within one thread, locks are
//! reentrant: a nested request for a lock the thread already holds is
//! counted instead of deadlocking on itself.

use crate::durable;
use crate::error::{Error, Result};
use crate::name::validate_name;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Whether a lock is held shared (many holders) or exclusive (one holder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        }
    }
}

/// Filesystem magic numbers (statfs `f_type`) of network filesystems on
/// which flock is emulated or local to one client, so it cannot exclude a
/// process on another machine.
const NFS_SUPER_MAGIC: i64 = 0x6969;
const SMB_SUPER_MAGIC: i64 = 0x517B;
const CIFS_MAGIC_NUMBER: i64 = 0xFF53_4D42;
const SMB2_MAGIC_NUMBER: i64 = 0xFE53_4D42;

/// A lock's identity: the name users see and the file that carries it.
#[derive(Debug, Clone)]
struct LockId {
    display_name: String,
    path: PathBuf,
}

/// Locks of one directory.
#[derive(Debug, Clone)]
pub struct LockManager {
    dir: PathBuf,
}

struct HeldLock {
    mode: LockMode,
    count: usize,
    file: File,
}

thread_local! {
    /// Locks this thread holds, by lock file path: the basis of reentrancy.
    static HELD: RefCell<HashMap<PathBuf, HeldLock>> = RefCell::new(HashMap::new());
}

/// Holds a lock until dropped. Not `Send`: reentrancy is tracked per thread,
/// so a guard must be released by the thread that took it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    path: PathBuf,
    name: String,
    mode: LockMode,
    _not_send: PhantomData<*const ()>,
}

impl LockGuard {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn mode(&self) -> LockMode {
        self.mode
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .finish()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // try_with: during thread teardown the map may already be gone, and
        // then closing the descriptors has released the locks anyway.
        let _ = HELD.try_with(|held| {
            let mut held = held.borrow_mut();
            if let Some(entry) = held.get_mut(&self.path) {
                entry.count -= 1;
                if entry.count == 0 {
                    let entry = held.remove(&self.path).expect("entry exists");
                    // Unlock explicitly so the lock goes even if a child
                    // process inherited the descriptor.
                    let _ = entry.file.unlock();
                }
            }
        });
    }
}

/// What a caller is told when its request has to wait.
#[derive(Debug, Clone)]
pub struct WaitNotice {
    pub lock: String,
    pub mode: LockMode,
}

impl LockManager {
    /// A manager for the lock files in `dir`, which must be a real
    /// directory on a filesystem where flock is reliable.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        durable::require_real_dir(&dir)?;
        refuse_network_filesystem(&dir)?;
        Ok(LockManager { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn user_lock(&self, name: &str) -> Result<LockId> {
        validate_name(name)?;
        Ok(LockId {
            display_name: name.to_string(),
            path: self.dir.join(format!("{name}.lock")),
        })
    }

    /// Locks the library takes on its own behalf are named `<kind>@<name>`.
    /// `@` is outside the name rule, so they can never collide with a user's
    /// lock of the same name.
    fn internal_lock(&self, kind: &str, name: &str) -> Result<LockId> {
        validate_name(name)?;
        let display_name = format!("{kind}@{name}");
        Ok(LockId {
            path: self.dir.join(format!("{display_name}.lock")),
            display_name,
        })
    }

    /// Waits up to `timeout` (forever if `None`) for the exclusive lock `name`.
    pub fn exclusive(&self, name: &str, timeout: Option<Duration>) -> Result<LockGuard> {
        acquire(&self.user_lock(name)?, LockMode::Exclusive, timeout, None)
    }

    /// Waits up to `timeout` (forever if `None`) for the shared lock `name`.
    pub fn shared(&self, name: &str, timeout: Option<Duration>) -> Result<LockGuard> {
        acquire(&self.user_lock(name)?, LockMode::Shared, timeout, None)
    }

    /// The exclusive lock `name` if it is free now, else `None`.
    pub fn try_exclusive(&self, name: &str) -> Result<Option<LockGuard>> {
        try_acquire(&self.user_lock(name)?, LockMode::Exclusive)
    }

    /// The shared lock `name` if no one holds it exclusively now, else `None`.
    pub fn try_shared(&self, name: &str) -> Result<Option<LockGuard>> {
        try_acquire(&self.user_lock(name)?, LockMode::Shared)
    }

    /// Like [`exclusive`](Self::exclusive)/[`shared`](Self::shared), telling
    /// `notice` once if the wait lasts longer than `notice.after`.
    pub fn acquire_with_notice(
        &self,
        name: &str,
        mode: LockMode,
        timeout: Option<Duration>,
        notice: Notice<'_>,
    ) -> Result<LockGuard> {
        acquire(&self.user_lock(name)?, mode, timeout, Some(notice))
    }

    /// The exclusive lock that serializes writers of one workflow's state.
    pub(crate) fn workflow_exclusive(
        &self,
        workflow: &str,
        timeout: Option<Duration>,
        notice: Option<Notice<'_>>,
    ) -> Result<LockGuard> {
        acquire(
            &self.internal_lock("workflow", workflow)?,
            LockMode::Exclusive,
            timeout,
            notice,
        )
    }
}

fn refuse_network_filesystem(dir: &Path) -> Result<()> {
    let stat = rustix::fs::statfs(dir).map_err(|e| Error::io("statfs", dir, e.into()))?;
    let kind = match stat.f_type as i64 {
        NFS_SUPER_MAGIC => "NFS",
        SMB_SUPER_MAGIC | CIFS_MAGIC_NUMBER | SMB2_MAGIC_NUMBER => "SMB/CIFS",
        _ => return Ok(()),
    };
    Err(Error::LockMisuse {
        lock: dir.display().to_string(),
        problem: format!(
            "the lock directory is on {kind}, where flock does not exclude other machines; \
             put the store on a local filesystem or use the PostgreSQL backend"
        ),
    })
}

/// Takes the lock from this thread's held set if it is there: the reentrant
/// path. `Ok(None)` means the thread does not hold it.
fn reenter(id: &LockId, mode: LockMode) -> Result<Option<LockGuard>> {
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        let Some(entry) = held.get_mut(&id.path) else {
            return Ok(None);
        };
        if entry.mode == LockMode::Shared && mode == LockMode::Exclusive {
            return Err(Error::LockMisuse {
                lock: id.display_name.clone(),
                problem: "this thread holds it shared and asked for it exclusive; \
                          upgrading in place would deadlock against other shared holders, \
                          so release the shared lock first"
                    .into(),
            });
        }
        entry.count += 1;
        Ok(Some(guard_for(id, mode)))
    })
}

fn guard_for(id: &LockId, mode: LockMode) -> LockGuard {
    LockGuard {
        path: id.path.clone(),
        name: id.display_name.clone(),
        mode,
        _not_send: PhantomData,
    }
}

fn register(id: &LockId, mode: LockMode, file: File) -> LockGuard {
    HELD.with(|held| {
        held.borrow_mut().insert(
            id.path.clone(),
            HeldLock {
                mode,
                count: 1,
                file,
            },
        )
    });
    guard_for(id, mode)
}

fn try_lock_file(file: &File, mode: LockMode) -> std::result::Result<bool, std::io::Error> {
    let attempt = match mode {
        LockMode::Shared => file.try_lock_shared(),
        LockMode::Exclusive => file.try_lock(),
    };
    match attempt {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

fn try_acquire(id: &LockId, mode: LockMode) -> Result<Option<LockGuard>> {
    if let Some(guard) = reenter(id, mode)? {
        return Ok(Some(guard));
    }
    let file = durable::open_stable_file(&id.path)?;
    match try_lock_file(&file, mode) {
        Ok(true) => Ok(Some(register(id, mode, file))),
        Ok(false) => Ok(None),
        Err(e) => Err(Error::io("flock", &id.path, e)),
    }
}

/// How a waiting acquisition announces itself.
pub struct Notice<'a> {
    /// Announce only once the wait has lasted this long, so the routine
    /// sub-millisecond waits of busy writers stay quiet.
    pub after: Duration,
    pub notify: &'a dyn Fn(&WaitNotice),
}

fn acquire(
    id: &LockId,
    mode: LockMode,
    timeout: Option<Duration>,
    notice: Option<Notice<'_>>,
) -> Result<LockGuard> {
    let started = Instant::now();
    if let Some(guard) = try_acquire(id, mode)? {
        return Ok(guard);
    }
    let file = durable::open_stable_file(&id.path)?;
    // A blocking flock cannot be given a deadline, and polling would either
    // burn CPU or add its interval to every handoff. So a helper thread
    // blocks in flock on a duplicate of our descriptor (same open file
    // description, hence the same lock) and the kernel wakes it the moment
    // the lock is free. On timeout we walk away: if the helper gets the lock
    // later, its send fails, it closes the last descriptor, and the lock is
    // released at once.
    let helper_file = file
        .try_clone()
        .map_err(|e| Error::io("dup lock descriptor", &id.path, e))?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("wfstate-lock-wait".into())
        .spawn(move || {
            let locked = match mode {
                LockMode::Shared => helper_file.lock_shared(),
                LockMode::Exclusive => helper_file.lock(),
            };
            let _ = tx.send(locked);
        })
        .map_err(|e| Error::io("spawn lock waiter", &id.path, e))?;
    let deadline = timeout.map(|t| started + t);
    let wait_until = |until: Option<Instant>| match until {
        Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
        None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
    };
    let mut received = Err(mpsc::RecvTimeoutError::Timeout);
    if let Some(notice) = &notice {
        let announce_at = started + notice.after;
        let first_deadline = deadline.map_or(announce_at, |d| d.min(announce_at));
        received = wait_until(Some(first_deadline));
        if received.is_err() && deadline.is_none_or(|d| announce_at < d) {
            (notice.notify)(&WaitNotice {
                lock: id.display_name.clone(),
                mode,
            });
        }
    }
    if received.is_err() {
        received = wait_until(deadline);
    }
    match received {
        Ok(Ok(())) => Ok(register(id, mode, file)),
        Ok(Err(e)) => Err(Error::io("flock", &id.path, e)),
        Err(_) => Err(Error::LockTimeout {
            lock: id.display_name.clone(),
            waited: started.elapsed(),
            holder: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager() -> (tempfile::TempDir, LockManager) {
        let dir = tempfile::tempdir().unwrap();
        let mgr = LockManager::open(dir.path()).unwrap();
        (dir, mgr)
    }

    #[test]
    fn nested_exclusive_in_one_thread_is_counted_not_deadlocked() {
        let (_dir, mgr) = manager();
        let outer = mgr.exclusive("res", None).unwrap();
        let inner = mgr.exclusive("res", Some(Duration::ZERO)).unwrap();
        drop(inner);
        // Still held after the inner release: another thread cannot take it.
        let mgr2 = mgr.clone();
        let other = std::thread::spawn(move || mgr2.try_exclusive("res").unwrap().is_some());
        assert!(!other.join().unwrap());
        drop(outer);
        let mgr3 = mgr.clone();
        let other = std::thread::spawn(move || mgr3.try_exclusive("res").unwrap().is_some());
        assert!(other.join().unwrap());
    }

    #[test]
    fn exclusive_request_while_holding_shared_is_an_error() {
        let (_dir, mgr) = manager();
        let _shared = mgr.shared("res", None).unwrap();
        let err = mgr.exclusive("res", None).unwrap_err();
        assert!(matches!(err, Error::LockMisuse { .. }), "{err}");
    }

    #[test]
    fn threads_exclude_each_other() {
        let (_dir, mgr) = manager();
        let _held = mgr.exclusive("res", None).unwrap();
        let mgr2 = mgr.clone();
        let outcome = std::thread::spawn(move || {
            let started = Instant::now();
            let err = mgr2
                .exclusive("res", Some(Duration::from_millis(100)))
                .unwrap_err();
            (matches!(err, Error::LockTimeout { .. }), started.elapsed())
        })
        .join()
        .unwrap();
        assert!(outcome.0, "expected a timeout");
        assert!(outcome.1 >= Duration::from_millis(100));
    }

    #[test]
    fn shared_holders_coexist_across_threads() {
        let (_dir, mgr) = manager();
        let _a = mgr.shared("res", None).unwrap();
        let mgr2 = mgr.clone();
        let got = std::thread::spawn(move || mgr2.try_shared("res").unwrap().is_some());
        assert!(got.join().unwrap());
    }

    #[test]
    fn waiter_gets_the_lock_when_the_holder_releases() {
        let (_dir, mgr) = manager();
        let held = mgr.exclusive("res", None).unwrap();
        let mgr2 = mgr.clone();
        let waiter = std::thread::spawn(move || {
            mgr2.exclusive("res", Some(Duration::from_secs(10)))
                .map(|_| ())
                .is_ok()
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn invalid_and_internal_looking_names_are_refused() {
        let (_dir, mgr) = manager();
        for bad in ["../x", "a/b", "", "workflow@x"] {
            assert!(matches!(
                mgr.try_exclusive(bad),
                Err(Error::InvalidName { .. })
            ));
        }
    }
}
