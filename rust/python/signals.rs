//! A batch of Python `Signal` objects into the columns of [`crate::profile::SignalBatch`]. A
//! replay applies 100 000 signals at once; walking their feature dicts in Python cost more than
//! everything else an event needs, so this reader does it once, with the GIL held.

use super::names::NameIds;
use super::{kernel_error, validation_error};
use crate::decay;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyString, PyType};
use rustc_hash::FxHashMap;

/// The columns of a batch, its feature names and distinct half-lives by id, and the landmark to
/// move to first, if any: where applying the signals one by one in order would leave it (each
/// signal that lies more than the rebase exponent's half-lives past the landmark so far moves it
/// to its own time).
#[derive(Default)]
pub struct SignalColumns {
    pub times: Vec<f64>,
    pub weights: Vec<f64>,
    pub channels: Vec<u32>,
    pub half_lives: Vec<f64>,
    pub indptr: Vec<usize>,
    pub feature_ids: Vec<u32>,
    pub feature_weights: Vec<f64>,
    pub names: Vec<String>,
    pub rebase_to: Option<f64>,
}

fn field<'py>(
    signal: &Bound<'py, PyAny>,
    fields: Option<&Bound<'py, PyDict>>,
    name: &Bound<'py, PyString>,
    row: usize,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(value) = fields.map(|f| f.get_item(name)).transpose()?.flatten() {
        return Ok(value);
    }
    signal.getattr_opt(name)?.ok_or_else(|| {
        validation_error(format!(
            "signal {row} has no {}",
            name.to_str().unwrap_or("?")
        ))
    })
}

fn number(value: &Bound<'_, PyAny>, what: &str, row: usize) -> PyResult<f64> {
    let v: f64 = value
        .extract()
        .map_err(|_| validation_error(format!("signal {row}: {what} must be a number")))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(validation_error(format!(
            "signal {row}: {what} is NaN or infinite"
        )))
    }
}

struct Reader<'py> {
    columns: SignalColumns,
    names: NameIds<'py>,
    channel_of: FxHashMap<u64, u32>,
}

impl<'py> Reader<'py> {
    fn feature(
        &mut self,
        name: &Bound<'py, PyAny>,
        weight: &Bound<'py, PyAny>,
        row: usize,
    ) -> PyResult<()> {
        let id = self
            .names
            .id(name, || format!("signal {row}: feature names"))?;
        self.columns.feature_ids.push(id);
        self.columns
            .feature_weights
            .push(number(weight, "feature weight", row)?);
        Ok(())
    }
}

/// Reads `timestamp`, `weight`, `half_life` and `features` (a mapping name → weight) of every
/// signal, interning feature names and half-lives in order of appearance.
pub fn read_signals<'py>(
    signals: &Bound<'py, PyList>,
    landmark: f64,
    rebase_exponent: f64,
) -> PyResult<SignalColumns> {
    let py = signals.py();
    let n = signals.len();
    let mut reader = Reader {
        columns: SignalColumns {
            times: Vec::with_capacity(n),
            weights: Vec::with_capacity(n),
            channels: Vec::with_capacity(n),
            indptr: Vec::with_capacity(n + 1),
            ..Default::default()
        },
        names: NameIds::default(),
        channel_of: FxHashMap::default(),
    };
    reader.columns.indptr.push(0);
    for (row, signal) in signals.iter().enumerate() {
        let instance_dict = signal.getattr_opt(intern!(py, "__dict__"))?;
        let fields = instance_dict.as_ref().and_then(|d| d.cast::<PyDict>().ok());
        let t = number(
            &field(&signal, fields, intern!(py, "timestamp"), row)?,
            "timestamp",
            row,
        )?;
        let w = number(
            &field(&signal, fields, intern!(py, "weight"), row)?,
            "weight",
            row,
        )?;
        let h = number(
            &field(&signal, fields, intern!(py, "half_life"), row)?,
            "half_life",
            row,
        )?;
        if h <= 0.0 {
            return Err(validation_error(format!(
                "signal {row}: half_life must be positive, got {h}"
            )));
        }
        let next = reader.columns.half_lives.len() as u32;
        let channel = *reader.channel_of.entry(h.to_bits()).or_insert(next);
        if channel == next {
            reader.columns.half_lives.push(h);
        }
        // The landmark moves to a signal's time when that signal lies past the rebase exponent
        // of the landmark so far: the rule of applying signals one at a time, so that every
        // store places the landmark at the same time however the signals are batched.
        let current = reader.columns.rebase_to.unwrap_or(landmark);
        if (t - current) / h > rebase_exponent {
            reader.columns.rebase_to = Some(t);
        }
        reader.columns.times.push(t);
        reader.columns.weights.push(w);
        reader.columns.channels.push(channel);
        let features = field(&signal, fields, intern!(py, "features"), row)?;
        if let Ok(dict) = features.cast::<PyDict>() {
            for (name, weight) in dict.iter() {
                reader.feature(&name, &weight, row)?;
            }
        } else {
            let items = features.call_method0(intern!(py, "items")).map_err(|_| {
                validation_error(format!("signal {row}: features must be a mapping"))
            })?;
            for pair in items.try_iter()? {
                let (name, weight): (Bound<'py, PyAny>, Bound<'py, PyAny>) = pair?.extract()?;
                reader.feature(&name, &weight, row)?;
            }
        }
        reader.columns.indptr.push(reader.columns.feature_ids.len());
    }
    reader.columns.names = reader.names.names;
    Ok(reader.columns)
}

