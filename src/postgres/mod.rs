//! The PostgreSQL backend: the same documents as the file store, kept in
//! tables of one schema, for teams whose workflows run on several machines.
//!
//! ```text
//! wfstate_schema_migrations(version, applied_at)   what `init` applied
//! wfstate_states(workflow, generation, document)    one row per workflow
//! wfstate_checkpoints(workflow, id, parent, created_at, phase, document, metadata)
//! wfstate_checkpoint_writes(workflow, checkpoint, seq, document)  pending writes
//! wfstate_audit(seq, line)                          the hash chain
//! wfstate_lock_names(name), wfstate_lock_holders(backend_pid, name, ...)
//! ```
//!
//! Documents are stored as the exact text the file store would write
//! (sealed envelopes), so loading verifies the same checksum and `state get`
//! prints the same bytes. Every change is one transaction that also appends
//! its audit entry, so a state and its audit entry commit together or not at
//! all. Durability is the server's: a commit returns once the server has
//! flushed its WAL (`synchronous_commit = on`, `fsync = on`; `health` warns
//! when either is off).
//!
//! Serialization: a state write locks its row (`SELECT ... FOR UPDATE`)
//! and checks the generation it read (compare-and-swap); checkpoint writers
//! of a workflow and audit appenders take transaction-level advisory locks.
//! Named user locks are session-level advisory locks, each on a connection
//! of its own (`locks`).

mod checkpoints;
mod health;
mod locks;
mod tls;

use crate::audit::{self, AuditEntry, AuditTrail, VerifyReport};
use crate::backend::{Backend, InitOutcome, StoreOptions};
use crate::checkpoint::CheckpointBackend;
use crate::clock;
use crate::error::{Error, Result, Size};
use crate::health::HealthReport;
use crate::lock::NamedLocks;
use crate::name::validate_name;
use crate::state::StateDoc;
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Config, GenericClient, NoTls, Row, Statement, Transaction};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Migrations, in order; migration `n` is `MIGRATIONS[n - 1]`. Append only:
/// a released migration is never edited.
const MIGRATIONS: [&str; 2] = [
    r#"
CREATE TABLE wfstate_states (
    workflow   text PRIMARY KEY,
    generation bigint NOT NULL CHECK (generation >= 0),
    document   text
);
CREATE TABLE wfstate_checkpoints (
    id         text PRIMARY KEY,
    workflow   text NOT NULL,
    parent     text,
    created_at text NOT NULL,
    phase      text,
    document   text NOT NULL
);
CREATE INDEX wfstate_checkpoints_by_workflow ON wfstate_checkpoints (workflow, id);
CREATE TABLE wfstate_audit (
    seq  bigint PRIMARY KEY,
    line text NOT NULL
);
CREATE TABLE wfstate_lock_names (
    name text PRIMARY KEY
);
CREATE TABLE wfstate_lock_holders (
    backend_pid integer NOT NULL,
    name        text NOT NULL,
    record      text NOT NULL,
    PRIMARY KEY (backend_pid, name)
);
CREATE TABLE wfstate_quarantine (
    id       bigserial PRIMARY KEY,
    kind     text NOT NULL,
    key      text NOT NULL,
    document text,
    reason   text NOT NULL,
    moved_at text NOT NULL
);
"#,
    r#"
ALTER TABLE wfstate_checkpoints DROP CONSTRAINT wfstate_checkpoints_pkey;
ALTER TABLE wfstate_checkpoints ADD PRIMARY KEY (workflow, id);
DROP INDEX wfstate_checkpoints_by_workflow;
CREATE INDEX wfstate_checkpoints_by_id ON wfstate_checkpoints (id);
ALTER TABLE wfstate_checkpoints ADD COLUMN metadata jsonb;
CREATE TABLE wfstate_checkpoint_writes (
    workflow   text NOT NULL,
    checkpoint text NOT NULL,
    seq        bigserial,
    document   text NOT NULL,
    PRIMARY KEY (workflow, checkpoint, seq)
);
"#,
];

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Connection attempts give up after this long, so a server that is down
/// gives a clear error instead of a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the store's database, reopened after it breaks.
pub(crate) struct Db {
    config: Config,
    /// TLS as the URL's `sslmode` asks (see `tls`).
    tls: tls::Tls,
    /// `postgres://user@host:port/db`, without the password.
    location: String,
    /// The schema the tables live in (first of the search path).
    schema: String,
    session: Mutex<Option<Session>>,
}

