"""Personalized retrieval (seed module 3): user-aware ranking and filtering of candidates.

- :func:`rank_items`: one ranking for a profile you hold (no store).
- :class:`PersonalizedRetriever`: loads the user's profile through a
  :class:`~penchant.ProfileStore`, compiles it once per profile version and catalog, filters
  with a :class:`ContentFilter`, scores with a :class:`RankingEngine` and returns the top k,
  with :class:`Explanation` s on request.
- :class:`RankingEngine`: the multi-factor scoring of :func:`rank_items` plus the factors and
  knobs of retrieval (below).
- :class:`ContentFilter`: the hard rules; :class:`QueryExpander` (in
  :mod:`penchant.query_expansion`): adaptive query expansion.

**Factors.** The five built-in factors (``relevance``, ``affinity``, ``taste``, ``recency``,
``popularity``) and two of retrieval:

- ``query``: how well an item's features match the features the query expansion added
  (:class:`~penchant.query_expansion.ExpandedQuery` ``.features``), as the affinity factor
  computes it; normalised like the others. 0 without a query.
- ``novelty``: ``−2^(−age/seen_half_life)`` for an item the user interacted with ``age``
  seconds ago (any feedback in the profile's history), 0 for the rest; not normalised, so with
  weight ``w`` a just-seen item loses ``w`` and one seen a half-life ago ``w/2``. The kernel
  computes it for the candidates that pass the filters.

**Personalization strength and confidence.** With ``s`` the strength (in [0, 1]), ``c`` the
profile's confidence (:meth:`~penchant.UserProfile.profile_confidence`: ``M/(M + k)``, ``M``
the decayed evidence in clicks' worth, ``k = confidence_prior``; 0 without a profile), ``W`` the
configured weights and ``p`` the cold-start popularity, a request ranks with::

    λ          = s·c                       (the personalization, reported in explanations)
    relevance  = (1 − λ) + λ·W_relevance
    popularity = λ·W_popularity + s·(1 − c)·p
    query      = s·W_query
    every other factor f:  λ·W_f

So ``s = 0`` gives the caller's order exactly (of the candidates that pass the filters: by base
score, ties in the given order); a user without a profile gets the caller's order, blended with
popularity when ``p > 0``; ``s = 1`` with a confident profile gives the configured ranking. When
relevance is the only factor left, it is not normalised, so its order is exactly the base
scores' order. Diversity (:class:`~penchant.MMR`, :class:`~penchant.FeatureCap`), when
configured, reorders the result whatever the strength.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from penchant import _core
from penchant._io import LoadProfile, LoadProfiles, Op, run_async, run_sync
from penchant._time import TimeLike, to_epoch
from penchant._validate import check_finite, check_id, check_name
from penchant.covisitation import _ENGAGEMENT_NAMES, DEFAULT_COVISITATION_WEIGHTS, CoVisitation
from penchant.errors import ValidationError
from penchant.items import Catalog, ItemBatch, _float_column
from penchant.query_expansion import ExpandedQuery, ProfileView, QueryExpander
from penchant.scoring import (
    DEFAULT_RECENCY_HALF_LIFE,
    FACTORS,
    NORMALIZATIONS,
    Diversity,
    FeatureCap,
    Filters,
    ProfileLike,
    RankedItem,
    Scorer,
    _check_k,
    _diversity_args,
    _filter_spec,
    _FilterSpec,
    interest_arrays,
    merge_filters,
    profile_filters,
    profile_interests,
    rank_prepared,
    rank_table,
)
from penchant.user_profile import PROFILE_CONFIDENCE_PRIOR, UserProfile, profile_confidence_of

if TYPE_CHECKING:
    from penchant.profile_store import ProfileStore

__all__ = [
    "COVISITATION_FACTORS",
    "DEFAULT_RETRIEVAL_WEIGHTS",
    "DEFAULT_SEEN_HALF_LIFE",
    "RETRIEVAL_FACTORS",
    "ContentFilter",
    "Exclusion",
    "Explanation",
    "PersonalizedRetriever",
    "QueryExpander",
    "RankingConfig",
    "RankingEngine",
    "RetrievalRequest",
    "rank_items",
]

RETRIEVAL_FACTORS: tuple[str, ...] = (*FACTORS, "query", "novelty")
"""The factors of a retrieval, in the order explanations list them."""

DEFAULT_RETRIEVAL_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "relevance": 1.0,
        "affinity": 1.0,
        "taste": 1.0,
        "recency": 0.0,
        "popularity": 0.0,
        "query": 1.0,
        "novelty": 0.5,
    }
)
"""The fully personalized weights (``W``) for factors a :class:`RankingConfig` does not name."""

DEFAULT_SEEN_HALF_LIFE = 7 * 86_400.0
"""The novelty penalty of a seen item halves every 7 days unless configured otherwise."""

DEFAULT_MAX_AGE = 300.0
"""A compiled profile is recompiled after 5 minutes even if unchanged, because its interests
decay with time (by at most 0.08 % in 5 minutes at the shortest default half-life, 3 days)."""

_MAX_EXPLAINED_INTERESTS = 5

COVISITATION_FACTORS: tuple[str, ...] = ("covisitation", "learned_popularity")
"""The factors a retriever with a :class:`~penchant.CoVisitation` adds, after ``query`` and
before ``novelty`` in explanations."""


# -- configuration ----------------------------------------------------------------------------


def _unit(value: Any, what: str) -> float:
    number = check_finite(value, what)
    if not 0.0 <= number <= 1.0:
        raise ValidationError(f"{what} must lie in [0, 1], got {number}")
    return number


def _positive(value: Any, what: str) -> float:
    number = check_finite(value, what)
    if number <= 0:
        raise ValidationError(f"{what} must be positive, got {number}")
    return number


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{what} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class RankingConfig:
    """How a :class:`RankingEngine` scores (module documentation for the formula).

    ``weights``: the fully personalized weight of each factor (missing ones from
    :data:`DEFAULT_RETRIEVAL_WEIGHTS`). ``normalization``: ``"minmax"`` (default), ``"zscore"``
    or ``"none"`` for every factor but novelty. ``strength``: the default personalization
    strength in [0, 1]. ``use_confidence``: scale it by the profile's confidence (else a user
    with a profile counts as fully known). ``confidence_prior``: the evidence, in clicks' worth,
    at which a profile's confidence is one half. ``cold_start_popularity``: how much popularity
    a user penchant knows nothing about gets (0: the caller's order). ``seen_half_life``:
    seconds in which the novelty penalty halves. ``diversity``: an optional
    :class:`~penchant.MMR` or :class:`~penchant.FeatureCap` step.
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    normalization: str = "minmax"
    recency_half_life: float = DEFAULT_RECENCY_HALF_LIFE
    strength: float = 1.0
    use_confidence: bool = True
    confidence_prior: float = PROFILE_CONFIDENCE_PRIOR
    cold_start_popularity: float = 0.0
    seen_half_life: float = DEFAULT_SEEN_HALF_LIFE
    diversity: Diversity | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping):
            raise ValidationError(f"weights must be a mapping factor -> weight, got {type(self.weights).__name__}")
        unknown = set(self.weights) - set(RETRIEVAL_FACTORS)
        if unknown:
            raise ValidationError(f"weights: unknown factor(s) {sorted(map(str, unknown))}; known: {RETRIEVAL_FACTORS}")
        merged = {
            name: check_finite(value, f"weight of {name!r}")
            for name, value in {**DEFAULT_RETRIEVAL_WEIGHTS, **self.weights}.items()
        }
        object.__setattr__(self, "weights", MappingProxyType(merged))
        if self.normalization not in NORMALIZATIONS:
            raise ValidationError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        object.__setattr__(self, "recency_half_life", _positive(self.recency_half_life, "recency_half_life"))
        object.__setattr__(self, "strength", _unit(self.strength, "strength"))
        if not isinstance(self.use_confidence, bool):
            raise ValidationError("use_confidence must be a bool")
        object.__setattr__(self, "confidence_prior", _positive(self.confidence_prior, "confidence_prior"))
        popularity = check_finite(self.cold_start_popularity, "cold_start_popularity")
        if popularity < 0:
            raise ValidationError(f"cold_start_popularity must not be negative, got {popularity}")
        object.__setattr__(self, "cold_start_popularity", popularity)
        object.__setattr__(self, "seen_half_life", _positive(self.seen_half_life, "seen_half_life"))
        if self.diversity is not None and not isinstance(self.diversity, Diversity):
            raise ValidationError(
                f"diversity must be an MMR, a FeatureCap or None, got {type(self.diversity).__name__}"
            )


