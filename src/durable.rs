//! Every byte the store persists goes through this module, and nothing else
//! in the crate calls fsync, rename or unlink on store files. Keeping the
//! protocol in one place is what lets it be reviewed against the crash model
//! in `docs/DESIGN.md` (and, later, run over a simulated filesystem).
//!
//! The replace protocol (`replace_file`):
//! 1. create `.<target>.tmp-<pid>-<n>` in the target's directory with
//!    O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC: a fresh inode nobody else writes,
//!    never a pre-planted symlink;
//! 2. write every byte;
//! 3. fsync the temp file, so its data is on disk before any name points at it;
//! 4. rename it over the target: readers see the old or the new file, whole;
//! 5. fsync the directory, so the rename itself survives a power cut.
//!
//! Any failure removes the temp file and reports the error; the target keeps
//! its previous version unless step 5 failed (then the new version is
//! visible but its durability is unknown, and the error says so). A failed
//! fsync is never retried: after an fsync error Linux may have dropped the
//! dirty pages and a second fsync would report success for data that is gone.

use crate::error::{Error, Result, Size};
use rustix::fs::FileType;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marker that every temp file name carries, so `health` can find leftovers.
pub const TEMP_MARKER: &str = ".tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
static SYNCS: AtomicU64 = AtomicU64::new(0);

/// fsync-class calls this process has made through this module: lets tests
/// and benchmarks count the syncs an operation costs.
pub fn syncs_so_far() -> u64 {
    SYNCS.load(Ordering::Relaxed)
}

// The system calls that change store files. Every one goes through one of
// these functions: the single place where test builds record operations for
// the crash simulator and inject faults (see `sim`).

fn os_fsync(file: &File, path: &Path, is_dir: bool) -> io::Result<()> {
    SYNCS.fetch_add(1, Ordering::Relaxed);
    #[cfg(test)]
    sim::before(sim::Kind::Fsync)?;
    file.sync_all()?;
    #[cfg(test)]
    sim::record(if is_dir {
        sim::Op::FsyncDir(path.to_path_buf())
    } else {
        sim::Op::Fsync(path.to_path_buf())
    });
    let _ = (path, is_dir);
    Ok(())
}

/// `fdatasync`: the file's data and what is needed to read it back (its
/// size), not its timestamps. The crash model treats it as an fsync of the
/// file, which for the data it is.
fn os_fdatasync(file: &File, path: &Path) -> io::Result<()> {
    SYNCS.fetch_add(1, Ordering::Relaxed);
    #[cfg(test)]
    sim::before(sim::Kind::Fsync)?;
    file.sync_data()?;
    #[cfg(test)]
    sim::record(sim::Op::Fsync(path.to_path_buf()));
    let _ = path;
    Ok(())
}

fn os_create_new(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true) // O_CREAT|O_EXCL: never reuse or follow an existing name
        .custom_flags(store_open_flags())
        .open(path)?;
    #[cfg(test)]
    sim::record(sim::Op::Create(path.to_path_buf()));
    Ok(file)
}

fn os_write(file: &File, path: &Path, offset: u64, buf: &[u8]) -> io::Result<usize> {
    #[cfg(test)]
    let buf = match sim::before_write(buf.len())? {
        Some(short) => &buf[..short],
        None => buf,
    };
    let n = std::os::unix::fs::FileExt::write_at(file, buf, offset)?;
    #[cfg(test)]
    sim::record(sim::Op::Write {
        path: path.to_path_buf(),
        offset,
        data: buf[..n].to_vec(),
    });
    let _ = path;
    Ok(n)
}

fn os_rename(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(test)]
    sim::before(sim::Kind::Rename)?;
    fs::rename(from, to)?;
    #[cfg(test)]
    sim::record(sim::Op::Rename {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
    });
    Ok(())
}

fn os_unlink(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    #[cfg(test)]
    sim::record(sim::Op::Unlink(path.to_path_buf()));
    Ok(())
}

fn os_mkdir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)?;
    #[cfg(test)]
    sim::record(sim::Op::Mkdir(path.to_path_buf()));
    Ok(())
}

/// Writes through `os_write` at increasing offsets (buffered above it).
struct PositionedWriter<'a> {
    file: &'a File,
    path: &'a Path,
    offset: u64,
}

impl Write for PositionedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = os_write(self.file, self.path, self.offset, buf)?;
        self.offset += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The flags every open of a store file adds. `O_NOFOLLOW`: a symlink is
/// refused, never followed. `O_NONBLOCK`: a FIFO planted where a store file
/// belongs opens at once (and the type check refuses it) instead of waiting
/// for a writer forever; on regular files it changes nothing.
pub(crate) fn store_open_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32
}

