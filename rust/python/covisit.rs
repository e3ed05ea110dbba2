//! `penchant._core.CoVisitation`: the co-visitation model of `crate::covisit` behind a lock, so
//! that one model can learn from one thread while others score from it. Every method converts
//! its arguments with the GIL held, then takes the lock with the GIL released.

use super::{kernel_error, to_vec, validation_error};
use crate::covisit::{self, CoVisitation, Learning, Scoring, UNKNOWN};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyString};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[pyclass(frozen, module = "penchant._core", name = "CoVisitation")]
pub struct PyCoVisitation {
    model: RwLock<CoVisitation>,
}

impl PyCoVisitation {
    fn read(&self) -> RwLockReadGuard<'_, CoVisitation> {
        self.model.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, CoVisitation> {
        self.model.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An item id as the model keys it: a str as it is, an int as its decimal string (the form
/// `penchant.Feedback` gives integer ids).
fn key_of(value: &Bound<'_, PyAny>, what: impl Fn() -> String) -> PyResult<String> {
    let key = if let Ok(s) = value.cast::<PyString>() {
        s.to_str()?.to_owned()
    } else if value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyBool>() {
        value
            .extract::<i64>()
            .map_err(|_| {
                validation_error(format!("{}: integer id does not fit in 64 bits", what()))
            })?
            .to_string()
    } else {
        return Err(validation_error(format!(
            "{}: item ids must be str or int, got {}",
            what(),
            value.get_type().name()?
        )));
    };
    if key.is_empty() || key.len() > covisit::MAX_KEY_BYTES {
        return Err(validation_error(format!(
            "{}: item ids must have 1 to {} bytes, got {}",
            what(),
            covisit::MAX_KEY_BYTES,
            key.len()
        )));
    }
    Ok(key)
}

fn keys_of(values: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if values.is_instance_of::<PyString>() {
        return Err(validation_error(format!(
            "{what} must be a sequence of ids, not a str"
        )));
    }
    values
        .try_iter()
        .map_err(|_| validation_error(format!("{what} must be a sequence of ids")))?
        .enumerate()
        .map(|(i, v)| key_of(&v?, || format!("{what}[{i}]")))
        .collect()
}

fn finite_time(t: f64) -> PyResult<f64> {
    if t.is_finite() {
        Ok(t)
    } else {
        Err(validation_error(format!(
            "timestamps must be finite epoch seconds, got {t}"
        )))
    }
}

#[pymethods]
impl PyCoVisitation {
    #[new]
    #[pyo3(signature = (window=20, lag_scale=5.0, max_neighbours=200, half_life=None, recent=20, recency_scale=4.0, alpha=0.3, beta=0.5))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        window: usize,
        lag_scale: f64,
        max_neighbours: usize,
        half_life: Option<f64>,
        recent: usize,
        recency_scale: f64,
        alpha: f64,
        beta: f64,
    ) -> PyResult<Self> {
        let model = CoVisitation::new(
            Learning {
                window,
                lag_scale,
                max_neighbours,
                half_life,
            },
            Scoring {
                recent,
                recency_scale,
                alpha,
                beta,
            },
        )
        .map_err(kernel_error)?;
        Ok(Self {
            model: RwLock::new(model),
        })
    }

    #[getter]
    fn window(&self) -> usize {
        self.read().learning().window
    }

    #[getter]
    fn lag_scale(&self) -> f64 {
        self.read().learning().lag_scale
    }

    #[getter]
    fn max_neighbours(&self) -> usize {
        self.read().learning().max_neighbours
    }

    #[getter]
    fn half_life(&self) -> Option<f64> {
        self.read().learning().half_life
    }

    #[getter]
    fn recent(&self) -> usize {
        self.read().scoring().recent
    }

    #[getter]
    fn recency_scale(&self) -> f64 {
        self.read().scoring().recency_scale
    }

    #[getter]
    fn alpha(&self) -> f64 {
        self.read().scoring().alpha
    }

    #[getter]
    fn beta(&self) -> f64 {
        self.read().scoring().beta
    }

    #[getter]
    fn events(&self) -> u64 {
        self.read().events()
    }

    #[getter]
    fn entries(&self, py: Python<'_>) -> usize {
        py.detach(|| self.read().entries())
    }

    #[getter]
    fn latest(&self) -> Option<f64> {
        self.read().latest()
    }

    fn __len__(&self) -> usize {
        self.read().len()
    }

    /// The dense id of each item id (`UNKNOWN` = 2**32 − 1 for ids the model has not seen).
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let keys = keys_of(ids, "ids")?;
        let dense = py.detach(|| self.read().lookup_many(&keys));
        Ok(dense.into_pyarray(py))
    }

    /// The item ids of dense ids.
    fn keys(&self, dense: Vec<u32>) -> PyResult<Vec<String>> {
        let model = self.read();
        dense
            .iter()
            .map(|&d| {
                model.key(d).map(str::to_owned).ok_or_else(|| {
                    validation_error(format!("dense id {d} is not an item of this model"))
                })
            })
            .collect()
    }

    /// Learns one event: `item` at `timestamp`, after `previous` (the user's earlier items,
    /// newest first; ids the model has not seen are skipped).
    fn observe(
        &self,
        py: Python<'_>,
        item: &Bound<'_, PyAny>,
        previous: &Bound<'_, PyAny>,
        timestamp: f64,
    ) -> PyResult<()> {
        let item = key_of(item, || "item".into())?;
        let previous = keys_of(previous, "previous")?;
        let t = finite_time(timestamp)?;
        py.detach(|| {
            let mut model = self.write();
            let previous = model.lookup_many(&previous);
            let item = model.intern(&item)?;
            model.observe(item, &previous, t)
        })
        .map_err(kernel_error)
    }

    /// Learns events in the order given: `items[e]` by user code `users[e]` at `times[e]`;
    /// `seeds[u]` are user u's items before these events, newest first.
    fn observe_many(
        &self,
        py: Python<'_>,
        users: PyReadonlyArray1<'_, u32>,
        items: &Bound<'_, PyAny>,
        times: PyReadonlyArray1<'_, f64>,
        seeds: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let users = to_vec(&users)?;
        let times = to_vec(&times)?;
        let items = keys_of(items, "items")?;
        if users.len() != items.len() || users.len() != times.len() {
            return Err(validation_error(format!(
                "users, items and times differ in length ({}, {}, {})",
                users.len(),
                items.len(),
                times.len()
            )));
        }
        if let Some(e) = times.iter().position(|t| !t.is_finite()) {
            return Err(validation_error(format!(
                "times[{e}] is not a finite epoch time"
            )));
        }
        let seeds: Vec<Vec<String>> = seeds
            .try_iter()
            .map_err(|_| validation_error("seeds must be a sequence of sequences of ids".into()))?
            .enumerate()
            .map(|(u, s)| keys_of(&s?, &format!("seeds[{u}]")))
            .collect::<PyResult<_>>()?;
        if let Some(e) = users.iter().position(|&u| u as usize >= seeds.len()) {
            return Err(validation_error(format!(
                "users[{e}] = {} has no entry in seeds (length {})",
                users[e],
                seeds.len()
            )));
        }
        py.detach(|| {
            let mut model = self.write();
            let window = model.learning().window;
            let seeds: Vec<Vec<u32>> = seeds
                .iter()
                .map(|s| model.lookup_many(&s[..s.len().min(window)]))
                .collect();
            let dense = items
                .iter()
                .map(|k| model.intern(k))
                .collect::<crate::error::Result<Vec<u32>>>()?;
            model.observe_many(&users, &dense, &times, &seeds)
        })
        .map_err(kernel_error)
    }

    /// Co-visitation scores of dense `candidates` for a user whose recent items are `history`
    /// (dense ids, newest first). Scoring options left `None` take the model's defaults.
    #[pyo3(signature = (history, candidates, recent=None, recency_scale=None, alpha=None, beta=None))]
    #[allow(clippy::too_many_arguments)]
    fn scores<'py>(
        &self,
        py: Python<'py>,
        history: PyReadonlyArray1<'py, u32>,
        candidates: PyReadonlyArray1<'py, u32>,
        recent: Option<usize>,
        recency_scale: Option<f64>,
        alpha: Option<f64>,
        beta: Option<f64>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let history = to_vec(&history)?;
        let candidates = to_vec(&candidates)?;
        let out = py
            .detach(|| {
                let model = self.read();
                let d = model.scoring();
                let scoring = Scoring {
                    recent: recent.unwrap_or(d.recent),
                    recency_scale: recency_scale.unwrap_or(d.recency_scale),
                    alpha: alpha.unwrap_or(d.alpha),
                    beta: beta.unwrap_or(d.beta),
                };
                model.scores(&history, &candidates, &scoring)
            })
            .map_err(kernel_error)?;
        Ok(out.into_pyarray(py))
    }

