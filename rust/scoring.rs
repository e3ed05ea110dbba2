//! Multi-factor scoring. Each factor is a column of raw values over the candidates (NaN where an
//! item lacks what the factor needs), normalised across the candidates, then weighted and summed.

use crate::error::{KernelError, Result};
use crate::parallel;
use crate::table::{dot_wide, norm, Embeddings, ItemTable};

/// How a factor's raw values are put on a common scale before weighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// Raw values as they are.
    None,
    /// `(x − min)/(max − min)`, so values lie in [0, 1]; a constant column becomes 0.
    MinMax,
    /// `(x − mean)/std` (population std); a constant column becomes 0.
    ZScore,
}

impl Normalization {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "none" => Ok(Self::None),
            "minmax" | "min-max" | "min_max" => Ok(Self::MinMax),
            "zscore" | "z-score" | "z_score" => Ok(Self::ZScore),
            other => Err(KernelError::Invalid(format!(
                "unknown normalization {other:?}; expected 'none', 'minmax' or 'zscore'"
            ))),
        }
    }
}

/// Spreads narrower than this, relative to the values' magnitude, are rounding noise: such a
/// column counts as constant rather than having its noise stretched to [0, 1].
const RELATIVE_NOISE: f64 = 1e-12;

fn is_spread(spread: f64, magnitude: f64) -> bool {
    spread.is_finite() && spread > RELATIVE_NOISE * magnitude.max(1.0)
}

/// Smallest and largest value, NaN left out (`(+inf, −inf)` when every value is NaN), and
/// whether any value is infinite (then a bound is). One branch-free pass in four lanes, which
/// the compiler turns into SIMD min/max: `x < lo` is false for NaN, so NaN never replaces a
/// bound.
fn min_max(values: &[f64]) -> (f64, f64, bool) {
    const LANES: usize = 4;
    let mut lo = [f64::INFINITY; LANES];
    let mut hi = [f64::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for j in 0..LANES {
            let v = chunk[j];
            lo[j] = if v < lo[j] { v } else { lo[j] };
            hi[j] = if v > hi[j] { v } else { hi[j] };
        }
    }
    for &v in tail {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
    }
    let lo = lo
        .iter()
        .copied()
        .fold(f64::INFINITY, |a, b| if b < a { b } else { a });
    let hi = hi
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, |a, b| if b > a { b } else { a });
    (lo, hi, lo == f64::NEG_INFINITY || hi == f64::INFINITY)
}

/// `(shift, scale)` such that `(x − shift)·scale` normalises `values` by `method`; missing
/// values (NaN) are left out of the statistics.
fn shift_scale(values: &[f64], method: Normalization) -> (f64, f64) {
    match method {
        Normalization::None => (0.0, 1.0),
        Normalization::MinMax => {
            let (lo, hi, _) = min_max(values);
            min_max_scale(lo, hi)
        }
        Normalization::ZScore => {
            let present = || values.iter().copied().filter(|v| !v.is_nan());
            let (n, sum) = present().fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
            if n == 0 {
                (0.0, 0.0)
            } else {
                let mean = sum / n as f64;
                let var = present().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
                let std = var.sqrt();
                if is_spread(std, mean.abs()) {
                    (mean, 1.0 / std)
                } else {
                    (0.0, 0.0)
                }
            }
        }
    }
}

fn min_max_scale(lo: f64, hi: f64) -> (f64, f64) {
    let range = hi - lo;
    if is_spread(range, lo.abs().max(hi.abs())) {
        (lo, 1.0 / range)
    } else {
        (0.0, 0.0)
    }
}

/// A raw value put on the factor's scale: missing (NaN) becomes 0.
#[inline(always)]
fn scaled(v: f64, shift: f64, scale: f64) -> f64 {
    let s = (v - shift) * scale;
    if v.is_nan() {
        0.0
    } else {
        s
    }
}

/// Normalises `values` in place. Missing values (NaN) are left out of the statistics and become
/// 0, so an item without, say, an embedding neither gains nor loses from the taste factor.
pub fn normalize(values: &mut [f64], method: Normalization) {
    let (shift, scale) = shift_scale(values, method);
    for v in values.iter_mut() {
        *v = scaled(*v, shift, scale);
    }
}