/// Parses a store URL. Options the URL gives (`?options=-csearch_path=x`,
/// `connect_timeout`, ...) are kept; the TLS options (`sslmode`, ...) and
/// the password are completed from the environment as libpq does (`tls`).
fn parse_url(url: &str) -> Result<(Config, tls::Tls)> {
    let connection = tls::Connection::parse(url)?;
    let mut config = parse_config(&connection.url)?;
    tls::fill_password(&mut config)?;
    let tls = connection.tls(&mut config)?;
    Ok((config, tls))
}

/// `postgres::Config` of a URL without TLS options.
fn parse_config(url: &str) -> Result<Config> {
    let mut config = Config::from_str(url).map_err(|e| {
        Error::InvalidInput(format!(
            "cannot parse the PostgreSQL URL {:?}: {e}",
            redact_password(url)
        ))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // Find a dead peer (a holder's machine that vanished) in about a minute
    // instead of the kernel's default two hours.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config.application_name("wfstate");
    Ok(config)
}

/// The URL with any password replaced, for messages.
fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn describe_config(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{user}{host}:{port}/{db}")
}

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A 64-bit advisory lock key for `kind:name` in `schema`. Advisory locks
/// are per database, so the schema is part of the key: two stores in two
/// schemas of one database never share a lock. (A collision of two names
/// needs two of them among 2^64 keys: it would make them share one lock,
/// which costs waiting, never exclusion.)
pub(crate) fn advisory_key(schema: &str, kind: &str, name: &str) -> i64 {
    let mut h = Sha256::new();
    for part in ["wfstate", schema, kind, name] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// What went wrong in a database call, as the library's error.
pub(crate) fn db_error(op: &'static str, location: &str, e: &postgres::Error) -> Error {
    let message = match e.as_db_error() {
        Some(db) => format!(
            "{} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None if e.is_closed() => "the connection to the server was lost".to_string(),
        None => {
            // The top-level message of a connection error is generic; the
            // source says what happened ("connection refused", ...).
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    };
    Error::Database {
        op,
        location: location.to_string(),
        message,
    }
}

/// Whether a failed COMMIT may nevertheless have committed. A server that
/// is shut down or terminates the session (SQLSTATE class 57, "operator
/// intervention") can do so after the commit record is flushed and before
/// the reply is sent; a broken connection (class 08, or no reply at all)
/// says nothing either. Other errors at commit (a serialization failure, a
/// deferred constraint) mean the transaction was rolled back.
fn commit_outcome_unknown(e: &postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            class == "57" || class == "08"
        }
    }
}

fn is_lock_timeout(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
}

/// A failed database call inside a transaction: either the library error
/// a check produced, or the driver's error to be described.
pub(crate) enum TxError {
    Pg(postgres::Error),
    Lib(Error),
}

impl From<postgres::Error> for TxError {
    fn from(e: postgres::Error) -> Self {
        TxError::Pg(e)
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Lib(e)
    }
}

pub(crate) type TxResult<T> = std::result::Result<T, TxError>;

/// The shared connection and the statements prepared on it.
struct Session {
    client: Client,
    /// Each statement the backend runs is parsed once per connection, which
    /// saves a round trip on every later call.
    prepared: HashMap<&'static str, Statement>,
    /// The session's `lock_timeout`, as last set.
    lock_timeout_ms: Option<u128>,
}

/// A connection or transaction that runs the backend's fixed statements
/// through the session's prepared-statement cache.
pub(crate) struct Cached<'c, C> {
    inner: &'c mut C,
    prepared: &'c mut HashMap<&'static str, Statement>,
}

/// A transaction with the statement cache.
pub(crate) type Tx<'c, 't> = Cached<'c, Transaction<'t>>;

impl<C: GenericClient> Cached<'_, C> {
    fn statement(&mut self, sql: &'static str) -> std::result::Result<Statement, postgres::Error> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.inner.prepare(sql)?;
        self.prepared.insert(sql, statement.clone());
        Ok(statement)
    }

    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.inner.query(&statement, params)
    }

    pub(crate) fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Row, postgres::Error> {
        let statement = self.statement(sql)?;
        self.inner.query_one(&statement, params)
    }

    pub(crate) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Option<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.inner.query_opt(&statement, params)
    }

    pub(crate) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<u64, postgres::Error> {
        let statement = self.statement(sql)?;
        self.inner.execute(&statement, params)
    }

    /// Statements built at run time (DDL), not cached.
    pub(crate) fn batch_execute(&mut self, sql: &str) -> std::result::Result<(), postgres::Error> {
        self.inner.batch_execute(sql)
    }
}

