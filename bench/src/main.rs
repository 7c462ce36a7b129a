//! `wfstate-bench`: measures wfstate against the physical floor of this
//! machine in one run. Run in release:
//!
//! ```text
//! cargo build --release -p wfstate-cli   # for the CLI figure (optional)
//! cargo run --release -p wfstate-bench -- [--quick] [--json] [--dir DIR]
//! ```
//!
//! Every figure is measured here, in this run; ratios between figures of the
//! same run are the claims, absolute times are context (the machine is
//! shared and noisy). Multi-process figures re-run this binary as workers
//! (`--worker ...`, not for direct use).

use serde_json::{Map, Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wfstate::checkpoint::{Checkpoint, CheckpointBackend, ListQuery, NewCheckpoint, StateSnapshot};
use wfstate::lock::{LockManager, LockMode, LockRequest, Recording};
use wfstate::{Store, StoreOptions, durable};

const WORKFLOW: &str = "bench";

struct Config {
    quick: bool,
    json: bool,
    dir: PathBuf,
    /// A PostgreSQL database to compare the file store with (`--pg URL`).
    pg: Option<String>,
    /// Where to draw the writers-scaling chart (`--plot FILE`, SVG).
    plot: Option<PathBuf>,
    /// Only the writers-scaling figures (`--only-scaling`).
    only_scaling: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        worker(&args[1..]);
        return;
    }
    let mut config = Config {
        quick: false,
        json: false,
        dir: PathBuf::from("target/wfstate-bench"),
        pg: std::env::var("WFSTATE_BENCH_PG").ok(),
        plot: None,
        only_scaling: false,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" => config.quick = true,
            "--json" => config.json = true,
            "--dir" => config.dir = PathBuf::from(rest.next().expect("--dir needs a value")),
            "--pg" => config.pg = Some(rest.next().expect("--pg needs a URL").clone()),
            "--plot" => {
                config.plot = Some(PathBuf::from(rest.next().expect("--plot needs a file")))
            }
            "--only-scaling" => config.only_scaling = true,
            "-h" | "--help" => {
                println!(
                    "usage: wfstate-bench [--quick] [--json] [--dir DIR] [--pg URL] [--plot FILE]\n\
                     \x20                     [--only-scaling]\n\
                     Measures wfstate against this machine's fsync floor. DIR (default\n\
                     target/wfstate-bench) must be on the disk you care about, not tmpfs.\n\
                     --pg URL (or WFSTATE_BENCH_PG) also measures the PostgreSQL backend\n\
                     in the schema wfstate_bench of that database (dropped first).\n\
                     --plot FILE draws updates/s against concurrent writers (wfstate,\n\
                     SQLite, the floor) as an SVG chart; --only-scaling measures only that."
                );
                return;
            }
            other => {
                eprintln!("wfstate-bench: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let figures = run(&config);
    if config.json {
        println!("{}", Value::Object(figures));
    } else {
        for (key, value) in &figures {
            println!("{key:<32} {value}");
        }
    }
}

fn run(config: &Config) -> Map<String, Value> {
    let _ = std::fs::remove_dir_all(&config.dir);
    std::fs::create_dir_all(&config.dir).expect("create bench dir");
    let dir = config.dir.canonicalize().expect("bench dir");
    settle(&dir);
    let scale = |full: usize, quick: usize| if config.quick { quick } else { full };
    let mut figures = Map::new();
    let mut put = |key: &str, value: f64| {
        let value = if value.is_finite() { value } else { -1.0 };
        // Ratios and other small figures keep two decimals.
        let scale = if value.abs() < 10.0 { 100.0 } else { 10.0 };
        let value = (value * scale).round() / scale;
        eprintln!("  {key} = {value}");
        figures.insert(key.to_string(), json!(value));
    };

    eprintln!("concurrent writers of distinct workflows");
    let scaling = writers_scaling(&dir, scale(2000, 500));
    for (writers, point) in &scaling {
        put(&format!("update_per_s_{writers}wf"), point.wfstate);
        put(&format!("sqlite_update_per_s_{writers}wf"), point.sqlite);
        put(&format!("floor_per_s_{writers}wf"), point.floor);
    }
    let (one, eight) = (&scaling[0].1, &scaling[scaling.len() - 1].1);
    put("update_vs_sqlite_1wf", one.wfstate / one.sqlite);
    put("update_vs_sqlite_8wf", eight.wfstate / eight.sqlite);
    put("update_vs_floor_8wf", eight.wfstate / eight.floor);
    put("update_p50_us_1wf", one.wfstate_p50_us);
    put("update_p99_us_8wf", eight.wfstate_p99_us);
    put(
        "update_p99_8wf_vs_p50_1wf",
        eight.wfstate_p99_us / one.wfstate_p50_us,
    );
    if let Some(plot) = &config.plot {
        std::fs::write(plot, scaling_chart(&scaling)).expect("write the chart");
        eprintln!("  chart written to {}", plot.display());
    }
    if config.only_scaling {
        return figures;
    }

    eprintln!("fsync floor");
    let floor = fsync_floor_us(&dir, scale(500, 150));
    put("fsync_floor_us", floor);
    put(
        "replace_file_1k_us",
        median(&time_each(scale(300, 100), |i| {
            durable::replace_file_with_bytes(&dir.join("replace.json"), &payload(i)).unwrap();
        })),
    );

    // The primitives a one-sync commit could be built from (DESIGN §13):
    // appending to a file grows it, so its fsync must also commit metadata;
    // overwriting zeros already on disk changes no metadata.
    // And what a `stat` of the file before each write costs its sync
    // (DESIGN §13: the store's checks ask for identity and size only).
    let (append, overwrite, after_stat) = sync_primitives_us(&dir, scale(300, 100));
    put("append_fsync_us", append);
    put("overwrite_fdatasync_us", overwrite);
    put("overwrite_fdatasync_after_stat_us", after_stat);

    eprintln!("state update");
    let store_path = dir.join("store");
    let (store, _) = Store::init(&store_path, StoreOptions::default()).unwrap();
    store
        .save(WORKFLOW, json!({"n": 0, "pad": "x".repeat(1000)}), None)
        .unwrap();
    let n = scale(2000, 500);
    let sqlite = SqliteBaseline::open(&dir);
    let (file_1, sqlite_1, syncs) = interleaved_updates(&store, &sqlite, n);
    drop(sqlite);
    put("update_per_s", file_1);
    put("update_syncs", syncs);
    put("sqlite_update_per_s", sqlite_1);
    put("update_vs_sqlite", file_1 / sqlite_1);
    // The same updates where a sync costs next to nothing (tmpfs): what
    // each does besides waiting for the disk (BENCHMARKS.md, "What bounds
    // update_vs_sqlite").
    if let Some((ours_us, sqlite_us)) = updates_in_memory_us(n) {
        put("update_us_tmpfs", ours_us);
        put("sqlite_update_us_tmpfs", sqlite_us);
    }
    let per_proc = scale(250, 75);
    put(
        "update_per_s_4proc",
        parallel_updates(path_str(&store_path), 4, per_proc),
    );
    let file_8 = parallel_updates(path_str(&store_path), 8, per_proc / 2);
    put("update_per_s_8proc", file_8);

    #[cfg(feature = "postgres")]
    if let Some(url) = &config.pg {
        eprintln!("postgresql");
        let url = pg_bench_store(url);
        let pg_1 = updates_per_s(&url, n);
        put("pg_update_per_s", pg_1);
        put("pg_vs_file_update", pg_1 / file_1);
        let pg_8 = parallel_updates(&url, 8, per_proc / 2);
        put("pg_update_per_s_8proc", pg_8);
        put("pg_vs_file_update_8proc", pg_8 / file_8);
        pg_checkpoint_figures(&url, config.quick, &mut put);
    }

    eprintln!("audit");
    audit_figures(&dir, config.quick, &mut put);

    eprintln!("10 MiB state");
    // The document as a file, as `wfstate state set --file` reads it.
    let big_doc = dir.join("big.json");
    std::fs::write(&big_doc, serde_json::to_vec(&big_document()).unwrap()).unwrap();
    let (save_ms, peak) = save10_worker("save10-text", &dir.join("big-store"), &big_doc);
    put("state_10mib_save_ms", save_ms);
    put("state_10mib_peak_rss_mib", peak);
    // For context: a library caller that holds the document as a tree.
    let (save_ms, peak) = save10_worker("save10-tree", &dir.join("big-store-tree"), &big_doc);
    put("state_10mib_tree_save_ms", save_ms);
    put("state_10mib_tree_peak_rss_mib", peak);

    eprintln!("locks");
    let locks = LockManager::open(store_path.join("locks")).unwrap();
    for (key, recording) in [
        ("lock_uncontended_us", Recording::Off),
        ("lock_uncontended_recorded_us", Recording::Durable),
    ] {
        let times = time_each(
            scale(2000, 500) / if recording == Recording::Off { 1 } else { 10 },
            |_| {
                drop(locks.acquire("uncontended", request(recording)).unwrap());
            },
        );
        put(key, median(&times));
    }
    let rounds = scale(3000, 800);
    for (procs, recording, suffix) in [
        (2, Recording::Off, ""),
        (8, Recording::Off, "_8proc"),
        (2, Recording::Durable, "_recorded"),
    ] {
        let rounds = if recording == Recording::Durable {
            rounds / 5
        } else {
            rounds
        };
        let handoffs = lock_handoffs_us(&store_path, procs, rounds, recording);
        put(
            &format!("lock_handoff_p50_us{suffix}"),
            percentile(&handoffs, 0.50),
        );
        put(
            &format!("lock_handoff_p99_us{suffix}"),
            percentile(&handoffs, 0.99),
        );
    }

    eprintln!("cli");
    let cli = std::env::current_exe().unwrap().with_file_name("wfstate");
    if cli.exists() {
        let times: Vec<f64> = (0..scale(50, 20))
            .map(|_| {
                let started = Instant::now();
                let out = Command::new(&cli)
                    .arg("--store")
                    .arg(&store_path)
                    .args(["state", "get", WORKFLOW])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(out.success());
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        put("cli_state_get_ms", median(&times));
    } else {
        eprintln!("  (skipped cli_state_get_ms: build the wfstate binary first)");
    }

    // Last, because writing (and removing) 100,000 files disturbs the disk
    // for a while: everything fsync-bound is measured before it.
    eprintln!("checkpoints");
    checkpoint_figures(&dir, config.quick, &mut put);
    let _ = std::fs::remove_dir_all(dir.join("cp-store"));
    figures
}

/// Checkpoint creation against one durable write of the same bytes, then
/// latest / a page of 20 / a 10,000-link chain at 100,000 checkpoints (10,000
/// with --quick, and the keys say so).
fn checkpoint_figures(dir: &Path, quick: bool, put: &mut impl FnMut(&str, f64)) {
    let store_path = dir.join("cp-store");
    let (store, _) = Store::init(&store_path, StoreOptions::default()).unwrap();
    store
        .save(
            "cp",
            json!({"phase": "BUILD", "pad": "x".repeat(1000)}),
            None,
        )
        .unwrap();
    // Enough creations to include several settlings of the journal (every
    // 256 KiB of records, about 200 of these checkpoints), whose syncs the
    // mean and the sync count include and the median does not.
    let n = if quick { 500 } else { 1000 };
    let mut sizes = Vec::new();
    // The floor again, one sample after each creation: this disk's latency
    // drifts within a run, so the target's ratio is taken from samples
    // interleaved with the creations, not from the floor measured first.
    let floor_file = File::create(dir.join("floor-beside")).unwrap();
    floor_file.write_all_at(&payload(0), 0).unwrap();
    floor_file.sync_all().unwrap();
    let mut floor_times = Vec::with_capacity(n);
    let mut syncs = 0;
    let create_times = time_each(n, |i| {
        let syncs_before = durable::syncs_so_far();
        let cp = create_step(&store, i);
        syncs += durable::syncs_so_far() - syncs_before;
        sizes.push(cp.to_bytes().len());
        let started = Instant::now();
        floor_file.write_all_at(&payload(i), 0).unwrap();
        floor_file.sync_all().unwrap();
        floor_times.push(started.elapsed().as_secs_f64() * 1e6);
    });
    // Each sample also holds one floor write; take it out again.
    let create_times: Vec<f64> = create_times
        .iter()
        .zip(&floor_times)
        .map(|(both, floor)| both - floor)
        .collect();
    let create_syncs = syncs as f64 / n as f64;
    let same_bytes = vec![b'x'; sizes[sizes.len() / 2]];
    let write_times = time_each(n.min(300), |_| {
        durable::replace_file_with_bytes(&dir.join("same-bytes.json"), &same_bytes).unwrap();
    });
    let create = median(&create_times);
    let write = median(&write_times);
    put("checkpoint_create_us", create);
    put(
        "checkpoint_create_mean_us",
        create_times.iter().sum::<f64>() / create_times.len() as f64,
    );
    put("checkpoint_create_syncs", create_syncs);
    let floor_beside = median(&floor_times);
    put("fsync_floor_beside_checkpoints_us", floor_beside);
    put("checkpoint_create_vs_floor", create / floor_beside);
    put("durable_write_same_bytes_us", write);
    put("checkpoint_create_vs_durable_write", create / write);

    let (count, suffix) = if quick {
        (10_000, "10k")
    } else {
        (100_000, "100k")
    };
    let big = "big";
    let cps = store.checkpoints().unwrap();
    let wf_dir = store_path.join("checkpoints").join(big);
    std::fs::create_dir_all(&wf_dir).unwrap();
    let mut previous: Option<String> = None;
    let started = Instant::now();
    for i in 0..count {
        let id = wfstate::id::next_after(previous.as_deref());
        let cp = bench_checkpoint(big, &id, previous.clone(), i);
        // Setup only: plain writes, no fsync. What is measured below are reads.
        std::fs::write(wf_dir.join(format!("{id}.json")), cp.to_bytes()).unwrap();
        previous = Some(id);
    }
    eprintln!(
        "  wrote {count} checkpoint files in {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let newest = cps.latest(big).unwrap().unwrap(); // builds the index from the files
    eprintln!(
        "  index rebuilt from {count} files in {:?}",
        started.elapsed()
    );
    assert_eq!(cps.take_repairs().len(), 1);
    checkpoint_reads("", cps, big, &newest.id, suffix, put);
}

/// The same locked read-modify-write of a ~1 KiB JSON document in SQLite:
/// WAL journal, synchronous=FULL, one IMMEDIATE transaction per update.
/// The SQLite baseline: the same locked read-modify-write of a 1 KiB JSON
/// document, in WAL mode with synchronous=FULL (durable at commit).
struct SqliteBaseline {
    conn: rusqlite::Connection,
}

impl SqliteBaseline {
    fn open(dir: &Path) -> SqliteBaseline {
        let conn = rusqlite::Connection::open(dir.join("baseline.sqlite")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute_batch(
            "CREATE TABLE state (workflow TEXT PRIMARY KEY, generation INTEGER, data TEXT)",
        )
        .unwrap();
        let initial = json!({"n": 0, "pad": "x".repeat(1000)}).to_string();
        conn.execute("INSERT INTO state VALUES (?1, 1, ?2)", (WORKFLOW, &initial))
            .unwrap();
        SqliteBaseline { conn }
    }

    fn update(&self) {
        sqlite_update(&self.conn, WORKFLOW);
    }
}

/// The baseline's locked read-modify-write of `row`: what a wfstate update
/// does, in one SQLite transaction.
fn sqlite_update(conn: &rusqlite::Connection, row: &str) {
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (generation, text): (i64, String) = conn
        .query_row(
            "SELECT generation, data FROM state WHERE workflow = ?1",
            [row],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut data: Value = serde_json::from_str(&text).unwrap();
    increment(&mut data).unwrap();
    conn.execute(
        "UPDATE state SET generation = ?1, data = ?2 WHERE workflow = ?3",
        (generation + 1, data.to_string(), row),
    )
    .unwrap();
    conn.execute_batch("COMMIT").unwrap();
}

/// Single-process updates of wfstate and of SQLite, `n` each, measured in
/// alternating rounds so that drift in this shared machine's speed falls
/// on both alike. Returns (wfstate per s, SQLite per s, wfstate syncs per
/// update).
fn interleaved_updates(store: &Store, sqlite: &SqliteBaseline, n: usize) -> (f64, f64, f64) {
    // Both in their steady state first: SQLite's WAL grows (each commit
    // also commits the file's new size) until its first checkpoint, about
    // 500 commits in, and is then reused from its start; wfstate's log is
    // preallocated but compacts every few hundred updates.
    for _ in 0..1200 {
        store.update(WORKFLOW, increment).unwrap();
        sqlite.update();
    }
    const ROUNDS: usize = 10;
    let per_round = n.div_ceil(ROUNDS);
    let (mut ours, mut theirs) = (Duration::ZERO, Duration::ZERO);
    let syncs_before = durable::syncs_so_far();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..per_round {
            store.update(WORKFLOW, increment).unwrap();
        }
        ours += started.elapsed();
        let started = Instant::now();
        for _ in 0..per_round {
            sqlite.update();
        }
        theirs += started.elapsed();
    }
    let total = (per_round * ROUNDS) as f64;
    (
        total / ours.as_secs_f64(),
        total / theirs.as_secs_f64(),
        (durable::syncs_so_far() - syncs_before) as f64 / total,
    )
}

/// `interleaved_updates` in a scratch folder on tmpfs (`/dev/shm`), as
/// microseconds per update (wfstate, SQLite); `None` without tmpfs.
fn updates_in_memory_us(n: usize) -> Option<(f64, f64)> {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return None;
    }
    let dir = shm.join(format!("wfstate-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    let (store, _) = Store::init(&dir.join("store"), StoreOptions::default()).unwrap();
    store
        .save(WORKFLOW, json!({"n": 0, "pad": "x".repeat(1000)}), None)
        .unwrap();
    let sqlite = SqliteBaseline::open(&dir);
    let (ours, theirs, _) = interleaved_updates(&store, &sqlite, n);
    drop((store, sqlite));
    let _ = std::fs::remove_dir_all(&dir);
    Some((1e6 / ours, 1e6 / theirs))
}

/// One durable append, then verification speed over a log of tens of MiB
/// against the system `sha256sum` over the same file.
fn audit_figures(dir: &Path, quick: bool, put: &mut impl FnMut(&str, f64)) {
    let store_path = dir.join("audit-store");
    let (store, _) = Store::init(&store_path, StoreOptions::default()).unwrap();
    let audit = store.audit().unwrap();
    put(
        "audit_append_us",
        median(&time_each(if quick { 100 } else { 300 }, |i| {
            audit
                .append("bench", json!({"i": i, "workflow": "bench"}))
                .unwrap();
        })),
    );
    let entries = if quick { 20_000 } else { 100_000 };
    for chunk in 0..10 {
        let batch = (0..entries / 10)
            .map(|i| {
                (
                    "bench".to_string(),
                    json!({"i": chunk * entries + i, "pad": "p".repeat(200)}),
                )
            })
            .collect();
        audit.append_batch(batch).unwrap();
    }
    let bytes = std::fs::metadata(audit.location()).unwrap().len() as f64;
    let mib = bytes / (1024.0 * 1024.0);
    let verify = (0..3)
        .map(|_| {
            let started = Instant::now();
            assert!(audit.verify().unwrap().valid);
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    put("audit_log_mib", mib);
    put("audit_verify_mb_per_s", mib / verify);
    let sha = (0..3)
        .map(|_| {
            let started = Instant::now();
            let ok = Command::new("sha256sum")
                .arg(audit.location())
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                started.elapsed().as_secs_f64()
            } else {
                f64::NAN
            }
        })
        .fold(f64::INFINITY, f64::min);
    put("sha256sum_mb_per_s", mib / sha);
}

/// Flushes everything setup wrote (or a previous run deleted) to disk, so the
/// fsyncs measured next do not pay for it.
fn settle(dir: &Path) {
    let handle = File::open(dir).expect("open bench dir");
    rustix::fs::syncfs(&handle).expect("syncfs");
}

fn increment(data: &mut Value) -> wfstate::Result<()> {
    let n = data["n"].as_i64().unwrap_or(0);
    data["n"] = (n + 1).into();
    Ok(())
}

fn request(recording: Recording) -> LockRequest<'static> {
    LockRequest {
        mode: LockMode::Exclusive,
        timeout: Some(Duration::from_secs(60)),
        purpose: Some("benchmark"),
        recording,
        notice: None,
    }
}

/// 1 KiB, different each time so nothing is deduplicated.
fn payload(i: usize) -> Vec<u8> {
    let mut bytes = vec![b'x'; 1024];
    bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
    bytes
}

/// The cheapest durable write there is: overwrite 1 KiB in place + fsync.
/// Medians of (append 1 KiB + fsync, overwrite 1 KiB of pre-written zeros
/// at a fresh offset + fdatasync, the same after a full `stat` of the file);
/// the last two alternate, so drift falls on both.
fn sync_primitives_us(dir: &Path, n: usize) -> (f64, f64, f64) {
    let log = File::create(dir.join("append-log")).unwrap();
    let mut len = 0u64;
    let append = median(&time_each(n, |i| {
        let bytes = payload(i);
        log.write_all_at(&bytes, len).unwrap();
        len += bytes.len() as u64;
        log.sync_all().unwrap();
    }));
    let slab_path = dir.join("zeroed-slab");
    let slab = File::create(&slab_path).unwrap();
    let chunk = payload(0).len() as u64;
    slab.write_all_at(&vec![0u8; (chunk * 2 * n as u64) as usize], 0)
        .unwrap();
    slab.sync_all().unwrap();
    let times = time_each(2 * n, |i| {
        if i % 2 == 1 {
            std::fs::metadata(&slab_path).unwrap();
        }
        slab.write_all_at(&payload(i), i as u64 * chunk).unwrap();
        slab.sync_data().unwrap();
    });
    let plain: Vec<f64> = times.iter().step_by(2).copied().collect();
    let after_stat: Vec<f64> = times.iter().skip(1).step_by(2).copied().collect();
    (append, median(&plain), median(&after_stat))
}

fn fsync_floor_us(dir: &Path, n: usize) -> f64 {
    let file = File::create(dir.join("floor")).unwrap();
    file.write_all_at(&payload(0), 0).unwrap();
    file.sync_all().unwrap();
    median(&time_each(n, |i| {
        file.write_all_at(&payload(i), 0).unwrap();
        file.sync_all().unwrap();
    }))
}

fn time_each(n: usize, mut op: impl FnMut(usize)) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let started = Instant::now();
            op(i);
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

fn median(samples: &[f64]) -> f64 {
    percentile(samples, 0.5)
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Locked durable updates per second of one client on the store at
/// `location` (a folder or a database URL).
#[cfg(feature = "postgres")]
fn updates_per_s(location: &str, n: usize) -> f64 {
    let store = Store::open(Path::new(location), StoreOptions::default()).unwrap();
    store
        .save(WORKFLOW, json!({"n": 0, "pad": "x".repeat(1000)}), None)
        .unwrap();
    let started = Instant::now();
    for _ in 0..n {
        store.update(WORKFLOW, increment).unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `procs` processes each doing `per_proc` updates of one workflow at once:
/// total updates per second of wall time.
fn parallel_updates(location: &str, procs: usize, per_proc: usize) -> f64 {
    let started = Instant::now();
    let workers: Vec<Child> = (0..procs)
        .map(|_| spawn_worker(&["update", location, &per_proc.to_string()]))
        .collect();
    for w in workers {
        assert!(
            w.wait_with_output().unwrap().status.success(),
            "update worker failed"
        );
    }
    (procs * per_proc) as f64 / started.elapsed().as_secs_f64()
}

/// The checkpoint read figures of `checkpoint_figures` on PostgreSQL:
/// creation through the store, then latest / a page of 20 / a 10,000-link
/// chain among 100,000 rows (10,000 with --quick) of one workflow.
#[cfg(feature = "postgres")]
fn pg_checkpoint_figures(url: &str, quick: bool, put: &mut impl FnMut(&str, f64)) {
    let store = Store::open(Path::new(url), StoreOptions::default()).unwrap();
    store
        .save(
            "cp",
            json!({"phase": "BUILD", "pad": "x".repeat(1000)}),
            None,
        )
        .unwrap();
    let create_times = time_each(if quick { 100 } else { 300 }, |i| {
        create_step(&store, i);
    });
    put("pg_checkpoint_create_us", median(&create_times));

    let (count, suffix) = if quick {
        (10_000, "10k")
    } else {
        (100_000, "100k")
    };
    let big = "big";
    // Setup only: rows inserted in one transaction. What is measured below
    // are the store's reads.
    let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut tx = admin.transaction().unwrap();
    let insert = tx
        .prepare(
            "INSERT INTO wfstate_checkpoints (id, workflow, parent, created_at, phase, document) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .unwrap();
    let mut previous: Option<String> = None;
    let started = Instant::now();
    for i in 0..count {
        let id = wfstate::id::next_after(previous.as_deref());
        let cp = bench_checkpoint(big, &id, previous.clone(), i);
        let text = String::from_utf8(cp.to_bytes()).unwrap();
        tx.execute(
            &insert,
            &[&cp.id, &big, &cp.parent, &cp.created_at, &cp.phase, &text],
        )
        .unwrap();
        previous = Some(id);
    }
    tx.commit().unwrap();
    admin.batch_execute("ANALYZE wfstate_checkpoints").unwrap();
    eprintln!(
        "  inserted {count} checkpoint rows in {:?}",
        started.elapsed()
    );
    let cps = store.checkpoints().unwrap();
    let newest = cps.latest(big).unwrap().unwrap();
    assert_eq!(Some(&newest.id), previous.as_ref());
    checkpoint_reads("pg_", cps, big, &newest.id, suffix, put);
}

/// Times `latest`, a page of 20 and a 10,000-link chain in workflow `big`
/// (whose newest checkpoint is `newest`), under keys starting `prefix`.
fn checkpoint_reads(
    prefix: &str,
    cps: &dyn CheckpointBackend,
    big: &str,
    newest: &str,
    suffix: &str,
    put: &mut impl FnMut(&str, f64),
) {
    put(
        &format!("{prefix}checkpoint_latest_us_{suffix}"),
        median(&time_each(200, |_| {
            assert_eq!(cps.latest(big).unwrap().unwrap().id, newest);
        })),
    );
    let query = ListQuery {
        workflow: Some(big.into()),
        limit: 20,
        ..ListQuery::default()
    };
    put(
        &format!("{prefix}checkpoint_list20_us_{suffix}"),
        median(&time_each(200, |_| {
            assert_eq!(cps.list(&query).unwrap().len(), 20);
        })),
    );
    let chain_times: Vec<f64> = time_each(20, |_| {
        let chain = cps.chain(newest, 10_000).unwrap();
        assert_eq!(chain.links.len(), 10_000);
    });
    put(
        &format!("{prefix}chain10k_ms"),
        median(&chain_times) / 1000.0,
    );
}

/// A filler checkpoint for the read benchmarks (every tenth in phase REVIEW).
fn bench_checkpoint(workflow: &str, id: &str, parent: Option<String>, i: usize) -> Checkpoint {
    Checkpoint {
        format: wfstate::checkpoint::CHECKPOINT_FORMAT.into(),
        id: id.to_string(),
        workflow: workflow.into(),
        parent,
        created_at: wfstate::clock::now_rfc3339(),
        phase: Some(
            if i.is_multiple_of(10) {
                "REVIEW"
            } else {
                "BUILD"
            }
            .into(),
        ),
        item: None,
        message: Some(format!("checkpoint {i}")),
        context_summary: None,
        key_decisions: Vec::new(),
        files: Vec::new(),
        state: Some(StateSnapshot {
            generation: i as u64 + 1,
            data: json!({"i": i}),
        }),
        origin: None,
        payload: None,
        metadata: None,
        checksum: String::new(),
    }
    .seal()
}

/// A fresh store in the schema `wfstate_bench` of the database at `url`.
#[cfg(feature = "postgres")]
fn pg_bench_store(url: &str) -> String {
    let mut admin = postgres::Client::connect(url, postgres::NoTls).expect("connect to --pg");
    admin
        .batch_execute("DROP SCHEMA IF EXISTS wfstate_bench CASCADE")
        .unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    let store = format!("{url}{separator}options=-csearch_path%3Dwfstate_bench");
    Store::init(Path::new(&store), StoreOptions::default()).unwrap();
    store
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("bench paths are UTF-8")
}

fn spawn_worker(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--worker")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn monotonic_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

/// `procs` processes contend for one lock, `rounds` acquisitions each; each
/// reports when it got the lock (after `acquire` returned) and when it let
/// go (just before the guard drops). A handoff is the gap between one
/// holder's release and the next acquisition by a *different* process; an
/// immediate re-acquisition by the releaser is not a handoff and is skipped.
fn lock_handoffs_us(store: &Path, procs: usize, rounds: usize, recording: Recording) -> Vec<f64> {
    let go = store.join(format!("go-{procs}-{recording:?}"));
    let record_flag = if recording == Recording::Durable {
        "1"
    } else {
        "0"
    };
    let workers: Vec<Child> = (0..procs)
        .map(|_| {
            spawn_worker(&[
                "handoff",
                path_str(&store.join("locks")),
                &rounds.to_string(),
                record_flag,
                path_str(&go),
            ])
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    File::create(&go).unwrap();
    let mut holds: Vec<(u128, u128, usize)> = Vec::new();
    for (id, w) in workers.into_iter().enumerate() {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "handoff worker failed");
        for line in BufReader::new(&out.stdout[..]).lines() {
            let line = line.unwrap();
            let (acq, rel) = line.split_once(' ').unwrap();
            holds.push((acq.parse().unwrap(), rel.parse().unwrap(), id));
        }
    }
    holds.sort();
    holds
        .windows(2)
        .filter(|w| w[0].2 != w[1].2)
        .map(|w| (w[1].0.saturating_sub(w[0].1)) as f64 / 1000.0)
        .collect()
}

/// The checkpoint every creation figure makes: step `i` of workflow `cp`.
fn create_step(store: &Store, i: usize) -> wfstate::checkpoint::Checkpoint {
    store
        .create_checkpoint(NewCheckpoint {
            workflow: "cp".into(),
            message: Some(format!("step {i}")),
            ..NewCheckpoint::default()
        })
        .unwrap()
}

/// A state of about 10 MiB: 100,000 small objects.
fn big_document() -> Value {
    let items: Vec<Value> = (0..100_000)
        .map(|i| json!({"id": i, "name": format!("item-{i:06}"), "pad": "x".repeat(64)}))
        .collect();
    json!({ "items": items })
}

/// Runs a 10 MiB save worker; returns (save ms, its peak RSS in MiB).
fn save10_worker(kind: &str, store: &Path, doc: &Path) -> (f64, f64) {
    let out = spawn_worker(&[kind, path_str(store), path_str(doc)])
        .wait_with_output()
        .unwrap();
    assert!(out.status.success(), "{kind} worker failed");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        report["save_ms"].as_f64().unwrap(),
        report["peak_rss_mib"].as_f64().unwrap(),
    )
}

/// Prints a save worker's report: the save's time and this process's peak
/// resident set (VmHWM).
fn report_save10(save: Duration) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    println!(
        "{}",
        json!({"save_ms": save.as_secs_f64() * 1000.0, "peak_rss_mib": peak_kib / 1024.0})
    );
}

fn worker(args: &[String]) {
    match args[0].as_str() {
        "update" => {
            let store = Store::open(Path::new(&args[1]), StoreOptions::default()).unwrap();
            let n: usize = args[2].parse().unwrap();
            for _ in 0..n {
                store.update(WORKFLOW, increment).unwrap();
            }
        }
        "timed-updates" => {
            // For the Python package's benchmark (python/bench/bench.py):
            // rounds of N updates of a workflow by the library, each round
            // started by a line on stdin and answered with its seconds, so
            // that the open and the process start are not timed and the
            // rounds interleave with the Python ones. A workflow of its own
            // (args[3]), so that each side compacts its own log.
            let store = Store::open(Path::new(&args[1]), StoreOptions::default()).unwrap();
            let n: usize = args[2].parse().unwrap();
            let workflow = &args[3];
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).unwrap() > 0 {
                let started = Instant::now();
                for _ in 0..n {
                    store.update(workflow, increment).unwrap();
                }
                println!("{}", started.elapsed().as_secs_f64());
                line.clear();
            }
        }
        "writer" => scaling_worker(&args[1..]),
        "handoff" => {
            let locks = LockManager::open(&args[1]).unwrap();
            let rounds: usize = args[2].parse().unwrap();
            let recording = if args[3] == "1" {
                Recording::Durable
            } else {
                Recording::Off
            };
            let go = Path::new(&args[4]);
            while !go.exists() {
                std::thread::sleep(Duration::from_micros(200));
            }
            let mut out = String::with_capacity(rounds * 40);
            for _ in 0..rounds {
                let guard = locks.acquire("handoff", request(recording)).unwrap();
                let acquired = monotonic_ns();
                // Hold briefly so the others are queued in the kernel.
                let spin = Instant::now();
                while spin.elapsed() < Duration::from_micros(20) {}
                let released = monotonic_ns();
                drop(guard);
                out.push_str(&format!("{acquired} {released}\n"));
            }
            std::io::stdout().write_all(out.as_bytes()).unwrap();
        }
        "checkpoints" => {
            // For profiling: creates N checkpoints of workflow `cp`.
            let store = Store::open(Path::new(&args[1]), StoreOptions::default()).unwrap();
            let n: usize = args[2].parse().unwrap();
            for i in 0..n {
                create_step(&store, i);
            }
        }
        "save10-text" => {
            // What `wfstate state set --file` does: read the text, save it,
            // twice (the second save also verifies the first). The peak
            // RSS of this process covers both; the time is the second's.
            let store = Store::init(Path::new(&args[1]), StoreOptions::default())
                .unwrap()
                .0;
            let text = std::fs::read_to_string(&args[2]).unwrap();
            store.save_json("big", &text, None).unwrap();
            let started = Instant::now();
            store.save_json("big", &text, Some(1)).unwrap();
            report_save10(started.elapsed());
        }
        "save10-tree" => {
            // A library caller with the document as a `Value`: built here,
            // saved once.
            let store = Store::init(Path::new(&args[1]), StoreOptions::default())
                .unwrap()
                .0;
            let data = big_document();
            let started = Instant::now();
            store.save("big", data, None).unwrap();
            report_save10(started.elapsed());
        }
        other => panic!("unknown worker {other}"),
    }
}

/// One point of the writers-scaling figures: `writers` processes at once,
/// each updating its own ~1 KiB record.
struct ScalingPoint {
    wfstate: f64,
    sqlite: f64,
    floor: f64,
    wfstate_p50_us: f64,
    wfstate_p99_us: f64,
}

/// For 1, 2, 4 and 8 concurrent writers, each doing `n` locked
/// read-modify-write updates of its own ~1 KiB record: wfstate (a workflow
/// each, one store), SQLite (WAL, synchronous=FULL, one database, a row
/// each, the same read-modify-write in `BEGIN IMMEDIATE`), and the floor
/// (each writer overwrites 1 KiB in place in its own preallocated file and
/// `fdatasync`s it). The three run one after another for each count, so
/// drift in the machine's speed falls on all three alike. Throughput is
/// all updates over the wall time from the first writer's start to the
/// last one's end; every writer waits for a common start signal after
/// opening and warming up.
fn writers_scaling(dir: &Path, n: usize) -> Vec<(usize, ScalingPoint)> {
    let mut points = Vec::new();
    for writers in [1usize, 2, 4, 8] {
        let round = dir.join(format!("scaling-{writers}"));
        std::fs::create_dir_all(&round).unwrap();
        let store = round.join("store");
        Store::init(&store, StoreOptions::default()).unwrap();
        let db = round.join("scaling.sqlite");
        {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            conn.execute_batch(
                "CREATE TABLE state (workflow TEXT PRIMARY KEY, generation INTEGER, data TEXT)",
            )
            .unwrap();
        }
        let floor_dir = round.join("floor");
        std::fs::create_dir_all(&floor_dir).unwrap();
        let (floor, _) = run_writers("floor", &floor_dir, writers, n);
        let (sqlite, _) = run_writers("sqlite", &db, writers, n);
        let (wfstate, mut latencies) = run_writers("wfstate", &store, writers, n);
        latencies.sort_by(f64::total_cmp);
        eprintln!(
            "  {writers} writers: wfstate {wfstate:.0}/s, sqlite {sqlite:.0}/s, floor {floor:.0}/s"
        );
        points.push((
            writers,
            ScalingPoint {
                wfstate,
                sqlite,
                floor,
                wfstate_p50_us: percentile(&latencies, 0.50),
                wfstate_p99_us: percentile(&latencies, 0.99),
            },
        ));
        let _ = std::fs::remove_dir_all(&round);
    }
    points
}

/// Runs `writers` workers of `kind` on `location`, `n` updates each; returns
/// the total updates per second and every update's latency in µs.
fn run_writers(kind: &str, location: &Path, writers: usize, n: usize) -> (f64, Vec<f64>) {
    let go = location.with_extension(format!("go-{kind}"));
    let _ = std::fs::remove_file(&go);
    let mut children: Vec<Child> = (0..writers)
        .map(|i| {
            spawn_worker(&[
                "writer",
                kind,
                path_str(location),
                &i.to_string(),
                &n.to_string(),
                path_str(&go),
            ])
        })
        .collect();
    // Each worker says "ready" once opened and warmed up.
    let mut outputs: Vec<BufReader<std::process::ChildStdout>> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()))
        .collect();
    for out in &mut outputs {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "{kind} worker did not start");
    }
    File::create(&go).unwrap();
    let (mut first_start, mut last_end) = (u128::MAX, 0u128);
    let mut latencies = Vec::with_capacity(writers * n);
    for (child, out) in children.into_iter().zip(outputs) {
        let mut lines = out.lines();
        let span = lines.next().unwrap().unwrap();
        let (start, end) = span.split_once(' ').unwrap();
        first_start = first_start.min(start.parse().unwrap());
        last_end = last_end.max(end.parse().unwrap());
        latencies.extend(lines.map(|l| l.unwrap().parse::<f64>().unwrap()));
        let status = child.wait_with_output().unwrap().status;
        assert!(status.success(), "{kind} worker failed");
    }
    let seconds = (last_end - first_start) as f64 / 1e9;
    ((writers * n) as f64 / seconds, latencies)
}

/// A worker of `writers_scaling`: `kind location index n go-file`.
fn scaling_worker(args: &[String]) {
    let (kind, location, index, n, go) = (
        args[0].as_str(),
        Path::new(&args[1]),
        &args[2],
        args[3].parse::<usize>().unwrap(),
        Path::new(&args[4]),
    );
    let initial = json!({"n": 0, "pad": "x".repeat(1000)});
    let mut update: Box<dyn FnMut()> = match kind {
        "wfstate" => {
            let store = Store::open(location, StoreOptions::default()).unwrap();
            let workflow = format!("writer-{index}");
            store.save(&workflow, initial, None).unwrap();
            Box::new(move || {
                store.update(&workflow, increment).unwrap();
            })
        }
        "sqlite" => {
            let conn = rusqlite::Connection::open(location).unwrap();
            conn.pragma_update(None, "synchronous", "FULL").unwrap();
            conn.busy_timeout(Duration::from_secs(60)).unwrap();
            let row = format!("writer-{index}");
            conn.execute(
                "INSERT INTO state VALUES (?1, 1, ?2)",
                (&row, initial.to_string()),
            )
            .unwrap();
            Box::new(move || sqlite_update(&conn, &row))
        }
        "floor" => {
            let path = location.join(format!("writer-{index}"));
            std::fs::write(&path, vec![0u8; 1024 * 1024]).unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.sync_all().unwrap();
            let mut i = 0;
            Box::new(move || {
                file.write_all_at(&payload(i), 0).unwrap();
                file.sync_data().unwrap();
                i += 1;
            })
        }
        other => panic!("unknown writer kind {other}"),
    };
    // Warm up (files opened, logs and WAL created), then wait for the
    // others.
    for _ in 0..20 {
        update();
    }
    println!("ready");
    std::io::stdout().flush().unwrap();
    while !go.exists() {
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut latencies = Vec::with_capacity(n);
    let start = monotonic_ns();
    for _ in 0..n {
        let began = Instant::now();
        update();
        latencies.push(began.elapsed().as_secs_f64() * 1e6);
    }
    let end = monotonic_ns();
    let mut out = String::with_capacity(n * 8 + 64);
    out.push_str(&format!("{start} {end}\n"));
    for l in latencies {
        out.push_str(&format!("{l:.1}\n"));
    }
    std::io::stdout().write_all(out.as_bytes()).unwrap();
}

/// The writers-scaling figures as an SVG line chart: updates per second
/// against concurrent writers, for wfstate, SQLite and the floor.
fn scaling_chart(points: &[(usize, ScalingPoint)]) -> String {
    let (width, height) = (720.0, 400.0);
    let (left, right, top, bottom) = (70.0, 210.0, 40.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max = points
        .iter()
        .map(|(_, p)| p.floor.max(p.wfstate).max(p.sqlite))
        .fold(0.0, f64::max);
    // A round top for the axis: 1, 2 or 5 times a power of ten.
    let magnitude = 10f64.powf(max.log10().floor());
    let top_value = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * magnitude);
    let x = |i: usize| left + plot_w * i as f64 / (points.len() - 1).max(1) as f64;
    let y = |v: f64| top + plot_h * (1.0 - v / top_value);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">Updates per second against concurrent writers (distinct workflows)</text>
"#,
        width / 2.0
    );
    for step in 0..=5 {
        let value = top_value * step as f64 / 5.0;
        svg += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{value:.0}</text>\n",
            left + plot_w,
            left - 6.0,
            y(value) + 4.0,
            y = y(value)
        );
    }
    for (i, (writers, _)) in points.iter().enumerate() {
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{writers}</text>\n",
            x(i),
            top + plot_h + 18.0
        );
    }
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">writers</text>\n",
        left + plot_w / 2.0,
        height - 10.0
    );
    type Series<'a> = (&'a str, &'a str, fn(&ScalingPoint) -> f64);
    let series: [Series; 3] = [
        ("floor (pwrite+fdatasync)", "#999999", |p| p.floor),
        ("wfstate", "#1f77b4", |p| p.wfstate),
        ("SQLite WAL FULL", "#d62728", |p| p.sqlite),
    ];
    for (n, (name, colour, value)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("{:.1},{:.1}", x(i), y(value(p))))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2.5\" points=\"{}\"/>\n",
            path.join(" ")
        );
        for point in &path {
            let (px, py) = point.split_once(',').unwrap();
            svg += &format!("<circle cx=\"{px}\" cy=\"{py}\" r=\"3.5\" fill=\"{colour}\"/>\n");
        }
        let legend_y = top + 20.0 + 22.0 * n as f64;
        svg += &format!(
            "<line x1=\"{}\" x2=\"{}\" y1=\"{legend_y}\" y2=\"{legend_y}\" stroke=\"{colour}\" stroke-width=\"2.5\"/>\n\
             <text x=\"{}\" y=\"{}\">{name}</text>\n",
            left + plot_w + 12.0,
            left + plot_w + 36.0,
            left + plot_w + 42.0,
            legend_y + 4.0
        );
    }
    svg += "</svg>\n";
    svg
}