/// Replaces `target` with the bytes `write` produces, atomically and durably
/// (the five steps in the module documentation). `write` may stop early with
/// an error, which aborts the replacement and leaves `target` untouched.
pub fn replace_file(
    target: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    let dir = parent_of(target)?;
    let (tmp_path, file) = create_temp_beside(target)?;
    let written = write_and_sync(&file, &tmp_path, write);
    if let Err((op, source)) = written {
        discard_temp(&tmp_path);
        return Err(Error::io(op, &tmp_path, source));
    }
    if let Err(source) = os_rename(&tmp_path, target) {
        discard_temp(&tmp_path);
        return Err(Error::io("rename into place", target, source));
    }
    #[cfg(test)]
    if sim::mutation_skips_dir_fsync() {
        return Ok(()); // the seed system's bug, kept so the simulator can catch it
    }
    sync_dir(dir).map_err(|e| match e {
        Error::Io { path, source, .. } => Error::Io {
            op: "fsync directory (new version visible, durability unknown)",
            path,
            source,
        },
        other => other,
    })
}

/// Publishes a new file in two phases: steps 1–3 of [`replace_file`] (temp
/// file written and fsynced), then `before_publish` (for example a durable
/// index append that must precede the file's appearance), then steps 4–5
/// (rename, directory fsync). If `before_publish` fails the temp file is
/// removed and nothing is published.
pub fn publish_file(
    target: &Path,
    bytes: &[u8],
    before_publish: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let dir = parent_of(target)?;
    let (tmp_path, file) = create_temp_beside(target)?;
    if let Err((op, source)) = write_and_sync(&file, &tmp_path, |w| w.write_all(bytes)) {
        discard_temp(&tmp_path);
        return Err(Error::io(op, &tmp_path, source));
    }
    if let Err(e) = before_publish() {
        discard_temp(&tmp_path);
        return Err(e);
    }
    if let Err(source) = os_rename(&tmp_path, target) {
        discard_temp(&tmp_path);
        return Err(Error::io("rename into place", target, source));
    }
    sync_dir(dir)
}

/// Creates `path`, which must not exist, holding `bytes`, durably: the
/// file is written and fsynced, then its directory. Unlike
/// [`replace_file`] there is no temp file, so a crash can leave the new
/// file empty or holding a prefix of `bytes`: only for files whose readers
/// treat an incomplete tail as never written (line logs whose lines end
/// in a newline). A process killed part-way leaves nothing for `health` to
/// report, where a temp file would be.
pub fn create_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let file = os_create_new(path).map_err(|e| Error::io("create", path, e))?;
    write_all_at(&file, path, 0, bytes).map_err(|e| Error::io("write", path, e))?;
    os_fsync(&file, path, false).map_err(|e| Error::io("fsync", path, e))?;
    #[cfg(test)]
    if sim::mutation_skips_dir_fsync() {
        return Ok(()); // the same bug, for a new file
    }
    sync_dir(parent_of(path)?)
}

/// Creates `path`, which must not exist, holding `bytes`, *without* any
/// sync (same durability as [`append_unsynced`]): for a file whose durable
/// copy is elsewhere and is written back from there after a reboot (the
/// pending writes a checkpoint journal carries).
pub fn create_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    let file = os_create_new(path).map_err(|e| Error::io("create", path, e))?;
    write_all_at(&file, path, 0, bytes).map_err(|e| Error::io("write", path, e))
}

/// Makes everything written to the existing files `paths` durable, as an
/// fsync of each would. Outside the test build it is one `syncfs` of their
/// filesystem (the files must all be on the one that holds the first):
/// one journal commit instead of one per file, which is most of what
/// settling a checkpoint journal of fifty small files costs. `syncfs`
/// reports a writeback error of the filesystem that no one has seen yet,
/// as an `fsync` of a newly opened descriptor does. The crash simulator
/// sees an fsync of each file, which is what `syncfs` guarantees of them.
pub fn sync_files(paths: &[PathBuf]) -> Result<()> {
    #[cfg(test)]
    {
        paths.iter().try_for_each(|path| sync_file(path))
    }
    #[cfg(not(test))]
    {
        let Some(first) = paths.first() else {
            return Ok(());
        };
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(store_open_flags())
            .open(first)
            .map_err(|e| Error::io("open", first, e))?;
        rustix::fs::syncfs(&file).map_err(|e| Error::io("syncfs", first, e.into()))
    }
}