/// A new connection as `config` and `tls` say; a TLS failure says which
/// check failed.
fn open_connection(config: &Config, tls: &tls::Tls, location: &str) -> Result<Client> {
    let connected = match tls {
        tls::Tls::Plain => config.connect(NoTls),
        tls::Tls::Rustls(make) => config.connect(make.clone()),
    };
    connected.map_err(|e| match db_error("connect", location, &e) {
        Error::Database {
            op,
            location,
            message,
        } => {
            let message = match tls::explain(&e) {
                Some(check) => format!("{check}: {message}"),
                None => message,
            };
            Error::Database {
                op,
                location,
                message,
            }
        }
        other => other,
    })
}

impl Db {
    fn connect(url: &str) -> Result<Db> {
        let (config, tls) = parse_url(url)?;
        let described = describe_config(&config);
        let mut client = open_connection(&config, &tls, &described)?;
        let schema: Option<String> = client
            .query_one("SELECT current_schema()", &[])
            .map_err(|e| db_error("read the search path", &described, &e))?
            .get(0);
        let schema = schema.unwrap_or_default();
        let location = if schema.is_empty() || schema == "public" {
            described
        } else {
            format!("{described} (schema {schema})")
        };
        Ok(Db {
            config,
            tls,
            location,
            schema,
            session: Mutex::new(Some(Session {
                client,
                prepared: HashMap::new(),
                lock_timeout_ms: None,
            })),
        })
    }

    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// A new connection of its own (for a lock held by its session).
    pub(crate) fn dedicated_connection(&self) -> Result<Client> {
        open_connection(&self.config, &self.tls, &self.location)
    }

