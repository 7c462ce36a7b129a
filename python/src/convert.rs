//! Python objects to JSON values and back, exactly as the CLI stores them.
//!
//! Only what JSON can hold is accepted: `None`, `bool`, `int` within 64
//! bits, finite `float`, `str`, `list`/`tuple` (a tuple becomes a list) and
//! `dict` with `str` keys. Anything else is refused before the store is
//! touched: a type JSON has no form for with `TypeError`, a value of a JSON
//! type that JSON cannot hold (NaN, a 65-bit integer, a cycle, nesting too
//! deep to read back) with `InvalidInputError`.

use crate::errors::invalid_input;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// Deepest nesting of containers accepted inside a document. A stored
/// state is itself inside its envelope, and the JSON reader refuses more
/// than 128 levels: a deeper document could be saved but never read back.
pub const MAX_DEPTH: usize = 100;

/// The JSON value of `obj`.
pub fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    let mut open = Vec::new();
    convert(obj, &mut open)
}

/// `open` holds the containers being converted, outermost first: meeting
/// one of them again is a cycle, and its length is the depth.
fn convert(obj: &Bound<'_, PyAny>, open: &mut Vec<usize>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: True is an int in Python.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(invalid_input(
            obj.py(),
            format!(
                "the integer {} does not fit in 64 bits (JSON numbers here are 64-bit integers or doubles)",
                obj.str()?
            ),
        ));
    }
    if obj.is_instance_of::<PyFloat>() {
        let f: f64 = obj.extract()?;
        return Number::from_f64(f).map(Value::Number).ok_or_else(|| {
            invalid_input(
                obj.py(),
                format!("the float {f} has no JSON form (NaN and infinities are refused)"),
            )
        });
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_owned()));
    }
    let is_dict = obj.is_instance_of::<PyDict>();
    if is_dict || obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let id = obj.as_ptr() as usize;
        if open.contains(&id) {
            return Err(invalid_input(
                obj.py(),
                "the value contains itself (a circular reference)".into(),
            ));
        }
        if open.len() >= MAX_DEPTH {
            return Err(invalid_input(
                obj.py(),
                format!("the value is nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        open.push(id);
        let converted = if is_dict {
            convert_dict(obj.cast::<PyDict>()?, open)
        } else {
            obj.try_iter()?
                .map(|item| convert(&item?, open))
                .collect::<PyResult<Vec<_>>>()
                .map(Value::Array)
        };
        open.pop();
        return converted;
    }
    Err(PyTypeError::new_err(format!(
        "Object of type {} is not JSON serializable",
        obj.get_type().name()?
    )))
}

fn convert_dict(dict: &Bound<'_, PyDict>, open: &mut Vec<usize>) -> PyResult<Value> {
    let mut map = Map::new();
    for (key, value) in dict.iter() {
        let Ok(key) = key.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "keys must be str, not {} (JSON object keys are strings)",
                key.get_type().name()?
            )));
        };
        map.insert(key.to_str()?.to_owned(), convert(&value, open)?);
    }
    Ok(Value::Object(map))
}

/// The Python object of a JSON value: dicts, lists, str, int, float, bool
/// and None.
pub fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// Any serializable value of the library (a checkpoint, a report) as
/// Python dicts and lists, with the field names of the CLI's `--json`.
pub fn serialized<'py>(
    py: Python<'py>,
    value: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(value)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    to_py(py, &value)
}
