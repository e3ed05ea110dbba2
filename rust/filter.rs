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

/// Every rule is optional; an empty `Filters` keeps every candidate. Feature id lists must be
/// sorted (they are searched by bisection).
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

fn contains(sorted: &[u32], x: u32) -> bool {
    sorted.binary_search(&x).is_ok()
}

/// Whether the item at `row` passes every rule.
pub fn passes(table: &ItemTable, row: u32, filters: &Filters) -> bool {
    if contains(&filters.excluded_rows, row) {
        return false;
    }
    let (features, _) = table.features.row(row as usize);
    if features.iter().any(|&f| contains(&filters.blocked, f)) {
        return false;
    }
    if !filters.required_all.iter().all(|r| features.contains(r)) {
        return false;
    }
    if !filters.required_any.is_empty()
        && !features.iter().any(|&f| contains(&filters.required_any, f))
    {
        return false;
    }
    filters.ranges.iter().all(|range| {
        let v = table.attributes[range.column][row as usize];
        v >= range.low && v <= range.high
    })
}

/// The candidates (rows) that pass every rule, in their given order.
pub fn apply(table: &ItemTable, rows: &[u32], filters: &Filters) -> Vec<u32> {
    if filters.is_empty() {
        return rows.to_vec();
    }
    rows.iter()
        .copied()
        .filter(|&r| passes(table, r, filters))
        .collect()
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
        let f = |filters: Filters| apply(&t, &all, &filters.normalized(&t).unwrap());
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
