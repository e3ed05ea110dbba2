//! Python items (dicts, dataclasses, any object with the right attributes) into an `ItemTable`.
//! This is the only place that reads Python objects field by field; it runs with the GIL held
//! and touches each field once.

use super::{validation_error, LIMITS};
use crate::table::{Embeddings, ItemKey, ItemTable, Vocabulary};
use numpy::{PyArray1, PyArrayDescrMethods, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyDateAccess, PyDateTime, PyDict, PyInt, PyList, PyMapping, PyString, PyTimeAccess,
    PyTuple, PyTzInfo, PyTzInfoAccess,
};
use rustc_hash::FxHashMap;

/// How feature names become ids.
pub enum FeatureIds<'a, 'py> {
    /// Every name gets an id (registering a catalog).
    Intern(Vocabulary),
    /// Only names in `ids` (name → id) matter; others are dropped. A ranking request uses this
    /// with the profile's interests and the filters' features, so the work per item is one
    /// lookup per feature whatever the size of the items' vocabulary. Items often share their
    /// feature strings (one str object per name in the application's catalog), so answers are
    /// remembered by object address for the length of the call, while every item is alive.
    /// Names outside `ids` that start with one of `intern_prefixes` are interned too (a
    /// per-feature diversity cap needs to see every genre, not only the profile's).
    Known {
        ids: &'a Bound<'py, PyDict>,
        hashes: HashFilter,
        vocabulary: Vocabulary,
        seen: FxHashMap<usize, Option<u32>>,
        intern_prefixes: Vec<String>,
    },
}

/// A bitmap over Python string hashes: "maybe in the set" or "certainly not".
pub struct HashFilter(Vec<u64>);

impl HashFilter {
    const BITS: usize = 1 << 16;

    fn new(hashes: impl Iterator<Item = isize>) -> Self {
        let mut words = vec![0u64; Self::BITS / 64];
        for h in hashes {
            let bit = h as usize % Self::BITS;
            words[bit / 64] |= 1 << (bit % 64);
        }
        Self(words)
    }

    #[inline(always)]
    fn may_contain(&self, hash: isize) -> bool {
        let bit = hash as usize % Self::BITS;
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }
}

impl<'a, 'py> FeatureIds<'a, 'py> {
    /// Only the names of `ids` (name → id, whose names in id order make `vocabulary`) matter,
    /// plus any name starting with one of `intern_prefixes`.
    pub fn known(
        ids: &'a Bound<'py, PyDict>,
        vocabulary: Vocabulary,
        intern_prefixes: Vec<String>,
    ) -> PyResult<Self> {
        let hashes = ids
            .keys()
            .iter()
            .map(|k| k.hash())
            .collect::<PyResult<Vec<_>>>()?;
        Ok(FeatureIds::Known {
            ids,
            hashes: HashFilter::new(hashes.into_iter()),
            vocabulary,
            seen: FxHashMap::default(),
            intern_prefixes,
        })
    }
}

/// `hash(name)`: for an exact `str` whose hash CPython has already cached (every str used as
/// a dict key has), read from the object itself instead of through `PyObject_Hash`; a str
/// subclass (which may define its own `__hash__`) or an uncached str takes the general call.
/// penchant builds for CPython's full (not limited) API, where the struct layout is known.
#[inline(always)]
fn str_hash(name: &Bound<'_, PyString>) -> PyResult<isize> {
    if name.is_exact_instance_of::<PyString>() {
        // SAFETY: `name` is an exact str, so its object starts with a PyASCIIObject; the hash
        // field is written at most once (from -1 to the hash), read here as CPython's own
        // free-threaded build reads it, with a relaxed atomic load.
        let cached = unsafe {
            let ascii = name.as_ptr().cast::<pyo3::ffi::PyASCIIObject>();
            let field = std::ptr::addr_of!((*ascii).hash).cast::<std::sync::atomic::AtomicIsize>();
            (*field).load(std::sync::atomic::Ordering::Relaxed)
        };
        if cached != -1 {
            return Ok(cached);
        }
    }
    name.hash()
}

