//! Item-to-item co-visitation learned online, one event at a time, for the whole tenant.
//!
//! When a user interacts with item `i`, `i` is paired with the up to `window` items that user
//! touched just before it (newest first). A pair at lag `d` (1 = the item just before) adds
//! `exp(−(d−1)/lag_scale)` to both `C[h][i]` and `C[i][h]`: items that follow each other closely
//! in many users' sequences become neighbours. Each item also counts its events, `n[i]`.
//!
//! A user is scored from their own recent items `h_0, h_1, …` (newest first, at most `recent`):
//!
//! ```text
//! cv(j) = Σ_p exp(−p/recency_scale) · C[h_p][j] / n[h_p]^beta  /  n[j]^alpha
//! ```
//!
//! `beta` keeps a very popular history item from speaking for all; `alpha` damps candidates that
//! co-occur with everything merely because they are popular.
//!
//! Memory is bounded: when an item's neighbour map reaches `2·max_neighbours` entries, only its
//! `max_neighbours` heaviest are kept (ties: the lower id), an amortised O(1) step.
//!
//! Optional time decay is forward decay (see `decay.rs`): an event at `t` adds its weight times
//! `2^((t − landmark)/half_life)`, so older evidence fades relative to newer without touching
//! the stored sums; every stored value is rescaled only when the exponent grows large.
//!
//! The design and every default come from measurements on MovieLens (EVALUATION.md).

use crate::error::{KernelError, Result};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// Marks an item id that is not known to the model (in [`CoVisitation::lookup_many`] output and
/// accepted as input wherever dense ids are taken: it scores 0 and is skipped in histories).
pub const UNKNOWN: u32 = u32::MAX;

/// Most items a model holds.
pub const MAX_ITEMS: usize = 10_000_000;
/// Longest item id, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1_024;
/// Largest window, number of recent items and neighbour bound that a configuration may ask for.
pub const MAX_WINDOW: usize = 10_000;
pub const MAX_NEIGHBOURS: usize = 1_000_000;

/// Forward-decay exponents (base 2) above this make every stored value be rescaled first, far
/// below where an f32 weight (2^128) could overflow even summed over many events.
const REBASE_EXPONENT: f64 = 48.0;

/// How the model learns. Fixed for the life of a model (saved with it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Learning {
    /// How many of the user's previous items each event is paired with.
    pub window: usize,
    /// Lag decay: the pair at lag d weighs `exp(−(d−1)/lag_scale)`; infinity weighs all alike.
    pub lag_scale: f64,
    /// Neighbours kept per item (the map may grow to twice this between prunings); 0 = no bound.
    pub max_neighbours: usize,
    /// Half-life of the evidence in the events' time unit (seconds); `None` = no decay.
    pub half_life: Option<f64>,
}

impl Default for Learning {
    fn default() -> Self {
        Self {
            window: 20,
            lag_scale: 5.0,
            max_neighbours: 200,
            half_life: None,
        }
    }
}

impl Learning {
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return Err(KernelError::Invalid(format!(
                "window must lie in [1, {MAX_WINDOW}], got {}",
                self.window
            )));
        }
        if self.lag_scale.is_nan() || self.lag_scale <= 0.0 {
            return Err(KernelError::Invalid(format!(
                "lag_scale must be positive (infinity for no lag decay), got {}",
                self.lag_scale
            )));
        }
        if self.max_neighbours > MAX_NEIGHBOURS {
            return Err(KernelError::Invalid(format!(
                "max_neighbours must lie in [0, {MAX_NEIGHBOURS}] (0 for no bound), got {}",
                self.max_neighbours
            )));
        }
        if let Some(h) = self.half_life {
            if !(h.is_finite() && h > 0.0) {
                return Err(KernelError::Invalid(format!(
                    "half_life must be a positive finite number of seconds, got {h}"
                )));
            }
        }
        Ok(())
    }

    fn lag_weights(&self) -> Vec<f64> {
        (0..self.window)
            .map(|d| (-(d as f64) / self.lag_scale).exp())
            .collect()
    }
}

