//! Profile parts read from Redis (see `crate::stored`) into Python objects: the interests as
//! `Interest` instances, the history as one MessagePack array for msgspec to decode when it is
//! first read.

use super::{kernel_error, validation_error};
use crate::stored;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDateTime, PyDict, PyString, PyType, PyTzInfo};
use rustc_hash::FxHashMap;

static UTC: PyOnceLock<Py<PyTzInfo>> = PyOnceLock::new();
static OBJECT_NEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `datetime.fromtimestamp(seconds, UTC)`, built from its fields when the time lies in
/// datetime's range (several times faster than the call).
fn utc_datetime<'py>(py: Python<'py>, seconds: f64) -> PyResult<Bound<'py, PyAny>> {
    let utc = UTC
        .get_or_try_init(py, || PyTzInfo::utc(py).map(|u| u.to_owned().unbind()))?
        .bind(py);
    match stored::utc_civil_time(seconds) {
        Some((year, month, day, hour, minute, second, microsecond)) => Ok(PyDateTime::new(
            py,
            year,
            month,
            day,
            hour,
            minute,
            second,
            microsecond,
            Some(utc),
        )?
        .into_any()),
        None => Err(validation_error(format!(
            "stored time {seconds} lies outside the range of dates"
        ))),
    }
}

/// The interests hash of one profile, sent by a script as `field RS value RS ...`, as a dict
/// feature name → `interest_class` instance (made without `__init__`: the data was validated
/// when it was written).
#[pyfunction]
pub fn decode_interests<'py>(
    py: Python<'py>,
    blob: &[u8],
    interest_class: &Bound<'py, PyType>,
) -> PyResult<Bound<'py, PyDict>> {
    let fields = stored::parse_interest_fields(blob).map_err(kernel_error)?;
    let object_new = OBJECT_NEW
        .get_or_try_init(py, || -> PyResult<_> {
            Ok(py
                .import(intern!(py, "builtins"))?
                .getattr(intern!(py, "object"))?
                .getattr(intern!(py, "__new__"))?
                .unbind())
        })?
        .bind(py);
    let mut keys: FxHashMap<&str, Bound<'py, PyString>> = FxHashMap::default();
    let mut times: FxHashMap<u64, Bound<'py, PyAny>> = FxHashMap::default();
    let out = PyDict::new(py);
    for (i, &name) in fields.names.iter().enumerate() {
        let sums = PyDict::new(py);
        for c in fields.indptr[i]..fields.indptr[i + 1] {
            let key = fields.channel_keys[c];
            let key = keys
                .entry(key)
                .or_insert_with(|| PyString::new(py, key))
                .clone();
            sums.set_item(key, fields.sums[c])?;
        }
        let seconds = fields.last_updated[i];
        let stamp = match times.get(&seconds.to_bits()) {
            Some(stamp) => stamp.clone(),
            None => {
                let stamp = utc_datetime(py, seconds)?;
                times.insert(seconds.to_bits(), stamp.clone());
                stamp
            }
        };
        let name = PyString::new(py, name);
        let state = PyDict::new(py);
        state.set_item(intern!(py, "name"), &name)?;
        state.set_item(intern!(py, "sums"), sums)?;
        state.set_item(intern!(py, "count"), fields.counts[i])?;
        state.set_item(intern!(py, "last_updated"), stamp)?;
        let interest = object_new.call1((interest_class,))?;
        interest.setattr(intern!(py, "__dict__"), state)?;
        out.set_item(name, interest)?;
    }
    Ok(out)
}

/// (number of entries, the entries as one MessagePack array) of a history sent as the
/// concatenation of its sorted-set members.
#[pyfunction]
pub fn history_entries<'py>(
    py: Python<'py>,
    blob: &[u8],
) -> PyResult<(usize, Bound<'py, PyBytes>)> {
    let (count, packed) = stored::history_entries(blob).map_err(kernel_error)?;
    Ok((count, PyBytes::new(py, &packed)))
}

/// The sort key that starts a history member, for an entry `microseconds` after the epoch.
#[pyfunction]
pub fn history_sort_key<'py>(py: Python<'py>, microseconds: i64) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &stored::history_sort_key(microseconds))
}
