"""The evaluation protocol: temporal leave-last-out, pessimistic ranks and the metrics.

- A user's events are ordered by (timestamp, row in the file): same-second events keep the
  file's order.
- The test event of a user is their last event with a value of at least
  ``positive_threshold`` (4). A user takes part only with at least ``min_prior`` (5) events
  before it.
- Training data ("mode a" of the research, the mode that reproduces the reference
  most-popular figure): every event of every user, except each test user's test event and
  what that user did after it. Other users' later events are training data.
- Candidates: the whole catalog minus the items of the user's training events (the test item
  stays a candidate even if the user met it before).
- Rank (pessimistic): the number of candidates that score at least as high as the test item,
  itself included, so ties count against the model.
- HR@10 = [rank ≤ 10]; NDCG@10 = 1/log2(rank + 1) when rank ≤ 10, else 0; MRR = 1/rank (not
  cut at 10). Each is a mean over test users with a normal-approximation 95% interval
  (1.96 · sample std / √n).
- Sampled variant: the test item and 100 negatives drawn without replacement from the catalog
  items the user never touched anywhere in the file, with ``numpy.random.default_rng(0)``, one
  ``rng.choice`` per test user in ascending user order; rank = 1 + the negatives that score at
  least as high.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from penchant.errors import ValidationError
from penchant.evaluation.datasets import Interactions

__all__ = [
    "Metric",
    "Metrics",
    "Split",
    "leave_last_out",
    "metrics",
    "paired_difference",
    "per_user",
    "pessimistic_rank",
    "sampled_negatives",
    "validation_split",
]

CUTOFF = 10


@dataclass(frozen=True, eq=False)
class Split:
    """A leave-last-out split of ``data``. ``order`` is the replay order of every event (time,
    then file row); ``train`` marks the training events. Test case ``x`` is user
    ``test_users[x]`` (ascending) with item ``test_items[x]`` (event ``test_events[x]``);
    ``histories[x]`` are the items of their training events and ``seen[x]`` every item they
    touched in the file."""

    data: Interactions
    order: npt.NDArray[np.int64]
    train: npt.NDArray[np.bool_]
    test_users: npt.NDArray[np.int64]
    test_items: npt.NDArray[np.int64]
    test_events: npt.NDArray[np.int64]
    histories: list[npt.NDArray[np.int64]]
    seen: list[npt.NDArray[np.int64]]

    @property
    def n_test(self) -> int:
        return len(self.test_users)

    def candidates_excluded(self, x: int) -> npt.NDArray[np.int64]:
        """The items test case ``x`` does not rank: their training items, bar the test item."""
        history = self.histories[x]
        kept: npt.NDArray[np.int64] = history[history != self.test_items[x]]
        return kept


def leave_last_out(
    data: Interactions,
    *,
    positive_threshold: float = 4.0,
    min_prior: int = 5,
    max_users: int | None = None,
    seed: int = 0,
) -> Split:
    """The split of the protocol (module documentation). ``max_users`` keeps a fixed random
    subsample of the test users (``seed``), the others' test events becoming training data
    again: a smaller, quicker run for CI."""
    if isinstance(min_prior, bool) or not isinstance(min_prior, int) or min_prior < 0:
        raise ValidationError(f"min_prior must be a non-negative int, got {min_prior!r}")
    if not math.isfinite(positive_threshold):
        raise ValidationError(f"positive_threshold must be finite, got {positive_threshold}")
    n = data.n_events
    rows = np.arange(n)
    by_user = np.lexsort((rows, data.timestamps, data.users))
    counts = np.bincount(data.users, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cases: list[tuple[int, int, int]] = []
    for u in range(data.n_users):
        events = by_user[starts[u] : starts[u] + counts[u]]
        positive = np.flatnonzero(data.values[events] >= positive_threshold)
        if len(positive) and positive[-1] >= min_prior:
            cases.append((u, int(positive[-1]), int(events[positive[-1]])))
    if max_users is not None:
        if isinstance(max_users, bool) or not isinstance(max_users, int) or max_users < 1:
            raise ValidationError(f"max_users must be a positive int, got {max_users!r}")
        if max_users < len(cases):
            keep = np.sort(np.random.default_rng(seed).choice(len(cases), max_users, replace=False))
            cases = [cases[k] for k in keep]
    train = np.ones(n, dtype=bool)
    histories, seen = [], []
    for u, k, _ in cases:
        events = by_user[starts[u] : starts[u] + counts[u]]
        train[events[k:]] = False
        histories.append(np.unique(data.items[events[:k]]))
        seen.append(np.unique(data.items[events]))
    return Split(
        data=data,
        order=np.lexsort((rows, data.timestamps)),
        train=train,
        test_users=np.array([u for u, _, _ in cases], dtype=np.int64),
        test_items=np.array([data.items[e] for _, _, e in cases], dtype=np.int64),
        test_events=np.array([e for _, _, e in cases], dtype=np.int64),
        histories=histories,
        seen=seen,
    )


def validation_split(
    data: Interactions,
    *,
    positive_threshold: float = 4.0,
    min_prior: int = 5,
    max_users: int | None = None,
    seed: int = 0,
) -> Split:
    """The protocol applied once more to what the test split trains on: every test user's test
    event and what came after it are dropped, so each one's *previous* positive becomes their
    test. Nothing of the test split's answers is seen: use it to choose options and weights."""
    first = leave_last_out(data, positive_threshold=positive_threshold, min_prior=min_prior)
    return leave_last_out(
        data.subset(first.train),
        positive_threshold=positive_threshold,
        min_prior=min_prior,
        max_users=max_users,
        seed=seed,
    )


