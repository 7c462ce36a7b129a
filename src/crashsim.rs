//! Crash simulation: runs the real protocols, records every persistence
//! operation they make (`durable::sim`), and checks every post-crash state
//! the crash model allows, by materializing it as a real directory and
//! running the real recovery code on it.
//!
//! The crash model (ALICE / CrashMonkey style, see docs/DESIGN.md §3):
//! * file data written but not covered by a later fsync of that file may be
//!   lost, kept, or kept as zeros (size updated, data not: a torn write), per
//!   4 KiB block for larger pending regions;
//! * a create, rename, unlink or mkdir not covered by a later fsync of its
//!   directory may be lost; within one directory such operations persist in
//!   order (a prefix of them survives), independently across directories;
//! * whatever an fsync covered survives.

use crate::durable::sim::{self, Op};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

const BLOCK: usize = 4096;
/// States checked per crash point before switching to a seeded sample.
const EXHAUSTIVE_LIMIT: usize = 4096;
const SAMPLE: usize = 1000;

/// A directory tree: the store before the traced operation, or a crash state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tree {
    pub dirs: BTreeSet<PathBuf>,
    pub files: BTreeMap<PathBuf, Vec<u8>>,
}

impl Tree {
    /// Reads every file and folder under `root` (paths relative to it).
    pub fn snapshot(root: &Path) -> Tree {
        let mut tree = Tree::default();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for entry in std::fs::read_dir(root.join(&rel)).expect("read snapshot dir") {
                let entry = entry.expect("entry");
                let child = rel.join(entry.file_name());
                if entry.file_type().expect("type").is_dir() {
                    tree.dirs.insert(child.clone());
                    stack.push(child);
                } else {
                    tree.files
                        .insert(child, std::fs::read(entry.path()).expect("read"));
                }
            }
        }
        tree
    }

    /// Writes the tree into the empty directory `root`.
    pub fn materialize(&self, root: &Path) {
        for dir in &self.dirs {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        for (path, data) in &self.files {
            std::fs::write(root.join(path), data).expect("write");
        }
    }
}

type Ino = usize;

/// What happens to an inode's unsynced writes in one crash state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum DataFate {
    Lost,
    Kept,
    /// The file has its new size but the unsynced bytes read as zeros.
    Zeroed,
    /// The first `n` blocks of the unsynced region kept, the rest lost.
    BlockPrefix(usize),
    /// Each unsynced write kept whole (its bit in the mask set) or lost,
    /// independently of the others: the page cache writes pages back in
    /// no particular order, so a later write can reach the disk without
    /// an earlier one.
    Subset(u32),
}

/// Up to this many unsynced writes to one file, every subset of them is
/// a crash state too (`DataFate::Subset`); beyond it, only the fates that
/// keep them in order.
const SUBSET_WRITES: usize = 6;

struct MetaOp {
    index: usize,
    dir: PathBuf,
    op: Op,
}

struct Prepared {
    /// Initial contents per inode, and the inodes of the initial files.
    initial: Vec<Vec<u8>>,
    initial_names: BTreeMap<PathBuf, Ino>,
    /// Writes per inode: (op index, offset, data).
    writes: HashMap<Ino, Vec<(usize, u64, Vec<u8>)>>,
    /// Indexes of the fsyncs of each inode, in order.
    fsyncs: HashMap<Ino, Vec<usize>>,
    /// Inode each Create / Rename source resolves to, by op index.
    resolved: HashMap<usize, Ino>,
    meta: Vec<MetaOp>,
    dir_fsyncs: Vec<(usize, PathBuf)>,
}