@dataclass(frozen=True)
class ContentFilter:
    """The hard rules of retrieval. An item is returned only if it passes all of them:

    - the user's own rules (``never`` a feature, ``min`` / ``max`` of an attribute), always;
    - ``rules``: a :class:`~penchant.Filters` applied to every request (for example a
      ``required_features`` of ``{"lang:en"}``);
    - ``required_attributes``: numeric attributes an item must have;
    - ``exclude_seen_within``: items the user interacted with at most this many seconds ago
      (``None``: seen items stay, with the novelty penalty only);
    - the request's own ``filters``.

    They compose (all must pass; two ranges on one attribute intersect). Every exclusion can be
    explained: :meth:`PersonalizedRetriever.exclusions` names the rule, its detail and where it
    came from (``"profile"``, ``"config"``, ``"seen"`` or ``"request"``).
    """

    rules: Filters = field(default_factory=Filters)
    required_attributes: frozenset[str] = frozenset()
    exclude_seen_within: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", Filters.coerce(self.rules))
        if isinstance(self.required_attributes, str):
            raise ValidationError("required_attributes must be a collection of names, not a str")
        names = frozenset(check_name(a, "required attribute") for a in self.required_attributes)
        object.__setattr__(self, "required_attributes", names)
        if self.exclude_seen_within is not None:
            window = check_finite(self.exclude_seen_within, "exclude_seen_within")
            if window < 0:
                raise ValidationError(f"exclude_seen_within must not be negative, got {window}")
            object.__setattr__(self, "exclude_seen_within", window)

    @property
    def config_filters(self) -> Filters:
        """``rules`` with each required attribute as an open range (present, any value)."""
        if not self.required_attributes:
            return self.rules
        extra = Filters(attribute_ranges=dict.fromkeys(sorted(self.required_attributes), (None, None)))
        merged = merge_filters(self.rules, extra)
        assert merged is not None  # open ranges intersect with anything
        return merged


class Explanation(NamedTuple):
    """Why an item was returned where it was.

    ``contributions``: what each factor added (they sum to the score). ``matched_interests``:
    the user's interests the item carries, ``(feature, interest weight × item weight)``, largest
    first. ``query_matches``: the query's expansion features it carries, likewise.
    ``filters``: the rules in force for the request (every returned item passed them all).
    ``personalization``: ``λ = strength × confidence``; ``confidence``: the profile's.
    ``seen_at``: when the user last interacted with it (epoch seconds), if ever. ``why``: one
    compact line for logs and user interfaces. ``co_visited``: with co-visitation, the user's
    recent items that others often chose this one with, ``(item id, share of the item's
    co-visitation score)``, largest first (at most 3).
    """

    contributions: Mapping[str, float]
    matched_interests: tuple[tuple[str, float], ...]
    query_matches: tuple[tuple[str, float], ...]
    filters: tuple[str, ...]
    personalization: float
    confidence: float
    seen_at: float | None
    why: str
    co_visited: tuple[tuple[str, float], ...] = ()


class Exclusion(NamedTuple):
    """A candidate that a filter dropped: the first ``rule`` it breaks (``"excluded"``,
    ``"blocked"``, ``"required"``, ``"any"`` or ``"range"``), its ``detail`` (the feature or
    attribute, or when it was seen) and the rule's ``source`` (``"profile"``, ``"config"``,
    ``"seen"`` or ``"request"``; several joined by ``+``)."""

    id: str | int
    rule: str
    detail: str
    source: str


@dataclass(frozen=True)
class RetrievalRequest:
    """One request of :meth:`PersonalizedRetriever.retrieve_many`: the arguments of
    :meth:`PersonalizedRetriever.retrieve`."""

    user_id: str
    items: Any
    query: str | None = None
    k: int | None = 10
    explain: bool = False
    filters: Filters | Mapping[str, Any] | None = None
    candidate_ids: Any = None
    base_scores: Any = None
    strength: float | None = None
    now: TimeLike | None = None


# -- compiled profiles ------------------------------------------------------------------------


class _Snapshot:
    """One profile version at one moment, as ranking reads it; immutable once made. It keeps
    what ranking and expansion need, not the profile (whose history may be long)."""

    __slots__ = (
        "_evidence",
        "_plans",
        "_view",
        "confidence",
        "exists",
        "hard",
        "key",
        "made_at",
        "recent",
        "seen_ids",
        "seen_times",
        "taste",
        "user_id",
        "weights",
    )

    def __init__(self, profile: UserProfile | None, now: float, prior: float, recent: int = 0) -> None:
        self.made_at = now
        # The user's engaged items, newest first, as co-visitation reads them (``recent`` of them).
        self.recent: list[str] = []
        self._view: ProfileView | None = None
        self._plans: dict[tuple[int, float | None], _Plan] = {}
        self.exists = profile is not None
        if profile is None:
            self.user_id = ""
            self.key: tuple[int, float] = (0, 0.0)
            self.weights: dict[str, float] = {}
            self.taste: npt.NDArray[np.float32] | None = None
            self.confidence = 0.0
            self.hard = Filters()
            self.seen_ids: list[str] = []
            self.seen_times: npt.NDArray[np.float64] = np.zeros(0)
            self._evidence: tuple[list[str], list[float], list[float], dict[str, float]] = ([], [], [], {})
            return
        self.user_id = profile.user_id
        self.key = (profile.version, profile.updated_at.timestamp())
        names, positive, negative = _core.interest_evidence(profile.interests, now, profile.landmark)
        priors = profile.explicit_priors()
        weights = {name: p - n for name, p, n in zip(names, positive, negative, strict=True)}
        for name, strength in priors.items():
            weights[name] = weights.get(name, 0.0) + strength
        self.weights = weights
        self._evidence = (names, positive, negative, priors)
        evidence = math.fsum(positive) + math.fsum(negative) + sum(abs(v) for v in priors.values())
        self.confidence = profile_confidence_of(evidence, prior)
        self.taste = None if profile.taste_vector is None else np.asarray(profile.taste_vector, dtype=np.float32)
        self.hard = profile.hard_filters() if profile.explicit_preferences else Filters()
        latest: dict[str, float] = {}
        for interaction in profile.interaction_history:
            t = interaction.timestamp.timestamp()
            if t > latest.get(interaction.item_id, -math.inf):
                latest[interaction.item_id] = t
        self.seen_ids = list(latest)
        self.seen_times = np.fromiter(latest.values(), dtype=np.float64, count=len(latest))
        if recent:
            for interaction in reversed(profile.interaction_history):
                if interaction.feedback_type in _ENGAGEMENT_NAMES:
                    self.recent.append(interaction.item_id)
                    if len(self.recent) == recent:
                        break

    def plan(self, engine: RankingEngine, strength: float | None) -> _Plan:
        """The factor weights for this profile at ``strength``, worked out once per engine."""
        key = (id(engine), strength)
        plan = self._plans.get(key)
        if plan is None:
            weights, lam = engine.factor_weights(self.confidence, strength)
            plan = _Plan(
                weights=tuple(weights[name] for name in FACTORS),
                novelty=weights["novelty"],
                query=weights["query"],
                lam=lam,
                only_relevance=all(weights[name] == 0 for name in RETRIEVAL_FACTORS[1:] if name != "query"),
            )
            if len(self._plans) < 16:
                self._plans[key] = plan
        return plan

    def expansion_view(self, expander: QueryExpander) -> ProfileView:
        """What query expansion reads, made on first use (a race only makes it twice)."""
        view = self._view
        if view is None:
            names, positive, negative, priors = self._evidence
            view = self._view = ProfileView.build(
                names,
                positive,
                negative,
                priors,
                self.hard.blocked_features,
                weights=self.weights,
                confidence=self.confidence,
                min_confidence=expander.config.min_interest_confidence,
            )
        return view


