//! Helpers shared by the integration tests: a scratch store and a way to run
//! the real `wfstate` binary against it.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_wfstate");

pub struct Scratch {
    pub dir: tempfile::TempDir,
    /// A store folder, or a PostgreSQL URL.
    pub store: PathBuf,
    /// The schema a PostgreSQL scratch store lives in (dropped at the end).
    pub pg_schema: Option<String>,
}

/// Where the PostgreSQL tests find a server when `WFSTATE_TEST_PG` is unset
/// (the database `.ci/run` creates).
pub const DEFAULT_TEST_PG: &str = "postgres://wfstate:wfstate@127.0.0.1:5432/wfstate_test";

pub fn test_pg_url() -> String {
    std::env::var("WFSTATE_TEST_PG").unwrap_or_else(|_| DEFAULT_TEST_PG.to_string())
}

/// A connection to the test database outside any scratch schema.
#[cfg(feature = "postgres")]
pub fn pg_admin(search_path: Option<&str>) -> Result<postgres::Client, postgres::Error> {
    let mut client = postgres::Client::connect(&test_pg_url(), postgres::NoTls)?;
    if let Some(schema) = search_path {
        client.batch_execute(&format!("SET search_path = \"{schema}\""))?;
    }
    Ok(client)
}

impl Drop for Scratch {
    fn drop(&mut self) {
        #[cfg(feature = "postgres")]
        if let Some(schema) = &self.pg_schema
            && let Ok(mut admin) = pg_admin(None)
        {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
        }
    }
}

impl Scratch {
    /// A temporary directory with an initialized store at `<dir>/.wfstate`.
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join(".wfstate");
        let out = Command::new(BIN)
            .arg("--store")
            .arg(&store)
            .arg("init")
            .output()
            .expect("run wfstate init");
        assert!(out.status.success(), "init failed: {}", text(&out.stderr));
        Scratch {
            dir,
            store,
            pg_schema: None,
        }
    }

    #[cfg(feature = "postgres")]
    /// A store in a fresh schema of the test database, initialized with
    /// `wfstate init`. `None` (after saying so on stderr) when no server is
    /// reachable, unless `WFSTATE_TEST_PG_REQUIRED=1`, which CI sets: there
    /// an unreachable server fails the test.
    pub fn postgres(test: &str) -> Option<Scratch> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = test_pg_url();
        if let Err(e) = pg_admin(None) {
            let required = std::env::var("WFSTATE_TEST_PG_REQUIRED").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "PostgreSQL required (WFSTATE_TEST_PG_REQUIRED=1) but not reachable at {base}: {e}"
            );
            eprintln!(
                "SKIPPED {test} on PostgreSQL: no server at {base} ({e}); \
                 set WFSTATE_TEST_PG to a database URL to run it"
            );
            return None;
        }
        let short: String = test
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(30)
            .collect();
        let schema = format!(
            "t_{}_{}_{}",
            short.to_lowercase(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
        let dir = tempfile::tempdir().expect("tempdir");
        let scratch = Scratch {
            dir,
            store: PathBuf::from(url),
            pg_schema: Some(schema),
        };
        let out = scratch.run(&["init"]);
        assert!(out.status.success(), "init failed: {}", text(&out.stderr));
        Some(scratch)
    }

    pub fn is_postgres(&self) -> bool {
        self.pg_schema.is_some()
    }

    /// An SQL connection inside this store's schema (PostgreSQL only).
    #[cfg(feature = "postgres")]
    pub fn sql(&self) -> postgres::Client {
        pg_admin(self.pg_schema.as_deref()).expect("connect to the test database")
    }

    /// A `wfstate --store <store>` command, ready for more arguments.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--store")
            .arg(&self.store)
            .env_remove("WFSTATE_STORE");
        cmd
    }

    /// Runs `wfstate --store <store> ARGS...`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run wfstate")
    }

    /// Runs with `stdin` piped in.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wfstate");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `wfstate --store <store> ARGS...`, killed (failing the test)
    /// if it has not finished in 20 s: for inputs that once made a command
    /// read without end, such as a symlink to `/dev/zero`.
    pub fn run_bounded(&self, args: &[&str]) -> Output {
        let mut cmd = self.cmd();
        cmd.args(args);
        output_within_20s(cmd)
    }

    pub fn state_file(&self, workflow: &str) -> PathBuf {
        self.store.join("state").join(format!("{workflow}.json"))
    }
}

/// Runs `cmd` to its end and returns its output; kills it and fails the
/// test if it has not finished in 20 s (see `Scratch::run_bounded`).
pub fn output_within_20s(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{cmd:?} did not finish in 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Polls `done` every 5 ms; fails the test after 20 s.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "never happened: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A shell loop that waits for `release` to appear, bounded so that a failed
/// test can never leave it running (30 s at most).
pub fn wait_for_file(release: &Path) -> String {
    format!(
        "i=0; while [ ! -e '{}' ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done",
        release.display()
    )
}

pub fn sigkill(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

/// `wfstate lock status NAME --json`.
pub fn lock_status(s: &Scratch, name: &str) -> serde_json::Value {
    stdout_json(&s.run(&["--json", "lock", "status", name]))
}

/// `wfstate lock run res ARGS -- sh -c SCRIPT`, not yet started.
pub fn lock_run(s: &Scratch, args: &[&str], script: &str) -> Command {
    let mut c = s.cmd();
    c.args(["lock", "run", "res"])
        .args(args)
        .args(["--", "sh", "-c", script]);
    c
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

pub fn stdout_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON value ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A small deterministic generator, seeded per run and printed, so a failing
/// random schedule can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn from_env_or_clock(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("random seed {seed} (replay with {var}={seed})");
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Random JSON values for property tests against other implementations:
/// non-ASCII, astral and control characters, DEL, U+2028, nested objects,
/// and floats near the formatting switch points or anywhere at all.
/// `max_int` bounds integers (2^53 for comparisons with JavaScript).
pub fn random_value(rng: &mut Rng, depth: u32, max_int: u64) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    match rng.below(if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => {
            let n = rng.below(max_int) as i64;
            json!(if rng.below(2) == 0 { n } else { -n })
        }
        3 => json!(random_float(rng)),
        4 => Value::String(random_string(rng)),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1, max_int))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(4) {
                m.insert(random_string(rng), random_value(rng, depth + 1, max_int));
            }
            Value::Object(m)
        }
    }
}

