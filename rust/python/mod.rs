//! PyO3 bindings: `penchant._core`. Each function converts arguments, releases the GIL around the
//! pure kernel and converts the result; the algorithms live in the parent modules.

mod covisit;
mod history;
mod interests;
mod items;
mod names;
mod retrieval;
mod signals;
mod stored;

use crate::diversify::Diversity;
use crate::error::KernelError;
use crate::filter::{AttributeRange, Exclusion, Filters};
use crate::rank::{self, ExtraFactor, ProfileVectors, Request, Scoring};
use crate::scoring::Normalization;
use crate::table::{Embeddings, FeatureMatrix, IdIndex, ItemTable, Vocabulary};
use crate::{decay, parallel, profile, scoring, topk};
use items::{id_ref, item_key, key_to_py, FeatureIds, IdRef};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyType};

/// Input size limits: anything larger is refused with a `ValidationError` before work starts.
pub struct Limits {
    pub max_items: usize,
    pub max_id_bytes: usize,
    pub max_name_bytes: usize,
    pub max_features_per_item: usize,
    pub max_embedding_dim: usize,
}

pub const LIMITS: Limits = Limits {
    max_items: 10_000_000,
    max_id_bytes: 1_024,
    max_name_bytes: 1_024,
    max_features_per_item: 10_000,
    max_embedding_dim: 8_192,
};

static VALIDATION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A `penchant.ValidationError` (a `ValueError`) with `message`.
pub fn validation_error(message: String) -> PyErr {
    Python::attach(
        |py| match VALIDATION_ERROR.import(py, "penchant.errors", "ValidationError") {
            Ok(class) => PyErr::from_type(class.clone(), message),
            Err(e) => e,
        },
    )
}

pub fn kernel_error(e: KernelError) -> PyErr {
    validation_error(e.to_string())
}

fn normalization(name: &str) -> PyResult<Normalization> {
    Normalization::parse(name).map_err(kernel_error)
}

/// Items as columns, held in Rust. Immutable once built, so any number of threads may rank
/// against one table at once, each with the GIL released.
#[pyclass(frozen, module = "penchant._core")]
pub struct Table {
    table: ItemTable,
}

/// (positions, scores, contributions, number passed): see `Table::rank`.
type RankOutput<'py> = (
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray2<f64>>,
    usize,
);

/// (feature ids, weights).
type SparseVector<'py> = (Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<f64>>);

type FilterSpec = (
    Vec<u32>,
    Vec<u32>,
    Vec<u32>,
    Vec<u32>,
    Vec<(String, f64, f64)>,
);

#[pymethods]
impl Table {
    /// Builds a table from Python items. With `known` (a dict name → id and the names in id
    /// order), features outside it are dropped; without, every feature is interned.
    /// Returns the table and each item's `score`.
    #[staticmethod]
    #[pyo3(signature = (items, attributes, known=None, intern_prefixes=Vec::new()))]
    fn from_items<'py>(
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
        attributes: Vec<String>,
        known: Option<(Bound<'py, PyDict>, Vec<String>)>,
        intern_prefixes: Vec<String>,
    ) -> PyResult<(Self, Bound<'py, PyArray1<f64>>)> {
        let (table, scores) = match &known {
            Some((dict, names)) => {
                let vocabulary = Vocabulary::from_names(names.clone()).map_err(kernel_error)?;
                let features = FeatureIds::known(dict, vocabulary, intern_prefixes)?;
                items::table_from_items(items, features, attributes)?
            }
            None => items::table_from_items(
                items,
                FeatureIds::Intern(Vocabulary::default()),
                attributes,
            )?,
        };
        Ok((Self { table }, scores.into_pyarray(py)))
    }

