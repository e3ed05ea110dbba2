//! Items as columns: the form every kernel reads. A `Catalog` keeps one for its lifetime; a
//! `rank_items` call over Python objects builds a short-lived one.

use crate::error::{check_len, KernelError, Result};
use rustc_hash::FxHashMap;

/// An item id as the caller gave it: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ItemKey {
    Int(i64),
    Str(String),
}

impl std::fmt::Display for ItemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemKey::Int(i) => write!(f, "{i}"),
            ItemKey::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Item id → row, searchable by `i64` or `&str` without building an [`ItemKey`].
#[derive(Debug, Clone, Default)]
pub struct IdIndex {
    ints: FxHashMap<i64, u32>,
    strs: FxHashMap<Box<str>, u32>,
    /// When the integer ids are dense (they span at most [`DENSE_SPAN`] times their number),
    /// `dense[id − dense_base]` is the row of `id` (`u32::MAX` for none): an array read instead
    /// of hashing, for the common catalog of ids 0..n or 1..=n.
    dense: Vec<u32>,
    dense_base: i64,
}

/// How sparse integer ids may be, at most, for [`IdIndex`] to keep a dense array of them.
const DENSE_SPAN: usize = 4;

impl IdIndex {
    /// Adds `key` at `row`; returns false (and changes nothing) when the key is already there.
    fn insert(&mut self, key: &ItemKey, row: u32) -> bool {
        use std::collections::hash_map::Entry;
        match key {
            ItemKey::Int(i) => match self.ints.entry(*i) {
                Entry::Occupied(_) => false,
                Entry::Vacant(slot) => {
                    slot.insert(row);
                    true
                }
            },
            ItemKey::Str(s) => match self.strs.entry(s.as_str().into()) {
                Entry::Occupied(_) => false,
                Entry::Vacant(slot) => {
                    slot.insert(row);
                    true
                }
            },
        }
    }

    pub fn len(&self) -> usize {
        self.ints.len() + self.strs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn int(&self, id: i64) -> Option<u32> {
        if !self.dense.is_empty() {
            let slot = (id as u64).wrapping_sub(self.dense_base as u64);
            let slot = usize::try_from(slot).unwrap_or(usize::MAX);
            return match self.dense.get(slot) {
                Some(&row) if row != u32::MAX => Some(row),
                _ => None,
            };
        }
        self.ints.get(&id).copied()
    }

    /// Builds the dense array when the integer ids allow it (see [`IdIndex::dense`]).
    fn densify(&mut self) {
        self.dense = Vec::new();
        let (Some(&lo), Some(&hi)) = (self.ints.keys().min(), self.ints.keys().max()) else {
            return;
        };
        let span = (hi as i128 - lo as i128) as u128 + 1;
        if span > (DENSE_SPAN * self.ints.len()) as u128 {
            return;
        }
        self.dense = vec![u32::MAX; span as usize];
        self.dense_base = lo;
        for (&id, &row) in &self.ints {
            self.dense[(id - lo) as usize] = row;
        }
    }

    pub fn str(&self, id: &str) -> Option<u32> {
        self.strs.get(id).copied()
    }

    pub fn get(&self, key: &ItemKey) -> Option<u32> {
        match key {
            ItemKey::Int(i) => self.int(*i),
            ItemKey::Str(s) => self.str(s),
        }
    }

    fn clear(&mut self) {
        self.ints.clear();
        self.strs.clear();
        self.dense.clear();
    }
}

/// Feature names interned to dense ids.
#[derive(Debug, Default, Clone)]
pub struct Vocabulary {
    names: Vec<String>,
    index: FxHashMap<String, u32>,
}

impl Vocabulary {
    pub fn from_names(names: Vec<String>) -> Result<Self> {
        let mut index = FxHashMap::default();
        index.reserve(names.len());
        for (i, name) in names.iter().enumerate() {
            if index.insert(name.clone(), i as u32).is_some() {
                return Err(KernelError::Invalid(format!(
                    "duplicate feature name {name:?}"
                )));
            }
        }
        Ok(Self { names, index })
    }

