//! Hard filters: which candidates may be shown at all.

use crate::error::{KernelError, Result};
use crate::table::ItemTable;

/// A numeric attribute must lie in `[low, high]` (inclusive); an item without the attribute fails.
#[derive(Debug, Clone)]
pub struct AttributeRange {
    pub column: usize,
    pub low: f64,
    pub high: f64,
}

/// Every rule is optional; an empty `Filters` keeps every candidate.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Drop items that carry any of these features.
    pub blocked: Vec<u32>,
    /// Keep only items that carry every one of these features.
    pub required_all: Vec<u32>,
    /// Keep only items that carry at least one of these features (when not empty).
    pub required_any: Vec<u32>,
    /// Drop these rows.
    pub excluded_rows: Vec<u32>,
    pub ranges: Vec<AttributeRange>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.blocked.is_empty()
            && self.required_all.is_empty()
            && self.required_any.is_empty()
            && self.excluded_rows.is_empty()
            && self.ranges.is_empty()
    }

    /// Sorts and deduplicates the id lists, and checks the ranges.
    pub fn normalized(mut self, table: &ItemTable) -> Result<Self> {
        for list in [
            &mut self.blocked,
            &mut self.required_all,
            &mut self.required_any,
            &mut self.excluded_rows,
        ] {
            list.sort_unstable();
            list.dedup();
        }
        for range in &self.ranges {
            if range.column >= table.attributes.len() {
                return Err(KernelError::OutOfRange {
                    what: "attribute column",
                    index: range.column,
                    len: table.attributes.len(),
                });
            }
            if range.low.is_nan() || range.high.is_nan() || range.low > range.high {
                return Err(KernelError::Invalid(format!(
                    "attribute {:?}: invalid range [{}, {}]",
                    table.attribute_names[range.column], range.low, range.high
                )));
            }
        }
        Ok(self)
    }
}

/// A set of rows as a bitmap: one load and a test per lookup.
struct RowSet(Vec<u64>);

impl RowSet {
    fn empty(rows: usize) -> Self {
        Self(vec![0; rows.div_ceil(64)])
    }

    fn of(rows: &[u32], universe: usize) -> Self {
        let mut set = Self::empty(universe);
        for &r in rows {
            set.insert(r);
        }
        set
    }

    fn insert(&mut self, row: u32) {
        if let Some(word) = self.0.get_mut(row as usize / 64) {
            *word |= 1 << (row % 64);
        }
    }

    fn contains(&self, row: u32) -> bool {
        self.0
            .get(row as usize / 64)
            .is_some_and(|w| w & (1 << (row % 64)) != 0)
    }

    fn intersect(&mut self, other: &RowSet) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a &= b;
        }
    }

    /// The rows that carry feature `f`.
    fn with_feature(table: &ItemTable, f: u32) -> Self {
        Self::of(table.postings.feature(f).0, table.len())
    }
}

/// Filters made ready for one table. The feature rules are resolved once through the table's
/// postings (feature → rows), so checking a candidate costs a few bit tests whatever its number
/// of features.
pub struct CompiledFilters<'a> {
    filters: &'a Filters,
    /// Rows that carry a blocked feature or were excluded.
    dropped: Option<RowSet>,
    /// Rows that carry every required feature and, when any are listed, one of the "any" ones.
    required: Option<RowSet>,
}

impl<'a> CompiledFilters<'a> {
    pub fn new(table: &ItemTable, filters: &'a Filters) -> Self {
        let n = table.len();
        let dropped =
            (!filters.blocked.is_empty() || !filters.excluded_rows.is_empty()).then(|| {
                let mut set = RowSet::of(&filters.excluded_rows, n);
                for &f in &filters.blocked {
                    for &r in table.postings.feature(f).0 {
                        set.insert(r);
                    }
                }
                set
            });
        let mut required: Option<RowSet> = None;
        for &f in &filters.required_all {
            let rows = RowSet::with_feature(table, f);
            match &mut required {
                Some(set) => set.intersect(&rows),
                None => required = Some(rows),
            }
        }
        if !filters.required_any.is_empty() {
            let mut any = RowSet::empty(n);
            for &f in &filters.required_any {
                for &r in table.postings.feature(f).0 {
                    any.insert(r);
                }
            }
            match &mut required {
                Some(set) => set.intersect(&any),
                None => required = Some(any),
            }
        }
        Self {
            filters,
            dropped,
            required,
        }
    }

    /// Whether the item at `row` passes every rule.
    #[inline]
    pub fn passes(&self, table: &ItemTable, row: u32) -> bool {
        if self.dropped.as_ref().is_some_and(|d| d.contains(row)) {
            return false;
        }
        if self.required.as_ref().is_some_and(|r| !r.contains(row)) {
            return false;
        }
        self.filters.ranges.iter().all(|range| {
            let v = table.attributes[range.column][row as usize];
            v >= range.low && v <= range.high
        })
    }
}

/// Why a candidate was filtered out: the first rule it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    /// Its id was excluded.
    Excluded,
    /// It carries this blocked feature.
    Blocked(u32),
    /// It lacks this required feature.
    MissingRequired(u32),
    /// It carries none of the "any" features.
    NoneOfAny,
    /// This attribute (a column index) is missing or out of its range.
    OutOfRange(usize),
}

