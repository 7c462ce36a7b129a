//! `wfstate.State`: a verified version of a workflow's state. Native, so
//! that `get` and `update` pay for no Python-level object construction.

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::to_py;

#[pyclass(module = "wfstate", name = "State", frozen, eq)]
pub struct State {
    #[pyo3(get)]
    workflow: String,
    /// The data, as dicts, lists, str, int, float, bool and None.
    #[pyo3(get)]
    data: Py<PyAny>,
    #[pyo3(get)]
    generation: u64,
    #[pyo3(get)]
    checksum: String,
    #[pyo3(get)]
    updated_at: String,
    /// Where the data came from when it was not saved directly (a restore,
    /// an import); `None` otherwise.
    #[pyo3(get)]
    origin: Py<PyAny>,
}

impl State {
    pub fn of(py: Python<'_>, doc: &wfstate::StateDoc) -> PyResult<State> {
        Ok(State {
            workflow: doc.workflow.clone(),
            data: to_py(py, &doc.data)?.unbind(),
            generation: doc.generation,
            checksum: doc.checksum.clone(),
            updated_at: doc.updated_at.clone(),
            origin: match &doc.origin {
                Some(origin) => to_py(py, origin)?.unbind(),
                None => py.None(),
            },
        })
    }
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        // Two versions are the same when their sealed content is: the
        // checksum covers the workflow, generation, time and data.
        self.workflow == other.workflow
            && self.generation == other.generation
            && self.checksum == other.checksum
    }
}

/// How many characters of the data `repr` shows.
const REPR_DATA_CHARS: usize = 60;

#[pymethods]
impl State {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let data = self.data.bind(py).repr()?.to_string();
        let data = if data.chars().count() > REPR_DATA_CHARS {
            let cut: String = data.chars().take(REPR_DATA_CHARS - 3).collect();
            format!("{cut}...")
        } else {
            data
        };
        let checksum: String = self.checksum.chars().take(19).collect();
        let quoted = |text: &str| -> PyResult<String> {
            Ok(pyo3::types::PyString::new(py, text).repr()?.to_string())
        };
        Ok(format!(
            "State(workflow={}, generation={}, checksum={}, updated_at={}, data={data})",
            quoted(&self.workflow)?,
            self.generation,
            quoted(&format!("{checksum}..."))?,
            quoted(&self.updated_at)?
        ))
    }

    /// For pickling: the same fields again.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let this = slf.get();
        let args = PyTuple::new(
            py,
            [
                this.workflow.clone().into_pyobject(py)?.into_any(),
                this.data.bind(py).clone(),
                this.generation.into_pyobject(py)?.into_any(),
                this.checksum.clone().into_pyobject(py)?.into_any(),
                this.updated_at.clone().into_pyobject(py)?.into_any(),
                this.origin.bind(py).clone(),
            ],
        )?;
        Ok((py.get_type::<State>().getattr("_restore")?, args))
    }

    #[staticmethod]
    fn _restore(
        workflow: String,
        data: Py<PyAny>,
        generation: u64,
        checksum: String,
        updated_at: String,
        origin: Py<PyAny>,
    ) -> State {
        State {
            workflow,
            data,
            generation,
            checksum,
            updated_at,
            origin,
        }
    }
}
