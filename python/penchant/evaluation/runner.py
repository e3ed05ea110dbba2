"""Replays a split through penchant's own feedback path and ranks every test user's candidates
through :meth:`penchant.Catalog.rank`, as a service would.

Replay: the training events, in time order (then file row), become ``Feedback`` (ratings as
explicit feedback, with the item's features) and go to a :class:`~penchant.FeedbackCollector`
in batches of ``batch_size``; its :class:`~penchant.CoVisitation` learns from each batch as
the profiles do. Models whose co-visitation learns with other options are rebuilt from the same
event log with :meth:`~penchant.CoVisitation.rebuild`.

Ranking: for each test user, their stored profile, the catalog minus their training items, and
the factors and weights of each :class:`Ranker`.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from penchant.covisitation import _ENGAGEMENT_NAMES, CoVisitation
from penchant.errors import ValidationError
from penchant.feedback_collector import (
    ExplicitFeedback,
    Feedback,
    FeedbackCollector,
    FeedbackProcessor,
    ImplicitFeedback,
)
from penchant.items import Catalog, ItemBatch
from penchant.scoring import FACTORS, Filters
from penchant.user_profile import UserProfile

from .datasets import Interactions
from .protocol import Metrics, Split, leave_last_out, metrics, paired_difference, sampled_negatives

__all__ = ["Evaluation", "Ranker", "RankerResult", "evaluate", "recent_interests", "replay"]

_LEARNING = ("window", "lag_scale", "max_neighbours", "half_life")
_SCORING = ("recent", "recency_scale", "alpha", "beta")


@dataclass(frozen=True)
class Ranker:
    """One way of ranking in the evaluation.

    ``weights``: factor → weight, for the built-in factors (``affinity``, ``popularity``, ...)
    and the co-visitation ones (``covisitation``, ``learned_popularity``); unnamed factors weigh
    0. ``interests``: what the ``affinity`` factor reads: ``"profile"`` (the profile's learned,
    decayed interests, as a service ranks), ``"recent"`` (the features of the user's recent
    items, weighted by recency as co-visitation weighs them: see :func:`recent_interests`) or
    ``"none"``. ``learning`` and ``scoring``: options
    of the :class:`~penchant.CoVisitation` it uses, over :data:`PENCHANT`'s.
    """

    name: str
    weights: Mapping[str, float]
    interests: str = "profile"
    learning: Mapping[str, Any] = field(default_factory=dict)
    scoring: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.interests not in ("recent", "profile", "none"):
            raise ValidationError(f"interests must be 'recent', 'profile' or 'none', got {self.interests!r}")
        unknown = set(self.weights) - set(FACTORS) - {"covisitation", "learned_popularity"}
        if unknown:
            raise ValidationError(f"unknown factor(s) {sorted(unknown)}")
        for options, names in ((self.learning, _LEARNING), (self.scoring, _SCORING)):
            if set(options) - set(names):
                raise ValidationError(f"unknown option(s) {sorted(set(options) - set(names))}; expected {names}")


@dataclass(frozen=True)
class RankerResult:
    """The metrics of one ranker, and each test user's ranks (full catalog, sampled)."""

    ranker: Ranker
    full: Metrics
    sampled: Metrics | None
    ranks: npt.NDArray[np.int64]
    sampled_ranks: npt.NDArray[np.int64] | None
    seconds: float

    def paired_ndcg_difference(self, other: RankerResult) -> tuple[float, float]:
        """NDCG@10 of this ranker minus ``other``'s over the same users, and the paired 95%
        half-width."""
        d = paired_difference(self.ranks, other.ranks)
        return d.mean, d.half_width


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` measured."""

    dataset: str
    users: int
    items: int
    events_replayed: int
    replay_seconds: float
    replay_cpu_seconds: float
    results: list[RankerResult]
    covisitation: CoVisitation

    @property
    def primary(self) -> RankerResult:
        return self.results[0]

    def result(self, name: str) -> RankerResult:
        for r in self.results:
            if r.ranker.name == name:
                return r
        raise KeyError(name)

    def as_json(self) -> dict[str, Any]:
        """The primary ranker's metrics (``users``, ``hr@10``, ``ndcg@10``, ``mrr`` and the same
        under ``sampled``), their 95% half-widths under ``ci``, and every ranker under
        ``rankers``."""

        def block(r: RankerResult) -> dict[str, Any]:
            out: dict[str, Any] = {
                "users": r.full.users,
                "hr@10": r.full.hr.mean,
                "ndcg@10": r.full.ndcg.mean,
                "mrr": r.full.mrr.mean,
                "ci": {"hr@10": r.full.hr.half_width, "ndcg@10": r.full.ndcg.half_width, "mrr": r.full.mrr.half_width},
            }
            if r.sampled is not None:
                out["sampled"] = {
                    "hr@10": r.sampled.hr.mean,
                    "ndcg@10": r.sampled.ndcg.mean,
                    "mrr": r.sampled.mrr.mean,
                    "ci": {
                        "hr@10": r.sampled.hr.half_width,
                        "ndcg@10": r.sampled.ndcg.half_width,
                        "mrr": r.sampled.mrr.half_width,
                    },
                }
            return out

        top = block(self.primary)
        top["model"] = self.primary.ranker.name
        top["dataset"] = self.dataset
        top["items"] = self.items
        top["events_replayed"] = self.events_replayed
        top["replay_seconds"] = round(self.replay_seconds, 3)
        top["replay_cpu_seconds"] = round(self.replay_cpu_seconds, 3)
        top["rankers"] = {r.ranker.name: block(r) for r in self.results}
        out: dict[str, Any] = _finite(top)
        return out


def _finite(value: Any) -> Any:
    """JSON has no NaN: a metric without an interval (one user) becomes null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def recent_interests(profile: UserProfile, recent: int = 20, recency_scale: float = 4.0) -> dict[str, float]:
    """The features of the user's most recent items, the p-th newest weighing
    ``exp(−p/recency_scale)``, normalised to sum 1: what the user is into *now*."""
    out: dict[str, float] = {}
    p = 0
    for interaction in reversed(profile.interaction_history):
        if p == recent:
            break
        if interaction.feedback_type not in _ENGAGEMENT_NAMES:
            continue
        w = math.exp(-p / recency_scale)
        for name, share in interaction.features.items():
            out[name] = out.get(name, 0.0) + w * share
        p += 1
    total = sum(out.values())
    return {name: v / total for name, v in out.items()} if total > 0 else {}


def _feedback(data: Interactions, e: int) -> Feedback:
    item = int(data.items[e])
    features = data.item_features[item] or {f"item:{data.item_ids[item]}": 1.0}
    kind = ExplicitFeedback if data.feedback_type.is_explicit else ImplicitFeedback
    return kind(
        user_id=data.user_ids[int(data.users[e])],
        item_id=data.item_ids[item],
        feedback_type=data.feedback_type,
        value=float(data.values[e]),
        timestamp=datetime.fromtimestamp(float(data.timestamps[e]), UTC),
        event_id=f"e{e:010d}",
        features=features,
    )


def replay(
    data: Interactions,
    events: npt.NDArray[np.int64],
    *,
    covisitation: CoVisitation,
    batch_size: int = 25_000,
) -> tuple[FeedbackCollector, list[Feedback]]:
    """Records ``events`` (indices into ``data``, in the order given) through a new collector
    fed to ``covisitation``, ``batch_size`` at a time. Returns the collector and the log."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size must be a positive int, got {batch_size!r}")
    processor = FeedbackProcessor(rating_scale=data.rating_scale or (1.0, 5.0))
    collector = FeedbackCollector(processor=processor, covisitation=covisitation)
    log: list[Feedback] = []
    for start in range(0, len(events), batch_size):
        batch = [_feedback(data, int(e)) for e in events[start : start + batch_size]]
        collector.record_many(batch)
        log.extend(batch)
    return collector, log


def evaluate(
    data: Interactions,
    rankers: Sequence[Ranker],
    *,
    split: Split | None = None,
    max_users: int | None = None,
    sampled: bool = True,
    batch_size: int = 25_000,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Replays the training events of ``split`` (default: :func:`leave_last_out` of ``data``
    with ``max_users``; a given split's own data is used) and measures each ranker; the first
    is the primary one."""
    if not rankers:
        raise ValidationError("at least one ranker is needed")
    # Millions of long-lived objects (profiles, their histories) make every cyclic collection
    # walk them all: paused, the replay and the ranking run about three times faster.
    with _gc_paused():
        return _evaluate(data, rankers, split, max_users, sampled, batch_size, progress)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _evaluate(
    data: Interactions,
    rankers: Sequence[Ranker],
    split: Split | None,
    max_users: int | None,
    sampled: bool,
    batch_size: int,
    progress: Callable[[str], None] | None,
) -> Evaluation:
    say = progress or (lambda _: None)
    # A given split carries its own events (a validation split has fewer than ``data``).
    split = split or leave_last_out(data, max_users=max_users)
    data = split.data
    if split.n_test == 0:
        raise ValidationError(f"{data.name}: no user has a test event under this protocol")
    primary_learning = _learning(rankers[0])
    events = split.order[split.train[split.order]]
    say(f"replaying {len(events):,} events through the FeedbackCollector")
    # CPU time beside wall time: on a shared machine the wall clock also counts other jobs.
    started, started_cpu = time.perf_counter(), time.process_time()
    covisitation = CoVisitation(**primary_learning)
    collector, log = replay(data, events, covisitation=covisitation, batch_size=batch_size)
    replay_seconds = time.perf_counter() - started
    replay_cpu_seconds = time.process_time() - started_cpu
    models = {_key(primary_learning): covisitation}
    for ranker in rankers:
        key = _key(_learning(ranker))
        if key not in models:
            say(f"rebuilding co-visitation with {dict(key)} for {ranker.name}")
            models[key] = CoVisitation.rebuild(log, **dict(key))
    catalog = Catalog(ItemBatch(data.item_ids, features=data.item_features))
    negatives = sampled_negatives(split) if sampled else None
    ranks = np.zeros((len(rankers), split.n_test), dtype=np.int64)
    sranks = np.zeros((len(rankers), split.n_test), dtype=np.int64)
    seconds = np.zeros(len(rankers))
    say(f"ranking {split.n_test} test users against {data.n_items:,} items with {len(rankers)} ranker(s)")
    for x in range(split.n_test):
        user = data.user_ids[int(split.test_users[x])]
        profile = collector.store.get(user)
        if profile is None:  # pragma: no cover - every test user has >= min_prior training events
            raise ValidationError(f"user {user}: no profile after the replay")
        excluded = frozenset(data.item_ids[int(i)] for i in split.candidates_excluded(x))
        filters = Filters(excluded_ids=excluded)
        now = float(data.timestamps[int(split.test_events[x])])
        test_id = data.item_ids[int(split.test_items[x])]
        for r, ranker in enumerate(rankers):
            t0 = time.perf_counter()
            scores = _rank(catalog, ranker, profile, models[_key(_learning(ranker))], filters, now)
            seconds[r] += time.perf_counter() - t0
            values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
            test_score = scores[test_id]
            ranks[r, x] = int(np.count_nonzero(values >= test_score))
            if negatives is not None:
                negative_scores = np.array([scores[data.item_ids[int(j)]] for j in negatives[x]])
                sranks[r, x] = 1 + int(np.count_nonzero(negative_scores >= test_score))
    results = [
        RankerResult(
            ranker=ranker,
            full=metrics(ranks[r]),
            sampled=metrics(sranks[r]) if negatives is not None else None,
            ranks=ranks[r],
            sampled_ranks=sranks[r] if negatives is not None else None,
            seconds=float(seconds[r]),
        )
        for r, ranker in enumerate(rankers)
    ]
    return Evaluation(
        dataset=data.name,
        users=split.n_test,
        items=data.n_items,
        events_replayed=len(events),
        replay_seconds=replay_seconds,
        replay_cpu_seconds=replay_cpu_seconds,
        results=results,
        covisitation=covisitation,
    )


def _learning(ranker: Ranker) -> dict[str, Any]:
    return {**PENCHANT.learning, **ranker.learning}


def _key(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(options.items()))


def _rank(
    catalog: Catalog,
    ranker: Ranker,
    profile: UserProfile,
    covisitation: CoVisitation,
    filters: Filters,
    now: float,
) -> dict[str | int, float]:
    """Every candidate's score (id → score) from one ``Catalog.rank`` call."""
    scoring = {**PENCHANT.scoring, **ranker.scoring}
    weights = {name: 0.0 for name in FACTORS} | dict(ranker.weights)
    scorers = {}
    if weights.get("covisitation"):
        scorers["covisitation"] = covisitation.scorer(profile, **scoring)
    if weights.get("learned_popularity"):
        scorers["learned_popularity"] = covisitation.popularity_scorer()
    weights = {k: v for k, v in weights.items() if k in FACTORS or k in scorers}
    interests: UserProfile | dict[str, float]
    if ranker.interests == "profile":
        interests = profile
    elif ranker.interests == "recent" and weights.get("affinity"):
        interests = recent_interests(profile, scoring["recent"], scoring["recency_scale"])
    else:
        interests = {}
    ranked = catalog.rank(interests, filters=filters, weights=weights, scorers=scorers, now=now)
    return {r.id: r.score for r in ranked}


PENCHANT = Ranker(
    "penchant",
    {"covisitation": 1.0, "affinity": 0.1, "learned_popularity": 0.02},
    interests="profile",
    learning={"window": 20, "lag_scale": 5.0, "max_neighbours": 200, "half_life": None},
    scoring={"recent": 20, "recency_scale": 4.0, "alpha": 0.3, "beta": 0.5},
)
"""The recommended configuration (EVALUATION.md): co-visitation, the built-in affinity of the
profile's learned interests (genres), and the learned popularity as a tie-breaker and cold-start
fallback. The weights were chosen on the validation split."""

MOST_POPULAR = Ranker("most-popular", {"learned_popularity": 1.0}, interests="none")
"""The baseline: items by how many events they had."""


def ablations() -> list[Ranker]:
    """:data:`PENCHANT` with each of its parts removed in turn."""
    w = dict(PENCHANT.weights)
    i = PENCHANT.interests
    return [
        Ranker("- co-visitation", {**w, "covisitation": 0.0}, interests=i),
        Ranker("- genre affinity", {**w, "affinity": 0.0}, interests=i),
        Ranker("- popularity prior", {**w, "learned_popularity": 0.0}, interests=i),
        Ranker("- recency weighting", w, interests=i, scoring={"recent": 500, "recency_scale": math.inf}),
        Ranker("- lag decay", w, interests=i, learning={"lag_scale": math.inf}),
        Ranker("- sequence locality", w, interests=i, learning={"window": 100, "lag_scale": math.inf}),
        Ranker("- popularity damping", w, interests=i, scoring={"alpha": 0.0}),
        Ranker("- memory bound", w, interests=i, learning={"max_neighbours": 0}),
    ]