fn rel(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root)
        .unwrap_or_else(|_| panic!("{} is outside the store {}", path.display(), root.display()))
        .to_path_buf()
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Replays the first `k` operations to learn which inode each one touches.
fn prepare(initial: &Tree, root: &Path, trace: &[Op]) -> Prepared {
    let mut p = Prepared {
        initial: Vec::new(),
        initial_names: BTreeMap::new(),
        writes: HashMap::new(),
        fsyncs: HashMap::new(),
        resolved: HashMap::new(),
        meta: Vec::new(),
        dir_fsyncs: Vec::new(),
    };
    let mut names: HashMap<PathBuf, Ino> = HashMap::new();
    for (path, data) in &initial.files {
        let ino = p.initial.len();
        p.initial.push(data.clone());
        p.initial_names.insert(path.clone(), ino);
        names.insert(path.clone(), ino);
    }
    for (i, op) in trace.iter().enumerate() {
        match op {
            Op::Create(path) => {
                let path = rel(root, path);
                let ino = p.initial.len();
                p.initial.push(Vec::new());
                names.insert(path.clone(), ino);
                p.resolved.insert(i, ino);
                p.meta.push(MetaOp {
                    index: i,
                    dir: parent(&path),
                    op: Op::Create(path),
                });
            }
            Op::Write { path, offset, data } => {
                let ino = names[&rel(root, path)];
                p.writes
                    .entry(ino)
                    .or_default()
                    .push((i, *offset, data.clone()));
            }
            Op::Fsync(path) => {
                let ino = names[&rel(root, path)];
                p.fsyncs.entry(ino).or_default().push(i);
            }
            Op::FsyncDir(path) => p.dir_fsyncs.push((i, rel(root, path))),
            Op::Rename { from, to } => {
                let (from, to) = (rel(root, from), rel(root, to));
                let ino = names.remove(&from).expect("rename source exists");
                names.insert(to.clone(), ino);
                p.resolved.insert(i, ino);
                p.meta.push(MetaOp {
                    index: i,
                    dir: parent(&to),
                    op: Op::Rename { from, to },
                });
            }
            Op::Unlink(path) => {
                let path = rel(root, path);
                names.remove(&path);
                p.meta.push(MetaOp {
                    index: i,
                    dir: parent(&path),
                    op: Op::Unlink(path),
                });
            }
            Op::Mkdir(path) => {
                let path = rel(root, path);
                p.meta.push(MetaOp {
                    index: i,
                    dir: parent(&path),
                    op: Op::Mkdir(path),
                });
            }
        }
    }
    p
}

fn apply_writes(base: &[u8], writes: &[(usize, u64, Vec<u8>)], zero: bool) -> Vec<u8> {
    let mut out = base.to_vec();
    for (_, offset, data) in writes {
        let end = *offset as usize + data.len();
        if out.len() < end {
            out.resize(end, 0);
        }
        if !zero {
            out[*offset as usize..end].copy_from_slice(data);
        } else {
            out[*offset as usize..end].fill(0);
        }
    }
    out
}

impl Prepared {
    /// The last fsync of `ino` among the first `k` operations: the writes
    /// before it are durable. (Not the last of the whole trace: an
    /// operation may sync one file several times, as a journal is.)
    fn synced_until(&self, ino: Ino, k: usize) -> Option<usize> {
        self.fsyncs
            .get(&ino)?
            .iter()
            .copied()
            .take_while(|f| *f < k)
            .last()
    }

    /// Content of `ino` in a crash after `k` ops, given the fate of its
    /// unsynced writes.
    fn content(&self, ino: Ino, k: usize, fate: DataFate) -> Vec<u8> {
        let writes: Vec<_> = self.writes.get(&ino).map_or(Vec::new(), |w| {
            w.iter().filter(|(i, _, _)| *i < k).cloned().collect()
        });
        let synced_until = self.synced_until(ino, k);
        let (durable, pending): (Vec<_>, Vec<_>) = writes
            .into_iter()
            .partition(|(i, _, _)| synced_until.is_some_and(|f| *i < f));
        let base = apply_writes(&self.initial[ino], &durable, false);
        match fate {
            DataFate::Lost => base,
            DataFate::Kept => apply_writes(&base, &pending, false),
            DataFate::Zeroed => apply_writes(&base, &pending, true),
            DataFate::BlockPrefix(blocks) => {
                // The first `blocks` blocks' worth of the unsynced data, in
                // the order it was written, reached the disk; the rest did
                // not. For an append that is a shorter file; for writes
                // over existing bytes (the state log's preallocated zeros)
                // the old bytes remain after the prefix.
                let mut budget = blocks * BLOCK;
                let mut partial = Vec::new();
                for (i, offset, data) in pending {
                    if budget == 0 {
                        break;
                    }
                    let take = data.len().min(budget);
                    partial.push((i, offset, data[..take].to_vec()));
                    budget -= take;
                }
                apply_writes(&base, &partial, false)
            }
            DataFate::Subset(mask) => {
                let kept: Vec<_> = pending
                    .into_iter()
                    .enumerate()
                    .filter(|(n, _)| mask & (1 << n) != 0)
                    .map(|(_, write)| write)
                    .collect();
                apply_writes(&base, &kept, false)
            }
        }
    }

    /// The unsynced writes of `ino` after `k` ops: (how many, bytes).
    fn pending(&self, ino: Ino, k: usize) -> (usize, usize) {
        let synced_until = self.synced_until(ino, k);
        self.writes.get(&ino).map_or((0, 0), |w| {
            w.iter()
                .filter(|(i, _, _)| *i < k && synced_until.is_none_or(|f| *i >= f))
                .fold((0, 0), |(n, bytes), (_, _, d)| (n + 1, bytes + d.len()))
        })
    }

