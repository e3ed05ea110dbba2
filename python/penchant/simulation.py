"""A simulated shop for ``penchant demo``: a synthetic catalog, users with hidden tastes who
click, dwell, rate and skip, and rounds of retrieve → feedback → learning, measured against the
non-personalized order.

The world. Items have one category, a few tags (most drawn from tags typical of the category),
a unit embedding near their category's centroid, and a quality. Each user has hidden tastes: a
weight per category (a few favourites, a few dislikes), a sparse weight per tag, and a latent
taste vector (near the centroids of their favourite categories). The *utility* of an item for a
user is ``category weight + mean tag weight + cos(taste vector, embedding) + 0.4·quality``;
penchant never sees it.

Relevance. An item's grade for a user comes from where its utility falls in the whole
catalog for that user: top 2 % → 3, top 5 % → 2, top 10 % → 1, else 0. Precision@k counts
grades ≥ 1; NDCG@k uses gains 2^grade − 1 against the best order of the request's candidates
(0 when no candidate is relevant).

A request. The user searches; the search returns ``candidates`` random items with a score
``0.5·quality + N(0, 1)`` that ignores the user. The *base order* sorts by that score; penchant
re-ranks the same candidates with the same scores as base scores.

Behaviour on the k items shown (position bias, noise): the user examines position p (from 0)
with probability ``1/√(p + 1)``; an examined item is clicked with probability
``0.02 + 0.83·σ((utility − u₉₀)/(0.25·s))`` (u₉₀ the user's 90th percentile utility over the
catalog, s its standard deviation). A click comes with a dwell time (log-normal, median from
about 4 s for items the user does not care for, which penchant counts as a bounce, to about
84 s) and, one time in five, a 1–5 rating; an examined item left unclicked is skipped
explicitly half of the time. Both orders are judged with the same random draws per position
(common random numbers), so their click-through differs only by what they show.

Everything is drawn from ``numpy.random.default_rng`` streams derived from the seed, the round
and the user, so a run is deterministic for a seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from penchant.engine import Engine
from penchant.errors import ValidationError
from penchant.items import Catalog, ItemBatch

__all__ = [
    "ExplainedItem",
    "LatencySummary",
    "RoundMetrics",
    "SimulationConfig",
    "SimulationResult",
    "World",
    "explain_next_request",
    "make_world",
    "ndcg_at_k",
    "plot_learning_curve",
    "precision_at_k",
    "run_simulation",
    "simulation_start",
    "summarize_latencies",
]

TAGS_PER_ITEM = 3
TYPICAL_TAGS_PER_CATEGORY = 8
TYPICAL_TAG_SHARE = 0.75
GRADE_QUANTILES = (0.90, 0.95, 0.98)
"""Utility quantiles over the catalog at which an item's grade becomes 1, 2 and 3."""
QUALITY_IN_UTILITY = 0.4
QUALITY_IN_SEARCH = 0.5
RATING_SHARE = 0.2
SKIP_SHARE = 0.5
DAY = 86_400
SECONDS_PER_POSITION = 2
"""A user reacts to the item at position p of a list p·2 + 2 seconds after the request."""