    /// Builds a table from columns (see `penchant.ItemBatch`).
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (ids, indptr, feature_ids, feature_weights, feature_names, embeddings, timestamps, popularity, attribute_names, attributes))]
    fn from_columns(
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        indptr: PyReadonlyArray1<'_, i64>,
        feature_ids: PyReadonlyArray1<'_, u32>,
        feature_weights: PyReadonlyArray1<'_, f32>,
        feature_names: Vec<String>,
        embeddings: Option<PyReadonlyArray2<'_, f32>>,
        timestamps: Option<PyReadonlyArray1<'_, f64>>,
        popularity: Option<PyReadonlyArray1<'_, f64>>,
        attribute_names: Vec<String>,
        attributes: Vec<PyReadonlyArray1<'_, f64>>,
    ) -> PyResult<Self> {
        let mut keys = Vec::new();
        for (i, id) in ids.try_iter()?.enumerate() {
            keys.push(item_key(&id?, || format!("ids[{i}]"))?);
        }
        let indptr = to_vec(&indptr)?;
        let mut last = 0i64;
        for &p in &indptr {
            if p < last || p as usize > feature_ids.len() {
                return Err(validation_error(
                    "features: indptr must rise from 0 to the number of feature ids".into(),
                ));
            }
            last = p;
        }
        if indptr.first() != Some(&0) || last as usize != feature_ids.len() {
            return Err(validation_error(
                "features: indptr must rise from 0 to the number of feature ids".into(),
            ));
        }
        let mut table = ItemTable {
            ids: keys,
            vocabulary: Vocabulary::from_names(feature_names).map_err(kernel_error)?,
            features: FeatureMatrix {
                indptr: indptr.iter().map(|&p| p as usize).collect(),
                ids: to_vec(&feature_ids)?,
                weights: to_vec(&feature_weights)?,
            },
            timestamps: timestamps.map(|t| to_vec(&t)).transpose()?,
            popularity: popularity.map(|p| to_vec(&p)).transpose()?,
            attribute_names,
            attributes: attributes.iter().map(to_vec).collect::<PyResult<_>>()?,
            ..Default::default()
        };
        if let Some(e) = embeddings {
            let dim = e.shape()[1];
            let values = e
                .as_slice()
                .map_err(|e| validation_error(e.to_string()))?
                .to_vec();
            table.embeddings = Some(
                py.detach(|| Embeddings::new(dim, values))
                    .map_err(kernel_error)?,
            );
        }
        py.detach(|| table.finish()).map_err(kernel_error)?;
        Ok(Self { table })
    }

    fn __len__(&self) -> usize {
        self.table.len()
    }

    #[getter]
    fn dim(&self) -> Option<usize> {
        self.table.embeddings.as_ref().map(|e| e.dim)
    }

    #[getter]
    fn feature_names(&self) -> Vec<String> {
        (0..self.table.vocabulary.len() as u32)
            .map(|i| self.table.vocabulary.name(i).to_owned())
            .collect()
    }

    #[getter]
    fn attribute_names(&self) -> Vec<String> {
        self.table.attribute_names.clone()
    }

    /// The rows of `ids`, in order. Unknown or repeated ids are a `ValidationError`, unless
    /// `missing_ok`, which skips unknown ids and allows repeats.
    #[pyo3(signature = (ids, missing_ok=false))]
    fn rows_of<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
        missing_ok: bool,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        if let Ok(array) = ids.cast::<PyArray1<i64>>() {
            let ids = to_vec(&array.readonly())?;
            let index = &self.table.index;
            let rows = detach_if_long(py, ids.len(), || rows_of_ints(index, &ids, missing_ok));
            return Ok(rows.map_err(validation_error)?.into_pyarray(py));
        }
        let mut rows = Vec::new();
        let mut seen = RowSet::new(self.table.len());
        for (i, id) in ids.try_iter()?.enumerate() {
            let id = id?;
            let found = match id_ref(&id, || format!("candidate {i}"))? {
                IdRef::Int(k) => self.table.index.int(k),
                IdRef::Str(k) => self.table.index.str(k),
            };
            let Some(row) = found else {
                if missing_ok {
                    continue;
                }
                return Err(validation_error(format!(
                    "candidate {i}: unknown item id {}",
                    id.repr()?
                )));
            };
            if !seen.insert(row) && !missing_ok {
                return Err(validation_error(format!(
                    "candidate {i}: duplicate item id {}",
                    id.repr()?
                )));
            }
            rows.push(row);
        }
        Ok(rows.into_pyarray(py))
    }

    /// The ids of `rows`.
    fn ids<'py>(&self, py: Python<'py>, rows: Vec<u32>) -> PyResult<Bound<'py, PyList>> {
        let keys = rows
            .iter()
            .map(|&r| {
                let key = self.table.ids.get(r as usize).ok_or_else(|| {
                    kernel_error(KernelError::OutOfRange {
                        what: "rows",
                        index: r as usize,
                        len: self.table.len(),
                    })
                })?;
                key_to_py(py, key)
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, keys)
    }

    /// The ids of every feature whose name starts with one of `prefixes`.
    fn feature_ids_with_prefix(&self, prefixes: Vec<String>) -> Vec<u32> {
        let vocabulary = &self.table.vocabulary;
        (0..vocabulary.len() as u32)
            .filter(|&f| {
                prefixes
                    .iter()
                    .any(|p| vocabulary.name(f).starts_with(p.as_str()))
            })
            .collect()
    }

    /// The id of each name in this table's vocabulary, or None for names it does not have.
    fn feature_ids(&self, names: Vec<String>) -> Vec<Option<u32>> {
        names.iter().map(|n| self.table.vocabulary.get(n)).collect()
    }

    /// A profile's interests (name → weight) as (feature ids, weights) over this table's
    /// vocabulary; names the table does not have are dropped.
    fn interest_ids<'py>(
        &self,
        py: Python<'py>,
        interests: &Bound<'py, PyDict>,
    ) -> PyResult<SparseVector<'py>> {
        let mut ids = Vec::with_capacity(interests.len());
        let mut weights = Vec::with_capacity(interests.len());
        for (name, weight) in interests.iter() {
            let Ok(name) = name.cast::<pyo3::types::PyString>() else {
                return Err(validation_error(format!(
                    "interest names must be str, got {}",
                    name.repr()?
                )));
            };
            let name = name.to_str()?;
            let weight: f64 = match weight.extract() {
                Ok(w) if f64::is_finite(w) && !weight.is_instance_of::<pyo3::types::PyBool>() => w,
                _ => {
                    return Err(validation_error(format!(
                        "interest weight of {name:?} must be a finite number, got {}",
                        weight.repr()?
                    )))
                }
            };
            if let Some(id) = self.table.vocabulary.get(name) {
                ids.push(id);
                weights.push(weight);
            }
        }
        Ok((ids.into_pyarray(py), weights.into_pyarray(py)))
    }

    /// One column gathered at `rows`: "embeddings" (2-D), "timestamps", "popularity" or a
    /// numeric attribute. None when the table does not have it.
    fn column<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        rows: Vec<u32>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= self.table.len()) {
            return Err(kernel_error(KernelError::OutOfRange {
                what: "rows",
                index: bad as usize,
                len: self.table.len(),
            }));
        }
        let gather = |col: &[f64]| rows.iter().map(|&r| col[r as usize]).collect::<Vec<_>>();
        Ok(match name {
            "embeddings" => match &self.table.embeddings {
                Some(e) => {
                    let values: Vec<f32> = rows
                        .iter()
                        .flat_map(|&r| e.row(r as usize).iter().copied())
                        .collect();
                    let array = numpy::ndarray::Array2::from_shape_vec((rows.len(), e.dim), values)
                        .map_err(|e| validation_error(e.to_string()))?;
                    Some(array.into_pyarray(py).into_any())
                }
                None => None,
            },
            "timestamps" => self
                .table
                .timestamps
                .as_deref()
                .map(|c| gather(c).into_pyarray(py).into_any()),
            "popularity" => self
                .table
                .popularity
                .as_deref()
                .map(|c| gather(c).into_pyarray(py).into_any()),
            other => self
                .table
                .attribute(other)
                .map(|c| gather(c).into_pyarray(py).into_any()),
        })
    }

    /// For each of `rows` that `filters` drop: (position, rule, detail), where rule is
    /// "excluded", "blocked", "required", "any" or "range", and detail names the feature or
    /// attribute.
    fn exclusions(
        &self,
        rows: Vec<u32>,
        filters: FilterSpec,
    ) -> PyResult<Vec<(usize, &'static str, String)>> {
        let filters = self.filters(filters)?;
        let vocabulary = &self.table.vocabulary;
        let mut out = Vec::new();
        for (position, &row) in rows.iter().enumerate() {
            if row as usize >= self.table.len() {
                return Err(kernel_error(KernelError::OutOfRange {
                    what: "rows",
                    index: row as usize,
                    len: self.table.len(),
                }));
            }
            let reason = match filters.exclusion(&self.table, row) {
                None => continue,
                Some(Exclusion::Excluded) => ("excluded", String::new()),
                Some(Exclusion::Blocked(f)) => ("blocked", vocabulary.name(f).to_owned()),
                Some(Exclusion::MissingRequired(f)) => ("required", vocabulary.name(f).to_owned()),
                Some(Exclusion::NoneOfAny) => ("any", String::new()),
                Some(Exclusion::OutOfRange(c)) => ("range", self.table.attribute_names[c].clone()),
            };
            out.push((position, reason.0, reason.1));
        }
        Ok(out)
    }

    /// The features of `row` that this table knows, with their weights.
    fn row_features(&self, row: u32) -> PyResult<Vec<(String, f32)>> {
        if row as usize >= self.table.len() {
            return Err(kernel_error(KernelError::OutOfRange {
                what: "rows",
                index: row as usize,
                len: self.table.len(),
            }));
        }
        let (ids, weights) = self.table.features.row(row as usize);
        Ok(ids
            .iter()
            .zip(weights)
            .map(|(&f, &w)| (self.table.vocabulary.name(f).to_owned(), w))
            .collect())
    }

    /// The row of each id, or -1 where the table does not have it (see `retrieval::find_rows`).
    fn find_rows<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        Ok(retrieval::find_rows(&self.table, ids)?.into_pyarray(py))
    }

    /// The affinity of `rows` with a sparse vector (feature ids, weights) over this table.
    fn affinity<'py>(
        &self,
        py: Python<'py>,
        rows: PyReadonlyArray1<'py, u32>,
        feature_ids: PyReadonlyArray1<'py, u32>,
        weights: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let (rows, ids, weights) = (to_vec(&rows)?, to_vec(&feature_ids)?, to_vec(&weights)?);
        Ok(retrieval::affinity(py, &self.table, &rows, &ids, &weights)?.into_pyarray(py))
    }

    /// Filters, scores and selects. Returns (positions into `rows`, scores, contributions with
    /// one row per factor, number of candidates that passed the filters).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (rows, base_scores, interest_ids, interest_weights, taste, weights, normalization, now, recency_half_life, extra, filters, k, mmr_lambda=None, feature_cap=None, pool=0, novelty=None))]
    fn rank<'py>(
        &self,
        py: Python<'py>,
        rows: Option<PyReadonlyArray1<'py, u32>>,
        base_scores: Option<PyReadonlyArray1<'py, f64>>,
        interest_ids: PyReadonlyArray1<'py, u32>,
        interest_weights: PyReadonlyArray1<'py, f64>,
        taste: Option<PyReadonlyArray1<'py, f32>>,
        weights: [f64; 5],
        normalization: [String; 5],
        now: f64,
        recency_half_life: f64,
        extra: Vec<(PyReadonlyArray1<'py, f64>, f64, String)>,
        filters: FilterSpec,
        k: usize,
        mmr_lambda: Option<f64>,
        feature_cap: Option<(usize, Vec<u32>)>,
        pool: usize,
        novelty: Option<retrieval::NoveltyArgs<'py>>,
    ) -> PyResult<RankOutput<'py>> {
        // Copies: a caller's thread could write to its arrays while the GIL is released.
        let rows = match rows {
            Some(r) => to_vec(&r)?,
            None => (0..self.table.len() as u32).collect(),
        };
        let base = base_scores.map(|b| to_vec(&b)).transpose()?;
        let profile = ProfileVectors {
            interests: {
                let (ids, weights) = (to_vec(&interest_ids)?, to_vec(&interest_weights)?);
                if ids.len() != weights.len() {
                    return Err(validation_error(
                        "interest ids and weights differ in length".into(),
                    ));
                }
                ids.into_iter().zip(weights).collect()
            },
            taste: taste.map(|t| to_vec(&t)).transpose()?,
        };
        let scoring = Scoring {
            weights,
            normalization: [
                self::normalization(&normalization[0])?,
                self::normalization(&normalization[1])?,
                self::normalization(&normalization[2])?,
                self::normalization(&normalization[3])?,
                self::normalization(&normalization[4])?,
            ],
            now,
            recency_half_life,
        };
        let extra = extra
            .into_iter()
            .map(|(values, weight, norm)| {
                Ok(ExtraFactor {
                    values: to_vec(&values)?,
                    weight,
                    normalization: self::normalization(&norm)?,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let filters = self.filters(filters)?;
        let diversity = match (mmr_lambda, feature_cap) {
            (None, None) => Diversity::None,
            (Some(lambda), None) if (0.0..=1.0).contains(&lambda) => Diversity::Mmr { lambda },
            (None, Some((cap, capped))) if cap >= 1 => Diversity::FeatureCap { cap, capped },
            _ => {
                return Err(validation_error(
                    "diversity: one of an MMR lambda in [0, 1] or a feature cap of at least 1"
                        .into(),
                ))
            }
        };
        let seen = novelty.map(retrieval::novelty_columns).transpose()?;
        let table = &self.table;
        let ranking = py
            .detach(|| {
                rank::rank(
                    table,
                    Request {
                        rows: &rows,
                        base_scores: base.as_deref(),
                        profile: &profile,
                        scoring: &scoring,
                        extra,
                        novelty: seen.as_ref().map(|s| s.factor()),
                        filters: &filters,
                        k,
                        diversity: &diversity,
                        pool,
                    },
                )
            })
            .map_err(kernel_error)?;
        let n_factors = ranking.contributions.len();
        let n = ranking.positions.len();
        let flat: Vec<f64> = ranking.contributions.into_iter().flatten().collect();
        let contributions = numpy::ndarray::Array2::from_shape_vec((n_factors, n), flat)
            .map_err(|e| validation_error(e.to_string()))?;
        Ok((
            ranking.positions.into_pyarray(py),
            ranking.scores.into_pyarray(py),
            contributions.into_pyarray(py),
            ranking.passed,
        ))
    }
}

/// Work on fewer items than this keeps the GIL: releasing and taking it back costs more than
/// a few microseconds of work saves, and under threads each release hands the GIL to another
/// thread that then holds it for its whole Python step (a convoy).
const DETACH_MIN_ITEMS: usize = 16_384;

/// `work()`, with the GIL released only when `items` make it long enough to gain from it.
pub fn detach_if_long<T: Send>(py: Python<'_>, items: usize, work: impl FnOnce() -> T + Send) -> T {
    if items < DETACH_MIN_ITEMS {
        work()
    } else {
        py.detach(work)
    }
}

/// A set of rows as a bitmap: cheaper than hashing for the sizes of a catalog.
struct RowSet(Vec<u64>);

impl RowSet {
    fn new(rows: usize) -> Self {
        Self(vec![0; rows.div_ceil(64)])
    }

    /// Adds `row`; returns whether it was new.
    fn insert(&mut self, row: u32) -> bool {
        let (word, bit) = (row as usize / 64, 1u64 << (row % 64));
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }
}

/// `rows_of` for an int64 array of ids: no Python object per id.
fn rows_of_ints(index: &IdIndex, ids: &[i64], missing_ok: bool) -> Result<Vec<u32>, String> {
    let mut rows = Vec::with_capacity(ids.len());
    let mut seen = RowSet::new(index.len());
    for (i, &id) in ids.iter().enumerate() {
        match index.int(id) {
            Some(row) => {
                if !seen.insert(row) && !missing_ok {
                    return Err(format!("candidate {i}: duplicate item id {id}"));
                }
                rows.push(row);
            }
            None if missing_ok => {}
            None => return Err(format!("candidate {i}: unknown item id {id}")),
        }
    }
    Ok(rows)
}

impl Table {
    /// Resolves a filter spec from Python: attribute names become column indices.
    fn filters(&self, spec: FilterSpec) -> PyResult<Filters> {
        let (blocked, required_all, required_any, excluded_rows, ranges) = spec;
        let ranges = ranges
            .into_iter()
            .map(|(name, low, high)| {
                let column = self
                    .table
                    .attribute_names
                    .iter()
                    .position(|n| *n == name)
                    .ok_or_else(|| {
                        validation_error(format!(
                            "filters: the items have no numeric attribute {name:?}"
                        ))
                    })?;
                Ok(AttributeRange { column, low, high })
            })
            .collect::<PyResult<Vec<_>>>()?;
        Filters {
            blocked,
            required_all,
            required_any,
            excluded_rows,
            ranges,
        }
        .normalized(&self.table)
        .map_err(kernel_error)
    }
}

pub(crate) fn to_vec<T: numpy::Element + Copy>(
    array: &PyReadonlyArray1<'_, T>,
) -> PyResult<Vec<T>> {
    Ok(match array.as_slice() {
        Ok(slice) => slice.to_vec(),
        Err(_) => array.as_array().iter().copied().collect(),
    })
}

// Kernels exposed one by one, for property tests against NumPy references and for the stores.

#[pyfunction]
fn normalize<'py>(
    py: Python<'py>,
    values: PyReadonlyArray1<'py, f64>,
    method: &str,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let method = normalization(method)?;
    let mut values = to_vec(&values)?;
    py.detach(|| scoring::normalize(&mut values, method));
    Ok(values.into_pyarray(py))
}

#[pyfunction]
fn top_k<'py>(
    py: Python<'py>,
    scores: PyReadonlyArray1<'py, f64>,
    k: usize,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let scores = to_vec(&scores)?;
    if let Some(index) = scores.iter().position(|v| v.is_nan()) {
        return Err(kernel_error(KernelError::NotFinite {
            what: "scores",
            index,
        }));
    }
    Ok(py.detach(|| topk::top_k(&scores, None, k)).into_pyarray(py))
}

