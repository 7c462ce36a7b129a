//! The library's one error type. Each variant is something a caller can act
//! on; the CLI maps variants to documented exit codes (see `docs/DESIGN.md`).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// How large a refused document was. A stream (stdin, or a document being
/// written out) is read only until it passes the limit, so its size is
/// known only to be at least what was read by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Exactly(u64),
    AtLeast(u64),
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Exactly(n) => write!(f, "{n} bytes"),
            Size::AtLeast(n) => write!(f, "at least {n} bytes"),
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A workflow or lock name broke the naming rule.
    #[error(
        "invalid name {name:?}: {reason} (names must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$)"
    )]
    InvalidName { name: String, reason: &'static str },

    /// Bad input that is not a name: unparsable JSON, a bad pointer, an
    /// edit that cannot apply to the data it targets.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// No store could be found or opened at the expected place.
    #[error("{0}")]
    StoreNotFound(String),

    /// Something the caller named does not exist.
    #[error("{what} not found{}", path_suffix(.path))]
    NotFound { what: String, path: Option<PathBuf> },

    /// Stored bytes failed verification: corrupt, truncated, tampered or of
    /// a format this build does not read. The file is never modified.
    #[error("integrity error in {}: {problem}", path.display())]
    Integrity { path: PathBuf, problem: String },

    /// A compare-and-swap save found another generation than expected.
    #[error("conflict on workflow {workflow:?}: expected generation {expected}, found {actual}")]
    Conflict {
        workflow: String,
        expected: u64,
        actual: u64,
    },

    /// A lock could not be acquired within the allowed time.
    #[error("timed out after {:.3}s waiting for lock {lock:?}{}", waited.as_secs_f64(), holder_suffix(.holder))]
    LockTimeout {
        lock: String,
        waited: Duration,
        holder: Option<String>,
    },

    /// A lock request that can never succeed as asked (for example an
    /// exclusive request by a thread that holds the same lock shared, which
    /// would otherwise deadlock on itself).
    #[error("lock {lock:?}: {problem}")]
    LockMisuse { lock: String, problem: String },

    /// A document larger than the configured limit.
    #[error("{what} is {size}, over the limit of {limit} bytes")]
    TooLarge {
        what: String,
        size: Size,
        limit: u64,
    },

    /// The database backend failed or could not be reached. `op` names
    /// the operation; `location` the server and database (never a
    /// password). Nothing half-done is left behind: each operation is one
    /// transaction. When the connection broke while a commit was in flight,
    /// the message says the outcome is unknown.
    #[error("{op} on {location}: {message}")]
    Database {
        op: &'static str,
        location: String,
        message: String,
    },

    /// An operating-system call failed. `op` names the operation.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" ({})", p.display()),
        None => String::new(),
    }
}

fn holder_suffix(holder: &Option<String>) -> String {
    match holder {
        Some(h) => format!(" ({h})"),
        None => String::new(),
    }
}

impl Error {
    /// Shorthand for wrapping an `io::Error` with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn integrity(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::Integrity {
            path: path.into(),
            problem: problem.into(),
        }
    }

    /// The documented exit code of the `wfstate` command for this error
    /// (README, "Exit codes"); the Python package's exceptions carry the
    /// same number.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotFound { .. }
            | Error::StoreNotFound(_)
            | Error::LockMisuse { .. }
            | Error::TooLarge { .. }
            | Error::Database { .. }
            | Error::Io { .. } => 1,
            Error::InvalidName { .. } | Error::InvalidInput(_) => 2,
            Error::Integrity { .. } => 3,
            Error::Conflict { .. } => 4,
            Error::LockTimeout { .. } => 5,
        }
    }

    /// A stable name for the kind of error, as `--json` output reports it.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::StoreNotFound(_) => "store_not_found",
            Error::LockMisuse { .. } => "lock_misuse",
            Error::TooLarge { .. } => "too_large",
            Error::Io { .. } => "io",
            Error::Database { .. } => "database",
            Error::InvalidName { .. } => "invalid_name",
            Error::InvalidInput(_) => "invalid_input",
            Error::Integrity { .. } => "integrity",
            Error::Conflict { .. } => "conflict",
            Error::LockTimeout { .. } => "lock_timeout",
        }
    }
}
