//! Kernels of the user profile: processed feedback into forward-decayed interest sums, and the
//! statistics that preference extraction needs (decayed weights, weighted quantiles of item
//! attributes, periodic activity histograms). Pure functions over slices; the Python layer
//! gathers the columns.

use crate::decay::{decay_factor, forward_weight};
use crate::error::{check_finite, check_len, KernelError, Result};
use crate::stored::History;
use rustc_hash::FxHashMap;

/// A batch of processed feedback events (signals) in columns. Signal `i` happened at
/// `times[i]` with signed `weights[i]`, decays with half-life `half_lives[channels[i]]`, and
/// carries the weighted features `feature_ids[indptr[i]..indptr[i+1]]`.
pub struct SignalBatch<'a> {
    pub times: &'a [f64],
    pub weights: &'a [f64],
    pub channels: &'a [u32],
    pub half_lives: &'a [f64],
    pub indptr: &'a [usize],
    pub feature_ids: &'a [u32],
    pub feature_weights: &'a [f64],
}

/// What a batch adds to a profile's interests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accumulation {
    /// One entry per (feature, half-life, sign) that received evidence, sorted by feature, then
    /// half-life index, then sign (positive first). `amounts` are absolute values: positive and
    /// negative evidence go to separate sums.
    pub feature_ids: Vec<u32>,
    pub channels: Vec<u32>,
    pub positive: Vec<bool>,
    pub amounts: Vec<f64>,
    /// Per feature id: how many signals added to it, and the latest time among them
    /// (`-inf` for none).
    pub counts: Vec<u64>,
    pub latest: Vec<f64>,
}

fn check_csr(indptr: &[usize], n_rows: usize, nnz: usize) -> Result<()> {
    check_len("indptr", n_rows + 1, indptr.len())?;
    if indptr[0] != 0 || indptr[n_rows] != nnz || indptr.windows(2).any(|w| w[0] > w[1]) {
        return Err(KernelError::Invalid(
            "indptr must rise from 0 to the number of feature ids".into(),
        ));
    }
    Ok(())
}

fn check_half_lives(half_lives: &[f64]) -> Result<()> {
    match half_lives.iter().position(|h| !(h.is_finite() && *h > 0.0)) {
        Some(i) => Err(KernelError::Invalid(format!(
            "half_lives[{i}] must be a positive finite number of seconds, got {}",
            half_lives[i]
        ))),
        None => Ok(()),
    }
}

/// Sums the forward-decayed evidence of a batch against `landmark`: signal `i` adds
/// `|wᵢ·vᵢf|·2^((tᵢ − L)/h)` to the positive or the negative sum of feature `f` (by the sign of
/// `wᵢ·vᵢf`) in its half-life's channel. This is the batch form of the Python
/// `InterestModel.increments`, with the same arithmetic in the same order per term, so that a
/// store adding the increments one by one reaches the same sums up to rounding.
pub fn accumulate_signals(
    batch: &SignalBatch<'_>,
    landmark: f64,
    n_features: usize,
) -> Result<Accumulation> {
    let n = batch.times.len();
    check_len("weights", n, batch.weights.len())?;
    check_len("channels", n, batch.channels.len())?;
    check_len(
        "feature_weights",
        batch.feature_ids.len(),
        batch.feature_weights.len(),
    )?;
    check_csr(batch.indptr, n, batch.feature_ids.len())?;
    check_finite("times", batch.times)?;
    check_finite("weights", batch.weights)?;
    check_finite("feature_weights", batch.feature_weights)?;
    check_half_lives(batch.half_lives)?;
    if !landmark.is_finite() {
        return Err(KernelError::Invalid("landmark must be finite".into()));
    }
    if let Some(&c) = batch
        .channels
        .iter()
        .find(|&&c| c as usize >= batch.half_lives.len())
    {
        return Err(KernelError::OutOfRange {
            what: "channels",
            index: c as usize,
            len: batch.half_lives.len(),
        });
    }
    if let Some(&f) = batch
        .feature_ids
        .iter()
        .find(|&&f| f as usize >= n_features)
    {
        return Err(KernelError::OutOfRange {
            what: "feature_ids",
            index: f as usize,
            len: n_features,
        });
    }

    let n_channels = batch.half_lives.len() as u64;
    // Key: (feature · channels + channel) · 2 + is_negative, so that sorting the keys gives the
    // documented order.
    let mut sums: FxHashMap<u64, f64> = FxHashMap::default();
    let mut counts = vec![0u64; n_features];
    let mut latest = vec![f64::NEG_INFINITY; n_features];
    for i in 0..n {
        let (t, w, c) = (batch.times[i], batch.weights[i], batch.channels[i]);
        let scale = forward_weight(t, landmark, batch.half_lives[c as usize])?;
        for j in batch.indptr[i]..batch.indptr[i + 1] {
            let f = batch.feature_ids[j];
            let amount = (w * batch.feature_weights[j]) * scale;
            if amount == 0.0 {
                continue;
            }
            if !amount.is_finite() {
                return Err(KernelError::Invalid(format!(
                    "the evidence of signal {i} overflows; rebase the landmark first"
                )));
            }
            let key = (f as u64 * n_channels + c as u64) * 2 + u64::from(amount < 0.0);
            *sums.entry(key).or_insert(0.0) += amount.abs();
            counts[f as usize] += 1;
            latest[f as usize] = latest[f as usize].max(t);
        }
    }
    let mut keys: Vec<u64> = sums.keys().copied().collect();
    keys.sort_unstable();
    let mut out = Accumulation {
        counts,
        latest,
        ..Default::default()
    };
    for key in keys {
        let feature_channel = key / 2;
        out.feature_ids.push((feature_channel / n_channels) as u32);
        out.channels.push((feature_channel % n_channels) as u32);
        out.positive.push(key % 2 == 0);
        out.amounts.push(sums[&key]);
    }
    Ok(out)
}