/// Publishes `bytes` as `target` (temp file, written, renamed into place)
/// *without* any sync: the file appears whole to every reader at once and
/// survives the death of this process, but a power cut may lose it, or
/// keep the name with its data missing or torn. Only for a file whose
/// durable copy is elsewhere and is restored from there after a reboot
/// (checkpoints committed through their journal: see `checkpoint::files`).
pub fn publish_unsynced(target: &Path, bytes: &[u8]) -> Result<()> {
    let (tmp_path, file) = create_temp_beside(target)?;
    if let Err(source) = write_all_at(&file, &tmp_path, 0, bytes) {
        discard_temp(&tmp_path);
        return Err(Error::io("write", &tmp_path, source));
    }
    if let Err(source) = os_rename(&tmp_path, target) {
        discard_temp(&tmp_path);
        return Err(Error::io("rename into place", target, source));
    }
    Ok(())
}

/// Appends `bytes` to the existing file `path` and fsyncs it. A crash can
/// leave a torn tail (a prefix of `bytes`); readers of appended files must
/// detect that (fixed-size records with check digits do).
pub fn append(path: &Path, bytes: &[u8]) -> Result<()> {
    append_to(path, bytes, true)
}

fn append_to(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(store_open_flags())
        .open(path)
        .map_err(|e| Error::io("open for append", path, e))?;
    // Positioned writes at the current end: appenders are serialized by the
    // caller's lock, and the offsets make each write explicit for `sim`.
    let (_, end) = FileId::of_file(&file, path)?;
    write_all_at(&file, path, end, bytes).map_err(|e| Error::io("append", path, e))?;
    if sync {
        os_fsync(&file, path, false).map_err(|e| Error::io("fsync", path, e))?;
    }
    Ok(())
}

/// Writes all of `bytes` at `offset` through `os_write`.
fn write_all_at(file: &File, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
    PositionedWriter { file, path, offset }.write_all(bytes)
}

/// Writes `bytes` at `offset` of the existing file `path` and makes them
/// durable with `fdatasync`. Over bytes already on disk (the state log's
/// preallocated zeros) that commits no metadata, so it costs about one
/// device write instead of a journal commit. A crash can leave any prefix
/// of the bytes' blocks; readers must detect that (the state log does).
pub fn write_at_synced(path: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
    let file = write_at(path, offset, bytes)?;
    os_fdatasync(&file, path).map_err(|e| Error::io("fsync", path, e))
}

/// Writes `bytes` at `offset` of the existing file `path` without a sync,
/// returning the descriptor so that the caller can sync it later
/// ([`sync_data_in`]) without opening the file again.
pub fn write_at_unsynced(path: &Path, offset: u64, bytes: &[u8]) -> Result<File> {
    write_at(path, offset, bytes)
}

/// [`write_at_synced`] through a descriptor the caller keeps open (see
/// `state_cache`). `path` must be the file's name (the caller checked that
/// it still is): it names the file in errors and for the crash simulator.
pub fn write_at_synced_in(file: &File, path: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
    write_all_at(file, path, offset, bytes).map_err(|e| Error::io("write", path, e))?;
    os_fdatasync(file, path).map_err(|e| Error::io("fsync", path, e))
}

/// Writes `bytes` at `offset` through a descriptor the caller keeps open,
/// without a sync (the durability of [`append_unsynced`]).
pub fn write_at_unsynced_in(file: &File, path: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
    write_all_at(file, path, offset, bytes).map_err(|e| Error::io("write", path, e))
}