impl FeatureIds<'_, '_> {
    /// The id of a feature name, `None` for a name that does not matter to the request. Most
    /// names of a ranking request do not: their cached hash against the bitmap rules them out
    /// in a few instructions, inline; the rest takes [`FeatureIds::id_slow`].
    #[inline(always)]
    fn id(&mut self, name: &Bound<'_, PyAny>, item: usize) -> PyResult<Option<u32>> {
        if let FeatureIds::Known {
            hashes,
            intern_prefixes,
            ..
        } = self
        {
            if intern_prefixes.is_empty() {
                if let Ok(text) = name.cast::<PyString>() {
                    if !hashes.may_contain(str_hash(text)?) {
                        return Ok(None);
                    }
                }
            }
        }
        self.id_slow(name, item)
    }

    #[inline(never)]
    fn id_slow(&mut self, name: &Bound<'_, PyAny>, item: usize) -> PyResult<Option<u32>> {
        let Ok(name) = name.cast::<PyString>() else {
            return Err(validation_error(format!(
                "item {item}: feature names must be str, got {}",
                type_name(name)
            )));
        };
        match self {
            FeatureIds::Known {
                ids,
                hashes,
                seen,
                vocabulary,
                intern_prefixes,
            } => {
                // Most of an item's features are not among the few the request names: the
                // string's cached hash against a bitmap rules them out without a dict lookup
                // (done inline by `id`; again here for the callers that come straight here).
                if intern_prefixes.is_empty() && !hashes.may_contain(str_hash(name)?) {
                    return Ok(None);
                }
                let address = name.as_ptr() as usize;
                if let Some(&known) = seen.get(&address) {
                    return Ok(known);
                }
                let id = match ids.get_item(name)? {
                    Some(id) => Some(id.extract()?),
                    None if !intern_prefixes.is_empty() => {
                        let text = name.to_str()?;
                        intern_prefixes
                            .iter()
                            .any(|p| text.starts_with(p.as_str()))
                            .then(|| vocabulary.intern(text))
                    }
                    None => None,
                };
                seen.insert(address, id);
                Ok(id)
            }
            FeatureIds::Intern(vocabulary) => {
                let name = name.to_str()?;
                if name.is_empty() || name.len() > LIMITS.max_name_bytes {
                    return Err(validation_error(format!(
                        "item {item}: feature names must have 1 to {} bytes, got {}",
                        LIMITS.max_name_bytes,
                        name.len()
                    )));
                }
                Ok(Some(vocabulary.intern(name)))
            }
        }
    }

    fn into_vocabulary(self) -> Vocabulary {
        match self {
            FeatureIds::Intern(v) | FeatureIds::Known { vocabulary: v, .. } => v,
        }
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A field of an item: a key of a dict or mapping, else an attribute; `None` when absent or None.
fn field<'py>(
    item: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let value = if let Ok(dict) = item.cast::<PyDict>() {
        dict.get_item(name)?
    } else if item.is_instance_of::<PyMapping>() {
        match item.get_item(name) {
            Ok(v) => Some(v),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(item.py()) => None,
            Err(e) => return Err(e),
        }
    } else {
        item.getattr_opt(name)?
    };
    Ok(value.filter(|v| !v.is_none()))
}

/// The names of the fields that ranking reads, in the order of [`ItemFields`].
const FIELD_NAMES: [&str; 7] = [
    "id",
    "features",
    "embedding",
    "timestamp",
    "popularity",
    "attributes",
    "score",
];

/// Dicts with at most this many entries are read in one walk over their entries; larger
/// ones with a lookup per field.
const WALK_MAX_ENTRIES: usize = 16;

/// The fields of one item in the order of [`FIELD_NAMES`], each `None` when absent or None.
type ItemFields<'py> = [Option<Bound<'py, PyAny>>; 7];