@dataclass(frozen=True)
class SimulationConfig:
    """The size and seed of a simulation. ``k`` items are shown per request, out of
    ``candidates`` that the simulated search returns."""

    users: int = 50
    items: int = 5_000
    rounds: int = 10
    candidates: int = 500
    categories: int = 12
    tags: int = 60
    dim: int = 16
    k: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("users", "items", "rounds", "candidates", "categories", "tags", "dim", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValidationError(f"seed must be a non-negative int, got {self.seed!r}")
        if self.candidates > self.items:
            raise ValidationError(f"candidates ({self.candidates}) cannot exceed items ({self.items})")
        if self.k > self.candidates:
            raise ValidationError(f"k ({self.k}) cannot exceed candidates ({self.candidates})")
        if self.tags < TAGS_PER_ITEM:
            raise ValidationError(f"tags must be at least {TAGS_PER_ITEM}, got {self.tags}")


@dataclass
class World:
    """The catalog and the users' hidden tastes."""

    config: SimulationConfig
    item_ids: list[str]
    category: npt.NDArray[np.int64]
    """(items,) the category of each item."""
    tags: npt.NDArray[np.int64]
    """(items, TAGS_PER_ITEM) the tags of each item."""
    embeddings: npt.NDArray[np.float32]
    """(items, dim) unit vectors."""
    quality: npt.NDArray[np.float64]
    user_ids: list[str]
    category_taste: npt.NDArray[np.float64]
    """(users, categories) hidden weight of each category."""
    tag_taste: npt.NDArray[np.float64]
    """(users, tags) hidden weight of each tag (mostly 0)."""
    taste_vectors: npt.NDArray[np.float64]
    """(users, dim) hidden unit taste vectors."""
    grade_thresholds: npt.NDArray[np.float64]
    """(users, 3) the utilities at GRADE_QUANTILES over the catalog."""
    utility_spread: npt.NDArray[np.float64]
    """(users,) the standard deviation of each user's utility over the catalog."""
    item_records: list[dict[str, Any]] = field(default_factory=list)
    """What a feedback event carries about each item: its id and features."""
    _catalog: Catalog | None = field(default=None, repr=False)

    def utility(self, user: int, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """The hidden utility of items ``rows`` for ``user``."""
        tag_part = self.tag_taste[user][self.tags[rows]].mean(axis=1)
        taste_part = self.embeddings[rows].astype(np.float64) @ self.taste_vectors[user]
        return np.asarray(
            self.category_taste[user][self.category[rows]]
            + tag_part
            + taste_part
            + QUALITY_IN_UTILITY * self.quality[rows]
        )

    def grades(self, user: int, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The relevance grade (0-3) of items ``rows`` for ``user``."""
        utility = self.utility(user, rows)
        return np.asarray((utility[:, None] >= self.grade_thresholds[user][None, :]).sum(axis=1), dtype=np.int64)

    def catalog(self) -> Catalog:
        """The items registered in penchant: ids, features (category and tags) and embeddings
        (built once)."""
        if self._catalog is None:
            self._catalog = Catalog(
                ItemBatch(
                    self.item_ids,
                    features=[record["features"] for record in self.item_records],
                    embeddings=self.embeddings,
                )
            )
        return self._catalog

    def hidden_tastes(self, user: int) -> str:
        """The user's strongest hidden category weights, for people to read."""
        weights = self.category_taste[user]
        liked = [c for c in np.argsort(-weights) if weights[c] >= 1.0]
        disliked = [c for c in np.argsort(weights) if weights[c] <= -0.5]
        parts = []
        if liked:
            parts.append("likes " + ", ".join(f"category:c{c} ({weights[c]:+.1f})" for c in liked))
        if disliked:
            parts.append("dislikes " + ", ".join(f"category:c{c} ({weights[c]:+.1f})" for c in disliked))
        return "; ".join(parts) or "no strong category tastes"


def _unit_rows(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.where(norms == 0, 1.0, norms))


def make_world(config: SimulationConfig) -> World:
    """Draws the catalog and the users from ``config.seed``."""
    rng = np.random.default_rng([config.seed, 0])
    n, c, t, d = config.items, config.categories, config.tags, config.dim
    centroids = _unit_rows(rng.normal(size=(c, d)))
    typical_tags = np.stack([rng.choice(t, min(TYPICAL_TAGS_PER_CATEGORY, t), replace=False) for _ in range(c)])
    category = rng.integers(0, c, n)
    tags = np.empty((n, TAGS_PER_ITEM), dtype=np.int64)
    for row in range(n):
        pool = typical_tags[category[row]] if rng.random() < TYPICAL_TAG_SHARE else np.arange(t)
        if len(pool) < TAGS_PER_ITEM:
            pool = np.arange(t)
        tags[row] = rng.choice(pool, TAGS_PER_ITEM, replace=False)
    embeddings = _unit_rows(centroids[category] + 0.8 * rng.normal(size=(n, d)) / math.sqrt(d)).astype(np.float32)
    quality = rng.normal(size=n)
    item_ids = [f"item-{row:06d}" for row in range(n)]
    records = [
        {"id": item_ids[row], "features": [f"category:c{category[row]}", *(f"tag:t{tag}" for tag in tags[row])]}
        for row in range(n)
    ]

    u = config.users
    category_taste = rng.normal(0.0, 0.3, size=(u, c))
    taste_vectors = np.empty((u, d))
    for user in range(u):
        favourites = rng.choice(c, min(2 + int(rng.integers(0, 2)), c), replace=False)
        category_taste[user, favourites] += rng.uniform(1.0, 2.0, len(favourites))
        others = np.setdiff1d(np.arange(c), favourites)
        if len(others):
            disliked = rng.choice(others, min(1 + int(rng.integers(0, 2)), len(others)), replace=False)
            category_taste[user, disliked] -= rng.uniform(0.5, 1.5, len(disliked))
        direction = centroids[favourites].mean(axis=0) + 0.7 * rng.normal(size=d) / math.sqrt(d)
        taste_vectors[user] = direction / (np.linalg.norm(direction) or 1.0)
    tag_taste = np.zeros((u, t))
    for user in range(u):
        chosen = rng.choice(t, min(6, t), replace=False)
        tag_taste[user, chosen] = rng.normal(0.0, 1.0, len(chosen))

    world = World(
        config=config,
        item_ids=item_ids,
        category=category,
        tags=tags,
        embeddings=embeddings,
        quality=quality,
        user_ids=[f"user-{user:05d}" for user in range(u)],
        category_taste=category_taste,
        tag_taste=tag_taste,
        taste_vectors=taste_vectors,
        grade_thresholds=np.zeros((u, len(GRADE_QUANTILES))),
        utility_spread=np.zeros(u),
        item_records=records,
    )
    every_item = np.arange(n)
    for user in range(u):
        utility = world.utility(user, every_item)
        world.grade_thresholds[user] = np.quantile(utility, GRADE_QUANTILES)
        world.utility_spread[user] = float(utility.std()) or 1.0
    return world


# -- metrics ------------------------------------------------------------------------------------


def precision_at_k(ranked_grades: Sequence[int] | npt.NDArray[np.int64], k: int) -> float:
    """The share of the first ``k`` positions that hold a relevant item (grade ≥ 1); a list
    shorter than ``k`` counts its missing positions as not relevant."""
    top = np.asarray(ranked_grades[:k])
    return float((top >= 1).sum()) / k


def _dcg(grades: npt.NDArray[np.int64]) -> float:
    discounts = np.log2(np.arange(2, len(grades) + 2))
    return float(((2.0 ** grades.astype(np.float64) - 1.0) / discounts).sum())


def ndcg_at_k(
    ranked_grades: Sequence[int] | npt.NDArray[np.int64],
    candidate_grades: Sequence[int] | npt.NDArray[np.int64],
    k: int,
) -> float:
    """NDCG@k with gains 2^grade − 1 and discounts log2(position + 1) (positions from 1), against
    the best order of ``candidate_grades``; 0 when no candidate is relevant."""
    ideal = _dcg(np.sort(np.asarray(candidate_grades, dtype=np.int64))[::-1][:k])
    if ideal == 0.0:
        return 0.0
    return _dcg(np.asarray(ranked_grades[:k], dtype=np.int64)) / ideal


# -- behaviour ----------------------------------------------------------------------------------


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


@dataclass
class _Draws:
    """The random numbers of one request's behaviour, per shown position, shared by both orders."""

    examine: npt.NDArray[np.float64]
    click: npt.NDArray[np.float64]
    rate: npt.NDArray[np.float64]
    skip: npt.NDArray[np.float64]
    dwell_noise: npt.NDArray[np.float64]
    rating_noise: npt.NDArray[np.float64]

    @classmethod
    def draw(cls, rng: np.random.Generator, k: int) -> _Draws:
        return cls(rng.random(k), rng.random(k), rng.random(k), rng.random(k), rng.normal(size=k), rng.normal(size=k))


EXAMINATION = 1.0 / np.sqrt(np.arange(1, 1_001))
"""The chance that a user looks at position p (index p, from 0)."""


def _interest(world: World, user: int, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """How much the user cares for each item, in [0, 1] (0.5 at their 90th percentile)."""
    utility = world.utility(user, rows)
    return _sigmoid((utility - world.grade_thresholds[user][0]) / (0.25 * world.utility_spread[user]))


def _clicks(world: World, user: int, shown: npt.NDArray[np.int64], draws: _Draws) -> npt.NDArray[np.bool_]:
    k = len(shown)
    examined = draws.examine < EXAMINATION[:k]
    return np.asarray(examined & (draws.click < 0.02 + 0.83 * _interest(world, user, shown)))


def _feedback_events(
    world: World, user: int, shown: npt.NDArray[np.int64], draws: _Draws, round_number: int, moment: int
) -> tuple[list[dict[str, Any]], int]:
    """The events of one request on the shown items, made from ``moment`` (epoch seconds) on,
    and the number of clicks."""
    k = len(shown)
    examined = draws.examine < EXAMINATION[:k]
    interest = _interest(world, user, shown)
    clicked = examined & (draws.click < 0.02 + 0.83 * interest)
    user_id = world.user_ids[user]
    events: list[dict[str, Any]] = []
    for position in range(k):
        if not examined[position]:
            continue
        item = world.item_records[shown[position]]
        event_id = f"{user_id}/r{round_number}/p{position}"
        at = {"timestamp": moment + SECONDS_PER_POSITION * (position + 1)}
        if clicked[position]:
            dwell = (4.0 + 80.0 * interest[position]) * math.exp(0.4 * draws.dwell_noise[position])
            events.append(
                {"user_id": user_id, "item": item, "feedback_type": "click", "event_id": event_id + "/click", **at}
            )
            events.append(
                {
                    "user_id": user_id,
                    "item": item,
                    "feedback_type": "dwell",
                    "value": round(dwell, 1),
                    "event_id": event_id + "/dwell",
                    **at,
                }
            )
            if draws.rate[position] < RATING_SHARE:
                rating = round(
                    3.0 + 2.0 * math.tanh(4.0 * (interest[position] - 0.5)) + 0.5 * draws.rating_noise[position]
                )
                events.append(
                    {
                        "user_id": user_id,
                        "item": item,
                        "feedback_type": "rating",
                        "value": min(5, max(1, rating)),
                        "event_id": event_id + "/rating",
                        **at,
                    }
                )
        elif draws.skip[position] < SKIP_SHARE:
            events.append(
                {"user_id": user_id, "item": item, "feedback_type": "skip", "event_id": event_id + "/skip", **at}
            )
    return events, int(clicked.sum())


def _search(world: World, rng: np.random.Generator) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """One request's candidates and their search scores (which ignore the user), in the search's
    order: best score first."""
    candidates = rng.choice(world.config.items, world.config.candidates, replace=False)
    scores = QUALITY_IN_SEARCH * world.quality[candidates] + rng.normal(size=len(candidates))
    order = np.argsort(-scores, kind="stable")
    return candidates[order], scores[order]


def simulation_start(rounds: int, *, now: float | None = None) -> int:
    """Midnight (UTC) ``rounds`` days before the current day: a simulation of ``rounds`` days
    from there ends before now, so that no event lies in the future."""
    today = int((time.time() if now is None else now) // DAY) * DAY
    return today - rounds * DAY


# -- the loop -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundMetrics:
    """Means over the users of one round; ``base_*`` for the search order, ``penchant_*`` for
    penchant's. ``events`` counts the feedback events recorded in the round."""

    round: int
    base_precision: float
    penchant_precision: float
    base_ndcg: float
    penchant_ndcg: float
    base_ctr: float
    penchant_ctr: float
    events: int


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of one step's latencies, in seconds."""

    step: str
    calls: int
    p50: float
    p90: float
    p99: float
    max: float


def summarize_latencies(step: str, samples: Sequence[float]) -> LatencySummary:
    """Percentiles (linear interpolation) of ``samples`` in seconds."""
    if not samples:
        return LatencySummary(step, 0, math.nan, math.nan, math.nan, math.nan)
    values = np.asarray(samples, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return LatencySummary(step, len(values), float(p50), float(p90), float(p99), float(values.max()))


@dataclass
class SimulationResult:
    config: SimulationConfig
    start: int
    """Epoch seconds of the simulated first day."""
    rounds: list[RoundMetrics] = field(default_factory=list)
    rank_seconds: list[float] = field(default_factory=list)
    """The latency of each ``engine.rank`` call."""
    record_seconds: list[float] = field(default_factory=list)
    """The latency of each ``engine.record_many`` call (one request's events)."""

    def latencies(self) -> list[LatencySummary]:
        return [
            summarize_latencies("rank (one request)", self.rank_seconds),
            summarize_latencies("record (one request's events)", self.record_seconds),
        ]


def run_simulation(
    engine: Engine,
    config: SimulationConfig,
    *,
    world: World | None = None,
    on_request: Callable[[], None] | None = None,
    on_round: Callable[[RoundMetrics], None] | None = None,
    start: int | None = None,
) -> SimulationResult:
    """Runs ``config.rounds`` rounds: in each, every user searches, is shown penchant's top k,
    and gives feedback that ``engine`` records before the user's next request. The first round
    is penchant's cold start. Returns the metrics of every round and the latencies of the
    engine's calls.

    Time is simulated: round r is day r from ``start`` (epoch seconds, whole; by default
    :func:`simulation_start`), the users' requests spread over the day, so that interests decay
    between rounds as they would between days. Forward decay depends only on differences of
    times, so the results do not depend on ``start``."""
    world = world or make_world(config)
    start = simulation_start(config.rounds) if start is None else int(start)
    spacing = DAY // config.users
    catalog = world.catalog()
    row_of: dict[str | int, int] = {item_id: row for row, item_id in enumerate(world.item_ids)}
    result = SimulationResult(config, start)
    k = config.k
    for round_number in range(1, config.rounds + 1):
        sums = np.zeros(6)
        events_in_round = 0
        for user in range(config.users):
            moment = start + (round_number - 1) * DAY + user * spacing
            candidates, search_scores = _search(world, np.random.default_rng([config.seed, 1, round_number, user]))

            started = time.perf_counter()
            ranked = engine.rank(
                world.user_ids[user],
                catalog,
                k=k,
                candidate_ids=[world.item_ids[row] for row in candidates],
                base_scores=search_scores,
                now=moment,
            )
            result.rank_seconds.append(time.perf_counter() - started)
            shown = np.asarray([row_of[r.id] for r in ranked], dtype=np.int64)
            base_shown = candidates[:k]

            candidate_grades = world.grades(user, candidates)
            penchant_grades = world.grades(user, shown)
            base_grades = candidate_grades[:k]
            draws = _Draws.draw(np.random.default_rng([config.seed, 2, round_number, user]), k)
            events, clicks = _feedback_events(world, user, shown, draws, round_number, moment)
            base_clicks = int(_clicks(world, user, base_shown, draws).sum())
            sums += (
                precision_at_k(base_grades, k),
                precision_at_k(penchant_grades, k),
                ndcg_at_k(base_grades, candidate_grades, k),
                ndcg_at_k(penchant_grades, candidate_grades, k),
                base_clicks / k,
                clicks / k,
            )
            if events:
                started = time.perf_counter()
                engine.record_many(events)
                result.record_seconds.append(time.perf_counter() - started)
                events_in_round += len(events)
            if on_request is not None:
                on_request()
        means = sums / config.users
        metrics = RoundMetrics(
            round=round_number,
            base_precision=float(means[0]),
            penchant_precision=float(means[1]),
            base_ndcg=float(means[2]),
            penchant_ndcg=float(means[3]),
            base_ctr=float(means[4]),
            penchant_ctr=float(means[5]),
            events=events_in_round,
        )
        result.rounds.append(metrics)
        if on_round is not None:
            on_round(metrics)
    return result


@dataclass(frozen=True)
class ExplainedItem:
    """One item of :func:`explain_next_request`: what penchant showed, the simulation's hidden
    grade of it for the user (0-3), and penchant's one-line explanation."""

    item_id: str
    features: list[str]
    grade: int
    why: str


def explain_next_request(
    engine: Engine, world: World, result: SimulationResult, *, user: int = 0, k: int = 3
) -> list[ExplainedItem]:
    """The top ``k`` of one more search by ``user`` the day after the last round, with
    penchant's explanations: what a reader of the demo can check against the user's hidden
    tastes."""
    config = world.config
    candidates, scores = _search(world, np.random.default_rng([config.seed, 3, user]))
    ranked = engine.rank(
        world.user_ids[user],
        world.catalog(),
        k=k,
        explain=True,
        candidate_ids=[world.item_ids[row] for row in candidates],
        base_scores=scores,
        now=result.start + config.rounds * DAY,
    )
    row_of = {world.item_ids[row]: row for row in candidates}
    explained = []
    for r in ranked:
        row = row_of[str(r.id)]
        why = r.explanation.why if r.explanation is not None else ""
        grade = int(world.grades(user, np.asarray([row]))[0])
        explained.append(ExplainedItem(str(r.id), list(world.item_records[row]["features"]), grade, why))
    return explained


def plot_learning_curve(result: SimulationResult, path: str | Path) -> Path:
    """Writes the learning curve (precision@k, NDCG@k and click-through per round, penchant
    against the base order) as a PNG. Uses matplotlib's Agg canvas directly, so it needs no
    display and leaves pyplot's global state alone."""
    from matplotlib.figure import Figure

    path = Path(path)
    rounds = [m.round for m in result.rounds]
    k = result.config.k
    figure = Figure(figsize=(12, 3.8), layout="constrained")
    panels = [
        (f"precision@{k}", "base_precision", "penchant_precision"),
        (f"NDCG@{k}", "base_ndcg", "penchant_ndcg"),
        ("click-through", "base_ctr", "penchant_ctr"),
    ]
    for axes, (title, base_name, penchant_name) in zip(figure.subplots(1, 3), panels, strict=True):
        axes.plot(rounds, [getattr(m, penchant_name) for m in result.rounds], marker="o", label="penchant")
        axes.plot(
            rounds, [getattr(m, base_name) for m in result.rounds], marker="s", linestyle="--", label="base order"
        )
        axes.set_title(title)
        axes.set_xlabel("round")
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend()
    c = result.config
    figure.suptitle(
        f"penchant demo: {c.users} simulated users, {c.items} items, "
        f"{c.candidates} candidates per request, seed {c.seed}"
    )
    figure.savefig(path, dpi=110)
    return path