#[pyfunction]
fn forward_increments<'py>(
    py: Python<'py>,
    times: PyReadonlyArray1<'py, f64>,
    weights: PyReadonlyArray1<'py, f64>,
    landmark: f64,
    half_life: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (times, weights) = (to_vec(&times)?, to_vec(&weights)?);
    let out = py
        .detach(|| decay::forward_increments(&times, &weights, landmark, half_life))
        .map_err(kernel_error)?;
    Ok(out.into_pyarray(py))
}

#[pyfunction]
fn decay_factor(age: f64, half_life: f64) -> PyResult<f64> {
    if !(half_life.is_finite() && half_life > 0.0) || age.is_nan() {
        return Err(validation_error(format!(
            "invalid age {age} or half_life {half_life}"
        )));
    }
    Ok(decay::decay_factor(age, half_life))
}

#[pyfunction]
fn rebase_factor(old: f64, new: f64, half_life: f64) -> PyResult<f64> {
    if !(half_life.is_finite() && half_life > 0.0 && old.is_finite() && new.is_finite()) {
        return Err(validation_error(
            "rebase_factor needs finite times and a positive half_life".into(),
        ));
    }
    Ok(decay::rebase_factor(old, new, half_life))
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
fn aggregate_interests<'py>(
    py: Python<'py>,
    times: PyReadonlyArray1<'py, f64>,
    weights: PyReadonlyArray1<'py, f64>,
    indptr: PyReadonlyArray1<'py, i64>,
    feature_ids: PyReadonlyArray1<'py, u32>,
    feature_weights: PyReadonlyArray1<'py, f64>,
    n_features: usize,
    now: f64,
    half_life: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let indptr: Vec<usize> = to_vec(&indptr)?
        .into_iter()
        .map(|p| {
            usize::try_from(p).map_err(|_| validation_error("indptr must not be negative".into()))
        })
        .collect::<PyResult<_>>()?;
    let (times, weights, feature_ids, feature_weights) = (
        to_vec(&times)?,
        to_vec(&weights)?,
        to_vec(&feature_ids)?,
        to_vec(&feature_weights)?,
    );
    let out = py
        .detach(|| {
            let history = decay::History {
                times: &times,
                weights: &weights,
                indptr: &indptr,
                feature_ids: &feature_ids,
                feature_weights: &feature_weights,
            };
            decay::aggregate_interests(&history, n_features, now, half_life)
        })
        .map_err(kernel_error)?;
    Ok(out.into_pyarray(py))
}