class _Plan(NamedTuple):
    """The weights of one ranking: the built-in factors', novelty's, the query's, ``λ``, and
    whether relevance alone counts when there is no query."""

    weights: tuple[float, ...]
    novelty: float
    query: float
    lam: float
    only_relevance: bool


_INTEGER = re.compile(r"-?(0|[1-9][0-9]{0,17})")
"""How feedback writes an int item id (str(int)): only such ids are looked up as ints."""


class _TableProfile:
    """A snapshot resolved against one item table: interests as feature ids, seen items as
    sorted rows. For a registered Catalog it is cached; ``specs`` remembers resolved filters."""

    __slots__ = ("interest_ids", "interest_weights", "seen_rows", "seen_times", "snapshot", "specs", "table")

    def __init__(self, table: _core.Table, snapshot: _Snapshot) -> None:
        self.table = table
        self.snapshot = snapshot
        self.interest_ids, self.interest_weights = table.interest_ids(snapshot.weights)
        self.specs: dict[Hashable, tuple[Any, _Resolved]] = {}
        rows = np.full(len(snapshot.seen_ids), -1, dtype=np.int64)
        if snapshot.seen_ids:
            rows = table.find_rows(snapshot.seen_ids)
            # Feedback keeps item ids as str; a catalog may know the same item by an int.
            missing = [i for i in np.flatnonzero(rows < 0).tolist() if _INTEGER.fullmatch(snapshot.seen_ids[i])]
            if missing:
                found = table.find_rows([int(snapshot.seen_ids[i]) for i in missing])
                rows[missing] = found
        known = rows >= 0
        rows, times = rows[known], snapshot.seen_times[known]
        # One entry per row (an item known by its str and its int id keeps its latest time),
        # ascending, as the novelty kernel requires.
        order = np.lexsort((-times, rows))
        rows, times = rows[order], times[order]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = rows[1:] != rows[:-1]
        self.seen_rows: npt.NDArray[np.uint32] = rows[first].astype(np.uint32)
        self.seen_times: npt.NDArray[np.float64] = np.ascontiguousarray(times[first])


class _LRU:
    """A bounded map, least recently used out first; thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


# -- filters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Resolved:
    """The filters of one request: merged, resolved against a table (``spec`` is ``None`` when
    nothing can pass, with ``blocker`` saying why), and their sources for explanations."""

    merged: Filters | None
    spec: _FilterSpec | None
    blocker: tuple[str, str, str] | None
    sources: tuple[tuple[str, Filters], ...]


def _resolve(table: _core.Table, content: ContentFilter, hard: Filters, request: Filters) -> _Resolved:
    named = (("profile", hard), ("config", content.config_filters), ("request", request))
    sources = tuple((name, rules) for name, rules in named if rules)
    merged: Filters | None = Filters()
    for _, rules in sources:
        assert merged is not None
        merged = merge_filters(merged, rules)
        if merged is None:
            conflicting = _conflicting_range(sources)
            return _Resolved(None, None, ("range", conflicting, _source_of(sources, "range", conflicting)), sources)
    assert merged is not None
    attributes = set(table.attribute_names)
    for name in merged.attribute_ranges:
        if name not in attributes:  # no item has it, so none passes
            return _Resolved(merged, None, ("range", name, _source_of(sources, "range", name)), sources)
    spec = _filter_spec(table, merged) if merged else ([], [], [], [], [])
    if spec is None:
        required = sorted(merged.required_features)
        missing = [name for name, fid in zip(required, table.feature_ids(required), strict=True) if fid is None]
        if missing:
            blocker = ("required", missing[0], _source_of(sources, "required", missing[0]))
        else:
            blocker = ("any", "", _source_of(sources, "any", ""))
        return _Resolved(merged, None, blocker, sources)
    return _Resolved(merged, spec, None, sources)


def _conflicting_range(sources: Sequence[tuple[str, Filters]]) -> str:
    bounds: dict[str, tuple[float, float]] = {}
    for _, rules in sources:
        for name, (low, high) in rules.attribute_ranges.items():
            lo, hi = bounds.get(name, (-math.inf, math.inf))
            lo = max(lo, -math.inf if low is None else low)
            hi = min(hi, math.inf if high is None else high)
            if lo > hi:
                return name
            bounds[name] = (lo, hi)
    return ""


def _source_of(sources: Sequence[tuple[str, Filters]], rule: str, detail: str, value: float | None = None) -> str:
    """Which sources hold the rule an item broke; for a range and the item's ``value``, those
    whose own range excludes it (every source that constrains the attribute when it is missing
    or when only the sources together leave nothing)."""
    found = []
    for name, rules in sources:
        if rule == "range" and detail in rules.attribute_ranges:
            low, high = rules.attribute_ranges[detail]
            if (
                value is None
                or math.isnan(value)
                or (low is not None and value < low)
                or (high is not None and value > high)
            ):
                found.append(name)
        elif (
            (rule == "blocked" and detail in rules.blocked_features)
            or (rule == "required" and detail in rules.required_features)
            or (rule == "any" and rules.any_features)
            or (rule == "excluded" and rules.excluded_ids)
        ):
            found.append(name)
    return "+".join(found) or "request"


def _describe(sources: Sequence[tuple[str, Filters]], window: float | None) -> tuple[str, ...]:
    """The rules in force, one line each, with their source."""
    label = {"profile": "your rule", "config": "always", "request": "this request"}
    lines = []
    for source, rules in sources:
        tag = label[source]
        lines += [f"never {f} ({tag})" for f in sorted(rules.blocked_features)]
        lines += [f"must have {f} ({tag})" for f in sorted(rules.required_features)]
        if rules.any_features:
            lines.append(f"one of {', '.join(sorted(rules.any_features))} ({tag})")
        if rules.excluded_ids:
            lines.append(f"{len(rules.excluded_ids)} id(s) excluded ({tag})")
        for name, (low, high) in sorted(rules.attribute_ranges.items()):
            if low is None and high is None:
                lines.append(f"has {name} ({tag})")
            elif low is None:
                lines.append(f"{name} ≤ {high:g} ({tag})")
            elif high is None:
                lines.append(f"{name} ≥ {low:g} ({tag})")
            else:
                lines.append(f"{low:g} ≤ {name} ≤ {high:g} ({tag})")
    if window is not None:
        lines.append(f"not seen in the last {_duration(window)} (always)")
    return tuple(lines)


def _duration(seconds: float) -> str:
    """``seconds`` for people: ``"45 s"``, ``"12 min"``, ``"3.5 h"``, ``"2 d"``."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86_400.0), ("h", 3_600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.2g} {unit}"
    return f"{seconds:.0f} s"