/// Makes a `Signal` (an instance of `signal_class`, filled through its instance dict as the
/// frozen dataclass allows) for each validated `Feedback`, with the weight, half-life and epoch
/// time the processor computed for it, and its features scaled to sum to 1. In Python the
/// object, the scaled features and the copies cost about three quarters of processing an
/// event of a replay.
pub fn build_signals<'py>(
    feedbacks: &Bound<'py, PyList>,
    weights: &[f64],
    half_lives: &[f64],
    times: &[f64],
    signal_class: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let py = feedbacks.py();
    let n = feedbacks.len();
    if weights.len() != n || half_lives.len() != n || times.len() != n {
        return Err(validation_error(
            "build_signals: one weight, half-life and time per feedback".into(),
        ));
    }
    let new = py
        .import(intern!(py, "builtins"))?
        .getattr(intern!(py, "object"))?
        .getattr(intern!(py, "__new__"))?;
    let copied = [
        intern!(py, "event_id"),
        intern!(py, "user_id"),
        intern!(py, "item_id"),
        intern!(py, "feedback_type"),
        intern!(py, "value"),
    ];
    let out = PyList::empty(py);
    for (row, feedback) in feedbacks.iter().enumerate() {
        let source = feedback
            .getattr(intern!(py, "__dict__"))?
            .cast_into::<PyDict>()
            .map_err(|_| validation_error(format!("event {row}: expected a Feedback")))?;
        let get = |name: &Bound<'py, PyString>| -> PyResult<Bound<'py, PyAny>> {
            source.get_item(name)?.ok_or_else(|| {
                validation_error(format!(
                    "event {row}: the feedback has no {}",
                    name.to_str().unwrap_or("?")
                ))
            })
        };
        let features = get(intern!(py, "features"))?;
        let features = features
            .cast::<PyDict>()
            .map_err(|_| validation_error(format!("event {row}: features must be a dict")))?;
        let mut total = 0.0;
        for (_, weight) in features.iter() {
            total += weight.extract::<f64>().map_err(|_| {
                validation_error(format!("event {row}: feature weights must be numbers"))
            })?;
        }
        if !(total.is_finite() && total > 0.0) {
            return Err(validation_error(format!(
                "event {row}: the item has no features with positive finite weight, \
                 so a profile cannot learn from it"
            )));
        }
        let scaled = PyDict::new(py);
        for (name, weight) in features.iter() {
            scaled.set_item(name, weight.extract::<f64>()? / total)?;
        }
        let signal = new.call1((signal_class,))?;
        let fields = signal
            .getattr(intern!(py, "__dict__"))?
            .cast_into::<PyDict>()?;
        for name in copied {
            fields.set_item(name, get(name)?)?;
        }
        fields.set_item(intern!(py, "weight"), weights[row])?;
        fields.set_item(intern!(py, "half_life"), half_lives[row])?;
        fields.set_item(intern!(py, "timestamp"), times[row])?;
        fields.set_item(intern!(py, "features"), scaled)?;
        for name in [intern!(py, "attributes"), intern!(py, "context")] {
            let value = get(name)?;
            let copy = match value.cast::<PyDict>() {
                Ok(dict) => dict.copy()?,
                Err(_) => PyDict::new(py),
            };
            fields.set_item(name, copy)?;
        }
        out.append(signal)?;
    }
    Ok(out)
}