    fn fates(&self, ino: Ino, k: usize) -> Vec<DataFate> {
        let (writes, pending) = self.pending(ino, k);
        if pending == 0 {
            return vec![DataFate::Kept];
        }
        let mut fates = vec![DataFate::Lost, DataFate::Kept, DataFate::Zeroed];
        for blocks in 1..pending.div_ceil(BLOCK) {
            fates.push(DataFate::BlockPrefix(blocks));
        }
        if (2..=SUBSET_WRITES).contains(&writes) {
            // All but none and all, which are `Lost` and `Kept`.
            fates.extend((1..(1u32 << writes) - 1).map(DataFate::Subset));
        }
        fates
    }
}

/// A small deterministic generator for sampling.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Every crash state after `k` operations (or a seeded sample of at least
/// `SAMPLE` when there are more than `EXHAUSTIVE_LIMIT`).
fn crash_states(p: &Prepared, initial: &Tree, k: usize, seed: u64) -> Vec<Tree> {
    // Metadata: per directory, the uncovered operations (in order).
    let covered = |m: &MetaOp| {
        p.dir_fsyncs
            .iter()
            .any(|(j, d)| *j > m.index && *j < k && *d == m.dir)
    };
    let mut uncovered: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
    for (pos, m) in p.meta.iter().enumerate().filter(|(_, m)| m.index < k) {
        if !covered(m) {
            uncovered.entry(m.dir.clone()).or_default().push(pos);
        }
    }
    let dirs: Vec<&Vec<usize>> = uncovered.values().collect();
    let meta_choices: usize = dirs.iter().map(|v| v.len() + 1).product();

    // Each metadata choice gives a namespace; data fates multiply on top.
    let namespace_for = |choice: &[usize]| -> (BTreeSet<PathBuf>, BTreeMap<PathBuf, Ino>) {
        let mut dropped: BTreeSet<usize> = BTreeSet::new();
        for (ops, keep) in dirs.iter().zip(choice) {
            dropped.extend(ops[*keep..].iter().copied());
        }
        let mut dir_set = initial.dirs.clone();
        let mut names = p.initial_names.clone();
        for (pos, m) in p.meta.iter().enumerate() {
            if m.index >= k || dropped.contains(&pos) {
                continue;
            }
            let dir_exists = |d: &Path| d.as_os_str().is_empty() || dir_set.contains(d);
            match &m.op {
                Op::Create(path) if dir_exists(&m.dir) => {
                    names.insert(path.clone(), p.resolved[&m.index]);
                }
                Op::Rename { from, to } if dir_exists(&m.dir) => {
                    names.remove(from);
                    names.insert(to.clone(), p.resolved[&m.index]);
                }
                Op::Unlink(path) => {
                    names.remove(path);
                }
                Op::Mkdir(path) if dir_exists(&m.dir) => {
                    dir_set.insert(path.clone());
                }
                _ => {}
            }
        }
        // Files whose folder did not survive are gone with it.
        names.retain(|path, _| {
            let d = parent(path);
            d.as_os_str().is_empty() || dir_set.contains(&d)
        });
        (dir_set, names)
    };

    let decode_choice = |mut n: usize| -> Vec<usize> {
        dirs.iter()
            .map(|ops| {
                let c = n % (ops.len() + 1);
                n /= ops.len() + 1;
                c
            })
            .collect()
    };

    let mut rng = Rng(seed | 1);
    let mut states = Vec::new();
    let mut total_estimate = 0usize;
    let namespaces: Vec<_> = (0..meta_choices)
        .map(|c| namespace_for(&decode_choice(c)))
        .collect();
    let fate_sets: Vec<Vec<(Ino, Vec<DataFate>)>> = namespaces
        .iter()
        .map(|(_, names)| {
            let inos: BTreeSet<Ino> = names.values().copied().collect();
            inos.into_iter()
                .map(|ino| (ino, p.fates(ino, k)))
                .filter(|(_, f)| f.len() > 1)
                .collect()
        })
        .collect();
    for fates in &fate_sets {
        total_estimate += fates.iter().map(|(_, f)| f.len()).product::<usize>();
    }
    let exhaustive = total_estimate <= EXHAUSTIVE_LIMIT;
    let build = |(dir_set, names): &(BTreeSet<PathBuf>, BTreeMap<PathBuf, Ino>),
                 fate_of: &HashMap<Ino, DataFate>| Tree {
        dirs: dir_set.clone(),
        files: names
            .iter()
            .map(|(path, ino)| {
                (
                    path.clone(),
                    p.content(*ino, k, fate_of.get(ino).copied().unwrap_or(DataFate::Kept)),
                )
            })
            .collect(),
    };
    if exhaustive {
        for (ns, fates) in namespaces.iter().zip(&fate_sets) {
            let combos: usize = fates.iter().map(|(_, f)| f.len()).product();
            for mut n in 0..combos {
                let mut fate_of = HashMap::new();
                for (ino, options) in fates {
                    fate_of.insert(*ino, options[n % options.len()]);
                    n /= options.len();
                }
                states.push(build(ns, &fate_of));
            }
        }
    } else {
        for _ in 0..SAMPLE {
            let which = rng.below(namespaces.len());
            let mut fate_of = HashMap::new();
            for (ino, options) in &fate_sets[which] {
                fate_of.insert(*ino, options[rng.below(options.len())]);
            }
            states.push(build(&namespaces[which], &fate_of));
        }
    }
    states
}

