//! A profile's interaction history (Python `Interaction` objects) into columns for preference
//! extraction. Reading 10 000 objects attribute by attribute in Python costs more than the
//! whole extraction budget, so this reader does it once, with the GIL held.

use super::items::epoch_seconds;
use super::names::NameIds;
use super::validation_error;
use crate::profile;
use crate::stored::{self, History};
use numpy::{IntoPyArray, PyArray1};
use pyo3::buffer::PyBuffer;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString};

/// Columns of a history: per event its time, weight and half-life; per numeric attribute value
/// its event row, attribute id and value; and the attribute names by id.
pub type HistoryColumns<'py> = (
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<f64>>,
    Vec<String>,
);

fn number(value: &Bound<'_, PyAny>, what: &str, row: usize) -> PyResult<f64> {
    if value.is_instance_of::<PyBool>() || value.is_instance_of::<PyString>() {
        return Err(validation_error(format!(
            "interaction {row}: {what} must be a number"
        )));
    }
    let v: f64 = value
        .extract()
        .map_err(|_| validation_error(format!("interaction {row}: {what} must be a number")))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(validation_error(format!(
            "interaction {row}: {what} is NaN or infinite"
        )))
    }
}

/// A field of an interaction: from its instance dict when it has one (a dataclass does, and a
/// dict lookup is several times cheaper than attribute lookup through the type), else by
/// attribute.
fn attribute<'py>(
    interaction: &Bound<'py, PyAny>,
    fields: Option<&Bound<'py, PyDict>>,
    name: &Bound<'py, PyString>,
    row: usize,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(value) = fields.map(|f| f.get_item(name)).transpose()?.flatten() {
        return Ok(value);
    }
    interaction.getattr_opt(name)?.ok_or_else(|| {
        validation_error(format!(
            "interaction {row} has no {}",
            name.to_str().unwrap_or("?")
        ))
    })
}

struct Reader<'py> {
    out: History,
    names: NameIds<'py>,
}