/// How a user's recent items are turned into scores. A model keeps defaults (saved with it);
/// a request may pass others.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scoring {
    /// How many of the user's most recent items speak.
    pub recent: usize,
    /// The p-th most recent item (p = 0 the newest) weighs `exp(−p/recency_scale)`; infinity
    /// weighs all alike.
    pub recency_scale: f64,
    /// Candidate damping: divide by `n[j]^alpha`.
    pub alpha: f64,
    /// History damping: divide by `n[h]^beta`.
    pub beta: f64,
}

impl Default for Scoring {
    fn default() -> Self {
        Self {
            recent: 20,
            recency_scale: 4.0,
            alpha: 0.3,
            beta: 0.5,
        }
    }
}

impl Scoring {
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_WINDOW).contains(&self.recent) {
            return Err(KernelError::Invalid(format!(
                "recent must lie in [1, {MAX_WINDOW}], got {}",
                self.recent
            )));
        }
        if self.recency_scale.is_nan() || self.recency_scale <= 0.0 {
            return Err(KernelError::Invalid(format!(
                "recency_scale must be positive (infinity for no recency weighting), got {}",
                self.recency_scale
            )));
        }
        for (name, v) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(v.is_finite() && (0.0..=4.0).contains(&v)) {
                return Err(KernelError::Invalid(format!(
                    "{name} must lie in [0, 4], got {v}"
                )));
            }
        }
        Ok(())
    }
}

/// Item ids (strings) ↔ dense ids, in order of first sight.
#[derive(Debug, Clone, Default, PartialEq)]
struct Keys {
    names: Vec<Box<str>>,
    index: FxHashMap<Box<str>, u32>,
}

impl Keys {
    fn get(&self, key: &str) -> Option<u32> {
        self.index.get(key).copied()
    }

