"""A plain Python/NumPy co-visitation model: the specification the Rust kernel must match.

Weights are kept as float32 and every addition rounded to float32, as the kernel stores them,
so that pruning (which compares weights) makes the same choices; ties in pruning go to the
lower item id. Scores are computed in float64 with NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class ReferenceCoVisitation:
    def __init__(self, window: int = 20, lag_scale: float = 5.0, max_neighbours: int = 200) -> None:
        self.window = window
        self.lag = [math.exp(-d / lag_scale) for d in range(window)]
        self.max_neighbours = max_neighbours
        self.ids: dict[str, int] = {}
        self.counts: list[float] = []
        self.rows: list[dict[int, np.float32]] = []

    def _id(self, key: str) -> int:
        if key not in self.ids:
            self.ids[key] = len(self.ids)
            self.counts.append(0.0)
            self.rows.append({})
        return self.ids[key]

    def _prune(self, row: dict[int, np.float32]) -> None:
        m = self.max_neighbours
        if m and len(row) >= 2 * m:
            keep = sorted(row.items(), key=lambda kv: (-float(kv[1]), kv[0]))[:m]
            row.clear()
            row.update(keep)

    def observe(self, item: str, previous: Sequence[str]) -> None:
        """``previous``: the user's earlier items, newest first."""
        i = self._id(item)
        for d, key in enumerate(previous[: self.window]):
            h = self.ids.get(key)
            if h is None or h == i:
                continue
            w = np.float32(self.lag[d])
            self.rows[h][i] = np.float32(self.rows[h].get(i, np.float32(0)) + w)
            self._prune(self.rows[h])
            self.rows[i][h] = np.float32(self.rows[i].get(h, np.float32(0)) + w)
        self._prune(self.rows[i])
        self.counts[i] += 1.0

    def neighbours(self, item: str) -> dict[str, float]:
        names = {v: k for k, v in self.ids.items()}
        return {names[j]: float(w) for j, w in self.rows[self.ids[item]].items()}

    def scores(
        self,
        history: Sequence[str],
        candidates: Sequence[str],
        recent: int = 20,
        recency_scale: float = 4.0,
        alpha: float = 0.3,
        beta: float = 0.5,
    ) -> np.ndarray:
        n = np.asarray(self.counts, dtype=np.float64)
        acc = np.zeros(len(n))
        for p, key in enumerate(history[:recent]):
            h = self.ids.get(key)
            if h is None or not self.rows[h] or n[h] <= 0:
                continue
            js = np.fromiter(self.rows[h].keys(), dtype=np.int64)
            ws = np.fromiter(self.rows[h].values(), dtype=np.float64)
            np.add.at(acc, js, math.exp(-p / recency_scale) * ws / n[h] ** beta)
        out = np.zeros(len(candidates))
        for k, key in enumerate(candidates):
            j = self.ids.get(key)
            if j is not None and n[j] > 0 and acc[j] != 0:
                out[k] = acc[j] / n[j] ** alpha
        return out
