//! Bindings the retriever needs beyond ranking: where known ids sit in a table (for a profile's
//! history), the affinity kernel on its own (for a query's learned features), and the novelty
//! penalties of seen items.

use super::items::{id_ref, IdRef};
use super::{kernel_error, validation_error};
use crate::error::{check_finite, check_len, KernelError};
use crate::novelty::{self, Seen};
use crate::scoring;
use crate::table::ItemTable;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

/// The row of each id in `ids`, or −1 for an id the table does not have. Unlike `rows_of`,
/// unknown and repeated ids are not errors: a history names items that left the catalog.
pub fn find_rows(table: &ItemTable, ids: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    let mut rows = Vec::new();
    for (i, id) in ids.try_iter()?.enumerate() {
        let id = id?;
        let found = match id_ref(&id, || format!("id {i}"))? {
            IdRef::Int(k) => table.index.int(k),
            IdRef::Str(k) => table.index.str(k),
        };
        rows.push(found.map_or(-1, i64::from));
    }
    Ok(rows)
}

/// `Σ weight(f)·w(row, f)` over the features `f` of each row: the affinity kernel for any
/// sparse vector over the table's vocabulary. Checked here, so the kernel never sees a row out
/// of range or a weight that is not finite.
pub fn affinity(
    py: Python<'_>,
    table: &ItemTable,
    rows: &[u32],
    feature_ids: &[u32],
    weights: &[f64],
) -> PyResult<Vec<f64>> {
    check_len("feature weights", feature_ids.len(), weights.len()).map_err(kernel_error)?;
    check_finite("feature weights", weights).map_err(kernel_error)?;
    if let Some(&bad) = rows.iter().find(|&&r| r as usize >= table.len()) {
        return Err(kernel_error(KernelError::OutOfRange {
            what: "rows",
            index: bad as usize,
            len: table.len(),
        }));
    }
    let pairs: Vec<(u32, f64)> = feature_ids
        .iter()
        .copied()
        .zip(weights.iter().copied())
        .collect();
    let out = py.detach(|| scoring::affinity(table, rows, &pairs));
    if out.iter().any(|v| !v.is_finite()) {
        return Err(validation_error(
            "affinity overflowed: feature weights too large".into(),
        ));
    }
    Ok(out)
}

/// Novelty penalties of the candidates `rows` (every row below `n_rows` when `None`); see
/// `novelty::seen_penalties`.
#[pyfunction]
#[pyo3(signature = (rows, n_rows, seen_rows, seen_times, now, half_life))]
pub fn seen_penalties<'py>(
    py: Python<'py>,
    rows: Option<PyReadonlyArray1<'py, u32>>,
    n_rows: usize,
    seen_rows: PyReadonlyArray1<'py, u32>,
    seen_times: PyReadonlyArray1<'py, f64>,
    now: f64,
    half_life: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    if rows.is_none() && n_rows > super::LIMITS.max_items {
        return Err(validation_error(format!("n_rows {n_rows} is too large")));
    }
    let rows = rows.map(|r| super::to_vec(&r)).transpose()?;
    let (seen_rows, seen_times) = (super::to_vec(&seen_rows)?, super::to_vec(&seen_times)?);
    let out = py
        .detach(|| {
            let seen = Seen {
                rows: &seen_rows,
                times: &seen_times,
            };
            novelty::seen_penalties(&seen, rows.as_deref(), n_rows, now, half_life)
        })
        .map_err(kernel_error)?;
    Ok(out.into_pyarray(py))
}