/// `wᵢ·2^(−max(now − tᵢ, 0)/hᵢ)`: each event's weight as it stands at `now`.
pub fn decayed_weights(
    times: &[f64],
    weights: &[f64],
    half_lives: &[f64],
    now: f64,
) -> Result<Vec<f64>> {
    check_len("weights", times.len(), weights.len())?;
    check_len("half_lives", times.len(), half_lives.len())?;
    check_finite("times", times)?;
    check_finite("weights", weights)?;
    check_half_lives(half_lives)?;
    if !now.is_finite() {
        return Err(KernelError::Invalid("now must be finite".into()));
    }
    Ok(times
        .iter()
        .zip(weights)
        .zip(half_lives)
        .map(|((&t, &w), &h)| w * decay_factor(now - t, h))
        .collect())
}

/// `2^(−max(now − tᵢ, 0)/hᵢ)`: what a unit event at `tᵢ` weighs at `now`. Times
/// [`decayed_weights`]'s `wᵢ` this is its result, bit for bit, so preference extraction computes
/// the factors once for both the decayed weights and the activity of a history.
pub fn decay_factors(times: &[f64], half_lives: &[f64], now: f64) -> Result<Vec<f64>> {
    check_len("half_lives", times.len(), half_lives.len())?;
    check_finite("times", times)?;
    check_half_lives(half_lives)?;
    if !now.is_finite() {
        return Err(KernelError::Invalid("now must be finite".into()));
    }
    Ok(times
        .iter()
        .zip(half_lives)
        .map(|(&t, &h)| decay_factor(now - t, h))
        .collect())
}

/// Values of numeric attributes with a weight each: sample `i` says attribute
/// `attribute_ids[i]` had `values[i]` in an event of weight `weights[i]`.
pub struct AttributeSamples<'a> {
    pub attribute_ids: &'a [u32],
    pub values: &'a [f64],
    pub weights: &'a [f64],
}

/// Per attribute: the weighted quantiles (row-major, one row per attribute, `NaN` where an
/// attribute has no weight), the total weight, the sum of squared weights (for the effective
/// sample size `(Σw)²/Σw²`) and the number of samples with positive weight.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttributeSummary {
    pub quantiles: Vec<f64>,
    pub total_weight: Vec<f64>,
    pub sum_squares: Vec<f64>,
    pub counts: Vec<u64>,
}

/// Weighted quantiles of each attribute by the inverted CDF: quantile `q` is the smallest value
/// whose cumulative weight (values in ascending order, ties in input order) reaches
/// `q · total`. Samples with zero weight are ignored; negative weights are refused.
pub fn attribute_quantiles(
    samples: &AttributeSamples<'_>,
    n_attributes: usize,
    quantiles: &[f64],
) -> Result<AttributeSummary> {
    let n = samples.values.len();
    check_len("attribute_ids", n, samples.attribute_ids.len())?;
    check_len("weights", n, samples.weights.len())?;
    check_finite("values", samples.values)?;
    check_finite("weights", samples.weights)?;
    if let Some(i) = samples.weights.iter().position(|&w| w < 0.0) {
        return Err(KernelError::Invalid(format!(
            "weights[{i}] is negative; quantiles need non-negative weights"
        )));
    }
    if n > u32::MAX as usize {
        return Err(KernelError::Invalid(format!("too many samples: {n}")));
    }
    if let Some(q) = quantiles.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        return Err(KernelError::Invalid(format!(
            "quantiles must lie in [0, 1], got {q}"
        )));
    }
    if let Some(&a) = samples
        .attribute_ids
        .iter()
        .find(|&&a| a as usize >= n_attributes)
    {
        return Err(KernelError::OutOfRange {
            what: "attribute_ids",
            index: a as usize,
            len: n_attributes,
        });
    }
    let order = sorted_samples(samples, n_attributes);
    let n_q = quantiles.len();
    let mut out = AttributeSummary {
        quantiles: vec![f64::NAN; n_attributes * n_q],
        total_weight: vec![0.0; n_attributes],
        sum_squares: vec![0.0; n_attributes],
        counts: vec![0; n_attributes],
    };
    let mut cumulative: Vec<f64> = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let attribute = samples.attribute_ids[order[start]] as usize;
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&i| samples.attribute_ids[i] as usize == attribute)
                .count();
        let group = &order[start..end];
        cumulative.clear();
        let (mut total, mut squares) = (0.0, 0.0);
        for &i in group {
            let w = samples.weights[i];
            total += w;
            squares += w * w;
            cumulative.push(total);
        }
        for (k, &q) in quantiles.iter().enumerate() {
            let target = q * total;
            let at = cumulative
                .partition_point(|&c| c < target)
                .min(group.len() - 1);
            out.quantiles[attribute * n_q + k] = samples.values[group[at]];
        }
        out.total_weight[attribute] = total;
        out.sum_squares[attribute] = squares;
        out.counts[attribute] = group.len() as u64;
        start = end;
    }
    Ok(out)
}