/// Reads the fields of `item` named by `keys` (the interned [`FIELD_NAMES`]), as [`field`]
/// would one by one. A small dict is walked once instead: each key is matched by identity
/// with the interned names (keys written in the source are the same objects), else by text
/// (keys parsed from JSON, say), and other keys are skipped; no Python code runs meanwhile.
/// Fields that `wanted` marks false are left `None` (and, on an object, not read at all).
fn item_fields<'py>(
    item: &Bound<'py, PyAny>,
    keys: &[&Bound<'py, PyString>; 7],
    wanted: [bool; 7],
) -> PyResult<ItemFields<'py>> {
    let mut out: ItemFields<'py> = Default::default();
    match item.cast::<PyDict>() {
        Ok(dict) if dict.len() <= WALK_MAX_ENTRIES => {
            for (key, value) in dict.iter() {
                let slot = match keys.iter().position(|k| k.as_ptr() == key.as_ptr()) {
                    Some(slot) => Some(slot),
                    None => match key.cast::<PyString>() {
                        Ok(text) if text.is_exact_instance_of::<PyString>() => {
                            match text.to_str() {
                                Ok(text) => FIELD_NAMES.iter().position(|n| *n == text),
                                Err(_) => None,
                            }
                        }
                        _ => None,
                    },
                };
                if let Some(slot) = slot {
                    if wanted[slot] && !value.is_none() {
                        out[slot] = Some(value);
                    }
                }
            }
        }
        _ => {
            for ((slot, key), wanted) in out.iter_mut().zip(keys).zip(wanted) {
                if wanted {
                    *slot = field(item, key)?;
                }
            }
        }
    }
    Ok(out)
}

/// Whether every value is finite, in one pass without early exit (so that it vectorises).
fn all_finite(values: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    let mut bad = false;
    for v in values {
        bad |= v.to_bits() & EXPONENT == EXPONENT;
    }
    !bad
}

fn finite(value: &Bound<'_, PyAny>, what: &str, item: usize) -> PyResult<f64> {
    if value.is_instance_of::<PyBool>() || value.is_instance_of::<PyString>() {
        return Err(validation_error(format!(
            "item {item}: {what} must be a number, got {}",
            type_name(value)
        )));
    }
    let v: f64 = value.extract().map_err(|_| {
        validation_error(format!(
            "item {item}: {what} must be a number, got {}",
            type_name(value)
        ))
    })?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(validation_error(format!(
            "item {item}: {what} is NaN or infinite"
        )))
    }
}

/// An id as Python gave it, borrowed: a str or an int.
pub enum IdRef<'a> {
    Int(i64),
    Str(&'a str),
}

/// Reads an id; `what` names it in errors and is only called when there is one.
pub fn id_ref<'a>(value: &'a Bound<'_, PyAny>, what: impl Fn() -> String) -> PyResult<IdRef<'a>> {
    if let Ok(s) = value.cast::<PyString>() {
        let s = s.to_str()?;
        if s.is_empty() || s.len() > LIMITS.max_id_bytes {
            return Err(validation_error(format!(
                "{}: ids must have 1 to {} bytes, got {}",
                what(),
                LIMITS.max_id_bytes,
                s.len()
            )));
        }
        return Ok(IdRef::Str(s));
    }
    if value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyBool>() {
        return value.extract::<i64>().map(IdRef::Int).map_err(|_| {
            validation_error(format!("{}: integer id does not fit in 64 bits", what()))
        });
    }
    Err(validation_error(format!(
        "{}: ids must be str or int, got {}",
        what(),
        type_name(value)
    )))
}

pub fn item_key(value: &Bound<'_, PyAny>, what: impl Fn() -> String) -> PyResult<ItemKey> {
    Ok(match id_ref(value, what)? {
        IdRef::Int(i) => ItemKey::Int(i),
        IdRef::Str(s) => ItemKey::Str(s.to_owned()),
    })
}

pub fn key_to_py<'py>(py: Python<'py>, key: &ItemKey) -> PyResult<Bound<'py, PyAny>> {
    Ok(match key {
        ItemKey::Int(i) => i.into_pyobject(py)?.into_any(),
        ItemKey::Str(s) => PyString::new(py, s).into_any(),
    })
}

static UTC: PyOnceLock<Py<PyTzInfo>> = PyOnceLock::new();

