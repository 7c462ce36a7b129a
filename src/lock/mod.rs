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
//!
//! A holder of a user lock also leaves a record of who it is beside the lock
//! file (`holder`), for `lock status` and wait messages; the kernel's lock
//! table, read by `status`, is what says whether the lock is held.

pub mod holder;
pub mod status;

use crate::durable::{self, FileId};
use crate::error::{Error, Result};
use crate::name::validate_name;
use holder::HolderRecord;
pub use status::{Held, LockStatus};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
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

/// A held lock of any backend, released when dropped.
pub trait LockHold {
    fn name(&self) -> &str;
    fn mode(&self) -> LockMode;
    /// Lets processes spawned from now on keep the lock after this process
    /// exits (see [`LockGuard::share_with_children`]). `Ok(false)`: the
    /// backend cannot hand a lock to a child (a PostgreSQL lock lives in this
    /// process's connection), so the lock ends with this process.
    fn share_with_children(&self) -> Result<bool>;
    /// Checks that the lock is still held: a database lock is lost if its
    /// connection ends (the server was restarted, or an administrator
    /// terminated the session). A kernel lock cannot be lost.
    fn still_held(&self) -> Result<()>;
}

/// Named user locks, whatever keeps them.
pub trait NamedLocks: Send + Sync {
    /// Acquires the lock `name` as `request` says.
    fn acquire(&self, name: &str, request: LockRequest<'_>) -> Result<Box<dyn LockHold>>;
    /// Status of the lock `name`.
    fn status(&self, name: &str) -> Result<LockStatus>;
    /// Status of every lock that has been used in this store.
    fn list(&self) -> Result<Vec<LockStatus>>;

    /// Waits up to `timeout` (forever if `None`) for the exclusive lock `name`.
    fn exclusive(&self, name: &str, timeout: Option<Duration>) -> Result<Box<dyn LockHold>> {
        self.acquire(name, plain_request(LockMode::Exclusive, timeout))
    }

    /// Waits up to `timeout` (forever if `None`) for the shared lock `name`.
    fn shared(&self, name: &str, timeout: Option<Duration>) -> Result<Box<dyn LockHold>> {
        self.acquire(name, plain_request(LockMode::Shared, timeout))
    }

    /// The lock `name` in `mode` if it can be had now, else `None`.
    fn try_acquire(&self, name: &str, mode: LockMode) -> Result<Option<Box<dyn LockHold>>> {
        match self.acquire(name, plain_request(mode, Some(Duration::ZERO))) {
            Ok(guard) => Ok(Some(guard)),
            Err(Error::LockTimeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A request with the default purpose (the command line), a holder
/// record, and no wait notice: what [`LockManager::exclusive`] does.
fn plain_request(mode: LockMode, timeout: Option<Duration>) -> LockRequest<'static> {
    LockRequest {
        mode,
        timeout,
        purpose: None,
        recording: Recording::Durable,
        notice: None,
    }
}

impl LockHold for LockGuard {
    fn name(&self) -> &str {
        &self.name
    }
    fn mode(&self) -> LockMode {
        self.mode
    }
    fn share_with_children(&self) -> Result<bool> {
        LockGuard::share_with_children(self).map(|()| true)
    }
    fn still_held(&self) -> Result<()> {
        Ok(())
    }
}

impl NamedLocks for LockManager {
    fn acquire(&self, name: &str, request: LockRequest<'_>) -> Result<Box<dyn LockHold>> {
        LockManager::acquire(self, name, request).map(|g| Box::new(g) as Box<dyn LockHold>)
    }
    fn status(&self, name: &str) -> Result<LockStatus> {
        LockManager::status(self, name)
    }
    fn list(&self) -> Result<Vec<LockStatus>> {
        LockManager::list(self)
    }
}

/// Filesystem magic numbers (statfs `f_type`) of network filesystems on
/// which flock is emulated or local to one client, so it cannot exclude a
/// process on another machine.
const NFS_SUPER_MAGIC: i64 = 0x6969;
const SMB_SUPER_MAGIC: i64 = 0x517B;
const CIFS_MAGIC_NUMBER: i64 = 0xFF53_4D42;
const SMB2_MAGIC_NUMBER: i64 = 0xFE53_4D42;

const LOCK_SUFFIX: &str = ".lock";

/// Kinds of the locks the library takes for itself (`<kind>@<name>`):
/// writers of a workflow's state, creators/pruners of its checkpoints,
/// appenders to the audit log, and `health --repair`. Lock order, to rule
/// out deadlock: `health@repair` first, then a workflow or checkpoint lock,
/// then the audit lock; never the other way round.
pub const INTERNAL_KINDS: [&str; 5] = ["workflow", "checkpoint", "audit", "health", "commit"];

/// A lock's identity: the name users see, the file that carries it, and
/// whether this acquisition leaves a record (user locks do unless asked not
/// to; the library's own short-lived locks do not, to keep state writes at
/// their fsync budget).
#[derive(Debug, Clone)]
struct LockId {
    display_name: String,
    path: PathBuf,
    keeps_records: bool,
    /// Where an internal lock's descriptor goes between acquisitions.
    idle: Option<Arc<IdleDescriptors>>,
}

/// Locks of one directory.
#[derive(Debug, Clone)]
pub struct LockManager {
    dir: PathBuf,
    idle: Arc<IdleDescriptors>,
}

struct HeldLock {
    mode: LockMode,
    count: usize,
    file: File,
    record_path: Option<PathBuf>,
    /// Set for internal locks: the descriptor goes back to the idle set on
    /// release, unless a child may have inherited it.
    reuse: Option<(Arc<IdleDescriptors>, FileId)>,
}

/// Descriptors of the library's own lock files (`workflow@...`,
/// `audit@log`, ...), unlocked, kept open for the next acquisition by this
/// process: a locked update takes two such locks, and opening and closing
/// each file cost more than the lock itself (DESIGN section 4). Each is
/// its own open file description, so threads still exclude each other
/// (the kernel's unit of `flock` ownership); one taken from here is checked
/// after locking to still be the file its name refers to.
#[derive(Default)]
struct IdleDescriptors(Mutex<HashMap<PathBuf, Vec<(File, FileId)>>>);

impl std::fmt::Debug for IdleDescriptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdleDescriptors")
    }
}

/// Idle descriptors kept per lock file and in all.
const IDLE_PER_LOCK: usize = 2;
const IDLE_TOTAL: usize = 64;

impl IdleDescriptors {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Vec<(File, FileId)>>> {
        // A panic while holding this leaves only descriptors behind.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, path: &Path) -> Option<(File, FileId)> {
        self.map().get_mut(path)?.pop()
    }

    /// Keeps `file` (unlocked by the caller) for the next acquisition.
    fn give_back(&self, path: &Path, file: File, id: FileId) {
        let mut map = self.map();
        if map.values().map(Vec::len).sum::<usize>() >= IDLE_TOTAL {
            map.clear();
        }
        let idle = map.entry(path.to_path_buf()).or_default();
        if idle.len() < IDLE_PER_LOCK {
            idle.push((file, id));
        }
    }
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

    /// Lets processes spawned from now on inherit the lock, as with
    /// `flock(1)`: the lock then stays held until this process *and* every
    /// child holding the descriptor have exited or closed it (a daemon a
    /// child forks keeps it too). Without this call the descriptor is
    /// close-on-exec and children never hold the lock.
    pub fn share_with_children(&self) -> Result<()> {
        HELD.with(|held| {
            let held = held.borrow();
            let entry = held
                .get(&self.path)
                .expect("a live guard's lock is registered");
            rustix::io::fcntl_setfd(&entry.file, rustix::io::FdFlags::empty())
                .map_err(|e| Error::io("clear close-on-exec", &self.path, e.into()))?;
            // A child may hold it from now on: never reuse it.
            drop(held);
            HELD.with(|held| {
                if let Some(entry) = held.borrow_mut().get_mut(&self.path) {
                    entry.reuse = None;
                }
            });
            Ok(())
        })
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
        let released = HELD.try_with(|held| {
            let mut held = held.borrow_mut();
            let entry = held.get_mut(&self.path)?;
            entry.count -= 1;
            if entry.count == 0 {
                held.remove(&self.path)
            } else {
                None
            }
        });
        if let Ok(Some(entry)) = released {
            // Remove the record while still holding, so no later holder's
            // status shows ours as current. A failure only leaves a record
            // that status reports as left by an exited holder.
            if let Some(record) = &entry.record_path {
                let _ = durable::remove_file_unsynced(record);
            }
            // Unlocked and kept for the next acquisition, or closed, which
            // releases the lock (unless a child inherited it: see
            // `share_with_children`).
            match entry.reuse {
                Some((idle, id)) if entry.file.unlock().is_ok() => {
                    idle.give_back(&self.path, entry.file, id)
                }
                _ => drop(entry.file),
            }
        }
    }
}

/// What a caller is told when its request has to wait.
#[derive(Debug, Clone)]
pub struct WaitNotice {
    pub lock: String,
    pub mode: LockMode,
    /// Who holds it, as far as can be told (absent if that failed).
    pub status: Option<LockStatus>,
}

impl WaitNotice {
    /// `waiting for exclusive lock "res", held exclusive by pid 42 — …`
    pub fn describe(&self) -> String {
        let holder = self
            .status
            .as_ref()
            .map(|s| format!(", {}", s.describe()))
            .unwrap_or_default();
        format!(
            "waiting for {} lock {:?}{holder}",
            self.mode.as_str(),
            self.lock
        )
    }
}

/// How a waiting acquisition announces itself.
pub struct Notice<'a> {
    /// Announce only once the wait has lasted this long, so the routine
    /// sub-millisecond waits of busy writers stay quiet.
    pub after: Duration,
    pub notify: &'a dyn Fn(&WaitNotice),
}

/// Whether a holder leaves a record of itself beside the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    /// Write the record durably (two fsyncs on acquire, one on release), so
    /// it survives a crash and tells who held the lock when it happened.
    Durable,
    /// No record: the lock still works and `status` still shows the holding
    /// pid from the kernel. For hot paths that cannot pay for the syncs.
    Off,
}