    /// The id of `name`, adding it when new.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), id);
        id
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Weighted features per row in compressed sparse row form.
#[derive(Debug, Clone)]
pub struct FeatureMatrix {
    pub indptr: Vec<usize>,
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Default for FeatureMatrix {
    fn default() -> Self {
        Self {
            indptr: vec![0],
            ids: Vec::new(),
            weights: Vec::new(),
        }
    }
}

impl FeatureMatrix {
    pub fn row(&self, row: usize) -> (&[u32], &[f32]) {
        let (start, end) = (self.indptr[row], self.indptr[row + 1]);
        (&self.ids[start..end], &self.weights[start..end])
    }

    pub fn push_row(&mut self, features: impl IntoIterator<Item = (u32, f32)>) {
        for (id, weight) in features {
            self.ids.push(id);
            self.weights.push(weight);
        }
        self.indptr.push(self.ids.len());
    }

    pub fn rows(&self) -> usize {
        self.indptr.len() - 1
    }
}

/// The transpose of a [`FeatureMatrix`]: for each feature id, the rows that carry it (sorted) and
/// their weights. Lets a profile's few interests, or a filter's few features, visit only the rows
/// that matter instead of every feature of every candidate.
#[derive(Debug, Clone, Default)]
pub struct Postings {
    pub indptr: Vec<usize>,
    pub rows: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Postings {
    pub fn of(features: &FeatureMatrix, n_features: usize) -> Self {
        let mut indptr = vec![0usize; n_features + 1];
        for &f in &features.ids {
            indptr[f as usize + 1] += 1;
        }
        for i in 0..n_features {
            indptr[i + 1] += indptr[i];
        }
        let mut next = indptr.clone();
        let mut rows = vec![0u32; features.ids.len()];
        let mut weights = vec![0f32; features.ids.len()];
        for row in 0..features.rows() {
            let (ids, ws) = features.row(row);
            for (&f, &w) in ids.iter().zip(ws) {
                let slot = &mut next[f as usize];
                rows[*slot] = row as u32;
                weights[*slot] = w;
                *slot += 1;
            }
        }
        Self {
            indptr,
            rows,
            weights,
        }
    }

    /// The rows carrying feature `f` and their weights (empty for an unknown id).
    pub fn feature(&self, f: u32) -> (&[u32], &[f32]) {
        match (self.indptr.get(f as usize), self.indptr.get(f as usize + 1)) {
            (Some(&start), Some(&end)) => (&self.rows[start..end], &self.weights[start..end]),
            _ => (&[], &[]),
        }
    }

    pub fn len_of(&self, f: u32) -> usize {
        self.feature(f).0.len()
    }
}

/// Row-major float32 embeddings, with each row's norm precomputed. A row of zeros means "no
/// embedding" and scores as missing.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub dim: usize,
    pub values: Vec<f32>,
    pub norms: Vec<f64>,
}

impl Embeddings {
    pub fn new(dim: usize, values: Vec<f32>) -> Result<Self> {
        if dim == 0 {
            return Err(KernelError::Invalid(
                "embeddings must have at least one column".into(),
            ));
        }
        if values.len() % dim != 0 {
            return Err(KernelError::Invalid(format!(
                "embedding buffer of {} values is not a whole number of rows of {dim}",
                values.len()
            )));
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(KernelError::NotFinite {
                what: "embeddings",
                index,
            });
        }
        Ok(Self::from_finite(dim, values))
    }

    /// Like [`Embeddings::new`] for values the caller has already checked: a whole number of
    /// rows of `dim > 0` finite values.
    pub fn from_finite(dim: usize, values: Vec<f32>) -> Self {
        debug_assert!(dim > 0 && values.len() % dim == 0);
        let norms = values.chunks_exact(dim).map(norm).collect();
        Self { dim, values, norms }
    }

    pub fn row(&self, row: usize) -> &[f32] {
        &self.values[row * self.dim..(row + 1) * self.dim]
    }