    /// Runs `f` on the shared connection, reconnecting first if the last
    /// one broke (a server restart): a later call works again once the
    /// server is back.
    pub(crate) fn with<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Cached<'_, Client>) -> TxResult<T>,
    ) -> Result<T> {
        self.with_session(op, |session| {
            f(&mut Cached {
                inner: &mut session.client,
                prepared: &mut session.prepared,
            })
        })
    }

    fn with_session<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Session) -> TxResult<T>,
    ) -> Result<T> {
        let mut slot = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|s| s.client.is_closed()) {
            *slot = None;
            *slot = Some(Session {
                client: self.dedicated_connection()?,
                prepared: HashMap::new(),
                lock_timeout_ms: None,
            });
        }
        let session = slot.as_mut().expect("connected above");
        let result = f(session);
        if session.client.is_closed() {
            *slot = None;
        }
        result.map_err(|e| match e {
            TxError::Lib(e) => e,
            TxError::Pg(e) => db_error(op, &self.location, &e),
        })
    }

    /// Runs `f` in a transaction and commits it. `lock_timeout` bounds
    /// every lock wait inside. If the connection breaks during the commit
    /// the error says the outcome is unknown: the server may have committed.
    pub(crate) fn transaction<T>(
        &self,
        op: &'static str,
        lock_timeout: Option<Duration>,
        f: impl FnOnce(&mut Tx<'_, '_>) -> TxResult<T>,
    ) -> Result<T> {
        let location = self.location.clone();
        self.with_session(op, |session| {
            // A session setting, changed only when it differs: one round
            // trip less per transaction than `SET LOCAL`.
            let ms = lock_timeout.map_or(0, |t| t.as_millis().max(1));
            if session.lock_timeout_ms != Some(ms) {
                session
                    .client
                    .batch_execute(&format!("SET lock_timeout = {ms}"))?;
                session.lock_timeout_ms = Some(ms);
            }
            let mut tx = session.client.transaction()?;
            let value = f(&mut Cached {
                inner: &mut tx,
                prepared: &mut session.prepared,
            })?;
            tx.commit().map_err(|e| {
                if commit_outcome_unknown(&e) {
                    TxError::Lib(Error::Database {
                        op,
                        location: location.clone(),
                        message: format!(
                            "the connection ended while committing, so the outcome is unknown \
                             (the change may or may not have been applied): {}",
                            db_error(op, &location, &e)
                        ),
                    })
                } else {
                    TxError::Pg(e)
                }
            })?;
            Ok(value)
        })
    }

    /// Takes a transaction-level advisory lock (`kind:name`), waiting at
    /// most the transaction's lock timeout.
    pub(crate) fn xact_lock(&self, tx: &mut Tx<'_, '_>, kind: &str, name: &str) -> TxResult<()> {
        let key = advisory_key(&self.schema, kind, name);
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
            .map_err(|e| self.timeout_or(e, &format!("{kind}@{name}")))?;
        Ok(())
    }

    /// Turns a lock-timeout error into `LockTimeout` for `lock`.
    pub(crate) fn timeout_or(&self, e: postgres::Error, lock: &str) -> TxError {
        if is_lock_timeout(&e) {
            TxError::Lib(Error::LockTimeout {
                lock: lock.to_string(),
                waited: Duration::ZERO,
                holder: Some("another session of this PostgreSQL store".into()),
            })
        } else {
            TxError::Pg(e)
        }
    }

    /// A pseudo-path naming a row, for integrity errors.
    pub(crate) fn row_path(&self, table: &str, key: &str) -> PathBuf {
        PathBuf::from(format!("{} {table}[{key}]", self.location))
    }
}

/// The audit log of a PostgreSQL store: one row per entry, holding the
/// exact line the file store would append.
pub(crate) struct PgAudit {
    db: Arc<Db>,
    key: Option<Vec<u8>>,
    lock_timeout: Option<Duration>,
}