/// The positions of the samples with positive weight, ordered by attribute, then value, then
/// position (ties keep their input order, so cumulative sums can be reproduced by any reference
/// that sorts stably; −0 and +0 count as equal, as NumPy sorts them).
///
/// A least-significant-digit radix sort on the values' ordered bits, byte by byte, then one
/// counting pass by attribute: every pass is stable and the input is in position order, so the
/// result is the order of sorting (attribute, value, position) keys, in linear time. A byte that
/// is the same in every key (the exponent bytes of values of one magnitude, the low mantissa
/// bytes of whole numbers) needs no pass, so typical attributes take two or three passes; this
/// is several times cheaper than a comparison sort of 128-bit keys.
fn sorted_samples(samples: &AttributeSamples<'_>, n_attributes: usize) -> Vec<usize> {
    let mut order: Vec<u32> = Vec::with_capacity(samples.values.len());
    let mut keys: Vec<u64> = Vec::with_capacity(samples.values.len());
    for (i, (&w, &v)) in samples.weights.iter().zip(samples.values).enumerate() {
        if w > 0.0 {
            order.push(i as u32);
            keys.push(ordered_bits(v));
        }
    }
    let m = order.len();
    let mut counts = [[0usize; 256]; 8];
    for &key in &keys {
        for (byte, histogram) in counts.iter_mut().enumerate() {
            histogram[((key >> (8 * byte)) & 0xff) as usize] += 1;
        }
    }
    let (mut next_order, mut next_keys) = (vec![0u32; m], vec![0u64; m]);
    for (byte, histogram) in counts.iter().enumerate() {
        if histogram.contains(&m) {
            continue; // every key has the same byte here: the pass would change nothing
        }
        let mut start = [0usize; 256];
        let mut total = 0;
        for (slot, &c) in start.iter_mut().zip(histogram) {
            *slot = total;
            total += c;
        }
        for (&key, &i) in keys.iter().zip(&order) {
            let bucket = ((key >> (8 * byte)) & 0xff) as usize;
            next_keys[start[bucket]] = key;
            next_order[start[bucket]] = i;
            start[bucket] += 1;
        }
        std::mem::swap(&mut keys, &mut next_keys);
        std::mem::swap(&mut order, &mut next_order);
    }
    // Stable counting pass by attribute.
    let mut start = vec![0usize; n_attributes + 1];
    for &i in &order {
        start[samples.attribute_ids[i as usize] as usize + 1] += 1;
    }
    for a in 0..n_attributes {
        start[a + 1] += start[a];
    }
    let mut out = vec![0usize; m];
    for &i in &order {
        let a = samples.attribute_ids[i as usize] as usize;
        out[start[a]] = i as usize;
        start[a] += 1;
    }
    out
}