def pessimistic_rank(scores: npt.NDArray[np.float64], test: int) -> int:
    """The rank of ``scores[test]`` among ``scores``, ties counted against it."""
    return int(np.count_nonzero(scores >= scores[test]))


def sampled_negatives(split: Split, n: int = 100, seed: int = 0) -> npt.NDArray[np.int64]:
    """For each test case, ``n`` items the user never touched (module documentation)."""
    rng = np.random.default_rng(seed)
    everything = np.arange(split.data.n_items)
    out = np.empty((split.n_test, n), dtype=np.int64)
    for x in range(split.n_test):
        allowed = np.setdiff1d(everything, split.seen[x], assume_unique=True)
        if len(allowed) < n:
            raise ValidationError(
                f"user {split.data.user_ids[split.test_users[x]]} touched all but {len(allowed)} items; "
                f"{n} negatives cannot be sampled"
            )
        out[x] = rng.choice(allowed, n, replace=False)
    return out


@dataclass(frozen=True)
class Metric:
    """A mean over test users and the half-width of its 95% interval."""

    mean: float
    half_width: float

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.half_width:.4f}"


@dataclass(frozen=True)
class Metrics:
    """HR@10, NDCG@10 and MRR over ``users`` test users."""

    users: int
    hr: Metric
    ndcg: Metric
    mrr: Metric

    def as_dict(self) -> dict[str, float | int]:
        return {
            "users": self.users,
            "hr@10": self.hr.mean,
            "ndcg@10": self.ndcg.mean,
            "mrr": self.mrr.mean,
            "hr@10_ci": self.hr.half_width,
            "ndcg@10_ci": self.ndcg.half_width,
            "mrr_ci": self.mrr.half_width,
        }


def per_user(ranks: npt.ArrayLike) -> Mapping[str, npt.NDArray[np.float64]]:
    """Each user's HR@10, NDCG@10 and reciprocal rank."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 1 or (len(r) and (not np.isfinite(r).all() or r.min() < 1)):
        raise ValidationError("ranks must be a 1-d array of finite numbers >= 1")
    hit = r <= CUTOFF
    return {
        "hr": hit.astype(np.float64),
        "ndcg": np.where(hit, 1.0 / np.log2(r + 1.0), 0.0),
        "mrr": 1.0 / r if len(r) else r,
    }


def _metric(values: npt.NDArray[np.float64]) -> Metric:
    if len(values) == 0:
        return Metric(math.nan, math.nan)
    if len(values) == 1:
        return Metric(float(values[0]), math.nan)
    return Metric(float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(len(values))))


def metrics(ranks: npt.ArrayLike) -> Metrics:
    """HR@10, NDCG@10 and MRR of pessimistic ranks (1 = first), with 95% intervals."""
    values = per_user(ranks)
    return Metrics(len(values["hr"]), _metric(values["hr"]), _metric(values["ndcg"]), _metric(values["mrr"]))


def paired_difference(ranks_a: npt.ArrayLike, ranks_b: npt.ArrayLike) -> Metric:
    """Mean NDCG@10 of ``a`` minus that of ``b`` over the same users, with a paired 95%
    interval."""
    a, b = per_user(ranks_a)["ndcg"], per_user(ranks_b)["ndcg"]
    if a.shape != b.shape:
        raise ValidationError("paired ranks must cover the same users")
    return _metric(a - b)