    fn insert(&mut self, key: &str) -> Result<u32> {
        if let Some(id) = self.get(key) {
            return Ok(id);
        }
        check_key(key)?;
        if self.names.len() >= MAX_ITEMS {
            return Err(KernelError::Invalid(format!(
                "the co-visitation model holds at most {MAX_ITEMS} items"
            )));
        }
        let id = self.names.len() as u32;
        let boxed: Box<str> = key.into();
        self.names.push(boxed.clone());
        self.index.insert(boxed, id);
        Ok(id)
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KernelError::Invalid(format!(
            "item ids must have 1 to {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

type Row = FxHashMap<u32, f32>;

/// The model: item counts and neighbour maps over dense item ids, plus the id mapping.
#[derive(Debug, Clone)]
pub struct CoVisitation {
    learning: Learning,
    scoring: Scoring,
    lag_weights: Vec<f64>,
    keys: Keys,
    /// Events per item (forward-decayed when there is a half-life).
    counts: Vec<f64>,
    rows: Vec<Row>,
    /// Forward-decay landmark and the latest event time seen (NaN before the first event).
    landmark: f64,
    latest: f64,
    events: u64,
}

impl PartialEq for CoVisitation {
    fn eq(&self, other: &Self) -> bool {
        self.learning == other.learning
            && self.scoring == other.scoring
            && self.keys == other.keys
            && self.counts == other.counts
            && self.rows == other.rows
            && self.landmark.to_bits() == other.landmark.to_bits()
            && self.latest.to_bits() == other.latest.to_bits()
            && self.events == other.events
    }
}

impl CoVisitation {
    pub fn new(learning: Learning, scoring: Scoring) -> Result<Self> {
        learning.validate()?;
        scoring.validate()?;
        Ok(Self {
            learning,
            scoring,
            lag_weights: learning.lag_weights(),
            keys: Keys::default(),
            counts: Vec::new(),
            rows: Vec::new(),
            landmark: f64::NAN,
            latest: f64::NAN,
            events: 0,
        })
    }

    pub fn learning(&self) -> Learning {
        self.learning
    }

    /// The default scoring.
    pub fn scoring(&self) -> Scoring {
        self.scoring
    }

    pub fn set_scoring(&mut self, scoring: Scoring) -> Result<()> {
        scoring.validate()?;
        self.scoring = scoring;
        Ok(())
    }

    /// Number of items known.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Number of events learned from.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Number of stored (item, neighbour) weights: the model's size.
    pub fn entries(&self) -> usize {
        self.rows.iter().map(|r| r.len()).sum()
    }

    /// The latest event time seen, if any.
    pub fn latest(&self) -> Option<f64> {
        (!self.latest.is_nan()).then_some(self.latest)
    }

    pub fn key(&self, id: u32) -> Option<&str> {
        self.keys.names.get(id as usize).map(|k| &**k)
    }

    pub fn lookup(&self, key: &str) -> Option<u32> {
        self.keys.get(key)
    }

    /// The dense id of every key ([`UNKNOWN`] for keys the model has not seen).
    pub fn lookup_many<S: AsRef<str>>(&self, keys: &[S]) -> Vec<u32> {
        keys.iter()
            .map(|k| self.keys.get(k.as_ref()).unwrap_or(UNKNOWN))
            .collect()
    }

    /// The dense id of `key`, adding the item when it is new.
    pub fn intern(&mut self, key: &str) -> Result<u32> {
        let id = self.keys.insert(key)?;
        if id as usize == self.counts.len() {
            self.counts.push(0.0);
            self.rows.push(Row::default());
        }
        Ok(id)
    }

    /// The event count of each item (decayed to the latest event when there is a half-life);
    /// 0 for unknown ids.
    pub fn counts(&self, items: &[u32]) -> Vec<f64> {
        let scale = self.decay_to_latest();
        items
            .iter()
            .map(|&i| self.counts.get(i as usize).map_or(0.0, |&n| n * scale))
            .collect()
    }

    /// The neighbours of `item`, heaviest first (ties: lower id first), at most `k`.
    pub fn neighbours(&self, item: u32, k: usize) -> Vec<(u32, f64)> {
        let Some(row) = self.rows.get(item as usize) else {
            return Vec::new();
        };
        let scale = self.decay_to_latest();
        let mut pairs: Vec<(u32, f32)> = row.iter().map(|(&j, &w)| (j, w)).collect();
        pairs.sort_unstable_by(heaviest_first);
        pairs
            .into_iter()
            .take(k)
            .map(|(j, w)| (j, w as f64 * scale))
            .collect()
    }

    /// What the growth factor of forward decay makes of a stored value at the latest event.
    fn decay_to_latest(&self) -> f64 {
        match self.learning.half_life {
            Some(h) if !self.latest.is_nan() => ((self.landmark - self.latest) / h).exp2(),
            _ => 1.0,
        }
    }

    /// The weight multiplier of an event at `t`, rescaling stored values first when needed.
    fn growth(&mut self, t: f64) -> f64 {
        let Some(h) = self.learning.half_life else {
            return 1.0;
        };
        if self.landmark.is_nan() {
            self.landmark = t;
        }
        let exponent = (t - self.landmark) / h;
        if exponent <= REBASE_EXPONENT {
            return exponent.exp2();
        }
        let factor = (-exponent).exp2();
        for n in &mut self.counts {
            *n *= factor;
        }
        for row in &mut self.rows {
            for w in row.values_mut() {
                *w = (*w as f64 * factor) as f32;
            }
        }
        self.landmark = t;
        1.0
    }

    fn check_item(&self, item: u32, what: &'static str) -> Result<()> {
        if item as usize >= self.len() {
            return Err(KernelError::OutOfRange {
                what,
                index: item as usize,
                len: self.len(),
            });
        }
        Ok(())
    }

    /// Learns one event: `item` at time `t`, after `previous` (the user's earlier items, newest
    /// first; only the first `window` count, and [`UNKNOWN`] ones are skipped).
    pub fn observe(&mut self, item: u32, previous: &[u32], t: f64) -> Result<()> {
        self.check_item(item, "item")?;
        for &h in previous.iter().take(self.learning.window) {
            if h != UNKNOWN {
                self.check_item(h, "previous item")?;
            }
        }
        if !t.is_finite() {
            return Err(KernelError::Invalid(format!(
                "event times must be finite, got {t}"
            )));
        }
        self.observe_unchecked(item, previous.iter().copied(), t);
        Ok(())
    }

    fn observe_unchecked(&mut self, item: u32, previous: impl Iterator<Item = u32>, t: f64) {
        let g = self.growth(t);
        let cap = self.learning.max_neighbours;
        for (d, h) in previous.take(self.learning.window).enumerate() {
            // The lag counts every earlier event, including a repeat of this item or an
            // unknown one, so that a pair's weight reflects how far apart the two events were.
            if h == item || h == UNKNOWN {
                continue;
            }
            let w = (g * self.lag_weights[d]) as f32;
            add(&mut self.rows[h as usize], item, w, cap);
            *self.rows[item as usize].entry(h).or_insert(0.0) += w;
        }
        prune_if_full(&mut self.rows[item as usize], cap);
        self.counts[item as usize] += g;
        if self.latest.is_nan() || t > self.latest {
            self.latest = t;
        }
        self.events += 1;
    }

    /// Learns a batch of events in the order given (time order). Event `e` is `items[e]` by
    /// user `users[e]` at `times[e]`; `seeds[u]` holds user `u`'s items before the batch, newest
    /// first. Each user's sequence then continues through the batch.
    pub fn observe_many(
        &mut self,
        users: &[u32],
        items: &[u32],
        times: &[f64],
        seeds: &[Vec<u32>],
    ) -> Result<()> {
        crate::error::check_len("items", users.len(), items.len())?;
        crate::error::check_len("times", users.len(), times.len())?;
        if let Some(e) = users.iter().position(|&u| u as usize >= seeds.len()) {
            return Err(KernelError::OutOfRange {
                what: "users",
                index: users[e] as usize,
                len: seeds.len(),
            });
        }
        for &i in items {
            self.check_item(i, "items")?;
        }
        for seed in seeds {
            for &h in seed.iter().take(self.learning.window) {
                if h != UNKNOWN {
                    self.check_item(h, "seed items")?;
                }
            }
        }
        if let Some(index) = times.iter().position(|t| !t.is_finite()) {
            return Err(KernelError::NotFinite {
                what: "times",
                index,
            });
        }
        let window = self.learning.window;
        // Each user's recent items, newest at the back; created on the user's first event.
        let mut recent: Vec<Option<VecDeque<u32>>> = vec![None; seeds.len()];
        for ((&u, &i), &t) in users.iter().zip(items).zip(times) {
            let buffer = recent[u as usize].get_or_insert_with(|| {
                let mut b = VecDeque::with_capacity(window + 1);
                b.extend(seeds[u as usize].iter().take(window).rev());
                b
            });
            self.observe_unchecked(i, buffer.iter().rev().copied(), t);
            buffer.push_back(i);
            if buffer.len() > window {
                buffer.pop_front();
            }
        }
        Ok(())
    }

    /// Co-visitation scores of `candidates` for a user whose recent items are `history`
    /// (newest first). Unknown ids score 0 and are skipped in the history (keeping their
    /// position).
    pub fn scores(
        &self,
        history: &[u32],
        candidates: &[u32],
        scoring: &Scoring,
    ) -> Result<Vec<f64>> {
        scoring.validate()?;
        // Accumulate straight into the candidates' slots: the map from item to slot is as
        // small as the request and stays in cache, while the history's rows (up to `recent` ×
        // 2·max_neighbours entries) are only read. A repeated candidate shares its first slot.
        let mut slot: FxHashMap<u32, u32> = FxHashMap::default();
        slot.reserve(candidates.len());
        let first: Vec<u32> = candidates
            .iter()
            .enumerate()
            .map(|(k, &j)| *slot.entry(j).or_insert(k as u32))
            .collect();
        let mut acc = vec![0.0; candidates.len()];
        for (p, &h) in history.iter().take(scoring.recent).enumerate() {
            let Some(row) = self.rows.get(h as usize) else {
                continue;
            };
            let n = self.counts[h as usize];
            if row.is_empty() || n <= 0.0 {
                continue;
            }
            let weight = (-(p as f64) / scoring.recency_scale).exp() / n.powf(scoring.beta);
            for (&j, &c) in row {
                if let Some(&k) = slot.get(&j) {
                    acc[k as usize] += weight * c as f64;
                }
            }
        }
        Ok(candidates
            .iter()
            .zip(&first)
            .map(|(&j, &k)| match self.counts.get(j as usize) {
                Some(&n) if n > 0.0 && acc[k as usize] != 0.0 => {
                    acc[k as usize] / n.powf(scoring.alpha)
                }
                _ => 0.0,
            })
            .collect())
    }

    // -- persistence ------------------------------------------------------------------------

    /// The whole model as bytes (little-endian; format in [`Self::from_bytes`]). Neighbours are
    /// written in id order, so equal models give equal bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.len() * 24 + self.entries() * 8);
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, FORMAT_VERSION);
        let l = self.learning;
        put_u32(&mut out, l.window as u32);
        put_f64(&mut out, l.lag_scale);
        put_u32(&mut out, l.max_neighbours as u32);
        put_f64(&mut out, l.half_life.unwrap_or(0.0));
        let s = self.scoring;
        put_u32(&mut out, s.recent as u32);
        put_f64(&mut out, s.recency_scale);
        put_f64(&mut out, s.alpha);
        put_f64(&mut out, s.beta);
        put_f64(&mut out, self.landmark);
        put_f64(&mut out, self.latest);
        out.extend_from_slice(&self.events.to_le_bytes());
        put_u32(&mut out, self.len() as u32);
        for key in &self.keys.names {
            put_u32(&mut out, key.len() as u32);
            out.extend_from_slice(key.as_bytes());
        }
        for &n in &self.counts {
            put_f64(&mut out, n);
        }
        let mut pairs: Vec<(u32, f32)> = Vec::new();
        for row in &self.rows {
            pairs.clear();
            pairs.extend(row.iter().map(|(&j, &w)| (j, w)));
            pairs.sort_unstable_by_key(|&(j, _)| j);
            put_u32(&mut out, pairs.len() as u32);
            for &(j, w) in &pairs {
                put_u32(&mut out, j);
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// Reads what [`Self::to_bytes`] wrote, checking every field: anything truncated,
    /// inconsistent or out of range is an error, never a panic.
    ///
    /// Format: magic `PNCOVIS1`, u32 format version, u32 window, f64 lag_scale, u32
    /// max_neighbours, f64 half_life (0 = none), u32 recent, f64 recency_scale, f64 alpha, f64
    /// beta, f64 landmark, f64 latest, u64 events, u32 items, then per item a u32 length and its UTF-8 id, then per item an f64 count, then per
    /// item a u32 number of neighbours and that many (u32 id, f32 weight).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(invalid("not a penchant co-visitation model (bad magic)"));
        }
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(invalid(&format!(
                "format version {version} is not supported (expected {FORMAT_VERSION})"
            )));
        }
        let window = r.u32()? as usize;
        let lag_scale = r.f64()?;
        let max_neighbours = r.u32()? as usize;
        let half_life = r.f64()?;
        let learning = Learning {
            window,
            lag_scale,
            max_neighbours,
            half_life: (half_life != 0.0).then_some(half_life),
        };
        learning.validate().map_err(|e| invalid(&e.to_string()))?;
        let scoring = Scoring {
            recent: r.u32()? as usize,
            recency_scale: r.f64()?,
            alpha: r.f64()?,
            beta: r.f64()?,
        };
        scoring.validate().map_err(|e| invalid(&e.to_string()))?;
        let landmark = r.f64()?;
        let latest = r.f64()?;
        for (name, v) in [("landmark", landmark), ("latest", latest)] {
            if v.is_infinite() {
                return Err(invalid(&format!("{name} is infinite")));
            }
        }
        let events = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        let n = r.u32()? as usize;
        if n > MAX_ITEMS {
            return Err(invalid(&format!("{n} items is more than {MAX_ITEMS}")));
        }
        // Each item needs at least 4 + 1 + 8 + 4 bytes: refuse early rather than allocate for
        // a count the input cannot hold.
        if n.saturating_mul(17) > r.remaining() {
            return Err(invalid("truncated (fewer bytes than the item count needs)"));
        }
        let mut model = Self::new(learning, scoring).map_err(|e| invalid(&e.to_string()))?;
        model.landmark = landmark;
        model.latest = latest;
        model.events = events;
        for _ in 0..n {
            let len = r.u32()? as usize;
            let key = std::str::from_utf8(r.take(len)?)
                .map_err(|_| invalid("an item id is not valid UTF-8"))?;
            check_key(key).map_err(|e| invalid(&e.to_string()))?;
            if model.keys.get(key).is_some() {
                return Err(invalid(&format!("item id {key:?} appears twice")));
            }
            model.intern(key).map_err(|e| invalid(&e.to_string()))?;
        }
        for i in 0..n {
            let c = r.f64()?;
            if !(c.is_finite() && c >= 0.0) {
                return Err(invalid("an item count is negative or not finite"));
            }
            model.counts[i] = c;
        }
        let cap = if max_neighbours == 0 {
            n
        } else {
            (2 * max_neighbours).min(n)
        };
        for i in 0..n {
            let len = r.u32()? as usize;
            if len > cap || len.saturating_mul(8) > r.remaining() {
                return Err(invalid(
                    "a neighbour list is longer than allowed or truncated",
                ));
            }
            let row = &mut model.rows[i];
            row.reserve(len);
            for _ in 0..len {
                let j = r.u32()?;
                let w = f32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
                if j as usize >= n || j as usize == i {
                    return Err(invalid("a neighbour id is out of range"));
                }
                if !(w.is_finite() && w >= 0.0) {
                    return Err(invalid("a neighbour weight is negative or not finite"));
                }
                if row.insert(j, w).is_some() {
                    return Err(invalid("a neighbour appears twice in one list"));
                }
            }
        }
        if r.remaining() != 0 {
            return Err(invalid("trailing bytes after the model"));
        }
        Ok(model)
    }
}

/// Heaviest first; among equal weights the lower id first. A total order, so pruning does not
/// depend on the hash map's iteration order.
fn heaviest_first(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

fn add(row: &mut Row, j: u32, w: f32, cap: usize) {
    *row.entry(j).or_insert(0.0) += w;
    prune_if_full(row, cap);
}

/// Keeps the `cap` heaviest neighbours once the map has reached `2·cap` entries.
fn prune_if_full(row: &mut Row, cap: usize) {
    if cap == 0 || row.len() < 2 * cap {
        return;
    }
    let mut pairs: Vec<(u32, f32)> = row.iter().map(|(&j, &w)| (j, w)).collect();
    pairs.select_nth_unstable_by(cap - 1, heaviest_first);
    pairs.truncate(cap);
    row.clear();
    row.extend(pairs);
}

const MAGIC: &[u8] = b"PNCOVIS1";
const FORMAT_VERSION: u32 = 1;

fn invalid(message: &str) -> KernelError {
    KernelError::Invalid(format!("co-visitation bytes: {message}"))
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(invalid(&format!("truncated at byte {}", self.at)));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(window: usize, lag_scale: f64, max_neighbours: usize) -> CoVisitation {
        let mut m = CoVisitation::new(
            Learning {
                window,
                lag_scale,
                max_neighbours,
                half_life: None,
            },
            Scoring::default(),
        )
        .unwrap();
        for k in ["a", "b", "c", "d", "e"] {
            m.intern(k).unwrap();
        }
        m
    }

    fn weight(m: &CoVisitation, i: u32, j: u32) -> f32 {
        m.rows[i as usize].get(&j).copied().unwrap_or(0.0)
    }

    #[test]
    fn pairs_are_weighted_by_lag_and_symmetric() {
        let mut m = model(2, 1.0, 0);
        // One user: a, b, c. Pairs: (b,a) lag 1; (c,b) lag 1, (c,a) lag 2.
        m.observe(0, &[], 0.0).unwrap();
        m.observe(1, &[0], 1.0).unwrap();
        m.observe(2, &[1, 0], 2.0).unwrap();
        assert_eq!(weight(&m, 0, 1), 1.0);
        assert_eq!(weight(&m, 1, 0), 1.0);
        assert_eq!(weight(&m, 2, 1), 1.0);
        assert_eq!(weight(&m, 0, 2), (-1.0f64).exp() as f32);
        assert_eq!(weight(&m, 2, 0), (-1.0f64).exp() as f32);
        assert_eq!(m.counts(&[0, 1, 2, 3]), vec![1.0, 1.0, 1.0, 0.0]);
        assert_eq!(m.events(), 3);
        assert_eq!(m.entries(), 6);
    }

    #[test]
    fn the_window_bounds_the_pairs_and_repeats_keep_their_lag() {
        let mut m = model(2, f64::INFINITY, 0);
        // d after [c, d, a]: d is skipped (itself) but still takes lag 2, so only c pairs.
        m.observe(3, &[2, 3, 0], 0.0).unwrap();
        assert_eq!(weight(&m, 3, 2), 1.0);
        assert_eq!(weight(&m, 3, 0), 0.0);
        assert_eq!(weight(&m, 3, 3), 0.0);
    }

    #[test]
    fn a_batch_equals_events_one_by_one() {
        let users = [0u32, 1, 0, 0, 1, 1];
        let items = [0u32, 1, 2, 3, 0, 4];
        let times = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let seeds = vec![vec![4u32], vec![]];
        let mut batch = model(3, 2.0, 0);
        batch.observe_many(&users, &items, &times, &seeds).unwrap();
        let mut single = model(3, 2.0, 0);
        let mut history: Vec<Vec<u32>> = seeds.clone();
        for e in 0..users.len() {
            let h = &mut history[users[e] as usize];
            single.observe(items[e], h, times[e]).unwrap();
            h.insert(0, items[e]);
        }
        assert_eq!(batch, single);
    }

    #[test]
    fn pruning_keeps_the_heaviest_with_ties_to_the_lower_id() {
        let mut row = Row::default();
        for (j, w) in [(5, 1.0), (1, 3.0), (4, 1.0), (2, 2.0)] {
            row.insert(j, w);
        }
        prune_if_full(&mut row, 2);
        let mut kept: Vec<_> = row.into_iter().collect();
        kept.sort_unstable_by_key(|&(j, _)| j);
        assert_eq!(kept, vec![(1, 3.0), (2, 2.0)]);

        let mut row = Row::default();
        row.extend([(7, 1.0), (3, 1.0), (9, 1.0), (8, 0.5)]);
        prune_if_full(&mut row, 2);
        let mut kept: Vec<_> = row.into_keys().collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![3, 7]);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut m = CoVisitation::new(
            Learning {
                window: 5,
                lag_scale: 5.0,
                max_neighbours: 3,
                half_life: None,
            },
            Scoring::default(),
        )
        .unwrap();
        for i in 0..50 {
            m.intern(&format!("i{i}")).unwrap();
        }
        let mut history = Vec::new();
        for e in 0..2_000u32 {
            let item = (e * 7 + e / 13) % 50;
            m.observe(item, &history, e as f64).unwrap();
            history.insert(0, item);
            history.truncate(5);
        }
        assert!(m.rows.iter().all(|r| r.len() < 6));
    }

    #[test]
    fn scores_follow_the_formula() {
        let mut m = model(1, 1.0, 0);
        // Two users: a→b twice, a→c once, d→c once.
        m.observe(0, &[], 0.0).unwrap();
        m.observe(1, &[0], 0.0).unwrap();
        m.observe(0, &[], 0.0).unwrap();
        m.observe(1, &[0], 0.0).unwrap();
        m.observe(2, &[0], 0.0).unwrap();
        m.observe(3, &[], 0.0).unwrap();
        m.observe(2, &[3], 0.0).unwrap();
        let s = Scoring {
            recent: 2,
            recency_scale: 2.0,
            alpha: 0.5,
            beta: 1.0,
        };
        // History (newest first): d, a. n = [2, 2, 2, 1, 0].
        let got = m.scores(&[3, 0], &[1, 2, 4, UNKNOWN], &s).unwrap();
        let w1 = (-0.5f64).exp();
        let b = w1 * 2.0 / 2.0 / 2f64.sqrt();
        let c = (1.0 / 1.0 + w1 * 1.0 / 2.0) / 2f64.sqrt();
        assert!((got[0] - b).abs() < 1e-12, "{got:?}");
        assert!((got[1] - c).abs() < 1e-12, "{got:?}");
        assert_eq!(&got[2..], &[0.0, 0.0]);
        // A repeated candidate scores the same each time.
        let again = m.scores(&[3, 0], &[2, 1, 2], &s).unwrap();
        assert_eq!(again, vec![got[1], got[0], got[1]]);
        // Only `recent` items speak.
        let got = m.scores(&[4, 4, 0], &[1], &s).unwrap();
        assert_eq!(got, vec![0.0]);
    }

    #[test]
    fn decay_weighs_recent_events_more_and_survives_rebasing() {
        let mut m = CoVisitation::new(
            Learning {
                window: 1,
                lag_scale: 1.0,
                max_neighbours: 0,
                half_life: Some(10.0),
            },
            Scoring::default(),
        )
        .unwrap();
        for k in ["a", "b", "c"] {
            m.intern(k).unwrap();
        }
        m.observe(1, &[0], 0.0).unwrap();
        m.observe(2, &[0], 10.0).unwrap();
        // At the latest event (t = 10) the older pair is worth half.
        let n = m.neighbours(0, 5);
        assert_eq!(n[0].0, 2);
        assert!(
            (n[0].1 - 1.0).abs() < 1e-6 && (n[1].1 - 0.5).abs() < 1e-6,
            "{n:?}"
        );
        // Far in the future: a rebase happens; ratios hold.
        m.observe(1, &[0], 10.0 + 10.0 * 60.0).unwrap();
        m.observe(2, &[0], 10.0 + 10.0 * 61.0).unwrap();
        let n = m.neighbours(0, 5);
        assert_eq!(n[0].0, 2);
        assert!(
            (n[0].1 - 1.0).abs() < 1e-6 && (n[1].1 - 0.5).abs() < 1e-6,
            "{n:?}"
        );
        assert!(m.counts(&[0, 1, 2]).iter().all(|c| c.is_finite()));
    }

    #[test]
    fn bytes_round_trip_and_bad_bytes_are_errors() {
        let mut m = model(3, 2.0, 2);
        let mut history = Vec::new();
        for (e, item) in [0u32, 1, 2, 3, 4, 0, 2, 1, 3].into_iter().enumerate() {
            m.observe(item, &history, e as f64).unwrap();
            history.insert(0, item);
        }
        let bytes = m.to_bytes();
        let back = CoVisitation::from_bytes(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_bytes(), bytes);
        for cut in 0..bytes.len() {
            assert!(
                CoVisitation::from_bytes(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CoVisitation::from_bytes(&longer).is_err());
        // Flipping any single byte never panics (it may or may not still parse).
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0xFF;
            let _ = CoVisitation::from_bytes(&bad);
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut m = model(2, 1.0, 0);
        assert!(m.observe(9, &[], 0.0).is_err());
        assert!(m.observe(0, &[9], 0.0).is_err());
        assert!(m.observe(0, &[UNKNOWN], 0.0).is_ok());
        assert!(m.observe(0, &[], f64::NAN).is_err());
        assert!(m.observe_many(&[1], &[0], &[0.0], &[vec![]]).is_err());
        assert!(m.observe_many(&[0], &[0, 1], &[0.0], &[vec![]]).is_err());
        assert!(m.intern("").is_err());
        assert!(CoVisitation::new(
            Learning {
                window: 0,
                ..Learning::default()
            },
            Scoring::default()
        )
        .is_err());
        assert!(CoVisitation::new(
            Learning {
                lag_scale: f64::NAN,
                ..Learning::default()
            },
            Scoring::default()
        )
        .is_err());
        assert!(CoVisitation::new(
            Learning::default(),
            Scoring {
                recent: 0,
                ..Scoring::default()
            }
        )
        .is_err());
        let s = Scoring {
            alpha: f64::NAN,
            ..Scoring::default()
        };
        assert!(m.scores(&[], &[], &s).is_err());
    }
}