/// Sets the size of penchant's thread pool. Only effective before the first large ranking;
/// returns whether it took effect.
#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<bool> {
    if n == 0 {
        return Err(validation_error(
            "the number of threads must be at least 1".into(),
        ));
    }
    Ok(parallel::set_num_threads(n))
}

/// Sets the candidate count from which kernels run on the pool (0 restores the default). For
/// measuring the threshold; the default is what BENCHMARKS.md justifies.
#[pyfunction]
fn set_parallel_min_rows(n: usize) -> usize {
    parallel::set_parallel_min_rows(n);
    parallel::parallel_min_rows()
}

#[pyfunction]
fn num_threads(py: Python<'_>) -> usize {
    py.detach(parallel::num_threads)
}

// Profile kernels (rust/profile.rs) and the history reader (history.rs). Lists in and out for
// the signal accumulation: its callers build Python lists anyway, and for a single event the
// NumPy round trip would cost more than the kernel.

/// (feature ids, channels, positive, amounts, counts per feature, latest time per feature).
type AccumulationOutput = (Vec<u32>, Vec<u32>, Vec<bool>, Vec<f64>, Vec<u64>, Vec<f64>);

fn indices(values: Vec<i64>, what: &str) -> PyResult<Vec<usize>> {
    values
        .into_iter()
        .map(|p| {
            usize::try_from(p).map_err(|_| validation_error(format!("{what} must not be negative")))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
fn accumulate_signals(
    py: Python<'_>,
    times: Vec<f64>,
    weights: Vec<f64>,
    channels: Vec<u32>,
    half_lives: Vec<f64>,
    indptr: Vec<i64>,
    feature_ids: Vec<u32>,
    feature_weights: Vec<f64>,
    landmark: f64,
    n_features: usize,
) -> PyResult<AccumulationOutput> {
    // Feature ids are dense per batch, so there are rarely more features than entries; the
    // bound keeps a bad argument from asking for a huge allocation.
    if n_features > feature_ids.len().max(1_024) {
        return Err(validation_error(format!(
            "n_features ({n_features}) exceeds the number of feature ids ({})",
            feature_ids.len()
        )));
    }
    let indptr = indices(indptr, "indptr")?;
    let out = py
        .detach(|| {
            let batch = profile::SignalBatch {
                times: &times,
                weights: &weights,
                channels: &channels,
                half_lives: &half_lives,
                indptr: &indptr,
                feature_ids: &feature_ids,
                feature_weights: &feature_weights,
            };
            profile::accumulate_signals(&batch, landmark, n_features)
        })
        .map_err(kernel_error)?;
    Ok((
        out.feature_ids,
        out.channels,
        out.positive,
        out.amounts,
        out.counts,
        out.latest,
    ))
}

/// (feature names by id, half-lives by channel, the landmark moved to if any, accumulation).
type SignalAccumulation = (Vec<String>, Vec<f64>, Option<f64>, AccumulationOutput);

/// Reads a list of `Signal` objects and accumulates them against the landmark that applying
/// them one by one would end with (see `signals::SignalColumns`).
#[pyfunction]
fn accumulate_signal_objects(
    py: Python<'_>,
    signals: &Bound<'_, PyList>,
    landmark: f64,
    rebase_exponent: f64,
) -> PyResult<SignalAccumulation> {
    let columns = signals::read_signals(signals, landmark, rebase_exponent)?;
    let target = columns.rebase_to.unwrap_or(landmark);
    let out = py
        .detach(|| {
            let batch = profile::SignalBatch {
                times: &columns.times,
                weights: &columns.weights,
                channels: &columns.channels,
                half_lives: &columns.half_lives,
                indptr: &columns.indptr,
                feature_ids: &columns.feature_ids,
                feature_weights: &columns.feature_weights,
            };
            profile::accumulate_signals(&batch, target, columns.names.len())
        })
        .map_err(kernel_error)?;
    Ok((
        columns.names,
        columns.half_lives,
        columns.rebase_to,
        (
            out.feature_ids,
            out.channels,
            out.positive,
            out.amounts,
            out.counts,
            out.latest,
        ),
    ))
}

#[pyfunction]
fn decayed_weights<'py>(
    py: Python<'py>,
    times: PyReadonlyArray1<'py, f64>,
    weights: PyReadonlyArray1<'py, f64>,
    half_lives: PyReadonlyArray1<'py, f64>,
    now: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (times, weights, half_lives) = (to_vec(&times)?, to_vec(&weights)?, to_vec(&half_lives)?);
    let out = py
        .detach(|| profile::decayed_weights(&times, &weights, &half_lives, now))
        .map_err(kernel_error)?;
    Ok(out.into_pyarray(py))
}

/// (quantiles row-major, total weight, sum of squared weights, counts), per attribute.
type QuantileOutput = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<u64>);

#[pyfunction]
fn attribute_quantiles(
    py: Python<'_>,
    attribute_ids: PyReadonlyArray1<'_, u32>,
    values: PyReadonlyArray1<'_, f64>,
    weights: PyReadonlyArray1<'_, f64>,
    n_attributes: usize,
    quantiles: Vec<f64>,
) -> PyResult<QuantileOutput> {
    if n_attributes > values.len().max(1_024) || quantiles.len() > 1_000 {
        return Err(validation_error(format!(
            "n_attributes ({n_attributes}) must not exceed the number of values ({}), \
             nor the quantiles 1000",
            values.len()
        )));
    }
    let (attribute_ids, values, weights) =
        (to_vec(&attribute_ids)?, to_vec(&values)?, to_vec(&weights)?);
    let out = py
        .detach(|| {
            let samples = profile::AttributeSamples {
                attribute_ids: &attribute_ids,
                values: &values,
                weights: &weights,
            };
            profile::attribute_quantiles(&samples, n_attributes, &quantiles)
        })
        .map_err(kernel_error)?;
    Ok((out.quantiles, out.total_weight, out.sum_squares, out.counts))
}

#[pyfunction]
fn periodic_histogram(
    py: Python<'_>,
    times: PyReadonlyArray1<'_, f64>,
    weights: PyReadonlyArray1<'_, f64>,
    period: f64,
    bins: usize,
    offset: f64,
) -> PyResult<Vec<f64>> {
    if bins > 1 << 20 {
        return Err(validation_error(format!("too many bins: {bins}")));
    }
    let (times, weights) = (to_vec(&times)?, to_vec(&weights)?);
    py.detach(|| profile::periodic_histogram(&times, &weights, period, bins, offset))
        .map_err(kernel_error)
}

#[pyfunction]
fn build_signals<'py>(
    feedbacks: &Bound<'py, PyList>,
    weights: Vec<f64>,
    half_lives: Vec<f64>,
    times: Vec<f64>,
    signal_class: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    signals::build_signals(feedbacks, &weights, &half_lives, &times, signal_class)
}

