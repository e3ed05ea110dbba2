//! Novelty: how recently the user saw each candidate, as a penalty that fades with time.

use crate::decay::decay_factor;
use crate::error::{check_finite, check_len, KernelError, Result};

/// The user's seen items against one table: rows in strictly ascending order, each with the
/// time it was last seen.
pub struct Seen<'a> {
    pub rows: &'a [u32],
    pub times: &'a [f64],
}

impl Seen<'_> {
    fn check(&self) -> Result<()> {
        check_len("seen times", self.rows.len(), self.times.len())?;
        check_finite("seen times", self.times)?;
        if let Some(i) = self.rows.windows(2).position(|w| w[0] >= w[1]) {
            return Err(KernelError::Invalid(format!(
                "seen rows must be strictly ascending; position {} breaks the order",
                i + 1
            )));
        }
        Ok(())
    }
}

/// `−2^(−max(now − t, 0)/half_life)` for each candidate seen at `t`, 0 for the others.
/// Candidates are `rows` when given, else every row below `n_rows` (a whole table).
pub fn seen_penalties(
    seen: &Seen<'_>,
    rows: Option<&[u32]>,
    n_rows: usize,
    now: f64,
    half_life: f64,
) -> Result<Vec<f64>> {
    seen.check()?;
    if !now.is_finite() {
        return Err(KernelError::Invalid("now must be a finite time".into()));
    }
    if !(half_life.is_finite() && half_life > 0.0) {
        return Err(KernelError::Invalid(format!(
            "the seen half-life must be a positive number of seconds, got {half_life}"
        )));
    }
    let penalty = |t: f64| -decay_factor((now - t).max(0.0), half_life);
    match rows {
        None => {
            let mut out = vec![0.0; n_rows];
            for (&r, &t) in seen.rows.iter().zip(seen.times) {
                if let Some(slot) = out.get_mut(r as usize) {
                    *slot = penalty(t);
                }
            }
            Ok(out)
        }
        Some(rows) => {
            if seen.rows.is_empty() {
                return Ok(vec![0.0; rows.len()]);
            }
            Ok(rows
                .iter()
                .map(|r| match seen.rows.binary_search(r) {
                    Ok(i) => penalty(seen.times[i]),
                    Err(_) => 0.0,
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_rows_are_penalised_by_age() {
        let seen = Seen {
            rows: &[2, 5],
            times: &[100.0, 90.0],
        };
        let got = seen_penalties(&seen, Some(&[5, 1, 2]), 0, 100.0, 10.0).unwrap();
        assert_eq!(got, vec![-0.5, 0.0, -1.0]);
        let all = seen_penalties(&seen, None, 4, 100.0, 10.0).unwrap();
        assert_eq!(
            all,
            vec![0.0, 0.0, -1.0, 0.0],
            "row 5 lies outside a table of 4"
        );
        // Seen "in the future" (clock skew) counts as just seen.
        let future = Seen {
            rows: &[0],
            times: &[200.0],
        };
        assert_eq!(
            seen_penalties(&future, Some(&[0]), 0, 100.0, 10.0).unwrap(),
            vec![-1.0]
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let unsorted = Seen {
            rows: &[3, 1],
            times: &[0.0, 0.0],
        };
        assert!(seen_penalties(&unsorted, None, 4, 0.0, 1.0).is_err());
        let short = Seen {
            rows: &[1],
            times: &[],
        };
        assert!(seen_penalties(&short, None, 4, 0.0, 1.0).is_err());
        let nan = Seen {
            rows: &[1],
            times: &[f64::NAN],
        };
        assert!(seen_penalties(&nan, None, 4, 0.0, 1.0).is_err());
        let ok = Seen {
            rows: &[1],
            times: &[0.0],
        };
        assert!(seen_penalties(&ok, None, 4, f64::NAN, 1.0).is_err());
        assert!(seen_penalties(&ok, None, 4, 0.0, 0.0).is_err());
    }
}
