//! Time decay by forward decay (Cormode, Shkapenyuk, Srivastava and Xu, "Forward Decay", ICDE
//! 2009).
//!
//! An interest is kept as `S = Σ wᵢ·2^((tᵢ − L)/h)` against a landmark `L`; its value at time `t`
//! is `S·2^(−(t − L)/h)`. An update is then a pure addition, so it commutes (a replay in any order
//! gives the same profile) and is atomic in Redis with `HINCRBYFLOAT`. Because `2^((t − L)/h)`
//! grows with `t`, the landmark must be moved forward (every stored sum multiplied by
//! [`rebase_factor`]) before the exponent nears the range of `f64`; [`forward_weight`] refuses
//! exponents above [`MAX_EXPONENT`] so that the caller knows when.

use crate::error::{check_finite, check_len, KernelError, Result};

/// The largest exponent (in half-lives past the landmark) that [`forward_weight`] accepts.
/// `2^512` leaves ample room below `f64::MAX ≈ 2^1024` for sums of many such terms.
pub const MAX_EXPONENT: f64 = 512.0;

fn check_half_life(half_life: f64) -> Result<()> {
    if half_life.is_finite() && half_life > 0.0 {
        Ok(())
    } else {
        Err(KernelError::Invalid(format!(
            "half_life must be a positive finite number of seconds, got {half_life}"
        )))
    }
}

/// `2^(−age/h)`: the weight left after `age` seconds. Ages below zero (events in the future of
/// `now`) count as zero, so a clock skew never inflates a weight.
pub fn decay_factor(age: f64, half_life: f64) -> f64 {
    (-(age.max(0.0)) / half_life).exp2()
}

/// `2^((t − L)/h)`: the forward-decay multiplier of an event at `t` against landmark `L`.
pub fn forward_weight(t: f64, landmark: f64, half_life: f64) -> Result<f64> {
    check_half_life(half_life)?;
    let exponent = (t - landmark) / half_life;
    if !exponent.is_finite() || exponent > MAX_EXPONENT {
        return Err(KernelError::Invalid(format!(
            "event time {t} is {exponent:.1} half-lives past the landmark {landmark}; \
             rebase the landmark first"
        )));
    }
    Ok(exponent.exp2())
}

/// The value at `now` of a forward-decayed sum kept against `landmark`.
pub fn forward_value(sum: f64, now: f64, landmark: f64, half_life: f64) -> f64 {
    sum * (-(now - landmark) / half_life).exp2()
}

/// The multiplier that moves a forward-decayed sum from landmark `old` to landmark `new`.
pub fn rebase_factor(old: f64, new: f64, half_life: f64) -> f64 {
    (-(new - old) / half_life).exp2()
}

/// Forward-decay increments `wᵢ·2^((tᵢ − L)/h)` for a batch of events: what a store adds to its
/// sums (for example with `HINCRBYFLOAT`).
pub fn forward_increments(
    times: &[f64],
    weights: &[f64],
    landmark: f64,
    half_life: f64,
) -> Result<Vec<f64>> {
    check_len("weights", times.len(), weights.len())?;
    check_finite("times", times)?;
    check_finite("weights", weights)?;
    times
        .iter()
        .zip(weights)
        .map(|(&t, &w)| Ok(w * forward_weight(t, landmark, half_life)?))
        .collect()
}

/// A history of events, each with a time, a weight and a set of weighted features (CSR: the
/// features of event `i` are `feature_ids[indptr[i]..indptr[i+1]]`).
pub struct History<'a> {
    pub times: &'a [f64],
    pub weights: &'a [f64],
    pub indptr: &'a [usize],
    pub feature_ids: &'a [u32],
    pub feature_weights: &'a [f64],
}

