//! Bindings the retriever needs beyond ranking: where known ids sit in a table (for a profile's
//! history), the affinity kernel on its own (for a query's learned features), and the seen
//! items that `Table.rank` turns into the novelty factor.

use super::items::{id_ref, IdRef};
use super::{kernel_error, validation_error};
use crate::error::{check_finite, check_len, KernelError};
use crate::novelty::Seen;
use crate::rank::Novelty;
use crate::scoring;
use crate::table::ItemTable;
use numpy::PyReadonlyArray1;
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
    let out = super::detach_if_long(py, rows.len(), || scoring::affinity(table, rows, &pairs));
    if out.iter().any(|v| !v.is_finite()) {
        return Err(validation_error(
            "affinity overflowed: feature weights too large".into(),
        ));
    }
    Ok(out)
}

/// `Table.rank`'s `novelty` argument: (seen rows ascending, their times, half-life, weight).
pub type NoveltyArgs<'py> = (
    PyReadonlyArray1<'py, u32>,
    PyReadonlyArray1<'py, f64>,
    f64,
    f64,
);

/// The novelty columns, copied (a caller's thread could write to its arrays while the GIL is
/// released).
pub struct NoveltyColumns {
    rows: Vec<u32>,
    times: Vec<f64>,
    half_life: f64,
    weight: f64,
}

impl NoveltyColumns {
    pub fn factor(&self) -> Novelty<'_> {
        Novelty {
            seen: Seen {
                rows: &self.rows,
                times: &self.times,
            },
            half_life: self.half_life,
            weight: self.weight,
        }
    }
}

pub fn novelty_columns(args: NoveltyArgs<'_>) -> PyResult<NoveltyColumns> {
    let (rows, times, half_life, weight) = args;
    if !weight.is_finite() {
        return Err(validation_error(format!(
            "the novelty weight must be finite, got {weight}"
        )));
    }
    Ok(NoveltyColumns {
        rows: super::to_vec(&rows)?,
        times: super::to_vec(&times)?,
        half_life,
        weight,
    })
}