/// The bits of a finite `value` as an unsigned integer in the same order as the values, with
/// −0 and +0 alike.
fn ordered_bits(value: f64) -> u64 {
    let bits = (value + 0.0).to_bits(); // + 0.0 turns −0 into +0
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// Sums `weights` into `bins` equal slices of a repeating period: the bin of time `t` is
/// `⌊((t + offset) mod period) / period · bins⌋`. With `period` = 86 400 s and 24 bins this is
/// the hour of day; with 7 days, an offset of 3 days (1970-01-01 was a Thursday) and 7 bins,
/// the day of the week from Monday.
pub fn periodic_histogram(
    times: &[f64],
    weights: &[f64],
    period: f64,
    bins: usize,
    offset: f64,
) -> Result<Vec<f64>> {
    check_len("weights", times.len(), weights.len())?;
    check_finite("times", times)?;
    check_finite("weights", weights)?;
    if !(period.is_finite() && period > 0.0 && offset.is_finite()) || bins == 0 {
        return Err(KernelError::Invalid(format!(
            "a histogram needs a positive finite period, at least one bin and a finite offset \
             (got period {period}, {bins} bins, offset {offset})"
        )));
    }
    let mut histogram = vec![0.0; bins];
    for (&t, &w) in times.iter().zip(weights) {
        let phase = phase_of(t + offset, period);
        // Rounding can put a phase just below the period into bin `bins`: clamp it.
        let bin = ((phase / period * bins as f64) as usize).min(bins - 1);
        histogram[bin] += w;
    }
    Ok(histogram)
}

/// `x.rem_euclid(period)` without `fmod`, whose exact bit-by-bit division is slow for epoch
/// seconds (quotients near 2^15 for days). For a whole-second period the quotient times the
/// period is exact, and subtracting it from `x` is exact (the two lie within a factor two of
/// each other), so the result is `rem_euclid`'s, including its rounding of a tiny negative
/// remainder up to `period` (which the caller clamps into the last bin).
fn phase_of(x: f64, period: f64) -> f64 {
    let r = x - (x / period).floor() * period;
    if r < 0.0 {
        r + period
    } else {
        r
    }
}

/// What preference extraction derives from a history at a moment (see [`summarize_history`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySummary {
    /// Per numeric attribute (by id) over the liked events (positive decayed weight): the
    /// weighted quantiles asked for, the total weight, the squared weights and the count, each
    /// event weighted by its decayed weight relative to the strongest liked event's (only
    /// relative weights matter, and scaling keeps old events' squares from underflowing).
    pub attributes: AttributeSummary,
    /// How many events the history holds.
    pub events: usize,
    /// When some event's activity still weighs something at that moment: see [`Activity`].
    pub activity: Option<Activity>,
}

/// When a history's events happened, each weighted by its decayed activity (a unit event's
/// weight at the moment) relative to the largest.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// `(Σa)² / Σa²`: the effective number of events.
    pub effective: f64,
    /// By hour of day (24 bins, UTC plus the offset).
    pub hours: Periodic,
    /// By day of the week, from Monday (7 bins).
    pub days: Periodic,
}

/// Activity over the bins of one period.
#[derive(Debug, Clone, PartialEq)]
pub struct Periodic {
    /// `1 − H/ln B`, `H` the entropy of the activity over the `B` bins: 0 for activity spread
    /// evenly, 1 for one bin.
    pub concentration: f64,
    /// The fewest bins (largest first) holding at least half the activity, in bin order.
    pub peaks: Vec<usize>,
}

const DAY: f64 = 86_400.0;

/// The numeric and temporal statistics of preference extraction over `history` at `now`, in
/// one pass over its columns: each event decays once, `2^(−max(now − tᵢ, 0)/hᵢ)`, for both its
/// weight (the numeric side) and its activity (the temporal side). `quantiles` are those to
/// compute per attribute; `utc_offset` (seconds) shifts hours and days from UTC. Days are
/// counted from Monday (1970-01-01 was a Thursday).
pub fn summarize_history(
    history: &History,
    now: f64,
    quantiles: &[f64],
    utc_offset: f64,
) -> Result<HistorySummary> {
    let n = history.times.len();
    check_len("weights", n, history.weights.len())?;
    check_finite("weights", &history.weights)?;
    let factors = decay_factors(&history.times, &history.half_lives, now)?;
    let mut liked: Vec<f64> = history
        .weights
        .iter()
        .zip(&factors)
        .map(|(w, f)| (w * f).max(0.0))
        .collect();
    let largest = liked.iter().copied().fold(0.0, f64::max);
    if largest > 0.0 {
        liked.iter_mut().for_each(|w| *w /= largest);
    }
    let weights = history
        .rows
        .iter()
        .map(|&row| {
            liked
                .get(row as usize)
                .copied()
                .ok_or(KernelError::OutOfRange {
                    what: "rows",
                    index: row as usize,
                    len: n,
                })
        })
        .collect::<Result<Vec<f64>>>()?;
    let samples = AttributeSamples {
        attribute_ids: &history.attribute_ids,
        values: &history.values,
        weights: &weights,
    };
    let attributes = attribute_quantiles(&samples, history.names.len(), quantiles)?;
    Ok(HistorySummary {
        attributes,
        events: n,
        activity: activity(&history.times, &factors, utc_offset)?,
    })
}

/// [`Activity`] of events at `times` whose activity decayed to `factors`, or `None` when none
/// weighs anything.
fn activity(times: &[f64], factors: &[f64], utc_offset: f64) -> Result<Option<Activity>> {
    let largest = factors.iter().copied().fold(0.0, f64::max);
    if largest <= 0.0 {
        return Ok(None);
    }
    let relative: Vec<f64> = factors.iter().map(|f| f / largest).collect();
    let total: f64 = relative.iter().sum();
    let squares: f64 = relative.iter().map(|a| a * a).sum();
    let periodic = |period: f64, bins: usize, offset: f64| -> Result<Periodic> {
        let histogram = periodic_histogram(times, &relative, period, bins, offset)?;
        Ok(Periodic {
            concentration: concentration(&histogram),
            peaks: peak_bins(&histogram, 0.5),
        })
    };
    Ok(Some(Activity {
        effective: total * total / squares,
        hours: periodic(DAY, 24, utc_offset)?,
        days: periodic(7.0 * DAY, 7, 3.0 * DAY + utc_offset)?,
    }))
}