/// Days from 1970-01-01 to a civil date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of a number or a datetime. Naive datetimes are taken as UTC.
pub fn epoch_seconds(value: &Bound<'_, PyAny>, what: &str, item: usize) -> PyResult<f64> {
    let Ok(dt) = value.cast::<PyDateTime>() else {
        return finite(value, what, item);
    };
    let py = value.py();
    let utc = UTC.get_or_try_init(py, || PyTzInfo::utc(py).map(|u| u.to_owned().unbind()))?;
    match dt.get_tzinfo() {
        Some(tz) if !tz.is(utc.bind(py)) => dt.call_method0(intern!(py, "timestamp"))?.extract(),
        _ => {
            let days = days_from_civil(
                dt.get_year() as i64,
                dt.get_month() as i64,
                dt.get_day() as i64,
            );
            let seconds = days * 86_400
                + dt.get_hour() as i64 * 3_600
                + dt.get_minute() as i64 * 60
                + dt.get_second() as i64;
            Ok(seconds as f64 + dt.get_microsecond() as f64 * 1e-6)
        }
    }
}

/// The values of `value` when it is a 1-D, C-contiguous, aligned float32 array in native byte
/// order, read off the array's header: cheaper than the typed cast, which compares dtypes
/// through NumPy's API.
fn f32_vector<'a>(value: &'a Bound<'_, PyAny>) -> Option<&'a [f32]> {
    let array = value.cast::<numpy::PyUntypedArray>().ok()?;
    let dtype = array.dtype();
    if array.ndim() != 1
        || dtype.kind() != b'f'
        || dtype.itemsize() != std::mem::size_of::<f32>()
        || dtype.is_native_byteorder() == Some(false)
        || !array.is_c_contiguous()
    {
        return None;
    }
    let len = array.len();
    // SAFETY: a 1-D C-contiguous array of `len` float32 starts at `data`; alignment is checked
    // before the slice is made. The GIL is held and no Python code runs while the caller
    // copies the slice (see `push_embedding`).
    unsafe {
        let data = (*array.as_array_ptr()).fields.data as *const f32;
        if len == 0 || data.is_null() || !data.is_aligned() {
            return None;
        }
        Some(std::slice::from_raw_parts(data, len))
    }
}

/// Appends one embedding, converting from a NumPy array or any sequence of numbers.
fn push_embedding(value: &Bound<'_, PyAny>, out: &mut Vec<f32>, item: usize) -> PyResult<usize> {
    let start = out.len();
    if let Some(values) = f32_vector(value) {
        out.extend_from_slice(values);
        return finish_embedding(out, start, item);
    }
    let borrow_error =
        |e: numpy::BorrowError| validation_error(format!("item {item}: embedding: {e}"));
    if let Ok(array) = value.cast::<PyArray1<f32>>() {
        // SAFETY: the GIL is held and no Python code runs while the slice is copied, and
        // penchant never holds a mutable borrow of a caller's array, so nothing can write to it
        // meanwhile. This skips numpy's borrow registry, which costs more than the copy.
        match unsafe { array.as_slice() } {
            Ok(slice) => out.extend_from_slice(slice),
            Err(_) => {
                let view = array.try_readonly().map_err(borrow_error)?;
                out.extend(view.as_array().iter().copied());
            }
        }
    } else if let Ok(array) = value.cast::<PyArray1<f64>>() {
        let view = array.try_readonly().map_err(borrow_error)?;
        out.extend(view.as_array().iter().map(|&x| x as f32));
    } else if let Ok(array) = value.cast::<numpy::PyUntypedArray>() {
        return Err(validation_error(format!(
            "item {item}: embedding must be a 1-D float32 or float64 array, got {}-D {}",
            array.ndim(),
            array.dtype()
        )));
    } else if let Ok(list) = value.cast::<PyList>() {
        for v in list.iter() {
            out.push(finite(&v, "embedding value", item)? as f32);
        }
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        for v in tuple.iter() {
            out.push(finite(&v, "embedding value", item)? as f32);
        }
    } else if value.is_instance_of::<PyString>() {
        return Err(validation_error(format!(
            "item {item}: embedding must be a sequence of numbers, got str"
        )));
    } else {
        let values = value.try_iter().map_err(|_| {
            validation_error(format!(
                "item {item}: embedding must be a sequence of numbers, got {}",
                type_name(value)
            ))
        })?;
        for v in values {
            out.push(finite(&v?, "embedding value", item)? as f32);
        }
    }
    finish_embedding(out, start, item)
}