    pub fn rows(&self) -> usize {
        self.norms.len()
    }
}

/// Dot product accumulated in f64: each f32 product is exact in f64, so results do not depend
/// on summation order beyond f64 rounding.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    // Eight independent accumulators let the compiler use SIMD lanes; the fixed order keeps the
    // result deterministic.
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for j in 0..LANES {
            acc[j] += ca[j] as f64 * cb[j] as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `dot(a, b)` with `b` already widened to f64 (a profile's taste vector, widened once per
/// request instead of once per candidate): the same products summed in the same order, so the
/// same result to the bit. Always inlined, so that a loop compiled for the CPU's features
/// (see `scoring::taste`) compiles this with them.
#[inline(always)]
pub fn dot_wide(a: &[f32], b: &[f64]) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(&x, &y)| x as f64 * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for j in 0..LANES {
            acc[j] += ca[j] as f64 * cb[j];
        }
    }
    acc.iter().sum::<f64>() + tail
}

pub fn norm(v: &[f32]) -> f64 {
    dot(v, v).sqrt()
}

/// Every column of a set of items. Optional columns are `None` when no item has them; within a
/// column, a missing value is NaN (or a zero embedding row).
#[derive(Debug, Clone, Default)]
pub struct ItemTable {
    pub ids: Vec<ItemKey>,
    pub index: IdIndex,
    pub vocabulary: Vocabulary,
    pub features: FeatureMatrix,
    /// Feature → rows, computed by [`ItemTable::finish`].
    pub postings: Postings,
    pub embeddings: Option<Embeddings>,
    pub timestamps: Option<Vec<f64>>,
    pub popularity: Option<Vec<f64>>,
    /// `ln(1 + popularity)`, computed by [`ItemTable::finish`].
    pub log_popularity: Option<Vec<f64>>,
    pub attribute_names: Vec<String>,
    pub attributes: Vec<Vec<f64>>,
}

impl ItemTable {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Builds the id index, failing on the first duplicate id, and checks that every column has
    /// one value per item.
    pub fn finish(&mut self) -> Result<()> {
        let n = self.ids.len();
        if n > u32::MAX as usize {
            return Err(KernelError::Invalid(format!("too many items: {n}")));
        }
        self.index.clear();
        for (row, key) in self.ids.iter().enumerate() {
            if !self.index.insert(key, row as u32) {
                return Err(KernelError::Invalid(format!("duplicate item id {key}")));
            }
        }
        self.index.densify();
        check_len("features", n, self.features.rows())?;
        if let Some(&bad) = self
            .features
            .ids
            .iter()
            .find(|&&f| f as usize >= self.vocabulary.len())
        {
            return Err(KernelError::OutOfRange {
                what: "feature ids",
                index: bad as usize,
                len: self.vocabulary.len(),
            });
        }
        if let Some(index) = self.features.weights.iter().position(|w| !w.is_finite()) {
            return Err(KernelError::NotFinite {
                what: "feature weights",
                index,
            });
        }
        if let Some(e) = &self.embeddings {
            check_len("embeddings", n, e.rows())?;
        }
        for (what, column) in [
            ("timestamps", &self.timestamps),
            ("popularity", &self.popularity),
        ] {
            if let Some(column) = column {
                check_len(what, n, column.len())?;
                if let Some(index) = column.iter().position(|v| v.is_infinite()) {
                    return Err(KernelError::NotFinite { what, index });
                }
            }
        }
        self.postings = Postings::of(&self.features, self.vocabulary.len());
        self.log_popularity = self.popularity.as_ref().map(|p| {
            p.iter()
                .map(|&v| crate::scoring::log_popularity(v))
                .collect()
        });
        check_len(
            "attribute names",
            self.attributes.len(),
            self.attribute_names.len(),
        )?;
        for column in &self.attributes {
            check_len("attributes", n, column.len())?;
        }
        Ok(())
    }

    pub fn row_of(&self, key: &ItemKey) -> Option<u32> {
        self.index.get(key)
    }