/// Affinity: the sparse dot product of each row's features with the profile's interests, given
/// as `(feature id, weight)` pairs (ids the table does not know weigh nothing).
///
/// Two ways to the same sums: walking each candidate's features against a dense interest
/// vector, or walking each interest's postings into a per-row accumulator. The cheaper one by
/// entries visited is taken; a profile usually names a small part of the vocabulary, so the
/// postings usually win.
pub fn affinity(table: &ItemTable, rows: &[u32], interests: &[(u32, f64)]) -> Vec<f64> {
    let posting_entries: usize = interests
        .iter()
        .map(|&(f, _)| table.postings.len_of(f))
        .sum();
    let row_entries = if table.is_empty() {
        0
    } else {
        rows.len() * table.features.ids.len() / table.len()
    };
    let mut out = vec![0.0; rows.len()];
    if posting_entries < row_entries {
        let mut by_row = vec![0.0; table.len()];
        for &(f, weight) in interests {
            let (posting_rows, posting_weights) = table.postings.feature(f);
            for (&r, &w) in posting_rows.iter().zip(posting_weights) {
                by_row[r as usize] += weight * w as f64;
            }
        }
        for (o, &r) in out.iter_mut().zip(rows) {
            *o = by_row[r as usize];
        }
    } else {
        let mut dense = vec![0.0; table.vocabulary.len()];
        for &(f, weight) in interests {
            if let Some(slot) = dense.get_mut(f as usize) {
                *slot += weight;
            }
        }
        parallel::fill(&mut out, |i| {
            let (ids, weights) = table.features.row(rows[i] as usize);
            ids.iter()
                .zip(weights)
                .map(|(&f, &w)| dense[f as usize] * w as f64)
                .sum()
        });
    }
    out
}

/// Taste: the cosine similarity of each row's embedding with the profile's taste vector. Rows
/// without an embedding (a zero row) are missing (NaN); a zero taste vector makes all missing.
pub fn taste(embeddings: &Embeddings, rows: &[u32], taste: &[f32]) -> Result<Vec<f64>> {
    if taste.len() != embeddings.dim {
        return Err(KernelError::Invalid(format!(
            "the profile's taste vector has {} dimensions but the items' embeddings have {}",
            taste.len(),
            embeddings.dim
        )));
    }
    if let Some(index) = taste.iter().position(|v| !v.is_finite()) {
        return Err(KernelError::NotFinite {
            what: "taste vector",
            index,
        });
    }
    let taste_norm = norm(taste);
    let mut out = vec![f64::NAN; rows.len()];
    if taste_norm == 0.0 {
        return Ok(out);
    }
    let taste: Vec<f64> = taste.iter().map(|&x| x as f64).collect();
    parallel::fill_chunks(&mut out, |start, chunk| {
        cosines(
            embeddings,
            &rows[start..start + chunk.len()],
            &taste,
            taste_norm,
            chunk,
        )
    });
    Ok(out)
}

