//! wfstate: durable, verifiable state for long-running workflows.
//!
//! A [`Store`] holds one JSON document per workflow, versioned by a
//! generation counter and protected by a checksum. Saves are atomic and
//! durable; [`Store::update`] is a locked read-modify-write that never loses
//! a concurrent update. See `docs/DESIGN.md` for the on-disk layout and the
//! commit protocol.

pub mod audit;
mod backend;
pub mod canonical;
pub mod checkpoint;
pub mod clock;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod crashsim;
mod document;
pub mod durable;
mod error;
pub mod file_store;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod id;
pub mod import;
pub mod integrity;
pub mod legacy;
pub mod lock;
mod name;
pub mod pointer;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod state;
pub mod store;

pub use error::{Error, Result, Size};
pub use lock::{LockGuard, LockManager, LockMode};
pub use name::{MAX_NAME_LEN, validate_name};
pub use state::{STATE_FORMAT, SavedVersion, StateDoc};
pub use store::{Backend, InitOutcome, STORE_DIR_NAME, Store, StoreOptions};

/// Compiles the README's examples as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
