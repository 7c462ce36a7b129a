//! The native module of the `wfstate` Python package: conversions between
//! Python and the library's types, and calls into the library. No protocol
//! is implemented here; the Python layer (`wfstate/__init__.py`) adds the
//! idioms (context managers, result classes, exceptions).

mod convert;
mod errors;
mod lock;
mod state;
mod store;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<store::Store>()?;
    m.add_class::<lock::Lock>()?;
    m.add_class::<state::State>()?;
    m.add("MAX_DEPTH", convert::MAX_DEPTH)?;
    Ok(())
}