impl<'py> Reader<'py> {
    /// One interaction in the common case: an instance dict holding the fields, float weight
    /// and half-life, a dict of float attributes. Returns `false`, having added nothing, for
    /// anything else; the general reader then handles the row (and explains what is wrong).
    /// Reading the instance dict through the C API skips the attribute machinery, which cost
    /// more than the rest of a row.
    fn fast_row(&mut self, interaction: &Bound<'py, PyAny>, row: usize) -> PyResult<bool> {
        let py = interaction.py();
        // SAFETY: the GIL is held. `PyObject_GenericGetDict` returns a new reference (or null
        // with an exception set, which is cleared). `PyDict_GetItemWithError` returns a borrowed
        // reference that is turned into an owned one at once, before any other call.
        let fields = unsafe {
            let dict = ffi::PyObject_GenericGetDict(interaction.as_ptr(), std::ptr::null_mut());
            if dict.is_null() {
                ffi::PyErr_Clear();
                return Ok(false);
            }
            Bound::from_owned_ptr(py, dict)
        };
        if !fields.is_exact_instance_of::<PyDict>() {
            return Ok(false);
        }
        let get = |key: &Bound<'py, PyString>| -> Option<Bound<'py, PyAny>> {
            // SAFETY: as above; the keys are exact `str`, so the lookup runs no Python code.
            unsafe {
                let value = ffi::PyDict_GetItemWithError(fields.as_ptr(), key.as_ptr());
                if value.is_null() {
                    ffi::PyErr_Clear();
                }
                Bound::from_borrowed_ptr_or_opt(py, value)
            }
        };
        let float = |value: Option<Bound<'py, PyAny>>| -> Option<f64> {
            let v = value?.cast_exact::<PyFloat>().ok()?.value();
            v.is_finite().then_some(v)
        };
        let (Some(t), Some(w), Some(h), Some(attributes)) = (
            get(intern!(py, "timestamp")),
            float(get(intern!(py, "weight"))),
            float(get(intern!(py, "half_life"))),
            get(intern!(py, "attributes")),
        ) else {
            return Ok(false);
        };
        let Ok(attributes) = attributes.cast_exact::<PyDict>() else {
            return Ok(false);
        };
        if h <= 0.0 {
            return Ok(false);
        }
        let mark = self.out.values.len();
        for (name, value) in attributes.iter() {
            let Some(v) = float(Some(value)) else {
                // Ints, bools, strings, NaN: the general reader's rules decide.
                self.out.rows.truncate(mark);
                self.out.attribute_ids.truncate(mark);
                self.out.values.truncate(mark);
                return Ok(false);
            };
            let id = self
                .names
                .id(&name, || format!("interaction {row}: attribute names"))?;
            self.out.rows.push(row as u32);
            self.out.attribute_ids.push(id);
            self.out.values.push(v);
        }
        self.out.times.push(epoch_seconds(&t, "timestamp", row)?);
        self.out.weights.push(w);
        self.out.half_lives.push(h);
        Ok(true)
    }

    /// One interaction of any form: fields from the instance dict or by attribute, numbers of
    /// any numeric type, non-numeric attributes skipped.
    fn row(&mut self, interaction: &Bound<'py, PyAny>, row: usize) -> PyResult<()> {
        let py = interaction.py();
        let instance_dict = interaction.getattr_opt(intern!(py, "__dict__"))?;
        let fields = instance_dict.as_ref().and_then(|d| d.cast::<PyDict>().ok());
        let t = attribute(interaction, fields, intern!(py, "timestamp"), row)?;
        let t = epoch_seconds(&t, "timestamp", row)?;
        let w = number(
            &attribute(interaction, fields, intern!(py, "weight"), row)?,
            "weight",
            row,
        )?;
        let h = number(
            &attribute(interaction, fields, intern!(py, "half_life"), row)?,
            "half_life",
            row,
        )?;
        if h <= 0.0 {
            return Err(validation_error(format!(
                "interaction {row}: half_life must be positive"
            )));
        }
        let attributes = attribute(interaction, fields, intern!(py, "attributes"), row)?;
        let Ok(attributes) = attributes.cast::<PyDict>() else {
            return Err(validation_error(format!(
                "interaction {row}: attributes must be a dict"
            )));
        };
        for (name, value) in attributes.iter() {
            if value.is_instance_of::<PyBool>() || value.is_instance_of::<PyString>() {
                continue;
            }
            let Ok(v) = value.extract::<f64>() else {
                continue;
            };
            if !v.is_finite() {
                return Err(validation_error(format!(
                    "interaction {row}: attribute {name} is NaN or infinite"
                )));
            }
            let id = self
                .names
                .id(&name, || format!("interaction {row}: attribute names"))?;
            self.out.rows.push(row as u32);
            self.out.attribute_ids.push(id);
            self.out.values.push(v);
        }
        self.out.times.push(t);
        self.out.weights.push(w);
        self.out.half_lives.push(h);
        Ok(())
    }
}

/// Reads `timestamp`, `weight`, `half_life` and the numeric entries of `attributes` (a dict;
/// non-numeric values are skipped, as the ranking reader skips them) of every interaction.
pub fn read(interactions: &Bound<'_, PyList>) -> PyResult<History> {
    let n = interactions.len();
    let mut reader = Reader {
        out: History {
            times: Vec::with_capacity(n),
            weights: Vec::with_capacity(n),
            half_lives: Vec::with_capacity(n),
            rows: Vec::with_capacity(2 * n),
            attribute_ids: Vec::with_capacity(2 * n),
            values: Vec::with_capacity(2 * n),
            names: Vec::new(),
        },
        names: NameIds::default(),
    };
    for (row, interaction) in interactions.iter().enumerate() {
        if !reader.fast_row(&interaction, row)? {
            reader.row(&interaction, row)?;
        }
    }
    reader.out.names = reader.names.names;
    Ok(reader.out)
}

/// [`read`]'s columns as NumPy arrays.
pub fn read_history<'py>(interactions: &Bound<'py, PyList>) -> PyResult<HistoryColumns<'py>> {
    Ok(columns(interactions.py(), read(interactions)?))
}

/// [`read_history`]'s columns of a history still encoded as penchant stores it
/// ([`stored::read_packed_history`]; `default_half_life` for an entry without one).
pub fn read_packed_history<'py>(
    packed: &Bound<'py, PyAny>,
    default_half_life: f64,
) -> PyResult<HistoryColumns<'py>> {
    Ok(columns(
        packed.py(),
        packed_history(packed, default_half_life)?,
    ))
}

