//! The library's errors as the package's exceptions. The classes are
//! defined in Python (`wfstate/_errors.py`), where each also derives from
//! the built-in a Python user would catch (`LookupError`, `TimeoutError`,
//! `ValueError`); here an error only picks its class by kind and carries
//! the CLI's message and exit code.

use pyo3::prelude::*;

/// The exception class for each `wfstate::Error::kind()`.
fn class_name(kind: &str) -> &'static str {
    match kind {
        "not_found" | "store_not_found" => "NotFoundError",
        "invalid_name" | "invalid_input" => "InvalidInputError",
        "too_large" => "TooLargeError",
        "integrity" => "IntegrityError",
        "conflict" => "ConflictError",
        "lock_timeout" => "LockTimeoutError",
        "lock_misuse" => "LockMisuseError",
        _ => "StorageError",
    }
}

/// An exception of class `class` with the CLI's `message`, `kind` and
/// `exit_code`.
pub fn exception(py: Python<'_>, class: &str, message: String, kind: &str, exit_code: u8) -> PyErr {
    let made = py.import("wfstate._errors").and_then(|module| {
        module
            .getattr(class)?
            .call1((message.clone(), kind, exit_code))
    });
    match made {
        Ok(instance) => PyErr::from_value(instance),
        // Only if the package's own Python files are missing.
        Err(e) => e,
    }
}

/// The exception for a library error.
pub fn to_pyerr(py: Python<'_>, error: &wfstate::Error) -> PyErr {
    let kind = error.kind();
    exception(
        py,
        class_name(kind),
        error.to_string(),
        kind,
        error.exit_code(),
    )
}

/// `InvalidInputError` for input refused before anything was written; the
/// message is the CLI's form of an invalid-input error.
pub fn invalid_input(py: Python<'_>, problem: String) -> PyErr {
    to_pyerr(py, &wfstate::Error::InvalidInput(problem))
}

/// Converts a library result, raising its error.
pub trait OrRaise<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrRaise<T> for wfstate::Result<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_pyerr(py, &e))
    }
}