/// Per signal, what `InterestModel.increments` adds for it against `landmark`: `(feature,
/// channel key, amount)` for each feature with a non-zero share `|weight·feature weight|·
/// 2^((t − L)/h)`, in the order of its features, to the positive or the negative channel of
/// its half-life (`channel_keys(half_life)` gives `(negative key, positive key)`). A
/// `ValidationError` for a signal without numbers where they belong, and when an event lies
/// too far past the landmark.
#[pyfunction]
pub fn signal_increments<'py>(
    py: Python<'py>,
    landmark: f64,
    signals: &Bound<'py, PyList>,
    channel_keys: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let mut keys: FxHashMap<u64, (Bound<'py, PyAny>, Bound<'py, PyAny>)> = FxHashMap::default();
    let out = PyList::empty(py);
    for (row, signal) in signals.iter().enumerate() {
        // The features' items first, as a list: a value's __float__ cannot change what is walked.
        let features = signal.getattr(intern!(py, "features"))?;
        let items = if let Ok(dict) = features.cast_exact::<PyDict>() {
            dict.items()
        } else {
            let items = features.call_method0(intern!(py, "items")).map_err(|_| {
                validation_error(format!("signal {row}: features must be a mapping"))
            })?;
            PyList::new(py, items.try_iter()?.collect::<PyResult<Vec<_>>>()?)?
        };
        let found = PyList::empty(py);
        if !items.is_empty() {
            // A signal without features adds nothing, and nothing of it is read.
            let number =
                |name: &Bound<'py, PyString>, what: &str| number(&signal.getattr(name)?, what, row);
            let t = number(intern!(py, "timestamp"), "timestamp")?;
            let w = number(intern!(py, "weight"), "weight")?;
            let h = number(intern!(py, "half_life"), "half_life")?;
            let (negative, positive) = match keys.get(&h.to_bits()) {
                Some(pair) => pair.clone(),
                None => {
                    let pair: (Bound<'py, PyAny>, Bound<'py, PyAny>) =
                        channel_keys.call1((h,))?.extract()?;
                    keys.insert(h.to_bits(), pair.clone());
                    pair
                }
            };
            let factor = decay::forward_weight(t, landmark, h).map_err(kernel_error)?;
            for item in items.iter() {
                let (name, share): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item.extract()?;
                let product = w * number_of(&share, row)?;
                if !product.is_finite() {
                    return Err(validation_error(format!(
                        "signal {row}: weight × feature weight overflows"
                    )));
                }
                let amount = product * factor;
                if amount != 0.0 {
                    let key = if amount > 0.0 { &positive } else { &negative };
                    found.append((name, key, amount.abs()))?;
                }
            }
        }
        out.append(found)?;
    }
    Ok(out)
}

fn number_of(share: &Bound<'_, PyAny>, row: usize) -> PyResult<f64> {
    if let Ok(f) = share.cast_exact::<PyFloat>() {
        let v = f.value();
        if v.is_finite() {
            return Ok(v);
        }
    }
    number(share, "feature weight", row)
}

/// Printable ASCII of 1 to `limit` bytes: the fast path of `_validate._check_text`.
fn plain_text(value: &Bound<'_, PyAny>, limit: usize) -> bool {
    let Ok(text) = value.cast_exact::<PyString>() else {
        return false;
    };
    text.to_str().is_ok_and(|t| {
        (1..=limit).contains(&t.len()) && t.bytes().all(|b| (0x20..0x7f).contains(&b))
    })
}

fn finite_float(value: &Bound<'_, PyAny>) -> Option<f64> {
    let v = value.cast_exact::<PyFloat>().ok()?.value();
    v.is_finite().then_some(v)
}

/// Whether every one of `signals` passes `check_signal` on its fast paths alone: an exact
/// `signal_class` (for `user_id` when given) whose ids are printable ASCII of at most
/// `max_id_bytes`, whose feedback type is a `feedback_type_class` member, whose numbers are
/// finite floats (the half-life positive), whose features and attributes are dicts of printable
/// ASCII names (at most `max_name_bytes`) to finite floats, and whose context is a dict. `False`
/// says only: check them in Python, which finds the problem, if any, and names it.
#[pyfunction]
pub fn signals_fit_to_store<'py>(
    py: Python<'py>,
    signals: &Bound<'py, PyList>,
    user_id: Option<Bound<'py, PyString>>,
    signal_class: &Bound<'py, PyType>,
    feedback_type_class: &Bound<'py, PyType>,
    max_id_bytes: usize,
    max_name_bytes: usize,
) -> PyResult<bool> {
    // A user id that is not UTF-8: check_signal refuses it (the store says why).
    let user_id = match &user_id {
        Some(wanted) => match wanted.to_str() {
            Ok(text) => Some(text),
            Err(_) => return Ok(false),
        },
        None => None,
    };
    let names_fit = |mapping: &Bound<'py, PyAny>| {
        mapping.cast_exact::<PyDict>().is_ok_and(|dict| {
            dict.iter().all(|(name, weight)| {
                plain_text(&name, max_name_bytes) && finite_float(&weight).is_some()
            })
        })
    };
    for signal in signals.iter() {
        if !signal.get_type().is(signal_class) {
            return Ok(false);
        }
        let get = |name| signal.getattr(name);
        let user = get(intern!(py, "user_id"))?;
        let fits = plain_text(&get(intern!(py, "event_id"))?, max_id_bytes)
            && plain_text(&user, max_id_bytes)
            && user_id.is_none_or(|wanted| {
                user.cast_exact::<PyString>()
                    .is_ok_and(|u| u.to_str().is_ok_and(|u| u == wanted))
            })
            && plain_text(&get(intern!(py, "item_id"))?, max_id_bytes)
            && get(intern!(py, "feedback_type"))?.is_instance(feedback_type_class)?
            && finite_float(&get(intern!(py, "value"))?).is_some()
            && finite_float(&get(intern!(py, "weight"))?).is_some()
            && finite_float(&get(intern!(py, "timestamp"))?).is_some()
            && finite_float(&get(intern!(py, "half_life"))?).is_some_and(|h| h > 0.0)
            && names_fit(&get(intern!(py, "features"))?)
            && names_fit(&get(intern!(py, "attributes"))?)
            && get(intern!(py, "context"))?.is_exact_instance_of::<PyDict>();
        if !fits {
            return Ok(false);
        }
    }
    Ok(true)
}