    /// The event count of each dense id (0 for `UNKNOWN`), decayed to the latest event when the
    /// model has a half-life.
    fn counts<'py>(
        &self,
        py: Python<'py>,
        items: PyReadonlyArray1<'py, u32>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let items = to_vec(&items)?;
        Ok(py.detach(|| self.read().counts(&items)).into_pyarray(py))
    }

    /// The `k` heaviest neighbours of `item` as (id, weight), heaviest first.
    fn neighbours(&self, item: &Bound<'_, PyAny>, k: usize) -> PyResult<Vec<(String, f64)>> {
        let key = key_of(item, || "item".into())?;
        let model = self.read();
        let Some(id) = model.lookup(&key) else {
            return Ok(Vec::new());
        };
        Ok(model
            .neighbours(id, k)
            .into_iter()
            .filter_map(|(j, w)| model.key(j).map(|name| (name.to_owned(), w)))
            .collect())
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let bytes = py.detach(|| self.read().to_bytes());
        PyBytes::new(py, &bytes)
    }

    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let model = py
            .detach(|| CoVisitation::from_bytes(data))
            .map_err(kernel_error)?;
        Ok(Self {
            model: RwLock::new(model),
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCoVisitation>()?;
    m.add("COVISIT_UNKNOWN", UNKNOWN)?;
    Ok(())
}