/// Which file a name refers to: compared to tell whether a descriptor kept
/// open still belongs to the file its name refers to now. (While the
/// descriptor is open its file's inode number cannot be reused.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity and length of the open file.
    pub fn of_file(file: &File, path: &Path) -> Result<(FileId, u64)> {
        match identity(file, "", rustix::fs::AtFlags::EMPTY_PATH) {
            Ok((id, len, _)) => Ok((id, len)),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// The regular file `path` names now (symlinks not followed), with its
    /// length; `None` if there is none.
    pub fn at(path: &Path) -> Result<Option<(FileId, u64)>> {
        match identity(rustix::fs::CWD, path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok((id, len, FileType::RegularFile)) => Ok(Some((id, len))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }
}

/// A file's identity, length and type, asking the kernel for nothing else.
///
/// Not asking for timestamps matters: since Linux 6.13 a query of a file's
/// change time marks the inode so that its next write takes a fresh
/// fine-grained timestamp, which dirties the inode, and ext4 without a
/// journal then writes the inode's block at the next `fdatasync` too. With
/// a full `stat` of the state log before each update, the update's sync
/// took 193–225 µs instead of 127–156 µs here (DESIGN §13). The stats on
/// the way to every write and sync go through this function.
fn identity<Fd: std::os::fd::AsFd, P: rustix::path::Arg + Copy>(
    dir: Fd,
    path: P,
    flags: rustix::fs::AtFlags,
) -> io::Result<(FileId, u64, FileType)> {
    use rustix::fs::StatxFlags;
    let mask = StatxFlags::TYPE | StatxFlags::INO | StatxFlags::SIZE;
    match rustix::fs::statx(&dir, path, flags, mask) {
        Ok(stx) => Ok((
            FileId {
                dev: rustix::fs::makedev(stx.stx_dev_major, stx.stx_dev_minor),
                ino: stx.stx_ino,
            },
            stx.stx_size,
            FileType::from_raw_mode(stx.stx_mode.into()),
        )),
        // Kernels before 4.11, and sandboxes that filter statx: a plain
        // stat (such kernels have no fine-grained timestamps either).
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
            let st = rustix::fs::statat(&dir, path, flags)?;
            Ok((
                FileId {
                    dev: st.st_dev,
                    ino: st.st_ino,
                },
                st.st_size as u64,
                FileType::from_raw_mode(st.st_mode),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the existing regular file `path` for reading and positioned
/// writes, refusing symlinks: for a descriptor kept across operations.
pub fn open_for_writes(path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    match open_regular(path, &options)? {
        Some((file, _)) => Ok(file),
        None => Err(missing("open for writing", path)),
    }
}

fn missing(op: &'static str, path: &Path) -> Error {
    Error::io(op, path, io::Error::from(io::ErrorKind::NotFound))
}

/// Opens `path` with `options` and `O_NOFOLLOW`, refusing symlinks and
/// anything but a regular file; `None` if it does not exist. The one place
/// that decides what a store file may be. Returns the file's length too.
fn open_regular(path: &Path, options: &OpenOptions) -> Result<Option<(File, u64)>> {
    let mut options = options.clone();
    let file = match options.custom_flags(store_open_flags()).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ELOOP is how O_NOFOLLOW reports a symlink.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(Error::integrity(
                path,
                "is a symlink; the store never follows symlinks",
            ));
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let (_, len, kind) = identity(&file, "", rustix::fs::AtFlags::EMPTY_PATH)
        .map_err(|e| Error::io("stat", path, e))?;
    if kind != FileType::RegularFile {
        return Err(Error::integrity(
            path,
            format!("expected a regular file, found {}", describe_type(kind)),
        ));
    }
    Ok(Some((file, len)))
}

/// Writes `bytes` at `offset` of the existing file `path` (no sync) and
/// returns the open file.
fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(store_open_flags())
        .open(path)
        .map_err(|e| Error::io("open for writing", path, e))?;
    write_all_at(&file, path, offset, bytes).map_err(|e| Error::io("write", path, e))?;
    Ok(file)
}

/// Appends `bytes` to the existing file `path` *without* an fsync: the
/// bytes are visible at once and survive the death of this process (the
/// page cache outlives it), but a power cut may lose or tear them. Only
/// for data whose durable copy is elsewhere (see `audit`).
pub fn append_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    append_to(path, bytes, false)
}

/// Overwrites the start of the existing file `path` with `bytes`, without
/// an fsync (same durability as [`append_unsynced`]). Callers keep the
/// length fixed, so no stale bytes remain after the new ones.
pub fn overwrite_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    write_at(path, 0, bytes).map(drop)
}

/// fsync of an existing file: makes everything written to it so far durable.
pub fn sync_file(path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(store_open_flags())
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    os_fsync(&file, path, false).map_err(|e| Error::io("fsync", path, e))
}

/// `fdatasync` of an existing file: makes the data written to it so far
/// durable (a state log whose record was written unsynced).
pub fn sync_data(path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(store_open_flags())
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    sync_data_in(&file, path)
}

/// [`sync_data`] through a descriptor the caller keeps open; `path` names
/// the file in errors and for the crash simulator.
pub fn sync_data_in(file: &File, path: &Path) -> Result<()> {
    os_fdatasync(file, path).map_err(|e| Error::io("fsync", path, e))
}

/// Identifies this boot of the machine. Unsynced writes can be lost only
/// by an OS crash or power cut, which always ends the boot: data written
/// unsynced under the current boot id is still there.
pub fn boot_id() -> String {
    #[cfg(test)]
    if let Some(simulated) = sim::boot_id() {
        return simulated;
    }
    // A process never outlives its boot, so one read is enough.
    static BOOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string())
    })
    .clone()
}

/// Removes every file in `paths` (all in directory `dir`) and then makes the
/// removals durable with one directory fsync. Stops at the first failure;
/// what was removed before it stays removed.
pub fn remove_files(dir: &Path, paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        debug_assert_eq!(path.parent(), Some(dir));
        os_unlink(path).map_err(|e| Error::io("remove", path, e))?;
    }
    sync_dir(dir)
}