    pub fn attribute(&self, name: &str) -> Option<&[f64]> {
        let i = self.attribute_names.iter().position(|n| n == name)?;
        Some(&self.attributes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_interns_once() {
        let mut v = Vocabulary::default();
        assert_eq!(v.intern("a"), 0);
        assert_eq!(v.intern("b"), 1);
        assert_eq!(v.intern("a"), 0);
        assert_eq!(v.get("b"), Some(1));
        assert_eq!(v.name(1), "b");
        assert!(Vocabulary::from_names(vec!["x".into(), "x".into()]).is_err());
    }

    #[test]
    fn finish_rejects_duplicates_and_ragged_columns() {
        let mut t = ItemTable {
            ids: vec![ItemKey::Int(1), ItemKey::Int(1)],
            ..Default::default()
        };
        t.features.push_row([]);
        t.features.push_row([]);
        assert!(t
            .finish()
            .unwrap_err()
            .to_string()
            .contains("duplicate item id 1"));
        t.ids[1] = ItemKey::Str("x".into());
        t.finish().unwrap();
        assert_eq!(t.row_of(&ItemKey::Str("x".into())), Some(1));
        t.timestamps = Some(vec![1.0]);
        assert!(t.finish().is_err());
    }

    #[test]
    fn integer_ids_dense_or_not_find_their_rows() {
        for ids in [
            vec![0i64, 1, 2, 3],
            vec![5, 3, 4, 9],
            vec![i64::MIN, i64::MAX, 0],
            vec![-2, 7, 1_000_000],
            vec![i64::MAX - 1, i64::MAX],
            vec![i64::MIN, i64::MIN + 2],
        ] {
            let mut t = ItemTable {
                ids: ids.iter().map(|&i| ItemKey::Int(i)).collect(),
                ..Default::default()
            };
            for _ in &ids {
                t.features.push_row([]);
            }
            t.ids.push(ItemKey::Str("s".into()));
            t.features.push_row([]);
            t.finish().unwrap();
            for (row, &id) in ids.iter().enumerate() {
                assert_eq!(t.index.int(id), Some(row as u32), "{ids:?}");
            }
            for probe in [i64::MIN, i64::MIN + 1, -1, 2, 6, 8, 10, 1_000_001, i64::MAX] {
                let want = ids.iter().position(|&i| i == probe).map(|r| r as u32);
                assert_eq!(t.index.int(probe), want, "{probe} in {ids:?}");
            }
            assert_eq!(t.index.str("s"), Some(ids.len() as u32));
        }
    }

    #[test]
    fn postings_transpose_the_features() {
        let mut m = FeatureMatrix::default();
        m.push_row([(1, 0.5), (0, 1.0)]);
        m.push_row([]);
        m.push_row([(1, 2.0)]);
        let p = Postings::of(&m, 3);
        assert_eq!(p.feature(0), (&[0u32][..], &[1.0f32][..]));
        assert_eq!(p.feature(1), (&[0u32, 2][..], &[0.5f32, 2.0][..]));
        assert_eq!(p.len_of(2), 0);
        assert_eq!(p.len_of(99), 0);
    }

    #[test]
    fn dot_matches_a_plain_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..19).map(|i| (i * i) as f32 * 0.1).collect();
        let plain: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-9);
        let wide: Vec<f64> = b.iter().map(|&x| x as f64).collect();
        for len in [0, 1, 7, 8, 9, 16, 19] {
            assert_eq!(
                dot_wide(&a[..len], &wide[..len]).to_bits(),
                dot(&a[..len], &b[..len]).to_bits()
            );
        }
    }

    #[test]
    fn embeddings_check_shape_and_values() {
        assert!(Embeddings::new(3, vec![0.0; 7]).is_err());
        assert!(Embeddings::new(0, vec![]).is_err());
        assert!(Embeddings::new(1, vec![f32::NAN]).is_err());
        let e = Embeddings::new(2, vec![3.0, 4.0, 0.0, 0.0]).unwrap();
        assert_eq!(e.norms, vec![5.0, 0.0]);
    }
}