/// A full lock request; see [`LockManager::acquire`].
pub struct LockRequest<'a> {
    pub mode: LockMode,
    /// `None` waits as long as the holder lives; `Some(ZERO)` never waits.
    pub timeout: Option<Duration>,
    /// Recorded as the holder's purpose (default: the command line).
    pub purpose: Option<&'a str>,
    pub recording: Recording,
    pub notice: Option<Notice<'a>>,
}

impl LockManager {
    /// A manager for the lock files in `dir`, which must be a real
    /// directory on a filesystem where flock is reliable.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        durable::require_real_dir(&dir)?;
        refuse_network_filesystem(&dir)?;
        Ok(LockManager {
            dir,
            idle: Arc::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn user_lock(&self, name: &str) -> Result<LockId> {
        validate_name(name)?;
        Ok(LockId {
            display_name: name.to_string(),
            path: self.dir.join(format!("{name}{LOCK_SUFFIX}")),
            keeps_records: true,
            idle: None,
        })
    }

    /// Locks the library takes on its own behalf are named `<kind>@<name>`.
    /// `@` is outside the name rule, so they can never collide with a user's
    /// lock of the same name.
    fn internal_lock(&self, kind: &str, name: &str) -> Result<LockId> {
        validate_name(name)?;
        let display_name = format!("{kind}@{name}");
        Ok(LockId {
            path: self.dir.join(format!("{display_name}{LOCK_SUFFIX}")),
            display_name,
            keeps_records: false,
            idle: Some(self.idle.clone()),
        })
    }

    /// Acquires the lock `name` as `request` says.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use wfstate::lock::{LockManager, LockMode, LockRequest, Recording};
    /// let locks = LockManager::open(".wfstate/locks")?;
    /// let _guard = locks.acquire("deploy", LockRequest {
    ///     mode: LockMode::Exclusive,
    ///     timeout: Some(Duration::from_secs(30)),
    ///     purpose: Some("release 1.4"),
    ///     recording: Recording::Durable,
    ///     notice: None,
    /// })?;
    /// // ... the lock is held until `_guard` is dropped
    /// # Ok::<(), wfstate::Error>(())
    /// ```
    pub fn acquire(&self, name: &str, request: LockRequest<'_>) -> Result<LockGuard> {
        let mut id = self.user_lock(name)?;
        id.keeps_records = request.recording == Recording::Durable;
        acquire(
            &id,
            request.mode,
            request.timeout,
            request.purpose,
            request.notice,
        )
    }

    /// Waits up to `timeout` (forever if `None`) for the exclusive lock `name`.
    pub fn exclusive(&self, name: &str, timeout: Option<Duration>) -> Result<LockGuard> {
        acquire(
            &self.user_lock(name)?,
            LockMode::Exclusive,
            timeout,
            None,
            None,
        )
    }

    /// Waits up to `timeout` (forever if `None`) for the shared lock `name`.
    pub fn shared(&self, name: &str, timeout: Option<Duration>) -> Result<LockGuard> {
        acquire(
            &self.user_lock(name)?,
            LockMode::Shared,
            timeout,
            None,
            None,
        )
    }

    /// The exclusive lock `name` if it is free now, else `None`.
    pub fn try_exclusive(&self, name: &str) -> Result<Option<LockGuard>> {
        try_acquire(&self.user_lock(name)?, LockMode::Exclusive, None)
    }

    /// The shared lock `name` if no one holds it exclusively now, else `None`.
    pub fn try_shared(&self, name: &str) -> Result<Option<LockGuard>> {
        try_acquire(&self.user_lock(name)?, LockMode::Shared, None)
    }

    /// The exclusive lock that serializes writers of one workflow's state.
    pub(crate) fn workflow_exclusive(
        &self,
        workflow: &str,
        timeout: Option<Duration>,
        notice: Option<Notice<'_>>,
    ) -> Result<LockGuard> {
        let id = self.internal_lock("workflow", workflow)?;
        acquire(&id, LockMode::Exclusive, timeout, None, notice)
    }

    /// An exclusive lock the library takes for itself, `<kind>@<name>`
    /// (`kind` is one of [`INTERNAL_KINDS`]).
    pub(crate) fn internal_exclusive(
        &self,
        kind: &str,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<LockGuard> {
        debug_assert!(INTERNAL_KINDS.contains(&kind));
        let id = self.internal_lock(kind, name)?;
        acquire(&id, LockMode::Exclusive, timeout, None, None)
    }

    /// [`LockManager::internal_exclusive`] for a lock every holder keeps for
    /// microseconds (the audit lock): a wait first polls, backing off from
    /// 5 µs to 50 µs, for up to about 5 ms, and only then waits with a
    /// helper thread as `acquire` does. When several processes take turns
    /// with such a lock, a helper thread per wait (a thread created, woken
    /// and torn down) cost more CPU than the work done under the lock.
    pub(crate) fn internal_exclusive_brief(
        &self,
        kind: &str,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<LockGuard> {
        debug_assert!(INTERNAL_KINDS.contains(&kind));
        let id = self.internal_lock(kind, name)?;
        let started = Instant::now();
        let mut pause = Duration::from_micros(5);
        let mut waited = Duration::ZERO;
        while waited < Duration::from_millis(5) {
            if let Some(guard) = try_acquire(&id, LockMode::Exclusive, None)? {
                return Ok(guard);
            }
            if timeout.is_some_and(|t| started.elapsed() >= t) {
                break;
            }
            std::thread::sleep(pause);
            waited += pause;
            pause = (pause * 2).min(Duration::from_micros(50));
        }
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        acquire(&id, LockMode::Exclusive, left, None, None)
    }

    /// [`LockManager::internal_exclusive`] without waiting: `None` if busy.
    pub(crate) fn try_internal_exclusive(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<LockGuard>> {
        debug_assert!(INTERNAL_KINDS.contains(&kind));
        try_acquire(&self.internal_lock(kind, name)?, LockMode::Exclusive, None)
    }

    /// Status of the lock `name` (a user lock, or an internal `kind@name`).
    pub fn status(&self, name: &str) -> Result<LockStatus> {
        let id = match name.split_once('@') {
            Some((kind, inner)) if INTERNAL_KINDS.contains(&kind) => {
                self.internal_lock(kind, inner)?
            }
            _ => self.user_lock(name)?,
        };
        status::status_of(&id.display_name, &id.path)
    }

    /// Status of every lock that has ever been used in this directory.
    pub fn list(&self) -> Result<Vec<LockStatus>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io("list", &self.dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.dir, e))?;
            if let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(LOCK_SUFFIX))
                && !name.starts_with('.')
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        names
            .iter()
            .map(|name| status::status_of(name, &self.dir.join(format!("{name}{LOCK_SUFFIX}"))))
            .collect()
    }
}

/// The network filesystem a statfs `f_type` denotes, if it is one on which
/// flock cannot be trusted.
fn unreliable_flock_filesystem(f_type: i64) -> Option<&'static str> {
    match f_type {
        NFS_SUPER_MAGIC => Some("NFS"),
        SMB_SUPER_MAGIC | CIFS_MAGIC_NUMBER | SMB2_MAGIC_NUMBER => Some("SMB/CIFS"),
        _ => None,
    }
}

fn refuse_network_filesystem(dir: &Path) -> Result<()> {
    let stat = rustix::fs::statfs(dir).map_err(|e| Error::io("statfs", dir, e.into()))?;
    let Some(kind) = unreliable_flock_filesystem(stat.f_type as i64) else {
        return Ok(());
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

/// Called with the kernel lock in hand: records the holder, then registers
/// the lock as held by this thread.
fn take_ownership(
    id: &LockId,
    mode: LockMode,
    (file, file_id): (File, Option<FileId>),
    purpose: Option<&str>,
) -> Result<LockGuard> {
    let record_path = if id.keeps_records {
        if mode == LockMode::Exclusive {
            // We are the only holder, so every record there is left by a
            // holder that exited. Removing them decides nothing about
            // ownership; it only keeps status truthful.
            let dir = id.path.parent().expect("lock files live in a directory");
            let file_name = id
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("UTF-8 name");
            for stale in holder::record_paths(dir, file_name)? {
                let _ = durable::remove_file_unsynced(&stale);
            }
        }
        let path = holder::new_record_path(&id.path);
        let record = HolderRecord::for_current_process(&id.display_name, mode, purpose);
        // If the record cannot be written the disk is failing; say so rather
        // than hold a lock nobody can see (dropping `file` releases it).
        holder::write(&path, &record)?;
        Some(path)
    } else {
        None
    };
    HELD.with(|held| {
        held.borrow_mut().insert(
            id.path.clone(),
            HeldLock {
                mode,
                count: 1,
                file,
                record_path,
                reuse: id.idle.clone().zip(file_id),
            },
        )
    });
    Ok(guard_for(id, mode))
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

/// A descriptor of the lock file: an idle one if there is one, else newly
/// opened; with the file's identity when it may be reused.
fn lock_file(id: &LockId) -> Result<(File, Option<FileId>, bool)> {
    if let Some((file, file_id)) = id.idle.as_ref().and_then(|idle| idle.take(&id.path)) {
        return Ok((file, Some(file_id), true));
    }
    let (file, file_id) = open_lock_file(id)?;
    Ok((file, file_id, false))
}

/// A newly opened descriptor of the lock file, with the file's identity
/// when the descriptor may be reused.
fn open_lock_file(id: &LockId) -> Result<(File, Option<FileId>)> {
    let file = durable::open_stable_file(&id.path)?;
    let file_id = match id.idle {
        Some(_) => Some(FileId::of_file(&file, &id.path)?.0),
        None => None,
    };
    Ok((file, file_id))
}

/// After locking a descriptor that was idle: whether its file is still the
/// one the name refers to (lock files are never replaced by wfstate, but a
/// person may have removed one). If not, the caller starts over.
fn still_named(id: &LockId, file_id: Option<FileId>) -> Result<bool> {
    Ok(FileId::at(&id.path)?.map(|(now, _)| now) == file_id)
}

fn try_acquire(id: &LockId, mode: LockMode, purpose: Option<&str>) -> Result<Option<LockGuard>> {
    if let Some(guard) = reenter(id, mode)? {
        return Ok(Some(guard));
    }
    loop {
        let (file, file_id, was_idle) = lock_file(id)?;
        match try_lock_file(&file, mode) {
            Ok(true) if was_idle && !still_named(id, file_id)? => continue,
            Ok(true) => return take_ownership(id, mode, (file, file_id), purpose).map(Some),
            Ok(false) => {
                if let (Some(idle), Some(file_id)) = (&id.idle, file_id) {
                    idle.give_back(&id.path, file, file_id);
                }
                return Ok(None);
            }
            Err(e) => return Err(Error::io("flock", &id.path, e)),
        }
    }
}

/// Waits for the lock as long as its holder keeps it (`acquire` without a
/// deadline or a notice).
fn acquire_blocking(id: &LockId, mode: LockMode, purpose: Option<&str>) -> Result<LockGuard> {
    loop {
        let (file, file_id, was_idle) = lock_file(id)?;
        loop {
            let locked = match mode {
                LockMode::Shared => file.lock_shared(),
                LockMode::Exclusive => file.lock(),
            };
            match locked {
                Ok(()) => break,
                // A signal handler ran while we waited: wait on.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("flock", &id.path, e)),
            }
        }
        if was_idle && !still_named(id, file_id)? {
            continue; // the name now refers to another file: lock that one
        }
        return take_ownership(id, mode, (file, file_id), purpose);
    }
}

fn acquire(
    id: &LockId,
    mode: LockMode,
    timeout: Option<Duration>,
    purpose: Option<&str>,
    notice: Option<Notice<'_>>,
) -> Result<LockGuard> {
    let started = Instant::now();
    if let Some(guard) = try_acquire(id, mode, purpose)? {
        return Ok(guard);
    }
    if timeout.is_none() && notice.is_none() {
        // Nothing to do while waiting: block in this thread. (A helper
        // thread per wait, below, cost more than a whole handoff when
        // several processes take turns with one lock.)
        return acquire_blocking(id, mode, purpose);
    }
    // Opened afresh (not an idle descriptor): on timeout it is abandoned to
    // the helper below, and must never be reused.
    let (file, file_id) = open_lock_file(id)?;
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
    // A deadline too far away for an `Instant` is never reached: no deadline.
    let deadline = timeout.and_then(|t| started.checked_add(t));
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
                status: status::status_of(&id.display_name, &id.path).ok(),
            });
        }
    }
    if received.is_err() {
        received = wait_until(deadline);
    }
    match received {
        Ok(Ok(())) => take_ownership(id, mode, (file, file_id), purpose),
        Ok(Err(e)) => Err(Error::io("flock", &id.path, e)),
        Err(_) => Err(Error::LockTimeout {
            lock: id.display_name.clone(),
            waited: started.elapsed(),
            holder: status::status_of(&id.display_name, &id.path)
                .ok()
                .map(|s| s.describe()),
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
    fn many_threads_never_hold_the_exclusive_lock_together() {
        let (_dir, mgr) = manager();
        hammer_from_eight_threads(
            move |mgr| mgr.exclusive("res", Some(Duration::from_secs(30))).unwrap(),
            mgr,
        );
    }

    /// The library's own locks reuse idle descriptors; each is still its own
    /// open file description, so threads still exclude each other.
    #[test]
    fn internal_locks_with_reused_descriptors_still_exclude_threads() {
        let (_dir, mgr) = manager();
        hammer_from_eight_threads(
            move |mgr| {
                mgr.internal_exclusive("workflow", "wf", Some(Duration::from_secs(30)))
                    .unwrap()
            },
            mgr.clone(),
        );
        assert!(
            !mgr.idle.map().is_empty(),
            "released descriptors were kept for reuse"
        );
    }

    /// An idle descriptor whose file was removed meanwhile must not be
    /// locked: it would lock a file nobody else can see.
    #[test]
    fn a_reused_descriptor_follows_its_lock_file_being_replaced() {
        let (dir, mgr) = manager();
        drop(mgr.internal_exclusive("workflow", "wf", None).unwrap());
        let path = dir.path().join("workflow@wf.lock");
        std::fs::remove_file(&path).unwrap();
        let _held = mgr.internal_exclusive("workflow", "wf", None).unwrap();
        // Another process (another manager, fresh descriptors) must find it
        // held through the file the name now refers to.
        let other = File::open(&path).unwrap();
        assert!(
            matches!(other.try_lock(), Err(TryLockError::WouldBlock)),
            "the lock was taken on the removed file"
        );
    }

    fn hammer_from_eight_threads(
        take: impl Fn(&LockManager) -> LockGuard + Send + Sync + 'static,
        mgr: LockManager,
    ) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let take = Arc::new(take);
        let inside = Arc::new(AtomicBool::new(false));
        let entries = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (mgr, inside, entries) = (mgr.clone(), inside.clone(), entries.clone());
                let take = take.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _g = take(&mgr);
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        std::thread::yield_now();
                        inside.store(false, Ordering::SeqCst);
                        entries.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(entries.load(Ordering::SeqCst), 1600);
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
    fn a_waiter_without_a_deadline_blocks_until_the_release_not_before() {
        // No timeout and no notice: the wait blocks in the caller's own
        // thread (`acquire_blocking`). The holder drops the lock only after
        // noting the time; the waiter must get it after that, in either mode.
        for mode in [LockMode::Exclusive, LockMode::Shared] {
            let (_dir, mgr) = manager();
            let held = mgr.exclusive("res", None).unwrap();
            let mgr2 = mgr.clone();
            let waiter = std::thread::spawn(move || {
                let guard = match mode {
                    LockMode::Exclusive => mgr2.exclusive("res", None),
                    LockMode::Shared => mgr2.shared("res", None),
                }
                .unwrap();
                let got_it = Instant::now();
                // While the waiter holds it, nobody else may take it exclusively.
                let other = mgr2.clone();
                let excluded =
                    std::thread::spawn(move || other.try_exclusive("res").unwrap().is_none())
                        .join()
                        .unwrap();
                drop(guard);
                (got_it, excluded)
            });
            std::thread::sleep(Duration::from_millis(50));
            let released = Instant::now();
            drop(held);
            let (got_it, excluded) = waiter.join().unwrap();
            assert!(
                got_it >= released,
                "{mode:?} waiter got the lock before its release"
            );
            assert!(excluded, "{mode:?} waiter's hold did not exclude a writer");
        }
    }

    #[test]
    fn network_filesystems_are_recognized_and_local_ones_accepted() {
        assert_eq!(unreliable_flock_filesystem(0x6969), Some("NFS"));
        assert_eq!(unreliable_flock_filesystem(0xFF53_4D42), Some("SMB/CIFS"));
        assert_eq!(unreliable_flock_filesystem(0xEF53), None); // ext4
        assert_eq!(unreliable_flock_filesystem(0x0102_1994), None); // tmpfs
        // And the directory this test runs in is accepted.
        let (_dir, _mgr) = manager();
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
