//! A profile's interaction history (Python `Interaction` objects) into columns for preference
//! extraction. Reading 10 000 objects attribute by attribute in Python costs more than the
//! whole extraction budget, so this reader does it once, with the GIL held.

use super::items::epoch_seconds;
use super::names::NameIds;
use super::validation_error;
use numpy::{IntoPyArray, PyArray1};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};

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

/// Reads `timestamp`, `weight`, `half_life` and the numeric entries of `attributes` (a dict;
/// non-numeric values are skipped, as the ranking reader skips them) of every interaction.
pub fn read_history<'py>(interactions: &Bound<'py, PyList>) -> PyResult<HistoryColumns<'py>> {
    let py = interactions.py();
    let n = interactions.len();
    let (mut times, mut weights, mut half_lives) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut rows, mut attribute_ids, mut values) = (Vec::new(), Vec::new(), Vec::new());
    let mut names = NameIds::default();
    for (row, interaction) in interactions.iter().enumerate() {
        let instance_dict = interaction.getattr_opt(intern!(py, "__dict__"))?;
        let fields = instance_dict.as_ref().and_then(|d| d.cast::<PyDict>().ok());
        let t = attribute(&interaction, fields, intern!(py, "timestamp"), row)?;
        times.push(epoch_seconds(&t, "timestamp", row)?);
        weights.push(number(
            &attribute(&interaction, fields, intern!(py, "weight"), row)?,
            "weight",
            row,
        )?);
        let h = number(
            &attribute(&interaction, fields, intern!(py, "half_life"), row)?,
            "half_life",
            row,
        )?;
        if h <= 0.0 {
            return Err(validation_error(format!(
                "interaction {row}: half_life must be positive"
            )));
        }
        half_lives.push(h);
        let attributes = attribute(&interaction, fields, intern!(py, "attributes"), row)?;
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
            let id = names.id(&name, || format!("interaction {row}: attribute names"))?;
            rows.push(row as u32);
            attribute_ids.push(id);
            values.push(v);
        }
    }
    Ok((
        times.into_pyarray(py),
        weights.into_pyarray(py),
        half_lives.into_pyarray(py),
        rows.into_pyarray(py),
        attribute_ids.into_pyarray(py),
        values.into_pyarray(py),
        names.names,
    ))
}