impl PgAudit {
    /// Appends entries inside `tx`, under the transaction-level audit lock,
    /// so they commit with the change they describe and appenders queue.
    pub(crate) fn append_in(
        &self,
        tx: &mut Tx<'_, '_>,
        events: Vec<(String, Value)>,
    ) -> TxResult<Vec<AuditEntry>> {
        self.db.xact_lock(tx, "audit", "log")?;
        let tail = tx.query_opt(
            "SELECT seq, line FROM wfstate_audit ORDER BY seq DESC LIMIT 1",
            &[],
        )?;
        let tail = match tail {
            None => None,
            Some(row) => {
                let seq: i64 = row.get(0);
                let line: String = row.get(1);
                let entry: AuditEntry = serde_json::from_str(&line).map_err(|e| {
                    Error::integrity(
                        self.db.row_path("wfstate_audit", &seq.to_string()),
                        format!(
                            "the newest audit entry does not parse, so nothing can chain to it: {e}"
                        ),
                    )
                })?;
                Some((entry.seq, entry.hash))
            }
        };
        let chained = audit::chain_entries(tail, events, self.key.as_deref());
        let mut entries = Vec::with_capacity(chained.len());
        for (entry, line) in chained {
            tx.execute(
                "INSERT INTO wfstate_audit (seq, line) VALUES ($1, $2)",
                &[&(entry.seq as i64), &line],
            )?;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Appends one redacted entry inside `tx`.
    pub(crate) fn append_one_in(
        &self,
        tx: &mut Tx<'_, '_>,
        event: &str,
        mut data: Value,
    ) -> TxResult<()> {
        audit::redact(&mut data);
        self.append_in(tx, vec![(event.to_string(), data)])?;
        Ok(())
    }
}

/// Rows of the audit table read in pages and served as the lines of a log
/// file, so verification is the file store's, line for line.
struct AuditLines<'a> {
    db: &'a Db,
    after: i64,
    page: std::io::Cursor<Vec<u8>>,
    done: bool,
}

const AUDIT_PAGE: i64 = 20_000;

impl std::io::Read for AuditLines<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.page.read(buf)?;
        if n > 0 || self.done {
            return Ok(n);
        }
        let after = self.after;
        let rows = self
            .db
            .with("read the audit log", |c| {
                Ok(c.query(
                    "SELECT seq, line FROM wfstate_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &AUDIT_PAGE],
                )?)
            })
            .map_err(std::io::Error::other)?;
        if (rows.len() as i64) < AUDIT_PAGE {
            self.done = true;
        }
        let mut bytes = Vec::new();
        for row in &rows {
            self.after = row.get(0);
            bytes.extend_from_slice(row.get::<_, &str>(1).as_bytes());
            bytes.push(b'\n');
        }
        self.page = std::io::Cursor::new(bytes);
        self.page.read(buf)
    }
}

impl AuditTrail for PgAudit {
    fn location(&self) -> String {
        format!("{} table wfstate_audit", self.db.location())
    }

    fn is_keyed(&self) -> bool {
        self.key.is_some()
    }

    fn append_batch(&self, events: Vec<(String, Value)>) -> Result<Vec<AuditEntry>> {
        self.db
            .transaction("append to the audit log", self.lock_timeout, |tx| {
                self.append_in(tx, events)
            })
    }

    fn verify(&self) -> Result<VerifyReport> {
        let lines = AuditLines {
            db: &self.db,
            after: 0,
            page: std::io::Cursor::new(Vec::new()),
            done: false,
        };
        let reader = std::io::BufReader::with_capacity(256 * 1024, lines);
        audit::verify_reader(reader, self.key.as_deref()).map_err(|e| match e.downcast::<Error>() {
            Ok(inner) => inner,
            Err(e) => Error::Database {
                op: "read the audit log",
                location: self.db.location().to_string(),
                message: e.to_string(),
            },
        })
    }

    fn read(&self, event: Option<&str>, limit: Option<usize>) -> Result<Vec<AuditEntry>> {
        // Without a filter only the newest `limit` rows are fetched; with
        // one, every line is parsed, as the file store does.
        let newest = match event {
            None => limit.map_or(i64::MAX, |l| l as i64),
            Some(_) => i64::MAX,
        };
        let rows = self.db.with("read the audit log", |c| {
            Ok(c.query(
                "SELECT line FROM (SELECT seq, line FROM wfstate_audit \
                 ORDER BY seq DESC LIMIT $1) newest ORDER BY seq",
                &[&newest],
            )?)
        })?;
        let mut entries: Vec<AuditEntry> = rows
            .iter()
            .filter_map(|r| serde_json::from_str::<AuditEntry>(r.get(0)).ok())
            .filter(|e| event.is_none_or(|ev| e.event == ev))
            .collect();
        if let Some(limit) = limit {
            entries.drain(..entries.len().saturating_sub(limit));
        }
        Ok(entries)
    }
}