/// What one exploration saw.
#[derive(Debug, Default)]
pub struct Exploration {
    pub operations: usize,
    pub crash_points: usize,
    pub states: usize,
    /// (crash point, description) of every state that failed the check.
    pub violations: Vec<(usize, String)>,
}

/// Runs `op` with tracing on the store at `root` (whose state before the
/// operation is `initial`), then checks every crash state with `check`,
/// which gets the materialized store folder and whether the crash came
/// after the operation returned success.
pub fn explore(
    root: &Path,
    initial: &Tree,
    trace: &[Op],
    seed: u64,
    check: &dyn Fn(&Path, bool) -> Result<(), String>,
) -> Exploration {
    explore_points(root, initial, trace, seed, &|dir, k| {
        check(dir, k == trace.len())
    })
}

/// [`explore`] for a trace of several writers, whose check needs the crash
/// point itself (how many operations of `trace` happened before the crash)
/// to tell which writers had returned.
pub fn explore_points(
    root: &Path,
    initial: &Tree,
    trace: &[Op],
    seed: u64,
    check: &dyn Fn(&Path, usize) -> Result<(), String>,
) -> Exploration {
    let prepared = prepare(initial, root, trace);
    let mut result = Exploration {
        operations: trace.len(),
        ..Exploration::default()
    };
    let scratch = tempfile::tempdir().expect("scratch dir");
    for k in 0..=trace.len() {
        result.crash_points += 1;
        for (n, state) in crash_states(&prepared, initial, k, seed ^ k as u64)
            .into_iter()
            .enumerate()
        {
            result.states += 1;
            let dir = scratch.path().join(format!("{k}-{n}"));
            std::fs::create_dir(&dir).expect("state dir");
            state.materialize(&dir);
            if let Err(why) = check(&dir, k) {
                result.violations.push((k, why));
            }
            std::fs::remove_dir_all(&dir).expect("clean state dir");
        }
    }
    result
}

/// Runs `op` under tracing and returns its trace.
pub fn traced<T>(op: impl FnOnce() -> T) -> (T, Vec<Op>) {
    sim::start_trace();
    let out = op();
    (out, sim::take_trace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_unsynced_write_can_survive_without_an_earlier_one() {
        // Two unsynced writes to one file, at different places: the page
        // cache may write back the second and not the first, so that state
        // must be among the crash states, as must the reverse.
        let root = Path::new("/store");
        let path = root.join("f");
        let initial = Tree {
            dirs: BTreeSet::new(),
            files: BTreeMap::from([(PathBuf::from("f"), vec![0u8; 8])]),
        };
        let trace = vec![
            Op::Write {
                path: path.clone(),
                offset: 0,
                data: b"AA".to_vec(),
            },
            Op::Write {
                path,
                offset: 4,
                data: b"BB".to_vec(),
            },
        ];
        let p = prepare(&initial, root, &trace);
        let contents: Vec<Vec<u8>> = crash_states(&p, &initial, trace.len(), 1)
            .into_iter()
            .map(|tree| tree.files[Path::new("f")].clone())
            .collect();
        for expected in [
            b"\0\0\0\0BB\0\0".to_vec(),
            b"AA\0\0\0\0\0\0".to_vec(),
            b"AA\0\0BB\0\0".to_vec(),
            vec![0u8; 8],
        ] {
            assert!(
                contents.contains(&expected),
                "missing crash state {expected:?} among {contents:?}"
            );
        }
    }
}
