"""Plain NumPy reference implementations of the Rust kernels. Slow and obvious on purpose:
property tests compare the kernels with these."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def normalize(values: Array, method: str) -> Array:
    x = np.array(values, dtype=np.float64)
    present = ~np.isnan(x)
    out = np.zeros_like(x)
    if method == "none":
        out[present] = x[present]
        return out
    if not present.any():
        return out
    v = x[present]
    # A spread within rounding noise of the values' magnitude counts as a constant column.
    if method == "minmax":
        span = v.max() - v.min()
        if np.isfinite(span) and span > 1e-12 * max(1.0, abs(v.max()), abs(v.min())):
            out[present] = (v - v.min()) / span
    elif method == "zscore":
        std = v.std()
        if np.isfinite(std) and std > 1e-12 * max(1.0, abs(v.mean())):
            out[present] = (v - v.mean()) / std
    else:
        raise ValueError(method)
    return out


def top_k(scores: Array, k: int) -> list[int]:
    # Stable sort on the negated score: higher first, ties by position.
    return [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")[:k]]


def forward_increments(times: Array, weights: Array, landmark: float, half_life: float) -> Array:
    return np.asarray(weights) * np.exp2((np.asarray(times) - landmark) / half_life)


def aggregate_interests(
    times: Array,
    weights: Array,
    features: list[list[tuple[int, float]]],
    n_features: int,
    now: float,
    half_life: float,
) -> Array:
    out = np.zeros(n_features)
    for t, w, feats in zip(times, weights, features, strict=True):
        decay = 2.0 ** (-max(now - t, 0.0) / half_life)
        for f, v in feats:
            out[f] += w * v * decay
    return out


def rank(
    base: Array,
    features: list[dict[str, float]],
    embeddings: npt.NDArray[np.float32] | None,
    timestamps: Array | None,
    popularity: Array | None,
    interests: dict[str, float],
    taste: npt.NDArray[np.float32] | None,
    weights: dict[str, float],
    normalization: str,
    now: float,
    half_life: float,
    keep: npt.NDArray[np.bool_],
    k: int,
) -> tuple[list[int], Array, dict[str, Array]]:
    """Scores every kept candidate; returns (positions best first, scores, contributions)."""
    idx = np.flatnonzero(keep)
    n = len(idx)
    raw: dict[str, Array] = {}
    raw["relevance"] = np.asarray(base, dtype=np.float64)[idx]
    raw["affinity"] = np.array([sum(interests.get(f, 0.0) * w for f, w in features[i].items()) for i in idx])
    if embeddings is not None and taste is not None and np.linalg.norm(taste) > 0:
        e = embeddings[idx].astype(np.float64)
        norms = np.linalg.norm(e, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = e @ taste.astype(np.float64) / (norms * np.linalg.norm(taste.astype(np.float64)))
        cos[norms == 0] = np.nan
        raw["taste"] = cos
    else:
        raw["taste"] = np.full(n, np.nan)
    if timestamps is not None:
        age = np.maximum(now - timestamps[idx], 0.0)
        raw["recency"] = np.exp2(-age / half_life)
    else:
        raw["recency"] = np.full(n, np.nan)
    if popularity is not None:
        raw["popularity"] = np.log1p(np.maximum(popularity[idx], 0.0))
    else:
        raw["popularity"] = np.full(n, np.nan)
    contributions = {name: weights[name] * normalize(values, normalization) for name, values in raw.items()}
    scores = np.zeros(n)
    for c in contributions.values():
        scores = scores + c
    order = top_k(scores, k)
    return (
        [int(idx[j]) for j in order],
        scores[order],
        {name: c[order] for name, c in contributions.items()},
    )