/// A store kept in PostgreSQL.
pub struct PgBackend {
    db: Arc<Db>,
    options: StoreOptions,
    audit: PgAudit,
    checkpoints: checkpoints::PgCheckpoints,
    locks: locks::PgLocks,
}

impl PgBackend {
    /// Creates the schema (and its tables) at `url`, or migrates an older
    /// one to this build's version. Refuses a newer one.
    pub fn init(url: &str) -> Result<InitOutcome> {
        let db = Db::connect(url)?;
        let search_path_schema = if db.schema.is_empty() {
            // The search path names a schema that does not exist yet.
            let path: String = db.with("read the search path", |c| {
                Ok(c.query_one("SHOW search_path", &[])?.get(0))
            })?;
            let first = path
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_string())
                .find(|s| !s.is_empty() && s != "$user")
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "the search path of {} names no schema to create the store in",
                        db.location()
                    ))
                })?;
            Some(first)
        } else {
            None
        };
        let outcome = db.transaction("initialize the schema", None, |tx| {
            if let Some(schema) = &search_path_schema {
                tx.batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    quote_ident(schema)
                ))?;
            }
            // One initializer at a time, across all clients of the database.
            let key = advisory_key("", "migrate", "schema");
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS wfstate_schema_migrations (
                     version    integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )?;
            let current: i32 = tx
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM wfstate_schema_migrations",
                    &[],
                )?
                .get(0);
            if current > SCHEMA_VERSION {
                return Err(newer_schema(&db, current).into());
            }
            for (i, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.batch_execute(migration)?;
                tx.execute(
                    "INSERT INTO wfstate_schema_migrations (version) VALUES ($1)",
                    &[&(i as i32 + 1)],
                )?;
            }
            Ok(if current == 0 {
                InitOutcome::Created
            } else {
                InitOutcome::AlreadyInitialized
            })
        })?;
        Ok(outcome)
    }

    /// Opens the store at `url`; it must have been created by `init` at
    /// this build's schema version.
    pub fn open(url: &str, options: StoreOptions) -> Result<PgBackend> {
        let db = Arc::new(Db::connect(url)?);
        let version = schema_version(&db)?;
        if version > SCHEMA_VERSION {
            return Err(newer_schema(&db, version));
        }
        if version < SCHEMA_VERSION {
            return Err(Error::StoreNotFound(format!(
                "the wfstate schema in {} is at version {version}, this build needs {SCHEMA_VERSION}; \
                 run `wfstate init --store URL` to migrate it",
                db.location()
            )));
        }
        let audit = PgAudit {
            db: db.clone(),
            key: options.audit_key.clone(),
            lock_timeout: options.lock_timeout,
        };
        Ok(PgBackend {
            checkpoints: checkpoints::PgCheckpoints::new(
                db.clone(),
                PgAudit {
                    db: db.clone(),
                    key: options.audit_key.clone(),
                    lock_timeout: options.lock_timeout,
                },
                options.max_state_bytes,
                options.lock_timeout,
            ),
            locks: locks::PgLocks::new(db.clone()),
            audit,
            options,
            db,
        })
    }

    fn decode_state(&self, workflow: &str, document: &str) -> Result<StateDoc> {
        if document.len() as u64 > self.options.max_state_bytes {
            return Err(Error::TooLarge {
                what: format!("state of workflow {workflow:?}"),
                size: Size::Exactly(document.len() as u64),
                limit: self.options.max_state_bytes,
            });
        }
        StateDoc::decode(
            document.as_bytes(),
            &self.db.row_path("wfstate_states", workflow),
            workflow,
        )
    }

    /// Locks the workflow's row (creating a placeholder of generation 0 if
    /// it has none; the placeholder rolls back with a failed transaction)
    /// and returns its verified current state.
    fn lock_row(&self, tx: &mut Tx<'_, '_>, workflow: &str) -> TxResult<Option<StateDoc>> {
        tx.execute(
            "INSERT INTO wfstate_states (workflow, generation) VALUES ($1, 0) \
             ON CONFLICT (workflow) DO NOTHING",
            &[&workflow],
        )?;
        let row = tx
            .query_one(
                "SELECT generation, document FROM wfstate_states WHERE workflow = $1 FOR UPDATE",
                &[&workflow],
            )
            .map_err(|e| self.db.timeout_or(e, &format!("workflow@{workflow}")))?;
        let generation: i64 = row.get(0);
        let document: Option<&str> = row.get(1);
        match document {
            Some(text) if generation > 0 => Ok(Some(self.decode_state(workflow, text)?)),
            _ => Ok(None),
        }
    }

    /// Writes the next generation over the locked row and appends the
    /// audit entry, in the caller's transaction.
    fn write_next(
        &self,
        tx: &mut Tx<'_, '_>,
        workflow: &str,
        current: u64,
        origin: Option<Value>,
        data: Value,
        (event, mut audit_data): (&str, Value),
    ) -> TxResult<StateDoc> {
        let doc = StateDoc::seal(workflow, current + 1, clock::now_rfc3339(), origin, data);
        let mut bytes = Vec::new();
        doc.write_to(&mut bytes)
            .expect("writing to a Vec cannot fail");
        if bytes.len() as u64 > self.options.max_state_bytes {
            return Err(Error::TooLarge {
                what: format!("state of workflow {workflow:?}"),
                size: Size::Exactly(bytes.len() as u64),
                limit: self.options.max_state_bytes,
            }
            .into());
        }
        let text = String::from_utf8(bytes).expect("serde_json writes UTF-8");
        // The generation guard is the compare-and-swap itself: with the row
        // locked it always holds, and it keeps holding if that ever changes.
        let updated = tx.execute(
            "UPDATE wfstate_states SET generation = $2, document = $3 \
             WHERE workflow = $1 AND generation = $4",
            &[
                &workflow,
                &(doc.generation as i64),
                &text,
                &(current as i64),
            ],
        )?;
        if updated != 1 {
            return Err(Error::Conflict {
                workflow: workflow.to_string(),
                expected: current,
                actual: current + 1,
            }
            .into());
        }
        audit_data["workflow"] = doc.workflow.clone().into();
        audit_data["generation"] = doc.generation.into();
        audit_data["checksum"] = doc.checksum.clone().into();
        self.audit.append_one_in(tx, event, audit_data)?;
        Ok(doc)
    }

    fn locked_save(
        &self,
        workflow: &str,
        data: Value,
        origin: Option<Value>,
        expected_generation: Option<u64>,
        event: &str,
        audit_data: Value,
    ) -> Result<StateDoc> {
        validate_name(workflow)?;
        self.db
            .transaction("save state", self.options.lock_timeout, |tx| {
                let current = self.lock_row(tx, workflow)?.map_or(0, |d| d.generation);
                if let Some(expected) = expected_generation
                    && expected != current
                {
                    return Err(Error::Conflict {
                        workflow: workflow.to_string(),
                        expected,
                        actual: current,
                    }
                    .into());
                }
                self.write_next(tx, workflow, current, origin, data, (event, audit_data))
            })
    }
}