/// Checks the embedding just appended to `out` from `start`; returns its length.
fn finish_embedding(out: &[f32], start: usize, item: usize) -> PyResult<usize> {
    let added = &out[start..];
    if !all_finite(added) {
        let index = added.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(validation_error(format!(
            "item {item}: embedding value at position {index} is NaN or infinite"
        )));
    }
    if added.is_empty() || added.len() > LIMITS.max_embedding_dim {
        return Err(validation_error(format!(
            "item {item}: embeddings must have 1 to {} values, got {}",
            LIMITS.max_embedding_dim,
            added.len()
        )));
    }
    Ok(added.len())
}

/// Collects optional per-item numbers into a column that stays `None` until some item has one.
struct OptionalColumn(Option<Vec<f64>>);

impl OptionalColumn {
    fn push(&mut self, row: usize, value: Option<f64>) {
        match (&mut self.0, value) {
            (Some(column), v) => column.push(v.unwrap_or(f64::NAN)),
            (None, Some(v)) => {
                let mut column = vec![f64::NAN; row];
                column.push(v);
                self.0 = Some(column);
            }
            (None, None) => {}
        }
    }
}

/// Builds a table from a sequence of items, and returns it with each item's `score` (0 when
/// absent).
pub fn table_from_items(
    items: &Bound<'_, PyAny>,
    mut features: FeatureIds<'_, '_>,
    attribute_names: Vec<String>,
) -> PyResult<(ItemTable, Vec<f64>)> {
    let py = items.py();
    let keys = [
        intern!(py, "id"),
        intern!(py, "features"),
        intern!(py, "embedding"),
        intern!(py, "timestamp"),
        intern!(py, "popularity"),
        intern!(py, "attributes"),
        intern!(py, "score"),
    ];
    let attribute_keys: Vec<Bound<'_, PyString>> = attribute_names
        .iter()
        .map(|n| PyString::new(py, n))
        .collect();
    let mut table = ItemTable {
        attribute_names,
        ..Default::default()
    };
    table.attributes = vec![Vec::new(); attribute_keys.len()];
    let mut timestamps = OptionalColumn(None);
    let mut popularity = OptionalColumn(None);
    let mut embedding_values: Vec<f32> = Vec::new();
    let mut embedding_dim: Option<usize> = None;
    let mut rows_before_first_embedding = 0usize;
    let mut scores: Vec<f64> = Vec::new();
    // A request whose profile and filters name no feature has no use for any item's features.
    let features_matter = !matches!(
        &features,
        FeatureIds::Known { ids, intern_prefixes, .. } if ids.is_empty() && intern_prefixes.is_empty()
    );

    let wanted = [
        true,
        features_matter,
        true,
        true,
        true,
        !attribute_keys.is_empty(),
        true,
    ];

    let mut add = |row: usize, item: Bound<'_, PyAny>| -> PyResult<()> {
        if row >= LIMITS.max_items {
            return Err(validation_error(format!(
                "too many items: the limit is {}",
                LIMITS.max_items
            )));
        }
        let [id, feature_value, embedding, timestamp, item_popularity, attributes, score] =
            item_fields(&item, &keys, wanted)?;
        let id = id.ok_or_else(|| validation_error(format!("item {row} has no id")))?;
        table.ids.push(item_key(&id, || format!("item {row}"))?);
        scores.push(
            score
                .map(|v| finite(&v, "score", row))
                .transpose()?
                .unwrap_or(0.0),
        );

        // Straight into the table's feature columns: no list per item.
        let matrix = &mut table.features;
        let first = matrix.ids.len();
        if let Some(value) = feature_value {
            if value.is_instance_of::<PyString>() {
                return Err(validation_error(format!(
                    "item {row}: features must be a list of names or a mapping name -> weight, got a str"
                )));
            }
            let mut push = |id: u32, weight: f32| {
                matrix.ids.push(id);
                matrix.weights.push(weight);
            };
            if let Ok(dict) = value.cast::<PyDict>() {
                for (name, weight) in dict.iter() {
                    let w = finite(&weight, "feature weight", row)?;
                    if let Some(id) = features.id(&name, row)? {
                        push(id, w as f32);
                    }
                }
            } else if let Ok(list) = value.cast::<PyList>() {
                for name in list.iter() {
                    if let Some(id) = features.id(&name, row)? {
                        push(id, 1.0);
                    }
                }
            } else if value.is_instance_of::<PyMapping>() {
                for pair in value.call_method0(intern!(py, "items"))?.try_iter()? {
                    let (name, weight): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair?.extract()?;
                    let w = finite(&weight, "feature weight", row)?;
                    if let Some(id) = features.id(&name, row)? {
                        push(id, w as f32);
                    }
                }
            } else {
                let iter = value.try_iter().map_err(|_| {
                    validation_error(format!(
                        "item {row}: features must be a list of names or a mapping name -> weight, got {}",
                        type_name(&value)
                    ))
                })?;
                for name in iter {
                    if let Some(id) = features.id(&name?, row)? {
                        push(id, 1.0);
                    }
                }
            }
            if matrix.ids.len() - first > LIMITS.max_features_per_item {
                return Err(validation_error(format!(
                    "item {row}: more than {} features",
                    LIMITS.max_features_per_item
                )));
            }
        }
        matrix.indptr.push(matrix.ids.len());

        match embedding {
            Some(value) => {
                let dim = push_embedding(&value, &mut embedding_values, row)?;
                match embedding_dim {
                    None => {
                        embedding_dim = Some(dim);
                        let zeros = vec![0.0f32; rows_before_first_embedding * dim];
                        embedding_values.splice(0..0, zeros);
                    }
                    Some(expected) if expected != dim => {
                        return Err(validation_error(format!(
                            "item {row}: embedding has {dim} values but earlier items have {expected}"
                        )));
                    }
                    Some(_) => {}
                }
            }
            None => match embedding_dim {
                Some(dim) => embedding_values.extend(std::iter::repeat_n(0.0, dim)),
                None => rows_before_first_embedding += 1,
            },
        }

        let t = timestamp
            .map(|v| epoch_seconds(&v, "timestamp", row))
            .transpose()?;
        timestamps.push(row, t);
        let p = item_popularity
            .map(|v| finite(&v, "popularity", row))
            .transpose()?;
        popularity.push(row, p);

        if !attribute_keys.is_empty() {
            for (column, key) in table.attributes.iter_mut().zip(&attribute_keys) {
                let value = match &attributes {
                    Some(a) => field(a, key)?,
                    None => None,
                };
                column.push(match value {
                    Some(v) => match finite(&v, "attribute", row) {
                        Ok(x) => x,
                        Err(_) => {
                            return Err(validation_error(format!(
                                "item {row}: attribute {:?} must be a finite number, got {}",
                                key.to_str()?,
                                type_name(&v)
                            )))
                        }
                    },
                    None => f64::NAN,
                });
            }
        }
        Ok(())
    };

    if let Ok(list) = items.cast::<PyList>() {
        for (row, item) in list.iter().enumerate() {
            add(row, item)?;
        }
    } else if let Ok(tuple) = items.cast::<PyTuple>() {
        for (row, item) in tuple.iter().enumerate() {
            add(row, item)?;
        }
    } else {
        for (row, item) in items.try_iter()?.enumerate() {
            add(row, item?)?;
        }
    }

    if let Some(dim) = embedding_dim {
        // push_embedding checked every value and the length of every row.
        table.embeddings = Some(Embeddings::from_finite(dim, embedding_values));
    }
    table.timestamps = timestamps.0;
    table.popularity = popularity.0;
    table.vocabulary = features.into_vocabulary();
    table.finish().map_err(super::kernel_error)?;
    Ok((table, scores))
}

#[cfg(test)]
mod tests {
    use super::days_from_civil;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