/// `1 − H/ln B` of a histogram of `B` bins, `H` the entropy of its mass: 0 for mass spread
/// evenly (or none), 1 for all of it in one bin.
pub fn concentration(histogram: &[f64]) -> f64 {
    let total: f64 = histogram.iter().sum();
    if total <= 0.0 || histogram.len() < 2 {
        return 0.0;
    }
    let entropy = -histogram
        .iter()
        .map(|h| h / total)
        .filter(|&p| p > 0.0)
        .map(|p| p * p.ln())
        .sum::<f64>();
    (1.0 - entropy / (histogram.len() as f64).ln()).max(0.0)
}

/// The fewest bins (largest first, ties by bin) holding at least `share` of a histogram's
/// mass, in bin order.
pub fn peak_bins(histogram: &[f64], share: f64) -> Vec<usize> {
    let total: f64 = histogram.iter().sum();
    let mut order: Vec<usize> = (0..histogram.len()).collect();
    order.sort_by(|&a, &b| histogram[b].total_cmp(&histogram[a]).then(a.cmp(&b)));
    let mut chosen = Vec::new();
    let mut mass = 0.0;
    for b in order {
        if mass >= share * total {
            break;
        }
        chosen.push(b);
        mass += histogram[b];
    }
    chosen.sort_unstable();
    chosen
}

/// One categorical preference chosen by [`categorical_choice`]: the interest's index, its
/// weight and the confidence in it.
pub type Chosen = (usize, f64, f64);

/// What [`categorical_choice`] reads of each interest `i`: its name, its decayed evidence
/// `positive[i]` and `negative[i]`, the signed strength of a stated like or dislike
/// `strength[i]` (0 for none) and whether a hard filter blocks it (`unwanted[i]`). `strength`
/// and `unwanted` may be empty: no statements, nothing blocked.
pub struct InterestEvidence<'a> {
    pub names: &'a [&'a str],
    pub positive: &'a [f64],
    pub negative: &'a [f64],
    pub strength: &'a [f64],
    pub unwanted: &'a [bool],
}

/// The categorical preferences among interests (see [`InterestEvidence`]). An interest's
/// weight is `w = s + p − n` and its confidence `|w| / (|s| + p + n + prior)`. It qualifies when
/// its confidence is at least `min_confidence`, `w ≠ 0`, it is not unwanted, and it does not
/// merely agree with a statement (a stated like or dislike the evidence still agrees with is
/// reported as the explicit preference). Returns the liked (w > 0) and the disliked (w < 0)
/// ones, each the `max_features` strongest by `|w|`, ties by name.
pub fn categorical_choice(
    evidence: &InterestEvidence<'_>,
    min_confidence: f64,
    max_features: usize,
    prior: f64,
) -> Result<(Vec<Chosen>, Vec<Chosen>)> {
    let InterestEvidence {
        names,
        positive,
        negative,
        strength,
        unwanted,
    } = *evidence;
    let n = names.len();
    check_len("positive", n, positive.len())?;
    check_len("negative", n, negative.len())?;
    if !strength.is_empty() {
        check_len("strength", n, strength.len())?;
    }
    if !unwanted.is_empty() {
        check_len("unwanted", n, unwanted.len())?;
    }
    check_finite("positive", positive)?;
    check_finite("negative", negative)?;
    check_finite("strength", strength)?;
    let (mut likes, mut dislikes) = (Vec::new(), Vec::new());
    for i in 0..n {
        let s = strength.get(i).copied().unwrap_or(0.0);
        // In NumPy's order: (s + p) − n, and ((|s| + p) + n) + prior.
        let weight = s + positive[i] - negative[i];
        let sure = weight.abs() / (s.abs() + positive[i] + negative[i] + prior);
        let agrees = s != 0.0 && ((s > 0.0) == (weight > 0.0));
        let blocked = unwanted.get(i).copied().unwrap_or(false);
        if sure >= min_confidence && weight != 0.0 && !agrees && !blocked {
            let side = if weight > 0.0 {
                &mut likes
            } else {
                &mut dislikes
            };
            side.push((i, weight, sure));
        }
    }
    for side in [&mut likes, &mut dislikes] {
        side.sort_by(|a, b| {
            b.1.abs()
                .total_cmp(&a.1.abs())
                .then_with(|| names[a.0].cmp(names[b.0]))
        });
        side.truncate(max_features);
    }
    Ok((likes, dislikes))
}