fn schema_version(db: &Db) -> Result<i32> {
    let found = db.with("read the schema version", |c| {
        match c.query_one(
            "SELECT coalesce(max(version), 0) FROM wfstate_schema_migrations",
            &[],
        ) {
            Ok(row) => Ok(Some(row.get::<_, i32>(0))),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(None),
            Err(e) => Err(e.into()),
        }
    })?;
    found.ok_or_else(|| {
        Error::StoreNotFound(format!(
            "no wfstate store in {}; create one with `wfstate init --store URL`",
            db.location()
        ))
    })
}

fn newer_schema(db: &Db, version: i32) -> Error {
    Error::integrity(
        PathBuf::from(db.location()),
        format!(
            "the wfstate schema is at version {version}, newer than this build knows \
             ({SCHEMA_VERSION}); use a newer wfstate"
        ),
    )
}

impl Backend for PgBackend {
    fn location(&self) -> String {
        self.db.location().to_string()
    }

    fn load(&self, workflow: &str) -> Result<Option<StateDoc>> {
        validate_name(workflow)?;
        let document = self.db.with("load state", |c| {
            let row = c.query_opt(
                "SELECT document FROM wfstate_states WHERE workflow = $1 AND generation > 0",
                &[&workflow],
            )?;
            Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
        })?;
        document
            .map(|text| self.decode_state(workflow, &text))
            .transpose()
    }

