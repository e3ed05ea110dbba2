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
}