/// `(positive, half_life)` of an interest channel key such as `"+604800"` or `"-2592000"` (the
/// Python `channel_key`), or `None` when the key is malformed.
pub fn parse_channel_key(key: &str) -> Option<(bool, f64)> {
    let positive = match key.as_bytes().first()? {
        b'+' => true,
        b'-' => false,
        _ => return None,
    };
    let half_life: f64 = key[1..].parse().ok()?;
    (half_life.is_finite() && half_life > 0.0).then_some((positive, half_life))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decay::forward_increments;

    fn batch<'a>(
        times: &'a [f64],
        weights: &'a [f64],
        channels: &'a [u32],
        half_lives: &'a [f64],
        indptr: &'a [usize],
        feature_ids: &'a [u32],
        feature_weights: &'a [f64],
    ) -> SignalBatch<'a> {
        SignalBatch {
            times,
            weights,
            channels,
            half_lives,
            indptr,
            feature_ids,
            feature_weights,
        }
    }

    #[test]
    fn categorical_choice_ranks_each_side_and_skips_what_it_must() {
        let names = ["b", "a", "c", "d", "e", "f"];
        let positive = [3.0, 3.0, 0.0, 1.0, 5.0, 2.0];
        let negative = [0.0, 0.0, 2.0, 0.0, 0.0, 0.0];
        // "d": a stated like the evidence agrees with; "e": blocked; "f": a stated dislike overtaken.
        let strength = [0.0, 0.0, 0.0, 1.0, 0.0, -1.0];
        let unwanted = [false, false, false, false, true, false];
        let stated = InterestEvidence {
            names: &names,
            positive: &positive,
            negative: &negative,
            strength: &strength,
            unwanted: &unwanted,
        };
        let (likes, dislikes) = categorical_choice(&stated, 0.1, 2, 1.0).unwrap();
        // "a" and "b" tie at 3: by name; "f" (weight 1) is third and cut.
        assert_eq!(likes, [(1, 3.0, 0.75), (0, 3.0, 0.75)]);
        assert_eq!(dislikes, [(2, -2.0, 2.0 / 3.0)]);
        let plain = InterestEvidence {
            strength: &[],
            unwanted: &[],
            ..stated
        };
        let (all, _) = categorical_choice(&plain, 0.1, 10, 1.0).unwrap();
        assert_eq!(all.iter().map(|c| c.0).collect::<Vec<_>>(), [4, 1, 0, 5, 3]);
        assert!(categorical_choice(&plain, 0.99, 10, 1.0)
            .unwrap()
            .0
            .is_empty());
        let short = InterestEvidence {
            positive: &positive[..2],
            ..plain
        };
        assert!(categorical_choice(&short, 0.1, 1, 1.0).is_err());
        let nan = InterestEvidence {
            names: &["x"],
            positive: &[f64::NAN],
            negative: &[0.0],
            strength: &[],
            unwanted: &[],
        };
        assert!(categorical_choice(&nan, 0.1, 1, 1.0).is_err());
    }

    #[test]
    fn accumulation_matches_forward_increments() {
        let (landmark, week) = (1_000.0, 7.0 * DAY);
        let half_lives = [week, DAY];
        let b = batch(
            &[2_000.0, 5_000.0, 9_000.0],
            &[1.0, -2.0, 0.5],
            &[0, 0, 1],
            &half_lives,
            &[0, 2, 3, 4],
            &[0, 1, 0, 1],
            &[0.5, 0.5, 1.0, 1.0],
        );
        let got = accumulate_signals(&b, landmark, 3).unwrap();
        let inc = |t: f64, w: f64, h: f64| forward_increments(&[t], &[w], landmark, h).unwrap()[0];
        assert_eq!(got.feature_ids, vec![0, 0, 1, 1]);
        assert_eq!(got.channels, vec![0, 0, 0, 1]);
        assert_eq!(got.positive, vec![true, false, true, true]);
        let expected = [
            inc(2_000.0, 0.5, week),
            inc(5_000.0, 2.0, week),
            inc(2_000.0, 0.5, week),
            inc(9_000.0, 0.5, DAY),
        ];
        for (g, e) in got.amounts.iter().zip(expected) {
            assert!((g - e).abs() < 1e-12, "{g} vs {e}");
        }
        assert_eq!(got.counts, vec![2, 2, 0]);
        assert_eq!(got.latest[..2], [5_000.0, 9_000.0]);
        assert_eq!(got.latest[2], f64::NEG_INFINITY);
    }

    #[test]
    fn zero_evidence_is_skipped() {
        let b = batch(&[0.0], &[0.0], &[0], &[DAY], &[0, 1], &[0], &[1.0]);
        let got = accumulate_signals(&b, 0.0, 1).unwrap();
        assert!(got.amounts.is_empty());
        assert_eq!(got.counts, vec![0]);
    }

    #[test]
    fn accumulation_refuses_bad_input() {
        let ok = |b: &SignalBatch<'_>| accumulate_signals(b, 0.0, 2);
        // CSR that runs past the features.
        assert!(ok(&batch(&[0.0], &[1.0], &[0], &[DAY], &[0, 3], &[0], &[1.0])).is_err());
        // A channel with no half-life, and a bad half-life.
        assert!(ok(&batch(&[0.0], &[1.0], &[1], &[DAY], &[0, 1], &[0], &[1.0])).is_err());
        assert!(ok(&batch(&[0.0], &[1.0], &[0], &[0.0], &[0, 1], &[0], &[1.0])).is_err());
        // A feature id out of range, NaN weight, an event too far past the landmark.
        assert!(ok(&batch(&[0.0], &[1.0], &[0], &[DAY], &[0, 1], &[2], &[1.0])).is_err());
        assert!(ok(&batch(
            &[0.0],
            &[f64::NAN],
            &[0],
            &[DAY],
            &[0, 1],
            &[0],
            &[1.0]
        ))
        .is_err());
        assert!(ok(&batch(&[1e12], &[1.0], &[0], &[1.0], &[0, 1], &[0], &[1.0])).is_err());
        assert!(accumulate_signals(&batch(&[], &[], &[], &[], &[0], &[], &[]), 0.0, 0).is_ok());
    }

    #[test]
    fn decayed_weights_halve_per_half_life() {
        let got = decayed_weights(
            &[0.0, DAY, 3.0 * DAY],
            &[2.0, -1.0, 1.0],
            &[DAY; 3],
            2.0 * DAY,
        )
        .unwrap();
        assert_eq!(got, vec![0.5, -0.5, 1.0]);
        assert!(decayed_weights(&[0.0], &[1.0], &[-1.0], 0.0).is_err());
    }

    #[test]
    fn decay_factors_times_weights_are_decayed_weights() {
        let (times, half_lives) = ([0.0, DAY, 5.0 * DAY, 9.0 * DAY], [DAY, 7.0 * DAY, 3.0, DAY]);
        let weights = [2.0, -1.5, 0.25, 3.0];
        let factors = decay_factors(&times, &half_lives, 4.0 * DAY).unwrap();
        let expected = decayed_weights(&times, &weights, &half_lives, 4.0 * DAY).unwrap();
        for ((f, w), e) in factors.iter().zip(weights).zip(expected) {
            assert_eq!(f * w, e);
        }
        assert_eq!(factors[3], 1.0); // an event after `now` has not decayed
        assert!(decay_factors(&[0.0], &[0.0], 0.0).is_err());
        assert!(decay_factors(&[0.0], &[DAY], f64::NAN).is_err());
        assert!(decay_factors(&[0.0, 1.0], &[DAY], 0.0).is_err());
    }

    #[test]
    fn radix_order_is_the_order_of_sorting_attribute_value_position() {
        // A deterministic mix of ties, signs, zeros of both signs, magnitudes and zero weights.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let n = 3_000;
        let pool = [0.0, -0.0, 1.0, -1.0, 2.5, 1e-300, -1e300, 42.0, 7.0, 1e6];
        let (mut ids, mut values, mut weights) = (vec![], vec![], vec![]);
        for _ in 0..n {
            let r = next();
            ids.push((r % 5) as u32);
            values.push(if r % 3 == 0 {
                pool[(r >> 8) as usize % pool.len()]
            } else {
                ((r >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 1e3
            });
            weights.push(if r % 11 == 0 { 0.0 } else { 1.0 });
        }
        let samples = AttributeSamples {
            attribute_ids: &ids,
            values: &values,
            weights: &weights,
        };
        let got = sorted_samples(&samples, 5);
        let mut expected: Vec<usize> = (0..n).filter(|&i| weights[i] > 0.0).collect();
        expected.sort_by(|&a, &b| {
            (ids[a], values[a])
                .partial_cmp(&(ids[b], values[b]))
                .unwrap()
                .then(a.cmp(&b))
        });
        assert_eq!(got, expected);
    }

    #[test]
    fn quantiles_by_inverted_cdf() {
        let samples = AttributeSamples {
            attribute_ids: &[0, 0, 0, 0, 1, 0],
            values: &[4.0, 1.0, 3.0, 2.0, 7.0, 100.0],
            weights: &[1.0, 1.0, 1.0, 1.0, 2.0, 0.0],
        };
        let got = attribute_quantiles(&samples, 3, &[0.0, 0.5, 0.75, 1.0]).unwrap();
        assert_eq!(got.quantiles[..4], [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(got.quantiles[4..8], [7.0; 4]);
        assert!(got.quantiles[8..].iter().all(|v| v.is_nan()));
        assert_eq!(got.total_weight, vec![4.0, 2.0, 0.0]);
        assert_eq!(got.sum_squares, vec![4.0, 4.0, 0.0]);
        assert_eq!(got.counts, vec![4, 1, 0]);
    }

    #[test]
    fn ordered_bits_keep_the_order_of_values() {
        let values = [
            f64::MIN,
            -1e300,
            -1.0,
            -1e-300,
            -0.0,
            0.0,
            1e-300,
            1.0,
            1e300,
            f64::MAX,
        ];
        for pair in values.windows(2) {
            let (a, b) = (ordered_bits(pair[0]), ordered_bits(pair[1]));
            assert!(a < b || (pair[0] == pair[1] && a == b), "{pair:?}");
        }
    }

    #[test]
    fn quantiles_refuse_bad_input() {
        let samples = AttributeSamples {
            attribute_ids: &[0],
            values: &[1.0],
            weights: &[-1.0],
        };
        assert!(attribute_quantiles(&samples, 1, &[0.5]).is_err());
        let samples = AttributeSamples {
            weights: &[1.0],
            ..samples
        };
        assert!(attribute_quantiles(&samples, 1, &[1.5]).is_err());
        assert!(attribute_quantiles(&samples, 0, &[0.5]).is_err());
    }

    #[test]
    fn channel_keys() {
        assert_eq!(parse_channel_key("+604800"), Some((true, 604_800.0)));
        assert_eq!(parse_channel_key("-0.5"), Some((false, 0.5)));
        assert_eq!(parse_channel_key("-1e3"), Some((false, 1_000.0)));
        for bad in ["", "+", "604800", "*60", "+-5", "+0", "+nan", "+inf", "+é"] {
            assert_eq!(parse_channel_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn phases_equal_rem_euclid() {
        let day = DAY;
        for x in [
            0.0,
            -1.0,
            1_709_586_900.0,
            1_709_596_800.0, // a whole number of days
            1_709_586_900.123_456,
            -1e9 - 0.5,
            86_399.999_999_9,
            3.0 * day + 1e-9,
            -9.042_071_099_154_161e-210,
        ] {
            assert_eq!(phase_of(x, day), x.rem_euclid(day), "{x}");
            assert_eq!(phase_of(x, 7.0 * day), x.rem_euclid(7.0 * day), "{x}");
        }
    }

    #[test]
    fn hours_and_weekdays() {
        // 1970-01-05 was a Monday; 13:30 UTC on it.
        let t = 4.0 * DAY + 13.5 * 3_600.0;
        let hours = periodic_histogram(&[t, -1.0], &[1.0, 2.0], DAY, 24, 0.0).unwrap();
        assert_eq!(hours[13], 1.0);
        assert_eq!(hours[23], 2.0);
        let days = periodic_histogram(&[t], &[1.0], 7.0 * DAY, 7, 3.0 * DAY).unwrap();
        assert_eq!(days[0], 1.0);
        assert!(periodic_histogram(&[t], &[1.0], 0.0, 7, 0.0).is_err());
        assert!(periodic_histogram(&[t], &[1.0], DAY, 0, 0.0).is_err());
    }

    #[test]
    fn concentration_and_peaks() {
        assert_eq!(concentration(&[1.0, 1.0, 1.0, 1.0]), 0.0);
        assert_eq!(concentration(&[0.0, 5.0, 0.0]), 1.0);
        assert_eq!(concentration(&[0.0, 0.0]), 0.0);
        let half = concentration(&[3.0, 1.0]);
        let entropy = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((half - (1.0 - entropy / 2f64.ln())).abs() < 1e-15);
        // Largest first, ties by bin, until half the mass: then in bin order.
        assert_eq!(peak_bins(&[1.0, 4.0, 0.0, 4.0, 1.0], 0.5), vec![1, 3]);
        assert_eq!(peak_bins(&[1.0, 1.0, 1.0, 1.0], 0.5), vec![0, 1]);
        assert_eq!(peak_bins(&[0.0, 0.0], 0.5), Vec::<usize>::new());
    }

    #[test]
    fn a_history_summary_weighs_liked_events_and_activity() {
        // Two events a half-life apart (now at the second): the first weighs half as much.
        // Attribute 0 ("price") on both; the second event is disliked and does not count.
        let monday = 4.0 * DAY;
        let history = History {
            times: vec![monday, monday + 3_600.0],
            weights: vec![2.0, -1.0],
            half_lives: vec![3_600.0, 3_600.0],
            rows: vec![0, 1],
            attribute_ids: vec![0, 0],
            values: vec![10.0, 20.0],
            names: vec!["price".into()],
        };
        let s = summarize_history(&history, monday + 3_600.0, &[0.5], 0.0).unwrap();
        assert_eq!(s.events, 2);
        assert_eq!(s.attributes.counts, vec![1]);
        assert_eq!(s.attributes.quantiles, vec![10.0]);
        assert_eq!(s.attributes.total_weight, vec![1.0]); // relative to the strongest liked
        let a = s.activity.unwrap();
        assert!((a.effective - 1.5f64.powi(2) / 1.25).abs() < 1e-12);
        assert_eq!(
            (a.hours.peaks.clone(), a.days.peaks.clone()),
            (vec![1], vec![0])
        );
        let bad_row = History {
            rows: vec![0, 2],
            ..history
        };
        assert!(matches!(
            summarize_history(&bad_row, monday, &[0.5], 0.0),
            Err(KernelError::OutOfRange { what: "rows", .. })
        ));
        let empty = summarize_history(&History::default(), 0.0, &[0.5], 0.0).unwrap();
        assert_eq!((empty.events, empty.activity), (0, None));
    }
}