# -- the ranking engine -----------------------------------------------------------------------


@dataclass
class _Candidates:
    """One request's candidates against a table."""

    table: _core.Table
    rows: npt.NDArray[np.uint32] | None
    base: npt.NDArray[np.float64]
    items: list[Any] | None
    profile: _TableProfile
    filter_cache: dict[Any, Any] | None

    @property
    def n(self) -> int:
        return len(self.table) if self.rows is None else len(self.rows)

    def candidate_rows(self) -> npt.NDArray[np.uint32]:
        return np.arange(len(self.table), dtype=np.uint32) if self.rows is None else self.rows


class RankingEngine:
    """Scores and ranks candidates for a profile: the multi-factor scoring of
    :func:`rank_items`, plus novelty, the query factor, personalization strength, confidence
    and cold start (module documentation). Stateless apart from its ``config``; a
    :class:`PersonalizedRetriever` adds the profile store and caches."""

    def __init__(self, config: RankingConfig | None = None) -> None:
        if config is not None and not isinstance(config, RankingConfig):
            raise ValidationError(f"config must be a RankingConfig, got {type(config).__name__}")
        self.config = config or RankingConfig()

    def personalization(self, confidence: float, strength: float | None = None) -> float:
        """``λ = strength × confidence`` (confidence taken as 1 when ``use_confidence`` is off
        and it is not 0)."""
        s = self.config.strength if strength is None else strength
        c = confidence if self.config.use_confidence or confidence == 0 else 1.0
        return s * c

    def factor_weights(self, confidence: float, strength: float | None = None) -> tuple[dict[str, float], float]:
        """The weight of every factor of :data:`RETRIEVAL_FACTORS` for a profile of this
        confidence at this strength, and ``λ`` (module documentation)."""
        s = self.config.strength if strength is None else strength
        c = confidence if self.config.use_confidence or confidence == 0 else 1.0
        lam = s * c
        w = self.config.weights
        weights = {name: lam * w[name] for name in RETRIEVAL_FACTORS}
        weights["relevance"] = (1.0 - lam) + lam * w["relevance"]
        weights["popularity"] += s * (1.0 - c) * self.config.cold_start_popularity
        weights["query"] = s * w["query"]
        return weights, lam

    def rank(
        self,
        profile: UserProfile | None,
        items: Iterable[Any] | ItemBatch | Catalog,
        *,
        expanded: ExpandedQuery | None = None,
        k: int | None = 10,
        explain: bool = False,
        filters: Filters | Mapping[str, Any] | None = None,
        candidate_ids: Sequence[str | int] | npt.NDArray[np.integer[Any]] | None = None,
        base_scores: npt.ArrayLike | None = None,
        strength: float | None = None,
        now: TimeLike | None = None,
        content_filter: ContentFilter | None = None,
    ) -> list[RankedItem]:
        """Ranks ``items`` for ``profile`` (``None``: a user without one) with no store and no
        cache: :meth:`PersonalizedRetriever.retrieve` without the loading. ``expanded`` is a
        query expansion (:meth:`QueryExpander.expand`) for the query factor."""
        moment = to_epoch(now, "now")
        snapshot = _Snapshot(_checked_profile(profile), moment, self.config.confidence_prior)
        request = _Request.check("", items, None, k, explain, filters, candidate_ids, base_scores, strength, moment)
        return _rank(self, content_filter or _NO_CONTENT_FILTER, snapshot, request, expanded, None)


_NO_CONTENT_FILTER = ContentFilter()


def _checked_profile(profile: Any) -> UserProfile | None:
    if profile is not None and not isinstance(profile, UserProfile):
        raise ValidationError(f"profile must be a UserProfile or None, got {type(profile).__name__}")
    return profile


class _Request(NamedTuple):
    """The checked arguments of one retrieval (everything but the profile). A named tuple:
    made on every request, and cheaper than a frozen dataclass."""

    user_id: str
    items: Any
    query: str | None
    k: int | None
    explain: bool
    filters: Filters
    candidate_ids: Any
    base_scores: Any
    strength: float | None
    now: float

    @classmethod
    def check(
        cls,
        user_id: str,
        items: Any,
        query: str | None,
        k: int | None,
        explain: bool,
        filters: Filters | Mapping[str, Any] | None,
        candidate_ids: Any,
        base_scores: Any,
        strength: float | None,
        now: float,
    ) -> _Request:
        if explain is not False and explain is not True:
            raise ValidationError(f"explain must be a bool, got {type(explain).__name__}")
        if strength is not None:
            strength = _unit(strength, "strength")
        if not isinstance(items, Catalog):
            if items is None or isinstance(items, str | bytes | Mapping):
                raise ValidationError(
                    f"items must be a list of items, an ItemBatch or a Catalog, got {type(items).__name__}"
                )
            if candidate_ids is not None or base_scores is not None:
                raise ValidationError(
                    "candidate_ids and base_scores select candidates of a Catalog; items carry their own ids and scores"
                )
        return cls(
            user_id,
            items,
            query,
            _check_k(k),
            explain,
            _NO_FILTERS if filters is None else Filters.coerce(filters),
            candidate_ids,
            base_scores,
            strength,
            now,
        )


_NO_FILTERS = Filters()


def _candidates(
    request: _Request,
    snapshot: _Snapshot,
    content: ContentFilter,
    expansion_features: Iterable[str],
    diversity: Diversity | None,
    cache: _LRU | None,
    tenant: str,
) -> _Candidates:
    """The candidates of ``request`` against their table, with the snapshot resolved against it
    (from ``cache`` for a registered Catalog)."""
    items = request.items
    if isinstance(items, Catalog):
        table = items._table
        ids = request.candidate_ids
        if ids is None:
            rows = None
        else:
            if isinstance(ids, np.ndarray) and ids.ndim != 1:
                raise ValidationError(f"candidate_ids must be one-dimensional, got an array of shape {ids.shape}")
            if type(ids) is np.ndarray and ids.dtype.kind in "iu":
                if ids.dtype.kind == "u" and ids.size and ids.max() > np.iinfo(np.int64).max:
                    raise ValidationError("candidate ids do not fit in 64-bit signed integers")
                if ids.dtype != np.int64 or not ids.flags.c_contiguous:
                    ids = np.ascontiguousarray(ids, dtype=np.int64)
            elif isinstance(ids, str | bytes):
                raise ValidationError("candidate_ids must be a sequence of ids, not one str")
            elif not isinstance(ids, Iterable):
                raise ValidationError(f"candidate_ids must be a sequence of ids, got {type(ids).__name__}")
            rows = table.rows_of(ids)
        n = len(table) if rows is None else len(rows)
        # NaN and infinite base scores are refused by the kernel.
        base = _float_column(request.base_scores, n, "base_scores")
        if base is None:
            base = np.zeros(n)
        profile = None
        key = (tenant, snapshot.user_id, id(table))
        if cache is not None and snapshot.exists:
            profile = cache.get(key)
            if profile is not None and (profile.snapshot is not snapshot or profile.table is not table):
                profile = None
        if profile is None:
            profile = _TableProfile(table, snapshot)
            if cache is not None and snapshot.exists:
                cache.put(key, profile)
        return _Candidates(table, rows, base, None, profile, items._filter_cache)
    if isinstance(items, ItemBatch):
        table = items._table
        return _Candidates(table, None, items.scores, None, _TableProfile(table, snapshot), None)
    item_list = items if isinstance(items, list) else list(items) if isinstance(items, Iterable) else None
    if item_list is None:
        raise ValidationError(f"items must be a list of items, an ItemBatch or a Catalog, got {type(items).__name__}")
    # The items are read with what every source's filters name, before they are resolved.
    resolve_filters = snapshot.hard
    for rules in (content.config_filters, request.filters):
        merged = merge_filters(resolve_filters, rules)
        resolve_filters = merged if merged is not None else resolve_filters
    # Only features that the profile, the filters or the query name can matter (diversity's
    # capped features are interned too), as in rank_items.
    names = list(snapshot.weights)
    extra = sorted((resolve_filters.feature_names | set(expansion_features)) - snapshot.weights.keys())
    names.extend(extra)
    known = {name: i for i, name in enumerate(names)}
    prefixes = list(diversity.prefixes or ("",)) if isinstance(diversity, FeatureCap) else []
    table, base = _core.Table.from_items(item_list, sorted(resolve_filters.attribute_ranges), (known, names), prefixes)
    return _Candidates(table, None, base, item_list, _TableProfile(table, snapshot), None)