/// The decayed interest weight of every feature at `now`:
/// `interest[f] = Σᵢ wᵢ·vᵢf·2^(−(now − tᵢ)/h)` over the events `i` that carry feature `f` with
/// weight `vᵢf`. Events after `now` count as if they happened at `now`.
pub fn aggregate_interests(
    history: &History<'_>,
    n_features: usize,
    now: f64,
    half_life: f64,
) -> Result<Vec<f64>> {
    check_half_life(half_life)?;
    let n = history.times.len();
    check_len("weights", n, history.weights.len())?;
    check_len("indptr", n + 1, history.indptr.len())?;
    check_len(
        "feature_weights",
        history.feature_ids.len(),
        history.feature_weights.len(),
    )?;
    check_finite("times", history.times)?;
    check_finite("weights", history.weights)?;
    check_finite("feature_weights", history.feature_weights)?;
    if !now.is_finite() {
        return Err(KernelError::Invalid("now must be finite".into()));
    }
    let mut interests = vec![0.0; n_features];
    for i in 0..n {
        let (start, end) = (history.indptr[i], history.indptr[i + 1]);
        if start > end || end > history.feature_ids.len() {
            return Err(KernelError::Invalid(format!(
                "indptr is not a valid CSR index at event {i}"
            )));
        }
        let w = history.weights[i] * decay_factor(now - history.times[i], half_life);
        for j in start..end {
            let f = history.feature_ids[j] as usize;
            let slot = interests.get_mut(f).ok_or(KernelError::OutOfRange {
                what: "feature_ids",
                index: f,
                len: n_features,
            })?;
            *slot += w * history.feature_weights[j];
        }
    }
    Ok(interests)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: f64 = 86_400.0;

    #[test]
    fn one_half_life_halves() {
        assert!((decay_factor(DAY, DAY) - 0.5).abs() < 1e-12);
        assert_eq!(decay_factor(-5.0, DAY), 1.0);
    }

    #[test]
    fn forward_decay_matches_direct_decay() {
        let (landmark, h) = (1_000.0, 3_600.0);
        let times = [1_000.0, 5_000.0, 9_000.0];
        let weights = [1.0, 2.0, -0.5];
        let sum: f64 = forward_increments(&times, &weights, landmark, h)
            .unwrap()
            .iter()
            .sum();
        let now = 20_000.0;
        let direct: f64 = times
            .iter()
            .zip(weights)
            .map(|(&t, w)| w * decay_factor(now - t, h))
            .sum();
        assert!((forward_value(sum, now, landmark, h) - direct).abs() < 1e-12);
    }

    #[test]
    fn rebase_preserves_value() {
        let (h, old, new) = (100.0, 0.0, 5_000.0);
        let sum = forward_increments(&[4_000.0], &[3.0], old, h).unwrap()[0];
        let moved = sum * rebase_factor(old, new, h);
        assert!(
            (forward_value(sum, 6_000.0, old, h) - forward_value(moved, 6_000.0, new, h)).abs()
                < 1e-9
        );
    }

    #[test]
    fn forward_weight_refuses_overflow_and_bad_half_life() {
        assert!(forward_weight(1e9, 0.0, 1.0).is_err());
        assert!(forward_weight(1.0, 0.0, 0.0).is_err());
        assert!(forward_weight(1.0, 0.0, f64::NAN).is_err());
        assert!(forward_weight(f64::INFINITY, 0.0, 1.0).is_err());
    }

    #[test]
    fn aggregate_interests_sums_decayed_feature_weights() {
        let history = History {
            times: &[0.0, DAY],
            weights: &[1.0, 2.0],
            indptr: &[0, 2, 3],
            feature_ids: &[0, 1, 1],
            feature_weights: &[1.0, 0.5, 1.0],
        };
        let got = aggregate_interests(&history, 3, DAY, DAY).unwrap();
        assert!((got[0] - 0.5).abs() < 1e-12);
        assert!((got[1] - (0.25 + 2.0)).abs() < 1e-12);
        assert_eq!(got[2], 0.0);
    }

    #[test]
    fn aggregate_interests_rejects_bad_csr() {
        let history = History {
            times: &[0.0],
            weights: &[1.0],
            indptr: &[0, 5],
            feature_ids: &[0],
            feature_weights: &[1.0],
        };
        assert!(aggregate_interests(&history, 1, 0.0, 1.0).is_err());
        let history = History {
            indptr: &[0, 1],
            feature_ids: &[7],
            ..history
        };
        assert!(matches!(
            aggregate_interests(&history, 1, 0.0, 1.0),
            Err(KernelError::OutOfRange { .. })
        ));
    }
}