impl Filters {
    /// The first rule that `row` breaks, or `None` if it passes. Slower than
    /// [`CompiledFilters::passes`]; meant for explaining a few items.
    pub fn exclusion(&self, table: &ItemTable, row: u32) -> Option<Exclusion> {
        if self.excluded_rows.contains(&row) {
            return Some(Exclusion::Excluded);
        }
        let (features, _) = table.features.row(row as usize);
        if let Some(&f) = features.iter().find(|f| self.blocked.contains(f)) {
            return Some(Exclusion::Blocked(f));
        }
        if let Some(&f) = self.required_all.iter().find(|f| !features.contains(f)) {
            return Some(Exclusion::MissingRequired(f));
        }
        if !self.required_any.is_empty() && !features.iter().any(|f| self.required_any.contains(f))
        {
            return Some(Exclusion::NoneOfAny);
        }
        self.ranges
            .iter()
            .find(|range| {
                let v = table.attributes[range.column][row as usize];
                !(v >= range.low && v <= range.high)
            })
            .map(|range| Exclusion::OutOfRange(range.column))
    }
}

/// The positions in `rows` of the candidates that pass every rule, in their given order.
pub fn apply(table: &ItemTable, rows: &[u32], filters: &Filters) -> Vec<u32> {
    if filters.is_empty() {
        return (0..rows.len() as u32).collect();
    }
    let compiled = CompiledFilters::new(table, filters);
    let mut kept = Vec::with_capacity(rows.len());
    for (p, &row) in rows.iter().enumerate() {
        if compiled.passes(table, row) {
            kept.push(p as u32);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::ItemKey;

    fn table() -> ItemTable {
        let mut t = ItemTable::default();
        for (i, feats) in [vec![0u32, 1], vec![1], vec![2], vec![]]
            .into_iter()
            .enumerate()
        {
            t.ids.push(ItemKey::Int(i as i64));
            t.features.push_row(feats.into_iter().map(|f| (f, 1.0)));
        }
        for name in ["a", "b", "c"] {
            t.vocabulary.intern(name);
        }
        t.attribute_names = vec!["price".into()];
        t.attributes = vec![vec![5.0, 15.0, f64::NAN, 10.0]];
        t.finish().unwrap();
        t
    }

    #[test]
    fn each_rule() {
        let t = table();
        let all = [0, 1, 2, 3];
        let f = |filters: Filters| {
            let kept = apply(&t, &all, &filters.normalized(&t).unwrap());
            kept.iter().map(|&p| all[p as usize]).collect::<Vec<u32>>()
        };
        assert_eq!(f(Filters::default()), vec![0, 1, 2, 3]);
        assert_eq!(
            f(Filters {
                blocked: vec![1],
                ..Default::default()
            }),
            vec![2, 3]
        );
        assert_eq!(
            f(Filters {
                required_all: vec![1, 0],
                ..Default::default()
            }),
            vec![0]
        );
        assert_eq!(
            f(Filters {
                required_any: vec![2, 0],
                ..Default::default()
            }),
            vec![0, 2]
        );
        assert_eq!(
            f(Filters {
                excluded_rows: vec![3, 0],
                ..Default::default()
            }),
            vec![1, 2]
        );
        let range = AttributeRange {
            column: 0,
            low: f64::NEG_INFINITY,
            high: 10.0,
        };
        assert_eq!(
            f(Filters {
                ranges: vec![range],
                ..Default::default()
            }),
            vec![0, 3]
        );
    }

    #[test]
    fn exclusions_name_the_rule() {
        let t = table();
        let filters = Filters {
            blocked: vec![2],
            required_any: vec![0, 1, 2],
            excluded_rows: vec![1],
            ranges: vec![AttributeRange {
                column: 0,
                low: 0.0,
                high: 6.0,
            }],
            ..Default::default()
        }
        .normalized(&t)
        .unwrap();
        assert_eq!(filters.exclusion(&t, 0), None);
        assert_eq!(filters.exclusion(&t, 1), Some(Exclusion::Excluded));
        assert_eq!(filters.exclusion(&t, 2), Some(Exclusion::Blocked(2)));
        assert_eq!(filters.exclusion(&t, 3), Some(Exclusion::NoneOfAny));
        let required = Filters {
            required_all: vec![0],
            ..Default::default()
        };
        assert_eq!(
            required.exclusion(&t, 1),
            Some(Exclusion::MissingRequired(0))
        );
        let range = Filters {
            ranges: vec![AttributeRange {
                column: 0,
                low: 0.0,
                high: 6.0,
            }],
            ..Default::default()
        };
        assert_eq!(range.exclusion(&t, 1), Some(Exclusion::OutOfRange(0)));
    }

    #[test]
    fn bad_ranges_are_errors() {
        let t = table();
        let bad = |range| {
            Filters {
                ranges: vec![range],
                ..Default::default()
            }
            .normalized(&t)
        };
        assert!(bad(AttributeRange {
            column: 3,
            low: 0.0,
            high: 1.0
        })
        .is_err());
        assert!(bad(AttributeRange {
            column: 0,
            low: 2.0,
            high: 1.0
        })
        .is_err());
        assert!(bad(AttributeRange {
            column: 0,
            low: f64::NAN,
            high: 1.0
        })
        .is_err());
    }
}
