//! Profile parts read from Redis (see `crate::stored`) into Python objects: the interests as
//! `Interest` instances, the history as one MessagePack array for msgspec to decode when it is
//! first read.

use super::{kernel_error, validation_error};
use crate::stored;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDateTime, PyDict, PyFloat, PyInt, PyString, PyType, PyTzInfo};
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

/// The `(name, weight)` items of `mapping` when it is a dict of `str` to `float`, else `None`.
fn float_items<'py>(mapping: &Bound<'py, PyAny>) -> Option<Vec<(Bound<'py, PyString>, f64)>> {
    let dict = mapping.cast_exact::<PyDict>().ok()?;
    let mut items = Vec::with_capacity(dict.len());
    for (name, weight) in dict.iter() {
        let weight = weight.cast_exact::<PyFloat>().ok()?.value();
        items.push((name.cast_into_exact::<PyString>().ok()?, weight));
    }
    Some(items)
}

fn texts<'a>(items: &'a [(Bound<'_, PyString>, f64)]) -> Option<Vec<(&'a str, f64)>> {
    items
        .iter()
        .map(|(name, weight)| Some((name.to_str().ok()?, *weight)))
        .collect()
}

/// The Redis history member of the entry `InterestModel` makes for `signal` (a validated
/// `Signal`), as `ProfileSerializer.history_member` writes it (see `stored::history_member`);
/// `None` when one of its fields is not of the plain type this fast path writes exactly as the
/// general path would (ids that are exact `str`, a feedback type that is an exact `str` or a
/// member of `feedback_type_class`, numbers that are exact `float` or `int`, dicts of `str` to
/// `float`, UTF-8 text, a time within the range of dates): the caller then takes the general
/// path, which writes or refuses it.
#[pyfunction]
pub fn signal_history_member<'py>(
    py: Python<'py>,
    signal: &Bound<'py, PyAny>,
    feedback_type_class: &Bound<'py, PyType>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let text = |name: &Bound<'py, PyString>| -> PyResult<Option<Bound<'py, PyString>>> {
        Ok(signal.getattr(name)?.cast_into_exact::<PyString>().ok())
    };
    let number = |name: &Bound<'py, PyString>| -> PyResult<Option<f64>> {
        let value = signal.getattr(name)?;
        Ok(if let Ok(f) = value.cast_exact::<PyFloat>() {
            Some(f.value())
        } else if value.is_exact_instance_of::<PyInt>() {
            value.extract::<f64>().ok()
        } else {
            None
        })
    };
    // A member of the enum (a `str` whose text is its value, which `str()` gives) or a `str`.
    let kind = signal.getattr(intern!(py, "feedback_type"))?;
    let feedback_type =
        if kind.get_type().is(feedback_type_class) || kind.is_exact_instance_of::<PyString>() {
            kind.cast_into::<PyString>().ok()
        } else {
            None
        };
    let (Some(item_id), Some(feedback_type), Some(event_id)) = (
        text(intern!(py, "item_id"))?,
        feedback_type,
        text(intern!(py, "event_id"))?,
    ) else {
        return Ok(None);
    };
    let (Some(value), Some(weight), Some(timestamp), Some(half_life)) = (
        number(intern!(py, "value"))?,
        number(intern!(py, "weight"))?,
        number(intern!(py, "timestamp"))?,
        number(intern!(py, "half_life"))?,
    ) else {
        return Ok(None);
    };
    let (Some(features), Some(attributes)) = (
        float_items(&signal.getattr(intern!(py, "features"))?),
        float_items(&signal.getattr(intern!(py, "attributes"))?),
    ) else {
        return Ok(None);
    };
    let (Ok(item_id), Ok(feedback_type), Ok(event_id), Some(features), Some(attributes)) = (
        item_id.to_str(),
        feedback_type.to_str(),
        event_id.to_str(),
        texts(&features),
        texts(&attributes),
    ) else {
        return Ok(None);
    };
    let entry = stored::Entry {
        item_id,
        feedback_type,
        value,
        weight,
        features,
        attributes,
        timestamp,
        event_id,
        half_life,
    };
    Ok(stored::history_member(&entry)
        .ok()
        .map(|member| PyBytes::new(py, &member)))
}
