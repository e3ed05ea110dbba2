//! One ranking request from start to finish: filter, score every factor, combine, select the top k.

use crate::diversify::{diversify, Diversity};
use crate::error::{check_finite, check_len, KernelError, Result};
use crate::filter::{self, Filters};
use crate::novelty::{self, Seen};
use crate::scoring::{self, Factor, Normalization};
use crate::table::ItemTable;
use crate::topk::top_k;

/// The built-in factors, in the order of [`Scoring::weights`] and of explanations.
pub const FACTORS: [&str; 5] = ["relevance", "affinity", "taste", "recency", "popularity"];

/// A profile compiled against an item table's vocabulary.
#[derive(Debug, Clone, Default)]
pub struct ProfileVectors {
    /// `(feature id, weight)` pairs over the table's vocabulary; ids it does not have weigh 0.
    pub interests: Vec<(u32, f64)>,
    pub taste: Option<Vec<f32>>,
}

#[derive(Debug, Clone)]
pub struct Scoring {
    pub weights: [f64; 5],
    pub normalization: [Normalization; 5],
    pub now: f64,
    pub recency_half_life: f64,
}

/// The novelty factor: `−2^(−age/half_life)` for the candidates the user has seen (see
/// [`novelty::seen_penalties`]), not normalised, added after the extra factors.
pub struct Novelty<'a> {
    pub seen: Seen<'a>,
    pub half_life: f64,
    pub weight: f64,
}

/// A factor computed by the caller, one raw value per candidate (before filtering).
pub struct ExtraFactor {
    pub values: Vec<f64>,
    pub weight: f64,
    pub normalization: Normalization,
}

pub struct Request<'a> {
    /// Candidate rows of the table, in the caller's order.
    pub rows: &'a [u32],
    /// The caller's relevance per candidate; `None` means 0 for all.
    pub base_scores: Option<&'a [f64]>,
    pub profile: &'a ProfileVectors,
    pub scoring: &'a Scoring,
    pub extra: Vec<ExtraFactor>,
    /// Computed here, over the candidates that pass the filters only.
    pub novelty: Option<Novelty<'a>>,
    pub filters: &'a Filters,
    /// How many to return at most.
    pub k: usize,
    pub diversity: &'a Diversity,
    /// With diversity, how many of the best-scored candidates it may choose from.
    pub pool: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    /// Positions in `Request::rows`, best first.
    pub positions: Vec<u32>,
    pub scores: Vec<f64>,
    /// `contributions[f][j]`: what factor `f` (built-ins first, then the extras, then novelty
    /// when requested) added to the score of the `j`-th result.
    pub contributions: Vec<Vec<f64>>,
    /// How many candidates passed the filters.
    pub passed: usize,
}

fn validate(table: &ItemTable, request: &Request<'_>) -> Result<()> {
    let n = request.rows.len();
    if let Some(&bad) = request.rows.iter().find(|&&r| r as usize >= table.len()) {
        return Err(KernelError::OutOfRange {
            what: "candidate rows",
            index: bad as usize,
            len: table.len(),
        });
    }
    if let Some(base) = request.base_scores {
        check_len("base scores", n, base.len())?;
        check_finite("base scores", base)?;
    }
    for extra in &request.extra {
        check_len("custom factor values", n, extra.values.len())?;
        check_finite("custom factor values", &extra.values)?;
    }
    let s = request.scoring;
    if !s.now.is_finite() {
        return Err(KernelError::Invalid("now must be a finite time".into()));
    }
    if !(s.recency_half_life.is_finite() && s.recency_half_life > 0.0) {
        return Err(KernelError::Invalid(format!(
            "recency_half_life must be a positive number of seconds, got {}",
            s.recency_half_life
        )));
    }
    check_finite("weights", &s.weights)?;
    if let Some(index) = request
        .profile
        .interests
        .iter()
        .position(|(_, w)| !w.is_finite())
    {
        return Err(KernelError::NotFinite {
            what: "profile interests",
            index,
        });
    }
    Ok(())
}

