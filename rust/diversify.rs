//! Diversity: reorder the best-scored candidates so that the top k are not all alike.

use crate::table::{dot, ItemTable};

/// How to diversify a ranking.
#[derive(Debug, Clone, PartialEq)]
pub enum Diversity {
    /// Keep the score order.
    None,
    /// Maximal marginal relevance (Carbonell and Goldstein, 1998): pick, one at a time, the
    /// candidate that maximises `λ·relevance − (1 − λ)·max similarity to those already picked`.
    /// Relevance is the score rescaled to [0, 1] over the pool; similarity is the cosine of the
    /// embeddings when the items have them, else the Jaccard index of their features.
    Mmr { lambda: f64 },
    /// At most `cap` results per capped feature (for example per genre). Candidates over the cap
    /// wait; if fewer than k fit, the waiting ones fill the rest in score order.
    FeatureCap { cap: usize, capped: Vec<u32> },
}

fn similarity(table: &ItemTable, a: u32, b: u32) -> f64 {
    if let Some(e) = &table.embeddings {
        let (na, nb) = (e.norms[a as usize], e.norms[b as usize]);
        if na > 0.0 && nb > 0.0 {
            return dot(e.row(a as usize), e.row(b as usize)) / (na * nb);
        }
    }
    let (fa, _) = table.features.row(a as usize);
    let (fb, _) = table.features.row(b as usize);
    if fa.is_empty() && fb.is_empty() {
        return 0.0;
    }
    let shared = fa.iter().filter(|f| fb.contains(f)).count();
    shared as f64 / (fa.len() + fb.len() - shared) as f64
}

/// Chooses `k` of the pool (rows with their scores, best first) and returns their indices in
/// the pool, in the new order.
pub fn diversify(
    table: &ItemTable,
    rows: &[u32],
    scores: &[f64],
    k: usize,
    how: &Diversity,
) -> Vec<u32> {
    let k = k.min(rows.len());
    match how {
        Diversity::None => (0..k as u32).collect(),
        Diversity::Mmr { lambda } => mmr(table, rows, scores, k, *lambda),
        Diversity::FeatureCap { cap, capped } => feature_cap(table, rows, k, *cap, capped),
    }
}

fn mmr(table: &ItemTable, rows: &[u32], scores: &[f64], k: usize, lambda: f64) -> Vec<u32> {
    let lo = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let relevance: Vec<f64> = scores.iter().map(|s| (s - lo) / span).collect();
    let mut max_similarity = vec![f64::NEG_INFINITY; rows.len()];
    let mut taken = vec![false; rows.len()];
    let mut chosen = Vec::with_capacity(k);
    for _ in 0..k {
        let mut best: Option<(usize, f64)> = None;
        for i in 0..rows.len() {
            if taken[i] {
                continue;
            }
            let penalty = if chosen.is_empty() {
                0.0
            } else {
                max_similarity[i]
            };
            let value = lambda * relevance[i] - (1.0 - lambda) * penalty;
            // Strictly greater: ties go to the better-scored (earlier) candidate.
            if best.is_none_or(|(_, b)| value > b) {
                best = Some((i, value));
            }
        }
        let Some((pick, _)) = best else { break };
        taken[pick] = true;
        chosen.push(pick as u32);
        for i in 0..rows.len() {
            if !taken[i] {
                let s = similarity(table, rows[i], rows[pick]);
                if s > max_similarity[i] {
                    max_similarity[i] = s;
                }
            }
        }
    }
    chosen
}

fn feature_cap(table: &ItemTable, rows: &[u32], k: usize, cap: usize, capped: &[u32]) -> Vec<u32> {
    let mut counts: rustc_hash::FxHashMap<u32, usize> = Default::default();
    let mut chosen = Vec::with_capacity(k);
    let mut waiting = Vec::new();
    for (i, &row) in rows.iter().enumerate() {
        if chosen.len() == k {
            break;
        }
        let (features, _) = table.features.row(row as usize);
        let limited: Vec<u32> = features
            .iter()
            .copied()
            .filter(|f| capped.contains(f))
            .collect();
        if limited
            .iter()
            .all(|f| counts.get(f).copied().unwrap_or(0) < cap)
        {
            for f in limited {
                *counts.entry(f).or_default() += 1;
            }
            chosen.push(i as u32);
        } else {
            waiting.push(i as u32);
        }
    }
    let missing = k - chosen.len();
    chosen.extend(waiting.into_iter().take(missing));
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Embeddings, ItemKey};

    fn table(features: &[&[u32]], embeddings: Option<Vec<f32>>) -> ItemTable {
        let mut t = ItemTable::default();
        for name in ["g:a", "g:b", "t:x"] {
            t.vocabulary.intern(name);
        }
        for (i, f) in features.iter().enumerate() {
            t.ids.push(ItemKey::Int(i as i64));
            t.features.push_row(f.iter().map(|&id| (id, 1.0)));
        }
        t.embeddings = embeddings.map(|v| Embeddings::new(2, v).unwrap());
        t.finish().unwrap();
        t
    }

    #[test]
    fn mmr_prefers_a_different_item_second() {
        // Items 0 and 1 point the same way; item 2 differs and scores a little lower.
        let t = table(&[&[], &[], &[]], Some(vec![1.0, 0.0, 1.0, 0.01, 0.0, 1.0]));
        let order = diversify(
            &t,
            &[0, 1, 2],
            &[1.0, 0.95, 0.9],
            2,
            &Diversity::Mmr { lambda: 0.5 },
        );
        assert_eq!(order, vec![0, 2]);
        // With λ = 1 only relevance counts.
        let order = diversify(
            &t,
            &[0, 1, 2],
            &[1.0, 0.95, 0.9],
            2,
            &Diversity::Mmr { lambda: 1.0 },
        );
        assert_eq!(order, vec![0, 1]);
    }

    #[test]
    fn mmr_falls_back_to_feature_overlap() {
        let t = table(&[&[0, 2], &[0, 2], &[1]], None);
        let order = diversify(
            &t,
            &[0, 1, 2],
            &[1.0, 0.9, 0.8],
            2,
            &Diversity::Mmr { lambda: 0.5 },
        );
        assert_eq!(order, vec![0, 2]);
    }

    #[test]
    fn feature_cap_defers_and_then_fills() {
        let t = table(&[&[0], &[0, 2], &[0], &[1]], None);
        let capped = Diversity::FeatureCap {
            cap: 1,
            capped: vec![0, 1],
        };
        assert_eq!(
            diversify(&t, &[0, 1, 2, 3], &[4.0, 3.0, 2.0, 1.0], 2, &capped),
            vec![0, 3]
        );
        assert_eq!(
            diversify(&t, &[0, 1, 2, 3], &[4.0, 3.0, 2.0, 1.0], 3, &capped),
            vec![0, 3, 1]
        );
        assert_eq!(
            diversify(&t, &[0, 1], &[1.0, 0.5], 5, &Diversity::None),
            vec![0, 1]
        );
    }
}