/// `out[i]`: the cosine of row `rows[i]` with `taste` (widened, of norm `taste_norm`), NaN for
/// a row without an embedding. On x86-64 with AVX, the same loop compiled for 256-bit
/// registers (the results are the same to the bit: see [`crate::table::dot_wide`]).
fn cosines(e: &Embeddings, rows: &[u32], taste: &[f64], taste_norm: f64, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX, checked just above.
            return unsafe { cosines_avx(e, rows, taste, taste_norm, out) };
        }
    }
    cosines_portable(e, rows, taste, taste_norm, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn cosines_avx(e: &Embeddings, rows: &[u32], taste: &[f64], taste_norm: f64, out: &mut [f64]) {
    cosines_portable(e, rows, taste, taste_norm, out)
}

#[inline(always)]
fn cosines_portable(e: &Embeddings, rows: &[u32], taste: &[f64], taste_norm: f64, out: &mut [f64]) {
    for (o, &row) in out.iter_mut().zip(rows) {
        let row = row as usize;
        let row_norm = e.norms[row];
        *o = if row_norm == 0.0 {
            f64::NAN
        } else {
            dot_wide(e.row(row), taste) / (row_norm * taste_norm)
        };
    }
}

/// Recency: `2^(−age/half_life)` of each row's timestamp against `now`; items from the future
/// count as new; a missing timestamp is missing.
pub fn recency(timestamps: &[f64], rows: &[u32], now: f64, half_life: f64) -> Vec<f64> {
    rows.iter()
        .map(|&r| {
            let t = timestamps[r as usize];
            if t.is_nan() {
                f64::NAN
            } else {
                crate::decay::decay_factor(now - t, half_life)
            }
        })
        .collect()
}

/// Popularity as scored: `ln(1 + max(p, 0))`, so a few blockbusters do not swamp the rest. A
/// table computes it once per item when built.
pub fn log_popularity(p: f64) -> f64 {
    if p.is_nan() {
        f64::NAN
    } else {
        p.max(0.0).ln_1p()
    }
}

/// One factor ready to combine: raw values over the candidates, its weight and its scaling.
pub struct Factor {
    pub values: Vec<f64>,
    pub weight: f64,
    pub normalization: Normalization,
}

/// Normalises every factor in place into its weighted contribution and returns the sum per
/// candidate. Afterwards `factors[f].values[i]` is the contribution of factor `f` to candidate
/// `i`, and the contributions of a candidate sum to its score. A factor with weight 0 may leave
/// `values` empty: it is skipped and contributes 0.
pub fn combine(factors: &mut [Factor], n: usize) -> Result<Vec<f64>> {
    let mut scores = vec![0.0; n];
    for factor in factors.iter_mut() {
        if factor.weight == 0.0 {
            factor.values.clear();
            continue;
        }
        if factor.values.len() != n {
            return Err(KernelError::LengthMismatch {
                what: "factor values",
                expected: n,
                got: factor.values.len(),
            });
        }
        if !factor.weight.is_finite() {
            return Err(KernelError::Invalid(format!(
                "factor weights must be finite, got {}",
                factor.weight
            )));
        }
        let (lo, hi, infinite) = min_max(&factor.values);
        if infinite {
            return Err(KernelError::Invalid(
                "a factor produced an infinite value".into(),
            ));
        }
        let (shift, scale) = match factor.normalization {
            Normalization::MinMax => min_max_scale(lo, hi),
            other => shift_scale(&factor.values, other),
        };
        // One pass: scale, weigh, add. The same operations in the same order as normalising
        // first and weighing after, so the results are bit for bit those of the two passes.
        let weight = factor.weight;
        for (score, v) in scores.iter_mut().zip(factor.values.iter_mut()) {
            *v = scaled(*v, shift, scale) * weight;
            *score += *v;
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_and_zscore() {
        let mut v = vec![1.0, 3.0, f64::NAN, 2.0];
        normalize(&mut v, Normalization::MinMax);
        assert_eq!(v, vec![0.0, 1.0, 0.0, 0.5]);
        let mut v = vec![1.0, 3.0];
        normalize(&mut v, Normalization::ZScore);
        assert_eq!(v, vec![-1.0, 1.0]);
        let mut v = vec![2.0, 2.0];
        normalize(&mut v, Normalization::MinMax);
        assert_eq!(v, vec![0.0, 0.0]);
        let mut v = vec![f64::NAN];
        normalize(&mut v, Normalization::ZScore);
        assert_eq!(v, vec![0.0]);
    }

    #[test]
    fn affinity_is_a_sparse_dot_either_way() {
        use crate::table::ItemKey;
        let mut t = ItemTable::default();
        for name in ["a", "b", "c", "d"] {
            t.vocabulary.intern(name);
        }
        for (i, row) in [vec![(0, 1.0), (2, 0.5)], vec![(1, 1.0)], vec![(3, 1.0)]]
            .into_iter()
            .enumerate()
        {
            t.ids.push(ItemKey::Int(i as i64));
            t.features.push_row(row);
        }
        t.finish().unwrap();
        // Few interests: the postings path.
        assert_eq!(
            affinity(&t, &[2, 0, 1], &[(0, 2.0), (9, 5.0)]),
            vec![0.0, 2.0, 0.0]
        );
        // Many interests over few rows: the row path. Both give the same sums.
        let interests = [(0, 2.0), (1, -1.0), (2, 4.0), (3, 0.5)];
        assert_eq!(affinity(&t, &[0], &interests), vec![4.0]);
        assert_eq!(affinity(&t, &[2, 0, 1], &interests), vec![0.5, 4.0, -1.0]);
    }

    #[test]
    fn taste_is_cosine_and_handles_missing() {
        let e = Embeddings::new(2, vec![1.0, 0.0, 0.0, 0.0, 1.0, 1.0]).unwrap();
        let got = taste(&e, &[0, 1, 2], &[2.0, 0.0]).unwrap();
        assert!((got[0] - 1.0).abs() < 1e-6);
        assert!(got[1].is_nan());
        assert!((got[2] - 0.5f64.sqrt()).abs() < 1e-6);
        assert!(taste(&e, &[0], &[1.0]).is_err());
        assert!(taste(&e, &[0], &[0.0, 0.0]).unwrap()[0].is_nan());
    }

    #[test]
    fn recency_and_popularity() {
        let r = recency(&[0.0, 10.0, f64::NAN, 30.0], &[0, 1, 2, 3], 20.0, 10.0);
        assert_eq!(r[0], 0.25);
        assert_eq!(r[1], 0.5);
        assert!(r[2].is_nan());
        assert_eq!(r[3], 1.0);
        assert_eq!(log_popularity(0.0), 0.0);
        assert!((log_popularity((1.0f64).exp() - 1.0) - 1.0).abs() < 1e-12);
        assert_eq!(log_popularity(-3.0), 0.0);
        assert!(log_popularity(f64::NAN).is_nan());
    }

    #[test]
    fn combine_returns_contributions_that_sum_to_scores() {
        let mut factors = vec![
            Factor {
                values: vec![0.0, 10.0],
                weight: 2.0,
                normalization: Normalization::MinMax,
            },
            Factor {
                values: vec![1.0, 1.0],
                weight: 1.0,
                normalization: Normalization::None,
            },
        ];
        let scores = combine(&mut factors, 2).unwrap();
        assert_eq!(scores, vec![1.0, 3.0]);
        assert_eq!(factors[0].values, vec![0.0, 2.0]);
        let mut bad = vec![Factor {
            values: vec![1.0],
            weight: f64::NAN,
            normalization: Normalization::None,
        }];
        assert!(combine(&mut bad, 1).is_err());
    }
}