/// Convenience wrapper of [`replace_file`] for bytes already in memory.
pub fn replace_file_with_bytes(target: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(target, |w| w.write_all(bytes))
}

fn write_and_sync(
    file: &File,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> std::result::Result<(), (&'static str, io::Error)> {
    let writer = PositionedWriter {
        file,
        path,
        offset: 0,
    };
    let mut buffered = BufWriter::with_capacity(64 * 1024, writer);
    write(&mut buffered).map_err(|e| ("write", e))?;
    buffered.flush().map_err(|e| ("write", e))?;
    os_fsync(file, path, false).map_err(|e| ("fsync", e))
}

fn create_temp_beside(target: &Path) -> Result<(PathBuf, File)> {
    let dir = parent_of(target)?;
    let file_name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::InvalidInput(format!("{} has no file name", target.display())))?;
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_path = dir.join(format!(
            ".{file_name}{TEMP_MARKER}{}-{n}",
            std::process::id()
        ));
        match os_create_new(&tmp_path) {
            Ok(file) => return Ok((tmp_path, file)),
            // A leftover of an earlier process with the same pid: pick the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create temp file", tmp_path, e)),
        }
    }
}

fn discard_temp(tmp_path: &Path) {
    // Best effort: the operation already failed and that error is what the
    // caller must see. A temp file left behind is found by `health`.
    let _ = os_unlink(tmp_path);
}

/// The directory that holds `path`, whose entry a sync must cover: for a
/// bare relative name (`s`), the current directory.
fn parent_of(path: &Path) -> Result<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Ok(Path::new(".")),
        Some(p) => Ok(p),
        None => Err(Error::InvalidInput(format!(
            "{} has no parent directory",
            path.display()
        ))),
    }
}

/// fsync of a directory: makes creations, renames and removals of its
/// entries durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let handle = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    os_fsync(&handle, dir, true).map_err(|e| Error::io("fsync directory", dir, e))
}

