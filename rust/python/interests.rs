//! A profile's interests (a dict name → Python `Interest`) into their decayed evidence. Ranking
//! reads every interest's weight on each request and preference extraction reads them all;
//! in Python that loop cost about a microsecond per interest.

use super::validation_error;
use crate::decay::forward_value;
use crate::profile::parse_channel_key;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use rustc_hash::FxHashMap;

/// The interest names (the dict's own key objects), and each one's positive and negative
/// evidence at `now`: the sum over its channels of `sum · 2^(−(now − landmark)/h)`.
pub fn interest_evidence<'py>(
    interests: &Bound<'py, PyDict>,
    now: f64,
    landmark: f64,
) -> PyResult<(Bound<'py, PyList>, Vec<f64>, Vec<f64>)> {
    let py = interests.py();
    if !(now.is_finite() && landmark.is_finite()) {
        return Err(validation_error(
            "now and the landmark must be finite".into(),
        ));
    }
    let n = interests.len();
    let names = PyList::empty(py);
    let (mut positive, mut negative) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // A profile has a handful of distinct channel keys: parse each and compute its factor once.
    let mut factors: FxHashMap<String, (bool, f64)> = FxHashMap::default();
    for (name, interest) in interests.iter() {
        let sums = match interest.getattr_opt(intern!(py, "__dict__"))? {
            Some(fields) => match fields.cast::<PyDict>()?.get_item(intern!(py, "sums"))? {
                Some(sums) => sums,
                None => interest.getattr(intern!(py, "sums"))?,
            },
            None => interest.getattr(intern!(py, "sums"))?,
        };
        let sums = sums
            .cast::<PyDict>()
            .map_err(|_| validation_error(format!("the sums of interest {name} must be a dict")))?;
        let (mut p, mut q) = (0.0, 0.0);
        for (key, total) in sums.iter() {
            let key = key.cast::<PyString>().map_err(|_| {
                validation_error(format!("interest {name}: channel keys must be str"))
            })?;
            let key = key.to_str()?;
            let (is_positive, factor) = match factors.get(key) {
                Some(&found) => found,
                None => {
                    let (is_positive, half_life) = parse_channel_key(key).ok_or_else(|| {
                        validation_error(format!("invalid interest channel key {key:?}"))
                    })?;
                    let factor = forward_value(1.0, now, landmark, half_life);
                    if !factor.is_finite() {
                        return Err(validation_error(format!(
                            "now ({now}) lies too many half-lives before the profile's landmark \
                             ({landmark}) to weigh its interests"
                        )));
                    }
                    let found = (is_positive, factor);
                    factors.insert(key.to_owned(), found);
                    found
                }
            };
            let total: f64 = total.extract().map_err(|_| {
                validation_error(format!("interest {name}: evidence must be a number"))
            })?;
            if !(total.is_finite() && total >= 0.0) {
                return Err(validation_error(format!(
                    "interest {name}: evidence must be finite and not negative, got {total}"
                )));
            }
            if is_positive {
                p += total * factor;
            } else {
                q += total * factor;
            }
        }
        names.append(name)?;
        positive.push(p);
        negative.push(q);
    }
    Ok((names, positive, negative))
}