    fn save(
        &self,
        workflow: &str,
        data: Value,
        expected_generation: Option<u64>,
    ) -> Result<StateDoc> {
        let audit_data = serde_json::json!({"expected_generation": expected_generation});
        self.locked_save(
            workflow,
            data,
            None,
            expected_generation,
            "state_save",
            audit_data,
        )
    }

    fn update(
        &self,
        workflow: &str,
        edit: &mut dyn FnMut(&mut Value) -> Result<()>,
    ) -> Result<StateDoc> {
        validate_name(workflow)?;
        self.db
            .transaction("update state", self.options.lock_timeout, |tx| {
                let (current, mut data) = match self.lock_row(tx, workflow)? {
                    Some(doc) => (doc.generation, doc.data),
                    None => (0, Value::Object(Map::new())),
                };
                edit(&mut data)?;
                self.write_next(
                    tx,
                    workflow,
                    current,
                    None,
                    data,
                    ("state_update", serde_json::json!({})),
                )
            })
    }

    fn list_workflows(&self) -> Result<Vec<String>> {
        self.db.with("list workflows", |c| {
            Ok(c.query(
                "SELECT workflow FROM wfstate_states WHERE generation > 0 ORDER BY workflow",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn save_with_origin(
        &self,
        workflow: &str,
        data: Value,
        origin: Value,
        event: &str,
        expected_generation: Option<u64>,
    ) -> Result<StateDoc> {
        let audit_data = serde_json::json!({"origin": origin.clone()});
        self.locked_save(
            workflow,
            data,
            Some(origin),
            expected_generation,
            event,
            audit_data,
        )
    }

    fn checkpoints(&self) -> Option<&dyn CheckpointBackend> {
        Some(&self.checkpoints)
    }

    fn audit(&self) -> Option<&dyn AuditTrail> {
        Some(&self.audit)
    }

    fn locks(&self) -> Option<&dyn NamedLocks> {
        Some(&self.locks)
    }

    fn health(&self, repair: bool) -> Result<HealthReport> {
        health::run(self, repair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_messages() {
        assert_eq!(
            redact_password("postgres://me:s3cret@db.example:5432/wf"),
            "postgres://me:***@db.example:5432/wf"
        );
        assert_eq!(
            redact_password("postgres://me@db/wf"),
            "postgres://me@db/wf"
        );
        let config = parse_config("postgres://me:s3cret@db.example:6000/wf").unwrap();
        let described = describe_config(&config);
        assert_eq!(described, "postgres://me@db.example:6000/wf");
    }

    #[test]
    fn advisory_keys_differ_by_schema_kind_and_name() {
        let a = advisory_key("s1", "lock", "deploy");
        assert_eq!(a, advisory_key("s1", "lock", "deploy"));
        assert_ne!(a, advisory_key("s2", "lock", "deploy"));
        assert_ne!(a, advisory_key("s1", "checkpoint", "deploy"));
        assert_ne!(a, advisory_key("s1", "lock", "deploy2"));
        // The separators keep ("ab","c") and ("a","bc") apart.
        assert_ne!(advisory_key("ab", "c", "x"), advisory_key("a", "bc", "x"));
    }
}