/// Ranks the candidates of `request` against `table`.
pub fn rank(table: &ItemTable, request: Request<'_>) -> Result<Ranking> {
    validate(table, &request)?;
    let filters = request.filters.clone().normalized(table)?;
    let kept = filter::apply(table, request.rows, &filters);
    let rows: Vec<u32> = kept.iter().map(|&p| request.rows[p as usize]).collect();
    let n = rows.len();
    let s = request.scoring;
    let missing = || vec![f64::NAN; n];

    // A factor with weight 0 is not computed at all; it contributes 0 to every candidate.
    let mut factors: Vec<Factor> = Vec::with_capacity(FACTORS.len() + request.extra.len());
    for (f, &weight) in s.weights.iter().enumerate() {
        let values = if weight == 0.0 {
            Vec::new()
        } else {
            match f {
                0 => match request.base_scores {
                    Some(base) => kept.iter().map(|&p| base[p as usize]).collect(),
                    None => vec![0.0; n],
                },
                1 => scoring::affinity(table, &rows, &request.profile.interests),
                2 => match (&table.embeddings, &request.profile.taste) {
                    (Some(e), Some(t)) => scoring::taste(e, &rows, t)?,
                    _ => missing(),
                },
                3 => match &table.timestamps {
                    Some(ts) => scoring::recency(ts, &rows, s.now, s.recency_half_life),
                    None => missing(),
                },
                _ => match &table.log_popularity {
                    Some(p) => rows.iter().map(|&r| p[r as usize]).collect(),
                    None => missing(),
                },
            }
        };
        factors.push(Factor {
            values,
            weight,
            normalization: s.normalization[f],
        });
    }
    for extra in request.extra {
        let values = if extra.weight == 0.0 {
            Vec::new()
        } else {
            kept.iter().map(|&p| extra.values[p as usize]).collect()
        };
        factors.push(Factor {
            values,
            weight: extra.weight,
            normalization: extra.normalization,
        });
    }

    if let Some(novelty) = &request.novelty {
        let values = if novelty.weight == 0.0 {
            Vec::new()
        } else {
            novelty::seen_penalties(&novelty.seen, Some(&rows), 0, s.now, novelty.half_life)?
        };
        factors.push(Factor {
            values,
            weight: novelty.weight,
            normalization: Normalization::None,
        });
    }
    let scores = scoring::combine(&mut factors, n)?;
    let best = match request.diversity {
        Diversity::None => top_k(&scores, None, request.k),
        how => {
            let pool = top_k(&scores, None, request.pool.max(request.k));
            let pool_rows: Vec<u32> = pool.iter().map(|&i| rows[i as usize]).collect();
            let pool_scores: Vec<f64> = pool.iter().map(|&i| scores[i as usize]).collect();
            diversify(table, &pool_rows, &pool_scores, request.k, how)
                .into_iter()
                .map(|j| pool[j as usize])
                .collect()
        }
    };
    Ok(Ranking {
        positions: best.iter().map(|&i| kept[i as usize]).collect(),
        scores: best.iter().map(|&i| scores[i as usize]).collect(),
        contributions: factors
            .iter()
            .map(|f| {
                best.iter()
                    .map(|&i| f.values.get(i as usize).copied().unwrap_or(0.0))
                    .collect()
            })
            .collect(),
        passed: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Embeddings, ItemKey};

    fn table() -> ItemTable {
        let mut t = ItemTable::default();
        let a = t.vocabulary.intern("genre:a");
        let b = t.vocabulary.intern("genre:b");
        for (i, f) in [a, b, a, b].into_iter().enumerate() {
            t.ids.push(ItemKey::Int(i as i64));
            t.features.push_row([(f, 1.0)]);
        }
        t.embeddings =
            Some(Embeddings::new(2, vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]).unwrap());
        t.timestamps = Some(vec![0.0, 100.0, f64::NAN, 50.0]);
        t.popularity = Some(vec![1.0, 10.0, 100.0, 0.0]);
        t.finish().unwrap();
        t
    }

    fn scoring(weights: [f64; 5]) -> Scoring {
        Scoring {
            weights,
            normalization: [Normalization::MinMax; 5],
            now: 100.0,
            recency_half_life: 50.0,
        }
    }

    #[test]
    fn affinity_orders_by_interest() {
        let t = table();
        let profile = ProfileVectors {
            interests: vec![(1, 1.0)],
            taste: None,
        };
        let r = rank(
            &t,
            Request {
                rows: &[0, 1, 2, 3],
                base_scores: None,
                profile: &profile,
                scoring: &scoring([0.0, 1.0, 0.0, 0.0, 0.0]),
                extra: vec![],
                novelty: None,
                filters: &Filters::default(),
                k: 2,
                diversity: &Diversity::None,
                pool: 0,
            },
        )
        .unwrap();
        assert_eq!(r.positions, vec![1, 3]);
        assert_eq!(r.scores, vec![1.0, 1.0]);
        assert_eq!(r.passed, 4);
    }

    #[test]
    fn contributions_sum_to_scores_and_filters_apply() {
        let t = table();
        let profile = ProfileVectors {
            interests: vec![(0, 1.0)],
            taste: Some(vec![1.0, 0.0]),
        };
        let filters = Filters {
            excluded_rows: vec![0],
            ..Default::default()
        };
        let r = rank(
            &t,
            Request {
                rows: &[3, 2, 1, 0],
                base_scores: Some(&[0.5, 0.1, 0.2, 9.0]),
                profile: &profile,
                scoring: &scoring([1.0, 1.0, 1.0, 1.0, 1.0]),
                extra: vec![ExtraFactor {
                    values: vec![0.0, 1.0, 2.0, 3.0],
                    weight: 0.5,
                    normalization: Normalization::None,
                }],
                novelty: None,
                filters: &filters,
                k: 10,
                diversity: &Diversity::None,
                pool: 0,
            },
        )
        .unwrap();
        assert_eq!(r.passed, 3);
        assert!(
            !r.positions.contains(&3),
            "row 0 is at position 3 and was excluded"
        );
        for (j, score) in r.scores.iter().enumerate() {
            let sum: f64 = r.contributions.iter().map(|c| c[j]).sum();
            assert!((sum - score).abs() < 1e-12);
        }
        assert_eq!(r.contributions.len(), 6);
    }

    #[test]
    fn novelty_penalises_seen_candidates_that_pass_the_filters() {
        let t = table();
        let profile = ProfileVectors::default();
        let filters = Filters {
            excluded_rows: vec![2],
            ..Default::default()
        }
        .normalized(&t)
        .unwrap();
        let r = rank(
            &t,
            Request {
                rows: &[0, 1, 2, 3],
                base_scores: Some(&[1.0, 0.9, 0.8, 0.7]),
                profile: &profile,
                scoring: &scoring([1.0, 0.0, 0.0, 0.0, 0.0]),
                extra: vec![],
                novelty: Some(Novelty {
                    seen: Seen {
                        rows: &[0, 2],
                        times: &[100.0, 100.0],
                    },
                    half_life: 50.0,
                    weight: 2.0,
                }),
                filters: &filters,
                k: 10,
                diversity: &Diversity::None,
                pool: 0,
            },
        )
        .unwrap();
        // Row 0 (seen just now) loses 2 of its relevance 1: last. Row 2 was filtered out.
        assert_eq!(r.positions, vec![1, 3, 0]);
        assert_eq!(r.contributions.len(), 6);
        assert_eq!(r.contributions[5], vec![0.0, 0.0, -2.0]);
        let bad = rank(
            &t,
            Request {
                rows: &[0],
                base_scores: None,
                profile: &profile,
                scoring: &scoring([1.0; 5]),
                extra: vec![],
                novelty: Some(Novelty {
                    seen: Seen {
                        rows: &[1, 0],
                        times: &[0.0, 0.0],
                    },
                    half_life: 1.0,
                    weight: 1.0,
                }),
                filters: &Filters::default(),
                k: 1,
                diversity: &Diversity::None,
                pool: 0,
            },
        );
        assert!(bad.is_err(), "seen rows out of order");
    }

    #[test]
    fn bad_requests_are_errors() {
        let t = table();
        let profile = ProfileVectors::default();
        let s = scoring([1.0; 5]);
        let f = Filters::default();
        let req = |rows: &'static [u32], base: Option<&'static [f64]>| Request {
            rows,
            base_scores: base,
            profile: &profile,
            scoring: &s,
            extra: vec![],
            novelty: None,
            filters: &f,
            k: 1,
            diversity: &Diversity::None,
            pool: 0,
        };
        assert!(rank(&t, req(&[9], None)).is_err());
        assert!(rank(&t, req(&[0], Some(&[f64::NAN]))).is_err());
        assert!(rank(&t, req(&[0, 1], Some(&[1.0]))).is_err());
        let bad_now = Scoring {
            now: f64::NAN,
            ..s.clone()
        };
        assert!(rank(
            &t,
            Request {
                scoring: &bad_now,
                ..req(&[0], None)
            }
        )
        .is_err());
    }
}
