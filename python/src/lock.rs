//! `wfstate._native.Lock`: a held named lock.
//!
//! The library's lock guards belong to the thread that took them (lock
//! reentrancy is tracked per thread), so this class is `unsendable`: PyO3
//! refuses to use it from another thread. After `os.fork` the child's copy
//! is inert: it never releases. The lock stays the parent's: on the file
//! store a `flock` lock belongs to the open file description the child
//! shares with the parent, and on PostgreSQL it lives in the parent's
//! database session, which the child must not talk to. The parent's
//! release frees it for both.

use crate::errors::OrRaise;
use pyo3::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use wfstate::LockMode;
use wfstate::lock::{LockHold, LockRequest, Recording};

#[pyclass(module = "wfstate._native", unsendable)]
pub struct Lock {
    hold: Option<Box<dyn LockHold>>,
    /// The process that acquired the lock.
    owner: u32,
    name: String,
    shared: bool,
    /// Keeps the backend (a database connection) alive while held.
    _store: Arc<wfstate::Store>,
}

/// Carries a value across `Python::detach`, which asks for `Send` because
/// it may not know the closure stays on this thread; it does (the GIL is
/// released and retaken around it on the calling thread), so a guard that
/// must stay on its thread can come back out.
struct SameThread<T>(T);
// SAFETY: only used to return a value from a `Python::detach` closure,
// which runs on the calling thread; the value never reaches another one.
unsafe impl<T> Send for SameThread<T> {}

impl Lock {
    pub fn acquire(
        py: Python<'_>,
        store: Arc<wfstate::Store>,
        name: String,
        shared: bool,
        timeout: Option<Duration>,
        purpose: Option<String>,
    ) -> PyResult<Lock> {
        let hold = py
            .detach(|| {
                let request = LockRequest {
                    mode: if shared {
                        LockMode::Shared
                    } else {
                        LockMode::Exclusive
                    },
                    timeout,
                    purpose: purpose.as_deref(),
                    recording: Recording::Durable,
                    notice: None,
                };
                store
                    .locks()
                    .and_then(|locks| locks.acquire(&name, request))
                    .map(SameThread)
            })
            .or_raise(py)?;
        Ok(Lock {
            hold: Some(hold.0),
            owner: std::process::id(),
            name,
            shared,
            _store: store,
        })
    }

    fn release_now(&mut self) {
        if let Some(hold) = self.hold.take() {
            if std::process::id() == self.owner {
                drop(hold);
            } else {
                // A forked child: keep the parent's lock (see the module
                // documentation); the descriptor closes when the child exits.
                std::mem::forget(hold);
            }
        }
    }
}

#[pymethods]
impl Lock {
    /// Releases the lock (a second call does nothing).
    fn release(&mut self) {
        self.release_now();
    }

    #[getter]
    fn held(&self) -> bool {
        self.hold.is_some() && std::process::id() == self.owner
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn shared(&self) -> bool {
        self.shared
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.release_now();
    }
}
