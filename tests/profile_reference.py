"""Plain NumPy/Python reference implementations of the profile kernels (rust/profile.rs) and of
the interest arithmetic. Slow and obvious on purpose: property tests compare the kernels with
these, and the benchmarks time them beside the kernels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from penchant.feedback_collector import Signal
from penchant.user_profile import Interest, UserProfile

Array = npt.NDArray[np.float64]


def accumulate_signals(
    times: Sequence[float],
    weights: Sequence[float],
    channels: Sequence[int],
    half_lives: Sequence[float],
    indptr: Sequence[int],
    feature_ids: Sequence[int],
    feature_weights: Sequence[float],
    landmark: float,
    n_features: int,
) -> dict[tuple[int, int, bool], float]:
    """(feature, channel, positive) → summed |w·v|·2^((t − L)/h)."""
    t = np.asarray(times, dtype=np.float64)
    rows = np.repeat(np.arange(len(t)), np.diff(np.asarray(indptr)))
    h = np.asarray(half_lives, dtype=np.float64)[np.asarray(channels, dtype=np.int64)]
    amounts = (np.asarray(weights)[rows] * np.asarray(feature_weights)) * np.exp2((t[rows] - landmark) / h[rows])
    out: dict[tuple[int, int, bool], float] = {}
    for f, c, a in zip(np.asarray(feature_ids), np.asarray(channels)[rows], amounts, strict=True):
        if a != 0:
            key = (int(f), int(c), bool(a > 0))
            out[key] = out.get(key, 0.0) + abs(float(a))
    return out


def increments(landmark: float, signals: Sequence[Signal]) -> list[list[tuple[str, str, float]]]:
    """What ``InterestModel.increments_of`` gives: per signal, per feature in its order, the
    share |w·v|·2^((t − L)/h) on the channel of its sign and half-life, zero shares left out."""
    from penchant.user_profile import channel_key

    found = []
    for signal in signals:
        row = []
        for name, share in signal.features.items():
            amount = signal.weight * share * 2.0 ** ((signal.timestamp - landmark) / signal.half_life)
            if amount != 0:
                row.append((name, channel_key(amount > 0, signal.half_life), abs(amount)))
        found.append(row)
    return found


def decayed_weights(times: Array, weights: Array, half_lives: Array, now: float) -> Array:
    return np.asarray(weights) * np.exp2(-np.maximum(now - np.asarray(times), 0.0) / np.asarray(half_lives))


def attribute_quantiles(
    attribute_ids: npt.NDArray[np.uint32], values: Array, weights: Array, n_attributes: int, quantiles: Sequence[float]
) -> tuple[Array, Array, list[int]]:
    """Per attribute: inverted-CDF weighted quantiles (NaN without weight), total weight, count."""
    out = np.full((n_attributes, len(quantiles)), np.nan)
    totals = np.zeros(n_attributes)
    counts = [0] * n_attributes
    for a in range(n_attributes):
        mask = (attribute_ids == a) & (weights > 0)
        if not mask.any():
            continue
        v, w = values[mask], weights[mask]
        order = np.argsort(v, kind="stable")
        cumulative = np.cumsum(w[order])
        total = cumulative[-1]
        for k, q in enumerate(quantiles):
            at = min(int(np.searchsorted(cumulative, q * total, side="left")), len(v) - 1)
            out[a, k] = v[order][at]
        totals[a] = total
        counts[a] = int(mask.sum())
    return out, totals, counts


def periodic_histogram(times: Array, weights: Array, period: float, bins: int, offset: float) -> Array:
    phase = np.mod(np.asarray(times) + offset, period)
    index = np.minimum((phase / period * bins).astype(np.int64), bins - 1)
    return np.bincount(index, weights=weights, minlength=bins).astype(np.float64)


def apply_one_by_one(profile: UserProfile, signals: Sequence[Signal]) -> None:
    """Applies signals the way a key-value store would: one ``increments`` call per signal,
    moving the landmark first when a signal needs it. Interests and the landmark only."""
    from penchant.user_profile import InterestModel

    for signal in signals:
        if InterestModel.needs_rebase(profile.landmark, signal):
            InterestModel.rebase(profile, signal.timestamp)
        for name, key, amount in InterestModel.increments(profile.landmark, signal):
            interest = profile.interests.setdefault(name, Interest(name=name))
            interest.sums[key] = interest.sums.get(key, 0.0) + amount
            interest.count += 1


def direct_interest_weights(signals: Sequence[Signal], now: float) -> dict[str, float]:
    """Σ wᵢ·vᵢf·2^(−(now − tᵢ)/hᵢ) per feature, decayed directly (no landmark)."""
    out: dict[str, float] = {}
    for s in signals:
        decay = 2.0 ** (-(now - s.timestamp) / s.half_life)
        for name, v in s.features.items():
            if s.weight * v != 0:
                out[name] = out.get(name, 0.0) + s.weight * v * decay
    return out


# -- preference extraction, the slow and obvious way --------------------------------------------


def history_columns(history: Sequence[Any]) -> dict[str, Any]:
    """What ``_core.read_history`` reads, in plain Python."""
    names: dict[str, int] = {}
    rows, ids, values = [], [], []
    for row, interaction in enumerate(history):
        for name, value in interaction.attributes.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                rows.append(row)
                ids.append(names.setdefault(name, len(names)))
                values.append(float(value))
    return {
        "times": np.array([i.timestamp.timestamp() for i in history], dtype=np.float64),
        "weights": np.array([i.weight for i in history], dtype=np.float64),
        "half_lives": np.array([i.half_life for i in history], dtype=np.float64),
        "rows": np.array(rows, dtype=np.int64),
        "ids": np.array(ids, dtype=np.uint32),
        "values": np.array(values, dtype=np.float64),
        "names": list(names),
    }


def in_order(values: Sequence[float]) -> float:
    """The sum of ``values`` added one after another, as the kernels add them (Python 3.12's
    ``sum`` of floats compensates its rounding, which can move a near-tie)."""
    total = 0.0
    for v in values:
        total += v
    return total


def concentration(histogram: Sequence[float]) -> float:
    """``1 − H/ln B``: 0 for mass spread evenly over the ``B`` bins (or none), 1 for one bin."""
    total = in_order(histogram)
    if total <= 0:
        return 0.0
    entropy = -in_order([p * math.log(p) for p in (h / total for h in histogram) if p > 0])
    return max(0.0, 1.0 - entropy / math.log(len(histogram)))


def peak_bins(histogram: Sequence[float], share: float) -> list[int]:
    """The fewest bins (largest first, ties by bin) holding at least ``share`` of the mass, in
    bin order."""
    total = in_order(histogram)
    chosen: list[int] = []
    mass = 0.0
    for b in sorted(range(len(histogram)), key=lambda b: (-histogram[b], b)):
        if mass >= share * total:
            break
        chosen.append(b)
        mass += histogram[b]
    return sorted(chosen)


def numeric_preferences(
    history: Sequence[Any], now: float, *, quantiles: tuple[float, float] = (0.1, 0.9), min_samples: int = 5
) -> dict[str, tuple[tuple[float, float, float], float]]:
    """``range:<attribute>`` → ((low, median, high), confidence), by the documented rules."""
    cols = history_columns(history)
    liked = np.maximum(decayed_weights(cols["times"], cols["weights"], cols["half_lives"], now), 0.0)
    if len(liked) and liked.max() > 0:
        liked = liked / liked.max()
    weights = liked[cols["rows"]] if len(cols["rows"]) else np.zeros(0)
    qs, totals, counts = attribute_quantiles(
        cols["ids"], cols["values"], weights, len(cols["names"]), [quantiles[0], 0.5, quantiles[1]]
    )
    out = {}
    for a, name in enumerate(cols["names"]):
        if counts[a] < min_samples or name == "expected_dwell":
            continue
        w = weights[(cols["ids"] == a) & (weights > 0)]
        if not float((w * w).sum()) > 0:  # decayed beyond a float's range of the strongest
            continue
        effective = totals[a] ** 2 / float((w * w).sum())
        out[f"range:{name}"] = ((float(qs[a, 0]), float(qs[a, 1]), float(qs[a, 2])), effective / (effective + 5.0))
    return out


def temporal_preferences(
    history: Sequence[Any], now: float, *, min_events: int = 20, min_concentration: float = 0.15
) -> dict[str, tuple[list[Any], float]]:
    """``active_hours`` / ``active_days`` → (peak bins, confidence), by the documented rules."""
    if len(history) < min_events:
        return {}
    cols = history_columns(history)
    activity = decayed_weights(cols["times"], np.ones(len(history)), cols["half_lives"], now)
    activity = activity / activity.max()
    total = float(activity.sum())
    effective = total**2 / float((activity * activity).sum())
    day = 86_400.0
    days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    out: dict[str, tuple[list[Any], float]] = {}
    for name, period, bins, offset, labels in (
        ("active_hours", day, 24, 0.0, list(range(24))),
        ("active_days", 7 * day, 7, 3 * day, list(days)),
    ):
        histogram = periodic_histogram(cols["times"], activity, period, bins, offset)
        mass_total = in_order(histogram.tolist())
        p = histogram / mass_total
        nonzero = p[p > 0]
        concentration = max(0.0, 1.0 - float(-(nonzero * np.log(nonzero)).sum()) / np.log(bins))
        if concentration < min_concentration:
            continue
        order = sorted(range(bins), key=lambda b: (-histogram[b], b))
        chosen, mass = [], 0.0
        for b in order:
            if mass >= 0.5 * mass_total:
                break
            chosen.append(b)
            mass += histogram[b]
        out[name] = ([labels[b] for b in sorted(chosen)], concentration * effective / (effective + 10.0))
    return out


def categorical_preferences(
    profile: UserProfile, now: float, *, max_features: int = 10, min_confidence: float = 0.3
) -> dict[str, tuple[float, float]]:
    """``like:<f>`` / ``dislike:<f>`` → (weight, confidence) for features without explicit
    statements, by the documented rules, one interest and one channel at a time."""
    from penchant.user_profile import parse_channel_key

    likes, dislikes = [], []
    for name, interest in profile.interests.items():
        positive = negative = 0.0
        for key, total in interest.sums.items():
            is_positive, half_life = parse_channel_key(key)
            value = total * 2.0 ** (-(now - profile.landmark) / half_life)
            if is_positive:
                positive += value
            else:
                negative += value
        weight = positive - negative
        sure = abs(weight) / (positive + negative + 1.0)
        if weight != 0 and sure >= min_confidence:
            (likes if weight > 0 else dislikes).append((abs(weight), sure, name))
    out = {}
    for rule, entries in (("like", likes), ("dislike", dislikes)):
        for magnitude, sure, name in sorted(entries, key=lambda e: (-e[0], e[2]))[:max_features]:
            out[f"{rule}:{name}"] = (magnitude if rule == "like" else -magnitude, sure)
    return out


def categorical_choice(
    names: Sequence[str],
    positive: Sequence[float],
    negative: Sequence[float],
    strength: Sequence[float] | None,
    unwanted: Sequence[bool] | None,
    min_confidence: float,
    max_features: int,
    prior: float,
) -> tuple[list[tuple[int, float, float]], list[tuple[int, float, float]]]:
    """What ``_core.categorical_choice`` chooses, in NumPy (the extractor's former code)."""
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    s = np.zeros(len(names)) if strength is None else np.asarray(strength, dtype=np.float64)
    blocked = np.zeros(len(names), dtype=bool) if unwanted is None else np.asarray(unwanted, dtype=bool)
    weight = s + pos - neg
    sure = np.abs(weight) / (np.abs(s) + pos + neg + prior)
    agrees = (s != 0) & ((s > 0) == (weight > 0))
    keep = (sure >= min_confidence) & (weight != 0) & ~agrees & ~blocked
    sides = []
    for side in (keep & (weight > 0), keep & (weight < 0)):
        index = np.flatnonzero(side).tolist()
        chosen = sorted(index, key=lambda i: (-abs(weight[i]), names[i]))[:max_features]
        sides.append([(i, float(weight[i]), float(sure[i])) for i in chosen])
    return sides[0], sides[1]