#[pyfunction]
fn interest_evidence<'py>(
    interests: &Bound<'py, PyDict>,
    now: f64,
    landmark: f64,
) -> PyResult<(Bound<'py, PyList>, Vec<f64>, Vec<f64>)> {
    interests::interest_evidence(interests, now, landmark)
}

#[pyfunction]
#[allow(clippy::too_many_arguments)] // the Python call's arguments, one by one
#[pyo3(signature = (names, positive, negative, strength, unwanted, min_confidence, max_features, prior))]
fn categorical_choice(
    py: Python<'_>,
    names: Vec<PyBackedStr>,
    positive: Vec<f64>,
    negative: Vec<f64>,
    strength: Option<Vec<f64>>,
    unwanted: Option<Vec<bool>>,
    min_confidence: f64,
    max_features: usize,
    prior: f64,
) -> PyResult<(Vec<profile::Chosen>, Vec<profile::Chosen>)> {
    let names: Vec<&str> = names.iter().map(|n| &**n).collect();
    let (strength, unwanted) = (strength.unwrap_or_default(), unwanted.unwrap_or_default());
    let evidence = profile::InterestEvidence {
        names: &names,
        positive: &positive,
        negative: &negative,
        strength: &strength,
        unwanted: &unwanted,
    };
    py.detach(|| profile::categorical_choice(&evidence, min_confidence, max_features, prior))
        .map_err(kernel_error)
}