class _CoVisitationFactors(NamedTuple):
    """A retriever's co-visitation model and the fully personalized weights of
    :data:`COVISITATION_FACTORS`."""

    model: CoVisitation
    weights: tuple[float, float]


def _rank(
    engine: RankingEngine,
    content: ContentFilter,
    snapshot: _Snapshot,
    request: _Request,
    expanded: ExpandedQuery | None,
    cache: _LRU | None,
    tenant: str = "",
    covisitation: _CoVisitationFactors | None = None,
) -> list[RankedItem]:
    """The body of every retrieval: candidates, filters, factors, the kernel, explanations."""
    config = engine.config
    query_features = expanded.features if expanded is not None else _NO_FEATURES
    candidates = _candidates(request, snapshot, content, query_features, config.diversity, cache, tenant)
    n = candidates.n
    if n == 0:
        return []
    resolved = _resolved_filters(candidates, content, snapshot, request.filters)
    spec = resolved.spec
    if spec is None:
        return []
    now = request.now
    explain = request.explain
    profile = candidates.profile
    window = content.exclude_seen_within
    if window is not None and len(profile.seen_rows):
        recent = profile.seen_rows[profile.seen_times >= now - window]
        if len(recent):
            spec = (spec[0], spec[1], spec[2], spec[3] + recent.tolist(), spec[4])
    plan = snapshot.plan(engine, request.strength)
    # The query factor is left out when it has nothing to add, except for an explanation,
    # whose contributions always name every factor; novelty is computed in the kernel.
    query = _query_values(candidates, query_features) if plan.query and query_features else None
    norm = config.normalization
    if query is not None:
        extra = [(query, plan.query, norm)]
    elif explain:
        extra = [(np.zeros(n), 0.0, norm)]
    else:
        extra = []
    extra_names = ("query",) * len(extra)
    # Co-visitation weighs λ·W like every personalized factor: nothing for a user without a
    # profile, the configured weight for a well-known one.
    covisited = False
    if covisitation is not None:
        w_covisitation, w_popularity = (plan.lam * w for w in covisitation.weights)
        if explain or w_covisitation or w_popularity:
            covisitation_values, popularity_values = covisitation.model._factor_values(
                snapshot.recent, candidates.table, candidates.rows, isinstance(request.items, Catalog)
            )
            extra.append((covisitation_values, w_covisitation, norm))
            extra.append((popularity_values, w_popularity, norm))
            extra_names += COVISITATION_FACTORS
            covisited = bool(w_covisitation or w_popularity)
    seen = (profile.seen_rows, profile.seen_times, config.seen_half_life, plan.novelty)
    novelty = seen if explain or (plan.novelty and len(profile.seen_rows)) else None
    extra_names += ("novelty",) * (novelty is not None)
    only_relevance = plan.only_relevance and query is None and not covisited
    ranked, chosen_rows = rank_prepared(
        candidates.table,
        candidates.rows,
        candidates.base,
        (profile.interest_ids, profile.interest_weights),
        snapshot.taste,
        weights=plan.weights,
        normalization=("none", norm, norm, norm, norm) if only_relevance else (norm, norm, norm, norm, norm),
        now=now,
        recency_half_life=config.recency_half_life,
        extra_names=extra_names,
        extra=extra,
        spec=spec,
        k=n if request.k is None else min(request.k, n),
        diversity=_diversity_args(candidates.table, config.diversity, candidates.filter_cache),
        items=candidates.items,
        explain=explain,
        novelty=novelty,
    )
    if not explain:
        return ranked
    rules = _describe(resolved.sources, window)
    model = covisitation.model if covisitation is not None else None
    return [
        item._replace(
            explanation=_explain(item, row, candidates, snapshot, query_features, rules, plan.lam, now, model)
        )
        for item, row in zip(ranked, chosen_rows, strict=True)
    ]


_NO_FEATURES: Mapping[str, float] = MappingProxyType({})


def _query_values(candidates: _Candidates, features: Mapping[str, float]) -> npt.NDArray[np.float64] | None:
    """The query factor's raw values (affinity with the expansion's features), or ``None``
    when no candidate carries any of them."""
    names = list(features)
    pairs = [
        (fid, features[n]) for fid, n in zip(candidates.table.feature_ids(names), names, strict=True) if fid is not None
    ]
    if not pairs:
        return None
    values = candidates.table.affinity(
        candidates.candidate_rows(),
        np.fromiter((p[0] for p in pairs), dtype=np.uint32, count=len(pairs)),
        np.fromiter((p[1] for p in pairs), dtype=np.float64, count=len(pairs)),
    )
    return values if values.any() else None


def _resolved_filters(
    candidates: _Candidates, content: ContentFilter, snapshot: _Snapshot, request_filters: Filters
) -> _Resolved:
    """The request's filters resolved against the table, remembered per table profile for a
    registered catalog (by the identity of the request's Filters object)."""
    specs = candidates.profile.specs
    key = id(request_filters)
    cached = specs.get(key)
    if cached is not None and cached[0] is request_filters:
        return cached[1]
    resolved = _resolve(candidates.table, content, snapshot.hard, request_filters)
    if len(specs) >= 16:
        specs.clear()
    specs[key] = (request_filters, resolved)
    return resolved


def _explain(
    item: RankedItem,
    row: int,
    candidates: _Candidates,
    snapshot: _Snapshot,
    query_features: Mapping[str, float],
    rules: tuple[str, ...],
    lam: float,
    now: float,
    covisitation: CoVisitation | None = None,
) -> Explanation:
    contributions = dict(item.contributions or {})
    co_visited: list[tuple[str, float]] = []
    if covisitation is not None and contributions.get("covisitation", 0.0) > 0:
        co_visited = covisitation._sources(snapshot.recent, item.id)
    features = candidates.table.row_features(row)
    matched = sorted(
        ((name, snapshot.weights[name] * w) for name, w in features if snapshot.weights.get(name)),
        key=lambda pair: (-abs(pair[1]), pair[0]),
    )[:_MAX_EXPLAINED_INTERESTS]
    query_matched = sorted(
        ((name, query_features[name] * w) for name, w in features if name in query_features),
        key=lambda pair: (-abs(pair[1]), pair[0]),
    )[:_MAX_EXPLAINED_INTERESTS]
    seen_rows = candidates.profile.seen_rows
    seen_at = None
    if len(seen_rows):
        where = int(np.searchsorted(seen_rows, row))
        if where < len(seen_rows) and seen_rows[where] == row:
            seen_at = float(candidates.profile.seen_times[where])
    why = _why(contributions, matched, query_matched, seen_at, snapshot, lam, now, co_visited)
    return Explanation(
        contributions=contributions,
        matched_interests=tuple(matched),
        query_matches=tuple(query_matched),
        filters=rules,
        personalization=lam,
        confidence=snapshot.confidence,
        seen_at=seen_at,
        why=why,
        co_visited=tuple(co_visited),
    )