pub fn random_string(rng: &mut Rng) -> String {
    const POOL: [char; 21] = [
        'a',
        'Z',
        '0',
        ' ',
        '"',
        '\\',
        '/',
        '\n',
        '\t',
        '\u{1}',
        '\u{1f}',
        '\u{7f}',
        'é',
        'ß',
        '✓',
        '中',
        '\u{fffd}',
        '\u{fb01}',
        '\u{1f680}',
        '\u{10ffff}',
        '\u{2028}',
    ];
    (0..rng.below(12))
        .map(|_| POOL[rng.below(POOL.len() as u64) as usize])
        .collect()
}

/// Floats around the switch points of Python's repr (1e-4, 1e16) and
/// ECMAScript's Number::toString (1e-7, 1e21), exact ties, and random bits.
pub fn random_float(rng: &mut Rng) -> f64 {
    let near: [f64; 8] = [1e-4, 1e16, 1e-5, 1e15, 1e-7, 1e21, 0.1, 1.0];
    let f = match rng.below(3) {
        0 => {
            near[rng.below(near.len() as u64) as usize]
                * (1.0 + (rng.below(2001) as f64 - 1000.0) * 1e-12)
        }
        1 => f64::from_bits(rng.below(u64::MAX)),
        _ => (rng.below(1 << 40) as f64) / (1u64 << rng.below(60)) as f64,
    };
    if !f.is_finite() {
        1.5
    } else if rng.below(2) == 0 {
        f
    } else {
        -f
    }
}

/// Every file under `root` with its bytes, sorted by path.
pub fn all_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// What a child started by [`spawn_acking_child`] printed before it died:
/// the numbers it acknowledged, or why it failed.
pub type ChildOutput = Result<Vec<u64>, String>;

/// Marks the line on which a child reports a panic (see
/// [`report_panics_on_stdout`]).
const CHILD_FAILED: &str = "CHILD FAILED: ";

/// In a child: a panic (an operation that returned an error) is written to
/// stdout, where [`spawn_acking_child`] reads it, so that a child that
/// fails is not taken for one that was killed.
pub fn report_panics_on_stdout() {
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "\n{CHILD_FAILED}{}",
            info.to_string().replace('\n', " ")
        );
        let _ = out.flush();
    }));
}

/// Starts this test binary again running only `child_test` (with `env`
/// set), and collects the numbers it prints as `ACK <n>` lines until it
/// dies, or the failure it reports. libtest prints "test name ... "
/// without a newline first, so the marker may sit mid-line.
pub fn spawn_acking_child(
    child_test: &str,
    env: (&str, &Path),
) -> (std::process::Child, std::thread::JoinHandle<ChildOutput>) {
    spawn_acking_child_with(child_test, &[(env.0, env.1.as_os_str())])
}

/// [`spawn_acking_child`] with several variables set.
pub fn spawn_acking_child_with(
    child_test: &str,
    envs: &[(&str, &std::ffi::OsStr)],
) -> (std::process::Child, std::thread::JoinHandle<ChildOutput>) {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([child_test, "--exact", "--nocapture", "--test-threads=1"])
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find(CHILD_FAILED) {
                return Err(line[at + CHILD_FAILED.len()..].to_string());
            }
            if let Some(at) = line.find("ACK ") {
                acks.push(line[at + 4..].trim().parse::<u64>().unwrap());
            }
        }
        Ok(acks)
    });
    (child, reader)
}

/// The checkpoint ids of a `checkpoint chain --json` answer, newest first.
pub fn link_ids(chain: &serde_json::Value) -> Vec<String> {
    chain["links"]
        .as_array()
        .expect("a chain has links")
        .iter()
        .map(|l| l["id"].as_str().expect("a link has an id").to_string())
        .collect()
}

/// Prints a count a test measured, and appends it to the file
/// `WFSTATE_TEST_COUNTS` names: `.ci/run` shows that file, since libtest
/// hides a passing test's output. (The library's crash tests do the same.)
pub fn tell(line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("WFSTATE_TEST_COUNTS") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the counts file");
        // One write per line: O_APPEND keeps concurrent tests' lines whole.
        file.write_all(format!("{line}\n").as_bytes())
            .expect("write the counts file");
    }
}

/// `on_every_backend!(a, b, ...)`: each test function `fn a(s: &Scratch)`
/// runs once on the embedded file store (`file::a`) and once on PostgreSQL
/// (`postgres::a`, which says SKIPPED and passes when no server answers,
/// unless `WFSTATE_TEST_PG_REQUIRED=1`). The calling crate must have
/// `Scratch` in scope.
#[allow(unused_macros)] // only the suites that run on both backends use it
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod file {
            $( #[test] fn $name() { super::$name(&super::Scratch::new()); } )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(store) = super::Scratch::postgres(stringify!($name)) {
                        super::$name(&store);
                    }
                }
            )*
        }
    };
}