#[pyfunction]
fn read_history<'py>(interactions: &Bound<'py, PyList>) -> PyResult<history::HistoryColumns<'py>> {
    history::read_history(interactions)
}

#[pyfunction]
fn read_packed_history<'py>(
    packed: &Bound<'py, PyAny>,
    default_half_life: f64,
) -> PyResult<history::HistoryColumns<'py>> {
    history::read_packed_history(packed, default_half_life)
}

#[pyfunction]
fn summarize_history(
    interactions: &Bound<'_, PyList>,
    now: f64,
    quantiles: Vec<f64>,
    utc_offset: f64,
) -> PyResult<history::Summary> {
    history::summarize_history(interactions, now, quantiles, utc_offset)
}

#[pyfunction]
fn summarize_packed_history(
    packed: &Bound<'_, PyAny>,
    now: f64,
    default_half_life: f64,
    quantiles: Vec<f64>,
    utc_offset: f64,
) -> PyResult<history::Summary> {
    history::summarize_packed_history(packed, now, default_half_life, quantiles, utc_offset)
}

#[pyfunction]
fn packed_history_last_time(packed: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    history::packed_history_last_time(packed)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Table>()?;
    covisit::register(m)?;
    m.add_function(wrap_pyfunction!(normalize, m)?)?;
    m.add_function(wrap_pyfunction!(top_k, m)?)?;
    m.add_function(wrap_pyfunction!(forward_increments, m)?)?;
    m.add_function(wrap_pyfunction!(decay_factor, m)?)?;
    m.add_function(wrap_pyfunction!(rebase_factor, m)?)?;
    m.add_function(wrap_pyfunction!(aggregate_interests, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_parallel_min_rows, m)?)?;
    m.add_function(wrap_pyfunction!(accumulate_signals, m)?)?;
    m.add_function(wrap_pyfunction!(accumulate_signal_objects, m)?)?;
    m.add_function(wrap_pyfunction!(decayed_weights, m)?)?;
    m.add_function(wrap_pyfunction!(attribute_quantiles, m)?)?;
    m.add_function(wrap_pyfunction!(periodic_histogram, m)?)?;
    m.add_function(wrap_pyfunction!(read_history, m)?)?;
    m.add_function(wrap_pyfunction!(read_packed_history, m)?)?;
    m.add_function(wrap_pyfunction!(summarize_history, m)?)?;
    m.add_function(wrap_pyfunction!(categorical_choice, m)?)?;
    m.add_function(wrap_pyfunction!(summarize_packed_history, m)?)?;
    m.add_function(wrap_pyfunction!(packed_history_last_time, m)?)?;
    m.add_function(wrap_pyfunction!(interest_evidence, m)?)?;
    m.add_function(wrap_pyfunction!(build_signals, m)?)?;
    m.add_function(wrap_pyfunction!(stored::decode_interests, m)?)?;
    m.add_function(wrap_pyfunction!(stored::history_entries, m)?)?;
    m.add_function(wrap_pyfunction!(stored::history_sort_key, m)?)?;
    m.add_function(wrap_pyfunction!(stored::signal_history_member, m)?)?;
    m.add_function(wrap_pyfunction!(signals::signal_increments, m)?)?;
    m.add_function(wrap_pyfunction!(signals::signals_fit_to_store, m)?)?;
    m.add("FACTORS", rank::FACTORS.to_vec())?;
    m.add("PARALLEL_MIN_ROWS", parallel::PARALLEL_MIN_ROWS)?;
    m.add("MAX_ITEMS", LIMITS.max_items)?;
    m.add("MAX_ID_BYTES", LIMITS.max_id_bytes)?;
    m.add("MAX_NAME_BYTES", LIMITS.max_name_bytes)?;
    m.add("MAX_FEATURES_PER_ITEM", LIMITS.max_features_per_item)?;
    m.add("MAX_EMBEDDING_DIM", LIMITS.max_embedding_dim)?;
    m.add("MAX_EXPONENT", decay::MAX_EXPONENT)?;
    Ok(())
}
