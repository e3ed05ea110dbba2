//! Top-k selection by partial selection: `O(n + k log k)` instead of a full sort.

use std::cmp::Ordering;

/// Higher score first; on equal scores the lower position first, so results are deterministic.
fn rank_order(scores: &[f64]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    move |&a, &b| {
        scores[b as usize]
            .total_cmp(&scores[a as usize])
            .then_with(|| a.cmp(&b))
    }
}

/// The positions of the `k` highest scores among the positions where `keep` is true (all
/// positions when `keep` is `None`), best first. Ties are broken by position. Returns fewer than
/// `k` positions when fewer are kept.
pub fn top_k(scores: &[f64], keep: Option<&[bool]>, k: usize) -> Vec<u32> {
    if keep.is_none() && k > 0 && k <= SMALL_K && k * 8 <= scores.len() {
        return top_k_small(scores, k);
    }
    let mut positions: Vec<u32> = match keep {
        Some(keep) => (0..scores.len() as u32)
            .filter(|&i| keep[i as usize])
            .collect(),
        None => (0..scores.len() as u32).collect(),
    };
    let order = rank_order(scores);
    if k < positions.len() {
        if k == 0 {
            return Vec::new();
        }
        positions.select_nth_unstable_by(k - 1, &order);
        positions.truncate(k);
    }
    positions.sort_unstable_by(&order);
    positions
}

/// Up to this k, [`top_k`] keeps the best k in a sorted buffer during one scan; above it, a
/// partial selection over all positions is cheaper.
const SMALL_K: usize = 64;

/// The key by which [`f64::total_cmp`] orders: comparing keys as integers is comparing scores.
#[inline(always)]
fn order_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// [`top_k`] for a small `k`: one scan that compares each score with the k-th best so far
/// (almost always a single comparison), inserting the few that beat it. Positions arrive in
/// increasing order, so a score equal to the k-th best loses the tie and is skipped: the same
/// order as the partial selection.
fn top_k_small(scores: &[f64], k: usize) -> Vec<u32> {
    debug_assert!(k > 0 && k <= scores.len());
    // (key, position), best first.
    let mut best: Vec<(i64, u32)> = Vec::with_capacity(k + 1);
    best.extend(
        scores[..k]
            .iter()
            .enumerate()
            .map(|(i, &s)| (order_key(s), i as u32)),
    );
    best.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut threshold = best[k - 1].0;
    for (i, &s) in scores.iter().enumerate().skip(k) {
        let key = order_key(s);
        if key > threshold {
            // Everything already in `best` has a lower position: it goes after equal keys.
            let at = best.partition_point(|&(b, _)| b >= key);
            best.insert(at, (key, i as u32));
            best.pop();
            threshold = best[k - 1].0;
        }
    }
    best.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_highest_in_order() {
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.7], None, 2), vec![1, 3]);
    }

    #[test]
    fn ties_break_by_position() {
        assert_eq!(top_k(&[1.0, 2.0, 2.0, 1.0, 2.0], None, 4), vec![1, 2, 4, 0]);
    }

    #[test]
    fn respects_mask_and_short_inputs() {
        let keep = [true, false, true, true];
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.7], Some(&keep), 10), vec![3, 2, 0]);
        assert!(top_k(&[], None, 3).is_empty());
        assert!(top_k(&[1.0], None, 0).is_empty());
    }

    #[test]
    fn matches_full_sort() {
        let scores: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 101) as f64).collect();
        let mut all: Vec<u32> = (0..1000).collect();
        all.sort_by(rank_order(&scores));
        assert_eq!(top_k(&scores, None, 37), all[..37].to_vec());
    }

    #[test]
    fn the_small_k_scan_matches_the_partial_selection() {
        let mut scores: Vec<f64> = (0..500).map(|i| ((i * 7919) % 23) as f64 - 11.0).collect();
        scores[3] = -0.0;
        scores[4] = 0.0;
        scores[5] = f64::INFINITY;
        scores[6] = f64::NEG_INFINITY;
        let mut all: Vec<u32> = (0..scores.len() as u32).collect();
        all.sort_by(rank_order(&scores));
        for k in [1, 2, 10, 37, 62, 63, 64] {
            assert_eq!(top_k_small(&scores, k), all[..k].to_vec(), "k = {k}");
            assert_eq!(top_k(&scores, None, k), all[..k].to_vec(), "k = {k}");
        }
    }
}