fn columns(py: Python<'_>, h: History) -> HistoryColumns<'_> {
    (
        h.times.into_pyarray(py),
        h.weights.into_pyarray(py),
        h.half_lives.into_pyarray(py),
        h.rows.into_pyarray(py),
        h.attribute_ids.into_pyarray(py),
        h.values.into_pyarray(py),
        h.names,
    )
}

fn packed_history(packed: &Bound<'_, PyAny>, default_half_life: f64) -> PyResult<History> {
    let buffer = PyBuffer::<u8>::get(packed)?;
    stored::read_packed_history(read_only_bytes(&buffer)?, default_half_life)
        .map_err(super::kernel_error)
}

/// What [`summarize_history`] returns to Python: the attribute names by id; per attribute
/// its count, total weight, squared weights and quantiles (row-major); the number of events;
/// and, when some activity remains, the effective number of events and per period (hours, then
/// days) the concentration and the peak bins.
pub type Summary = (
    Vec<String>,
    Vec<u64>,
    Vec<f64>,
    Vec<f64>,
    Vec<f64>,
    usize,
    Option<(f64, f64, Vec<usize>, f64, Vec<usize>)>,
);

/// Refuses what [`profile::summarize_history`] would only refuse once the history is read.
fn check_summary_arguments(quantiles: &[f64], utc_offset: f64) -> PyResult<()> {
    if quantiles.len() > 16 {
        return Err(validation_error(format!(
            "at most 16 quantiles, got {}",
            quantiles.len()
        )));
    }
    if !utc_offset.is_finite() {
        return Err(validation_error(format!(
            "utc_offset must be finite, got {utc_offset}"
        )));
    }
    Ok(())
}

fn summary(h: History, now: f64, quantiles: &[f64], utc_offset: f64) -> PyResult<Summary> {
    let s =
        profile::summarize_history(&h, now, quantiles, utc_offset).map_err(super::kernel_error)?;
    let a = s.attributes;
    Ok((
        h.names,
        a.counts,
        a.total_weight,
        a.sum_squares,
        a.quantiles,
        s.events,
        s.activity.map(|t| {
            (
                t.effective,
                t.hours.concentration,
                t.hours.peaks,
                t.days.concentration,
                t.days.peaks,
            )
        }),
    ))
}

/// What preference extraction reads from a history of `Interaction` objects at `now`, in one
/// call: [`read`], then [`profile::summarize_history`].
pub fn summarize_history(
    interactions: &Bound<'_, PyList>,
    now: f64,
    quantiles: Vec<f64>,
    utc_offset: f64,
) -> PyResult<Summary> {
    check_summary_arguments(&quantiles, utc_offset)?;
    summary(read(interactions)?, now, &quantiles, utc_offset)
}

/// [`summarize_history`] of a history still encoded as penchant stores it, read without
/// decoding it ([`stored::read_packed_history`]; `default_half_life` for an entry without one).
pub fn summarize_packed_history(
    packed: &Bound<'_, PyAny>,
    now: f64,
    default_half_life: f64,
    quantiles: Vec<f64>,
    utc_offset: f64,
) -> PyResult<Summary> {
    check_summary_arguments(&quantiles, utc_offset)?;
    summary(
        packed_history(packed, default_half_life)?,
        now,
        &quantiles,
        utc_offset,
    )
}

/// The time of the last entry of a history still encoded (epoch seconds), if it has any.
pub fn packed_history_last_time(packed: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let buffer = PyBuffer::<u8>::get(packed)?;
    stored::packed_history_last_time(read_only_bytes(&buffer)?).map_err(super::kernel_error)
}

/// The bytes of a read-only, contiguous buffer (`bytes`, `msgspec.Raw`, a view of either).
fn read_only_bytes(buffer: &PyBuffer<u8>) -> PyResult<&[u8]> {
    let pointer = buffer
        .as_slice_ptr()
        .filter(|_| buffer.readonly())
        .ok_or_else(|| {
            validation_error("a stored history must be read-only, contiguous bytes".into())
        })?;
    // SAFETY: the memory is read-only and contiguous, and `buffer` holds it (alive and, being
    // read-only, unchanged) for as long as the returned slice borrows `buffer`.
    Ok(unsafe { pointer.as_ref() })
}