/// Creates `dir` (one level) if it does not exist and makes its existence
/// durable: fsync of the new directory and of its parent. An existing
/// directory is accepted only if it is a real directory, not a symlink.
pub fn create_dir(dir: &Path) -> Result<()> {
    match os_mkdir(dir) {
        Ok(()) => {
            sync_dir(dir)?;
            sync_dir(parent_of(dir)?)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => require_real_dir(dir),
        Err(e) => Err(Error::io("create directory", dir, e)),
    }
}

/// Whether anything (a symlink included, not followed) has the name `path`.
pub fn name_exists(path: &Path) -> Result<bool> {
    match identity(rustix::fs::CWD, path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Refuses anything but a real directory at `dir` (a symlink could point the
/// store's writes anywhere).
pub fn require_real_dir(dir: &Path) -> Result<()> {
    let (_, _, kind) = identity(rustix::fs::CWD, dir, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Error::io("inspect", dir, e))?;
    if kind == FileType::Directory {
        Ok(())
    } else {
        Err(Error::integrity(
            dir,
            format!("expected a directory, found {}", describe_type(kind)),
        ))
    }
}

/// Removes `path` and makes the removal durable (fsync of its directory).
pub fn remove_file(path: &Path) -> Result<()> {
    os_unlink(path).map_err(|e| Error::io("remove", path, e))?;
    sync_dir(parent_of(path)?)
}

/// Removes `path` without making the removal durable. Only for files whose
/// reappearance after a crash is harmless and already handled by readers
/// (a lock holder's record, which then reads as left by an exited holder):
/// it saves a directory fsync on a hot path.
pub fn remove_file_unsynced(path: &Path) -> Result<()> {
    os_unlink(path).map_err(|e| Error::io("remove", path, e))
}

/// Moves `from` to `to` (same filesystem) durably: rename, then fsync of
/// both directories. Creates missing directories of `to` below `base`
/// durably first. Used to quarantine damaged files instead of deleting them.
pub fn move_file(from: &Path, to: &Path, base: &Path) -> Result<()> {
    let to_dir = parent_of(to)?;
    let relative = to_dir.strip_prefix(base).map_err(|_| {
        Error::InvalidInput(format!("{} is not under {}", to.display(), base.display()))
    })?;
    let mut dir = base.to_path_buf();
    for part in relative.components() {
        dir.push(part);
        create_dir(&dir)?;
    }
    os_rename(from, to).map_err(|e| Error::io("move", from, e))?;
    sync_dir(to_dir)?;
    sync_dir(parent_of(from)?)
}

/// What a bounded read found.
pub enum ReadOutcome {
    Found(Vec<u8>),
    Missing,
}

/// The last `tail` bytes of `path` and the file's length, with the checks
/// of [`read_file`] (no symlinks, regular files only, at most `limit`
/// bytes long); `None` if it does not exist.
pub fn read_file_tail(path: &Path, tail: u64, limit: u64) -> Result<Option<(Vec<u8>, u64)>> {
    let Some((file, len)) = open_for_reading(path, limit)? else {
        return Ok(None);
    };
    let start = len.saturating_sub(tail);
    let mut bytes = vec![0u8; (len - start) as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, start)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(Some((bytes, len)))
}

/// Opens `path` for reading with the checks of [`read_file`] (no symlinks,
/// regular files only, at most `limit` bytes long) and returns it with its
/// length; `None` if it does not exist.
pub fn open_for_reading(path: &Path, limit: u64) -> Result<Option<(File, u64)>> {
    let mut options = OpenOptions::new();
    options.read(true);
    let Some((file, len)) = open_regular(path, &options)? else {
        return Ok(None);
    };
    if len > limit {
        return Err(Error::TooLarge {
            what: path.display().to_string(),
            size: Size::Exactly(len),
            limit,
        });
    }
    Ok(Some((file, len)))
}

/// Reads a whole store file, refusing symlinks and non-regular files and
/// anything larger than `limit` bytes.
pub fn read_file(path: &Path, limit: u64) -> Result<ReadOutcome> {
    let Some((file, len)) = open_for_reading(path, limit)? else {
        return Ok(ReadOutcome::Missing);
    };
    // Bounded again: the file may grow between the stat and the read.
    match read_at_most(file, limit, len as usize).map_err(|e| Error::io("read", path, e))? {
        Some(bytes) => Ok(ReadOutcome::Found(bytes)),
        None => Err(Error::TooLarge {
            what: path.display().to_string(),
            size: Size::AtLeast(limit + 1),
            limit,
        }),
    }
}

/// Reads `reader` to its end if that is at most `limit` bytes; `None` if
/// there is more, after reading only `limit + 1` bytes, so input that never
/// ends (stdin, a pipe, a device, a file still growing) costs no more.
/// `expected` is the length to allocate for at first.
pub fn read_at_most(reader: impl Read, limit: u64, expected: usize) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::with_capacity(expected);
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// Opens (creating if needed) a file that is never replaced or removed, such
/// as a lock file, refusing symlinks and non-regular files. Creation is not
/// made durable: such files carry no data that must survive a crash.
pub fn open_stable_file(path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true);
    // With O_CREAT, "not found" means a missing directory.
    match open_regular(path, &options)? {
        Some((file, _)) => Ok(file),
        None => Err(missing("open", path)),
    }
}

fn describe_type(kind: FileType) -> &'static str {
    match kind {
        FileType::Symlink => "a symlink",
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::BlockDevice | FileType::CharacterDevice => "a device",
        FileType::RegularFile => "a regular file",
        _ => "a file of unknown type",
    }
}

/// Test-only recording and fault injection for the crash simulator
/// (`crate::crashsim`). Per thread, so parallel tests do not mix traces.
#[cfg(test)]
pub(crate) mod sim {
    use std::cell::{Cell, RefCell};
    use std::io;
    use std::path::PathBuf;

    /// One persistence operation, as the crash model sees it.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Op {
        Create(PathBuf),
        Write {
            path: PathBuf,
            offset: u64,
            data: Vec<u8>,
        },
        Fsync(PathBuf),
        FsyncDir(PathBuf),
        Rename {
            from: PathBuf,
            to: PathBuf,
        },
        Unlink(PathBuf),
        Mkdir(PathBuf),
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Fsync,
        Rename,
    }

    /// A fault to inject: the `nth` (0-based) operation of a kind fails.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Fault {
        FsyncEio {
            nth: usize,
        },
        RenameFails {
            nth: usize,
        },
        WriteEnospc {
            nth: usize,
        },
        /// The write returns half the bytes; the retry then gets ENOSPC.
        WriteShortThenEnospc {
            nth: usize,
        },
    }

    thread_local! {
        static TRACE: RefCell<Option<Vec<Op>>> = const { RefCell::new(None) };
        static FAULT: Cell<Option<Fault>> = const { Cell::new(None) };
        static SEEN: RefCell<[usize; 3]> = const { RefCell::new([0; 3]) };
        static SHORT_DONE: Cell<bool> = const { Cell::new(false) };
        static SKIP_DIR_FSYNC: Cell<bool> = const { Cell::new(false) };
        static SKIP_WRITES_REPLAY: Cell<bool> = const { Cell::new(false) };
        static BOOT_ID: RefCell<Option<String>> = const { RefCell::new(None) };
        static SKIP_AUDIT_RECOVERY: Cell<bool> = const { Cell::new(false) };
        static SHARED_TRACE: RefCell<Option<SharedTrace>> = const { RefCell::new(None) };
        static PHASE_HOOK: RefCell<Option<PhaseHook>> = const { RefCell::new(None) };
        static ACK_WITHOUT_WAITING: Cell<bool> = const { Cell::new(false) };
        static TRUST_CLAIMS: Cell<bool> = const { Cell::new(false) };
        static SKIP_ROLLBACK: Cell<bool> = const { Cell::new(false) };
    }

    /// One trace that several threads record into, in the order their
    /// operations happen (the interleavings of concurrent commits).
    pub type SharedTrace = std::sync::Arc<std::sync::Mutex<Vec<Op>>>;

    /// Called at the named points of a commit (see `phase`).
    pub type PhaseHook = Box<dyn Fn(&'static str)>;

    /// Makes this thread record into `trace` instead of its own trace.
    pub fn share_trace(trace: Option<SharedTrace>) {
        SHARED_TRACE.with(|t| *t.borrow_mut() = trace);
    }

    /// Lets a test stop this thread at the points of a commit
    /// (`"written"`, `"synced"`, `"done"`) to run another writer between.
    pub fn set_phase_hook(hook: Option<PhaseHook>) {
        PHASE_HOOK.with(|h| *h.borrow_mut() = hook);
    }

    pub fn phase(name: &'static str) {
        PHASE_HOOK.with(|h| {
            if let Some(hook) = h.borrow().as_ref() {
                hook(name);
            }
        });
    }

    /// A mutant for the simulator to catch: a pipelined commit returns
    /// success without waiting for the entries before its own to be durable.
    pub fn set_mutation_ack_without_waiting(on: bool) {
        ACK_WITHOUT_WAITING.with(|m| m.set(on));
    }

    pub fn mutation_acks_without_waiting() -> bool {
        ACK_WITHOUT_WAITING.with(|m| m.get())
    }

    /// A mutant for the simulator to catch: a settler that finds a slot
    /// `Claimed` behind one still being synced takes its record for whole,
    /// as if `Written`, without looking, and chains after it.
    pub fn set_mutation_trust_claims(on: bool) {
        TRUST_CLAIMS.with(|m| m.set(on));
    }

    pub fn mutation_trusts_claims() -> bool {
        TRUST_CLAIMS.with(|m| m.get())
    }

    /// A mutant for the simulator to catch: recovery after a reboot keeps
    /// state records whose entries follow a lost one.
    pub fn set_mutation_skip_rollback(on: bool) {
        SKIP_ROLLBACK.with(|m| m.set(on));
    }

    pub fn mutation_skips_rollback() -> bool {
        SKIP_ROLLBACK.with(|m| m.get())
    }

    /// A mutant for the simulator to catch: opening a store does not recover
    /// audit entries that only the state logs hold.
    pub fn set_mutation_skip_audit_recovery(on: bool) {
        SKIP_AUDIT_RECOVERY.with(|m| m.set(on));
    }

    pub fn mutation_skips_audit_recovery() -> bool {
        SKIP_AUDIT_RECOVERY.with(|m| m.get())
    }

    /// Pretends the machine booted as `id` (a simulated power cut is a new
    /// boot); `None` reads the real one.
    pub fn set_boot_id(id: Option<&str>) {
        BOOT_ID.with(|b| *b.borrow_mut() = id.map(str::to_string));
    }

    pub fn boot_id() -> Option<String> {
        BOOT_ID.with(|b| b.borrow().clone())
    }

    pub fn start_trace() {
        TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
    }

    pub fn take_trace() -> Vec<Op> {
        TRACE.with(|t| t.borrow_mut().take().unwrap_or_default())
    }

    pub fn record(op: Op) {
        if let Some(shared) = SHARED_TRACE.with(|t| t.borrow().clone()) {
            shared.lock().unwrap_or_else(|e| e.into_inner()).push(op);
            return;
        }
        TRACE.with(|t| {
            if let Some(trace) = t.borrow_mut().as_mut() {
                trace.push(op);
            }
        });
    }

    pub fn inject(fault: Option<Fault>) {
        FAULT.with(|f| f.set(fault));
        SEEN.with(|s| *s.borrow_mut() = [0; 3]);
        SHORT_DONE.with(|d| d.set(false));
    }

    /// Makes `replace_file` and `create_synced` skip their final directory
    /// fsync on this thread: the seed system's bug, for the tests that the
    /// simulator catches it.
    pub fn set_mutation_skip_dir_fsync(on: bool) {
        SKIP_DIR_FSYNC.with(|m| m.set(on));
    }

    pub fn mutation_skips_dir_fsync() -> bool {
        SKIP_DIR_FSYNC.with(|m| m.get())
    }

    /// Makes settling a checkpoint journal skip the pending writes it
    /// carries (they are then durable only if their unsynced copy was
    /// written back), for the test that the simulator catches it.
    pub fn set_mutation_skip_writes_replay(on: bool) {
        SKIP_WRITES_REPLAY.with(|m| m.set(on));
    }

    pub fn mutation_skips_writes_replay() -> bool {
        SKIP_WRITES_REPLAY.with(|m| m.get())
    }

    fn count(slot: usize) -> usize {
        SEEN.with(|s| {
            let mut s = s.borrow_mut();
            s[slot] += 1;
            s[slot] - 1
        })
    }

    pub fn before(kind: Kind) -> io::Result<()> {
        let fault = FAULT.with(|f| f.get());
        match kind {
            Kind::Fsync => {
                let n = count(0);
                match fault {
                    Some(Fault::FsyncEio { nth }) if n == nth => {
                        Err(io::Error::from_raw_os_error(5))
                    } // EIO
                    _ => Ok(()),
                }
            }
            Kind::Rename => {
                let n = count(1);
                match fault {
                    Some(Fault::RenameFails { nth }) if n == nth => {
                        Err(io::Error::from_raw_os_error(18))
                    } // EXDEV
                    _ => Ok(()),
                }
            }
        }
    }

    /// `Some(n)`: write only `n` bytes this time.
    pub fn before_write(len: usize) -> io::Result<Option<usize>> {
        let fault = FAULT.with(|f| f.get());
        let enospc = || io::Error::from_raw_os_error(28);
        if SHORT_DONE.with(|d| d.replace(false)) {
            return Err(enospc()); // the retry after a short write
        }
        let n = count(2);
        match fault {
            Some(Fault::WriteEnospc { nth }) if n == nth => Err(enospc()),
            Some(Fault::WriteShortThenEnospc { nth }) if n == nth && len > 1 => {
                SHORT_DONE.with(|d| d.set(true));
                Ok(Some(len / 2))
            }
            // One byte cannot be written short: it fails outright.
            Some(Fault::WriteShortThenEnospc { nth }) if n == nth => Err(enospc()),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replace_leaves_only_the_target_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.json");
        replace_file_with_bytes(&target, b"one").unwrap();
        replace_file_with_bytes(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert_eq!(names_in(dir.path()), ["a.json"]);
    }

    #[test]
    fn a_replacement_costs_one_file_sync_and_one_directory_sync() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a");
        // The trace is per thread, so parallel tests do not disturb the count.
        sim::start_trace();
        replace_file_with_bytes(&target, b"x").unwrap();
        let ops = sim::take_trace();
        let fsyncs = ops
            .iter()
            .filter(|o| matches!(o, sim::Op::Fsync(p) if p != &target))
            .count();
        let dir_fsyncs = ops
            .iter()
            .filter(|o| matches!(o, sim::Op::FsyncDir(d) if d == dir.path()))
            .count();
        assert_eq!((fsyncs, dir_fsyncs, ops.len()), (1, 1, 5), "{ops:?}");
    }

    #[test]
    fn failed_write_keeps_previous_version_and_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.json");
        replace_file_with_bytes(&target, b"previous").unwrap();
        let err = replace_file(&target, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("disk full (simulated by the writer)"))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Io { op: "write", .. }), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"previous");
        assert_eq!(names_in(dir.path()), ["a.json"]);
    }

    #[test]
    fn reads_refuse_symlinks_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::write(&real, b"0123456789").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = read_file(&link, 100).err().unwrap();
        assert!(err.to_string().contains("symlink"), "{err}");
        let err = read_file(&real, 5).err().unwrap();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    size: Size::Exactly(10),
                    limit: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            read_file(&dir.path().join("none"), 5),
            Ok(ReadOutcome::Missing)
        ));
    }

    #[test]
    fn stable_files_refuse_symlinks_and_touch_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        let link = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(open_stable_file(&link).is_err());
        assert!(
            !victim.exists(),
            "nothing may be created through the symlink"
        );
    }

    #[test]
    fn create_dir_refuses_a_symlink_in_place_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("state");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(matches!(create_dir(&link), Err(Error::Integrity { .. })));
    }
}