def _why(
    contributions: Mapping[str, float],
    matched: Sequence[tuple[str, float]],
    query_matched: Sequence[tuple[str, float]],
    seen_at: float | None,
    snapshot: _Snapshot,
    lam: float,
    now: float,
    co_visited: Sequence[tuple[str, float]] = (),
) -> str:
    """One line: how personalized the ranking was, then the factors that counted most."""
    parts: list[str] = []
    if not snapshot.exists:
        parts.append("no profile yet, so the caller's order")
    elif lam < 0.25:
        parts.append(f"little known about you yet ({lam:.0%} personalized)")
    liked = [name for name, v in matched if v > 0][:3]
    disliked = [name for name, v in matched if v < 0][:3]
    ordered = sorted(contributions.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    for name, value in ordered:
        if abs(value) < 0.005 or len(parts) >= 4:
            continue
        if name == "affinity":
            phrase = "you like " + ", ".join(liked) if value > 0 and liked else "your interests"
        elif name == "query":
            via = ", ".join(n for n, _ in query_matched[:3])
            phrase = f"fits the query via {via}" if via else "the query"
        elif name == "novelty":
            if seen_at is None:
                phrase = "seen before"
            elif now - seen_at < 60:
                phrase = "seen just now"
            else:
                phrase = f"seen {_duration(now - seen_at)} ago"
        elif name == "taste":
            phrase = "close to your taste" if value > 0 else "far from your taste"
        elif name == "covisitation":
            after = ", ".join(i for i, _ in co_visited)
            phrase = f"often chosen after {after}" if after else "often chosen with your recent items"
        elif name == "learned_popularity":
            phrase = "often chosen by others"
        else:
            phrase = {"relevance": "the caller's relevance", "recency": "recent", "popularity": "popular"}[name]
        parts.append(f"{phrase} ({value:+.2f})")
    if disliked:
        # Scaled factors give a disliked item nothing rather than a minus: say it outright.
        parts.append("you dislike " + ", ".join(disliked))
    return "; ".join(parts) if parts else "no factor stood out"


# -- the retriever ----------------------------------------------------------------------------


def _covisitation_factors(
    covisitation: CoVisitation | None, weights: Mapping[str, float] | None
) -> _CoVisitationFactors | None:
    if covisitation is None:
        if weights is not None:
            raise ValidationError("covisitation_weights need a covisitation model")
        return None
    if not isinstance(covisitation, CoVisitation):
        raise ValidationError(f"covisitation must be a CoVisitation, got {type(covisitation).__name__}")
    return _CoVisitationFactors(covisitation, _check_covisitation_weights(weights))


def _check_covisitation_weights(weights: Mapping[str, float] | None) -> tuple[float, float]:
    """The weights of :data:`COVISITATION_FACTORS`, checked; missing ones from
    :data:`~penchant.DEFAULT_COVISITATION_WEIGHTS`."""
    if weights is None:
        weights = {}
    if not isinstance(weights, Mapping):
        raise ValidationError(f"covisitation weights must be a mapping factor -> weight, got {type(weights).__name__}")
    unknown = set(weights) - set(COVISITATION_FACTORS)
    if unknown:
        raise ValidationError(
            f"covisitation weights: unknown factor(s) {sorted(map(str, unknown))}; known: {COVISITATION_FACTORS}"
        )
    merged = {**DEFAULT_COVISITATION_WEIGHTS, **weights}
    w_covisitation, w_popularity = (check_finite(merged[name], f"weight of {name!r}") for name in COVISITATION_FACTORS)
    return w_covisitation, w_popularity


class PersonalizedRetriever:
    """User-aware retrieval over a :class:`~penchant.ProfileStore` (module documentation).

    ``store``: where profiles live (an in-memory store by default). ``ranking``: a
    :class:`RankingEngine` or its :class:`RankingConfig`. ``content_filter``: the hard rules.
    ``expander``: the :class:`QueryExpander` whose expansion feeds the query factor.
    ``cache_size``: compiled profiles kept (per user, and per user and catalog); ``max_age``:
    seconds after which a compiled profile is recompiled even if its version did not change
    (its interests decay with time). ``covisitation``: a tenant's
    :class:`~penchant.CoVisitation`, whose factors (:data:`COVISITATION_FACTORS`, scored from
    the user's recent engaged items) are added with ``covisitation_weights`` (by default
    :data:`~penchant.DEFAULT_COVISITATION_WEIGHTS`), scaled by ``λ`` as every personalized
    factor is.

    Profiles are read with ``get_shared`` (the store's read-only fast path) and compiled once
    per profile version and moment; for a registered :class:`~penchant.Catalog` the compiled
    form (interests as feature ids, seen items as rows, resolved filters) is cached per
    ``(tenant, user, catalog)`` and replaced when the version (or ``updated_at``) changes.
    Thread-safe; every method has an async twin (``a`` prefix) running the same operation.
    """

    def __init__(
        self,
        store: ProfileStore | None = None,
        *,
        ranking: RankingEngine | RankingConfig | None = None,
        content_filter: ContentFilter | None = None,
        expander: QueryExpander | None = None,
        cache_size: int = 10_000,
        max_age: float = DEFAULT_MAX_AGE,
        covisitation: CoVisitation | None = None,
        covisitation_weights: Mapping[str, float] | None = None,
    ) -> None:
        self.covisitation = covisitation
        self._covisitation = _covisitation_factors(covisitation, covisitation_weights)
        if store is None:
            from penchant.profile_store import InMemoryProfileStore

            store = InMemoryProfileStore()
        self.store = store
        if isinstance(ranking, RankingConfig) or ranking is None:
            ranking = RankingEngine(ranking)
        if not isinstance(ranking, RankingEngine):
            raise ValidationError(f"ranking must be a RankingEngine or a RankingConfig, got {type(ranking).__name__}")
        self.ranking = ranking
        if content_filter is not None and not isinstance(content_filter, ContentFilter):
            raise ValidationError(f"content_filter must be a ContentFilter, got {type(content_filter).__name__}")
        self.content_filter = content_filter or ContentFilter()
        if expander is not None and not isinstance(expander, QueryExpander):
            raise ValidationError(f"expander must be a QueryExpander, got {type(expander).__name__}")
        self.expander = expander if expander is not None else QueryExpander()
        _positive_int(cache_size, "cache_size")
        self.max_age = _positive(max_age, "max_age")
        self._snapshots = _LRU(cache_size)
        self._tables = _LRU(cache_size)

    @property
    def tenant(self) -> str:
        return self.store.tenant

    def clear_cache(self) -> None:
        """Forgets every compiled profile."""
        self._snapshots.clear()
        self._tables.clear()

    def cache_info(self) -> dict[str, int]:
        """How many compiled profiles are cached: per user, and per user and catalog."""
        return {"profiles": len(self._snapshots), "catalog_profiles": len(self._tables)}

    # -- compiled profiles ------------------------------------------------------------------

    def _snapshot(self, profile: UserProfile | None, now: float) -> _Snapshot:
        if profile is None:
            return _Snapshot(None, now, self.ranking.config.confidence_prior)
        recent = 0 if self.covisitation is None else self.covisitation._model.recent
        key = (self.store.tenant, profile.user_id)
        snapshot: _Snapshot | None = self._snapshots.get(key)
        if (
            snapshot is not None
            and snapshot.key == (profile.version, profile.updated_at.timestamp())
            and abs(now - snapshot.made_at) <= self.max_age
        ):
            return snapshot
        snapshot = _Snapshot(profile, now, self.ranking.config.confidence_prior, recent)
        self._snapshots.put(key, snapshot)
        return snapshot

    def _expanded(self, query: str | None, snapshot: _Snapshot) -> ExpandedQuery | None:
        if query is None:
            return None
        return self.expander._expand(query, snapshot.expansion_view(self.expander))

    # -- retrieve ---------------------------------------------------------------------------

    def retrieve(
        self,
        user_id: str,
        candidates: Iterable[Any] | ItemBatch | Catalog,
        *,
        query: str | None = None,
        k: int | None = 10,
        explain: bool = False,
        filters: Filters | Mapping[str, Any] | None = None,
        candidate_ids: Sequence[str | int] | npt.NDArray[np.integer[Any]] | None = None,
        base_scores: npt.ArrayLike | None = None,
        strength: float | None = None,
        now: TimeLike | None = None,
    ) -> list[RankedItem]:
        """The best ``k`` of ``candidates`` for ``user_id``, best first.

        ``candidates``: dicts or objects (as :func:`rank_items` takes), an
        :class:`~penchant.ItemBatch`, or a registered :class:`~penchant.Catalog`, of which
        ``candidate_ids`` (default: every item) are ranked with ``base_scores`` (default 0).
        ``query``: the user's query, expanded (:meth:`expand_query`) for the query factor.
        ``filters``: this request's rules, on top of the user's and the content filter's.
        ``strength``: the personalization strength for this request (default: the config's).
        ``now``: the time to rank at (default: the current time). ``explain=True`` fills each
        result's ``contributions`` and ``explanation``.
        """
        op = self.retrieve_op(
            user_id,
            candidates,
            query=query,
            k=k,
            explain=explain,
            filters=filters,
            candidate_ids=candidate_ids,
            base_scores=base_scores,
            strength=strength,
            now=now,
        )
        return run_sync(op)

    async def aretrieve(
        self,
        user_id: str,
        candidates: Iterable[Any] | ItemBatch | Catalog,
        *,
        query: str | None = None,
        k: int | None = 10,
        explain: bool = False,
        filters: Filters | Mapping[str, Any] | None = None,
        candidate_ids: Sequence[str | int] | npt.NDArray[np.integer[Any]] | None = None,
        base_scores: npt.ArrayLike | None = None,
        strength: float | None = None,
        now: TimeLike | None = None,
    ) -> list[RankedItem]:
        """:meth:`retrieve`, awaiting the store."""
        op = self.retrieve_op(
            user_id,
            candidates,
            query=query,
            k=k,
            explain=explain,
            filters=filters,
            candidate_ids=candidate_ids,
            base_scores=base_scores,
            strength=strength,
            now=now,
        )
        return await run_async(op)

    def _check(
        self,
        user_id: str,
        candidates: Any,
        query: str | None,
        k: int | None,
        explain: bool,
        filters: Filters | Mapping[str, Any] | None,
        candidate_ids: Any,
        base_scores: Any,
        strength: float | None,
        now: TimeLike | None,
    ) -> _Request:
        check_id(user_id)
        if query is not None:
            self.expander.check_query(query)
        return _Request.check(
            user_id,
            candidates,
            query,
            k,
            explain,
            filters,
            candidate_ids,
            base_scores,
            strength,
            to_epoch(now, "now"),
        )

    def retrieve_op(
        self,
        user_id: str,
        candidates: Iterable[Any] | ItemBatch | Catalog,
        *,
        query: str | None = None,
        k: int | None = 10,
        explain: bool = False,
        filters: Filters | Mapping[str, Any] | None = None,
        candidate_ids: Sequence[str | int] | npt.NDArray[np.integer[Any]] | None = None,
        base_scores: npt.ArrayLike | None = None,
        strength: float | None = None,
        now: TimeLike | None = None,
    ) -> Op[list[RankedItem]]:
        """The body of :meth:`retrieve` and :meth:`aretrieve`: checks every argument, yields
        the profile load, ranks."""
        request = self._check(
            user_id, candidates, query, k, explain, filters, candidate_ids, base_scores, strength, now
        )
        profile = yield LoadProfile(self.store, request.user_id)
        return self._finish(request, profile)

    def _finish(self, request: _Request, profile: UserProfile | None) -> list[RankedItem]:
        snapshot = self._snapshot(profile, request.now)
        expanded = self._expanded(request.query, snapshot)
        return _rank(
            self.ranking,
            self.content_filter,
            snapshot,
            request,
            expanded,
            self._tables,
            self.store.tenant,
            self._covisitation,
        )

    # -- many users -------------------------------------------------------------------------

    def retrieve_many(self, requests: Iterable[RetrievalRequest | Mapping[str, Any]]) -> list[list[RankedItem]]:
        """One :meth:`retrieve` per request, with every user's profile loaded in one batch
        (``get_many``); results in the order of the requests. Each request is a
        :class:`RetrievalRequest` or a mapping of its fields."""
        return run_sync(self.retrieve_many_op(requests))

    async def aretrieve_many(self, requests: Iterable[RetrievalRequest | Mapping[str, Any]]) -> list[list[RankedItem]]:
        """:meth:`retrieve_many`, awaiting the store."""
        return await run_async(self.retrieve_many_op(requests))

    def retrieve_many_op(self, requests: Iterable[RetrievalRequest | Mapping[str, Any]]) -> Op[list[list[RankedItem]]]:
        if isinstance(requests, RetrievalRequest | Mapping):
            raise ValidationError("retrieve_many takes a list of requests; use retrieve for one")
        checked = []
        for position, raw in enumerate(requests):
            try:
                if isinstance(raw, Mapping):
                    unknown = set(raw) - set(RetrievalRequest.__dataclass_fields__)
                    if unknown:
                        raise ValidationError(f"unknown field(s) {sorted(map(str, unknown))}")
                    try:
                        raw = RetrievalRequest(**raw)
                    except TypeError as e:
                        raise ValidationError(str(e)) from None
                if not isinstance(raw, RetrievalRequest):
                    raise ValidationError(f"expected a RetrievalRequest or a mapping, got {type(raw).__name__}")
                checked.append(
                    self._check(
                        raw.user_id,
                        raw.items,
                        raw.query,
                        raw.k,
                        raw.explain,
                        raw.filters,
                        raw.candidate_ids,
                        raw.base_scores,
                        raw.strength,
                        raw.now,
                    )
                )
            except ValidationError as e:
                raise ValidationError(f"request {position}: {e}") from None
        if not checked:
            return []
        profiles = yield LoadProfiles(self.store, list(dict.fromkeys(r.user_id for r in checked)))
        return [self._finish(r, profiles.get(r.user_id)) for r in checked]

    # -- query expansion --------------------------------------------------------------------

    def expand_query(self, user_id: str, query: str, *, now: TimeLike | None = None) -> ExpandedQuery:
        """``query`` expanded for the user (see :class:`QueryExpander`)."""
        return run_sync(self.expand_query_op(user_id, query, now=now))

    async def aexpand_query(self, user_id: str, query: str, *, now: TimeLike | None = None) -> ExpandedQuery:
        """:meth:`expand_query`, awaiting the store."""
        return await run_async(self.expand_query_op(user_id, query, now=now))

    def expand_query_op(self, user_id: str, query: str, *, now: TimeLike | None = None) -> Op[ExpandedQuery]:
        check_id(user_id)
        query = self.expander.check_query(query)
        moment = to_epoch(now, "now")
        profile = yield LoadProfile(self.store, user_id)
        expanded = self._expanded(query, self._snapshot(profile, moment))
        assert expanded is not None
        return expanded

    # -- exclusions -------------------------------------------------------------------------

    def exclusions(
        self,
        user_id: str,
        candidates: Iterable[Any] | ItemBatch | Catalog,
        *,
        filters: Filters | Mapping[str, Any] | None = None,
        candidate_ids: Sequence[str | int] | npt.NDArray[np.integer[Any]] | None = None,
        now: TimeLike | None = None,
    ) -> list[Exclusion]:
        """Every candidate that :meth:`retrieve` would drop with these arguments, with the first
        rule it breaks and where that rule came from, in the candidates' order."""
        return run_sync(self.exclusions_op(user_id, candidates, filters=filters, candidate_ids=candidate_ids, now=now))

    async def aexclusions(
        self,
        user_id: str,
        candidates: Iterable[Any] | ItemBatch | Catalog,
        *,
        filters: Filters | Mapping[str, Any] | None = None,
        candidate_ids: Sequence[str | int] | npt.NDArray[np.integer[Any]] | None = None,
        now: TimeLike | None = None,
    ) -> list[Exclusion]:
        """:meth:`exclusions`, awaiting the store."""
        op = self.exclusions_op(user_id, candidates, filters=filters, candidate_ids=candidate_ids, now=now)
        return await run_async(op)

    def exclusions_op(
        self,
        user_id: str,
        candidates: Iterable[Any] | ItemBatch | Catalog,
        *,
        filters: Filters | Mapping[str, Any] | None = None,
        candidate_ids: Sequence[str | int] | npt.NDArray[np.integer[Any]] | None = None,
        now: TimeLike | None = None,
    ) -> Op[list[Exclusion]]:
        request = self._check(user_id, candidates, None, None, False, filters, candidate_ids, None, None, now)
        profile = yield LoadProfile(self.store, request.user_id)
        snapshot = self._snapshot(profile, request.now)
        return _exclusions(self.content_filter, snapshot, request, self._tables, self.store.tenant)


def _exclusions(
    content: ContentFilter, snapshot: _Snapshot, request: _Request, cache: _LRU | None, tenant: str
) -> list[Exclusion]:
    candidates = _candidates(request, snapshot, content, (), None, cache, tenant)
    rows = candidates.candidate_rows()
    if not len(rows):
        return []
    ids = candidates.table.ids(rows.tolist())
    resolved = _resolved_filters(candidates, content, snapshot, request.filters)
    if resolved.spec is None:
        assert resolved.blocker is not None
        rule, detail, source = resolved.blocker
        return [Exclusion(i, rule, detail, source) for i in ids]
    profile = candidates.profile
    spec = resolved.spec
    seen: dict[int, float] = {}
    window = content.exclude_seen_within
    if window is not None and len(profile.seen_rows):
        recent = profile.seen_times >= request.now - window
        seen = dict(zip(profile.seen_rows[recent].tolist(), profile.seen_times[recent].tolist(), strict=True))
        spec = (spec[0], spec[1], spec[2], spec[3] + list(seen), spec[4])
    out = []
    for position, rule, detail in candidates.table.exclusions(rows.tolist(), spec):
        row = int(rows[position])
        if rule == "excluded" and row in seen:
            out.append(Exclusion(ids[position], rule, f"seen {_duration(request.now - seen[row])} ago", "seen"))
            continue
        value = None
        if rule == "range":
            column = candidates.table.column(detail, [row])
            value = None if column is None else float(column[0])
        out.append(Exclusion(ids[position], rule, detail, _source_of(resolved.sources, rule, detail, value)))
    return out


# -- one ranking for a profile you hold --------------------------------------------------------


def rank_items(
    profile: ProfileLike,
    items: Iterable[Any] | ItemBatch | Catalog,
    *,
    k: int | None = None,
    weights: Mapping[str, float] | None = None,
    filters: Filters | Mapping[str, Any] | None = None,
    now: TimeLike | None = None,
    explain: bool = False,
    normalization: str | Mapping[str, str] = "minmax",
    recency_half_life: float = DEFAULT_RECENCY_HALF_LIFE,
    scorers: Mapping[str, Scorer] | None = None,
    diversity: Diversity | None = None,
) -> list[RankedItem]:
    """Re-ranks and filters ``items`` for ``profile``; returns the best ``k`` (all when ``None``),
    best first.

    ``profile``: a :class:`~penchant.UserProfile` or a mapping feature name → weight.
    ``items``: dicts or objects with ``id``, ``score``, ``features`` and optional ``embedding``,
    ``timestamp``, ``popularity``, ``attributes``; an :class:`~penchant.ItemBatch`; or a
    :class:`~penchant.Catalog` (every item ranked, base score 0). A ``UserProfile``'s explicit
    hard rules (``never``, ``min``, ``max``) are added to ``filters``.

    Each factor (``relevance``, ``affinity``, ``taste``, ``recency``, ``popularity``, and each
    custom scorer) is normalised across the candidates that pass ``filters``
    (``normalization``: ``"minmax"``, ``"zscore"`` or ``"none"``, or a mapping per factor), then
    weighted (``weights``; defaults in :data:`penchant.DEFAULT_WEIGHTS`) and summed. An item
    missing what a factor needs gets 0 from it. Ties keep the input order. ``k`` larger than the
    candidates returns them all; no candidates return ``[]``. With ``explain=True`` each result
    carries each factor's contribution. ``diversity`` (:class:`~penchant.MMR` or
    :class:`~penchant.FeatureCap`) reorders the best candidates so that the top k are not all
    alike; scores stay as computed, so the order may then differ from the score order.

    This is the plain ranking of a profile you hold; :class:`PersonalizedRetriever` (and
    :class:`~penchant.Engine`) add the store, confidence, novelty, queries and explanations.
    """
    if isinstance(items, Catalog):
        return items.rank(
            profile,
            k=k,
            weights=weights,
            filters=filters,
            now=now,
            explain=explain,
            normalization=normalization,
            recency_half_life=recency_half_life,
            scorers=scorers,
            diversity=diversity,
        )
    moment = to_epoch(now, "now")
    interests, taste = profile_interests(profile, moment)
    # A user's stated hard rules ("never horror", "max price 20") always apply.
    rules = profile_filters(profile, Filters.coerce(filters))
    if rules is None:
        return []
    if isinstance(items, ItemBatch):
        table = items._table
        return rank_table(
            table,
            None,
            items.scores,
            table.interest_ids(interests if type(interests) is dict else dict(interests)),
            taste,
            items=None,
            k=k,
            weights=weights,
            filters=rules,
            now=moment,
            explain=explain,
            normalization=normalization,
            recency_half_life=recency_half_life,
            scorers=scorers,
            diversity=diversity,
        )
    item_list = items if isinstance(items, list | tuple) else list(items)
    # Only features the profile or the filters name can matter, so the Rust reader looks each
    # item feature up in this small vocabulary instead of interning all of them.
    names, weights_by_name = interest_arrays(interests)
    extra_names = sorted(rules.feature_names - interests.keys())
    names.extend(extra_names)
    known = {name: i for i, name in enumerate(names)}
    # A feature cap must see every feature it caps, not only those the profile names.
    prefixes = list(diversity.prefixes or ("",)) if isinstance(diversity, FeatureCap) else []
    table, base = _core.Table.from_items(item_list, list(rules.attribute_ranges), (known, names), prefixes)
    return rank_table(
        table,
        None,
        base,
        (np.arange(len(weights_by_name), dtype=np.uint32), weights_by_name),
        taste,
        items=item_list,
        k=k,
        weights=weights,
        filters=rules,
        now=moment,
        explain=explain,
        normalization=normalization,
        recency_half_life=recency_half_life,
        scorers=scorers,
        diversity=diversity,
    )
