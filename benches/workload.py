"""The benchmark workload of the foundation issue: items with 64-dim embeddings and 20 features
each, five factors, one filter, top 10; and a vectorised NumPy implementation of the same
ranking to compare against in the same run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

import penchant

DIM = 64
FEATURES_PER_ITEM = 20
VOCABULARY = 5_000
NOW = 1_800_000_000.0
HALF_LIFE = 7 * 86_400.0
WEIGHTS = {"relevance": 1.0, "affinity": 1.0, "taste": 1.0, "recency": 0.3, "popularity": 0.2}
BLOCKED = "f7"


@dataclass
class Workload:
    ids: npt.NDArray[np.int64]
    indptr: npt.NDArray[np.int64]
    feature_ids: npt.NDArray[np.int64]
    embeddings: npt.NDArray[np.float32]
    timestamps: npt.NDArray[np.float64]
    popularity: npt.NDArray[np.float64]
    interests: dict[str, float]
    taste: npt.NDArray[np.float32]

    def dicts(self, rows: npt.NDArray[np.int64], base: npt.NDArray[np.float64]) -> list[dict[str, Any]]:
        """The candidates as a caller would hand them over: one dict per item."""
        names = [f"f{i}" for i in range(VOCABULARY)]
        return [
            {
                "id": int(self.ids[r]),
                "score": float(b),
                "features": [names[f] for f in self.feature_ids[self.indptr[r] : self.indptr[r + 1]]],
                "embedding": self.embeddings[r],
                "timestamp": float(self.timestamps[r]),
                "popularity": float(self.popularity[r]),
            }
            for r, b in zip(rows, base, strict=True)
        ]

    def catalog(self) -> penchant.Catalog:
        names = [f"f{i}" for i in range(VOCABULARY)]
        features = [
            [names[f] for f in self.feature_ids[self.indptr[r] : self.indptr[r + 1]]] for r in range(len(self.ids))
        ]
        return penchant.Catalog(
            penchant.ItemBatch(
                self.ids,
                features=features,
                embeddings=self.embeddings,
                timestamps=self.timestamps,
                popularity=self.popularity,
            )
        )


def make_workload(n: int, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    feature_ids = np.concatenate([rng.choice(VOCABULARY, FEATURES_PER_ITEM, replace=False) for _ in range(n)])
    return Workload(
        ids=np.arange(n, dtype=np.int64),
        indptr=np.arange(0, (n + 1) * FEATURES_PER_ITEM, FEATURES_PER_ITEM, dtype=np.int64),
        feature_ids=feature_ids,
        embeddings=rng.normal(size=(n, DIM)).astype(np.float32),
        timestamps=NOW - rng.exponential(30 * 86_400.0, size=n),
        popularity=rng.pareto(1.5, size=n) * 10,
        interests={
            f"f{i}": float(w)
            for i, w in zip(rng.choice(VOCABULARY, 200, replace=False), rng.normal(size=200), strict=False)
        },
        taste=rng.normal(size=DIM).astype(np.float32),
    )


def _minmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


class NumpyRanker:
    """The same ranking written with vectorised NumPy over the same columns."""

    def __init__(self, w: Workload) -> None:
        self.w = w
        self.dense = np.zeros(VOCABULARY)
        for name, weight in w.interests.items():
            self.dense[int(name[1:])] = weight
        self.norms = np.linalg.norm(w.embeddings, axis=1)
        self.blocked = int(BLOCKED[1:])

    def rank(self, rows: npt.NDArray[np.int64], base: npt.NDArray[np.float64], k: int = 10) -> npt.NDArray[np.int64]:
        w = self.w
        feats = w.feature_ids.reshape(len(w.ids), FEATURES_PER_ITEM)[rows]
        keep = ~(feats == self.blocked).any(axis=1)
        rows, base, feats = rows[keep], base[keep], feats[keep]
        affinity = self.dense[feats].sum(axis=1)
        taste = (w.embeddings[rows] @ w.taste) / (self.norms[rows] * np.linalg.norm(w.taste))
        recency = np.exp2(-np.maximum(NOW - w.timestamps[rows], 0.0) / HALF_LIFE)
        popularity = np.log1p(np.maximum(w.popularity[rows], 0.0))
        score = (
            WEIGHTS["relevance"] * _minmax(base)
            + WEIGHTS["affinity"] * _minmax(affinity)
            + WEIGHTS["taste"] * _minmax(taste.astype(np.float64))
            + WEIGHTS["recency"] * _minmax(recency)
            + WEIGHTS["popularity"] * _minmax(popularity)
        )
        top = np.argpartition(-score, min(k, len(score) - 1))[:k]
        top = top[np.lexsort((top, -score[top]))]
        return rows[top]

    def rank_dicts(self, items: list[dict[str, Any]], k: int = 10) -> list[Any]:
        """From dicts: the Python extraction a NumPy implementation needs, then the same maths."""
        n = len(items)
        base = np.fromiter((it["score"] for it in items), np.float64, n)
        interests = self.w.interests
        blocked = BLOCKED
        keep = np.fromiter((blocked not in it["features"] for it in items), bool, n)
        affinity = np.fromiter((sum(interests.get(f, 0.0) for f in it["features"]) for it in items), np.float64, n)
        emb = np.stack([it["embedding"] for it in items])
        ts = np.fromiter((it["timestamp"] for it in items), np.float64, n)
        pop = np.fromiter((it["popularity"] for it in items), np.float64, n)
        idx = np.flatnonzero(keep)
        taste = (emb[idx] @ self.w.taste) / (np.linalg.norm(emb[idx], axis=1) * np.linalg.norm(self.w.taste))
        score = (
            WEIGHTS["relevance"] * _minmax(base[idx])
            + WEIGHTS["affinity"] * _minmax(affinity[idx])
            + WEIGHTS["taste"] * _minmax(taste.astype(np.float64))
            + WEIGHTS["recency"] * _minmax(np.exp2(-np.maximum(NOW - ts[idx], 0.0) / HALF_LIFE))
            + WEIGHTS["popularity"] * _minmax(np.log1p(np.maximum(pop[idx], 0.0)))
        )
        top = np.argpartition(-score, min(k, len(score) - 1))[:k]
        top = top[np.lexsort((top, -score[top]))]
        return [items[idx[j]]["id"] for j in top]
