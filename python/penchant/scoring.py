"""The ranking core shared by :func:`penchant.rank_items` and :meth:`penchant.Catalog.rank`:
options, filters, results, and the one function that hands a request to the Rust kernels."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import numpy as np
import numpy.typing as npt

from penchant import _core
from penchant._validate import check_finite, check_name
from penchant.errors import ValidationError

if TYPE_CHECKING:
    from penchant.personalized_retrieval import Explanation
    from penchant.user_profile import UserProfile

__all__ = [
    "DEFAULT_RECENCY_HALF_LIFE",
    "DEFAULT_WEIGHTS",
    "FACTORS",
    "MMR",
    "Candidates",
    "Diversity",
    "FeatureCap",
    "Filters",
    "ProfileLike",
    "RankedItem",
    "Scorer",
    "merge_filters",
    "profile_filters",
]

FACTORS: tuple[str, ...] = tuple(_core.FACTORS)
"""The built-in factors, in the order explanations list them."""

DEFAULT_WEIGHTS: Mapping[str, float] = {
    "relevance": 1.0,
    "affinity": 1.0,
    "taste": 1.0,
    "recency": 0.0,
    "popularity": 0.0,
}
"""Weights used for factors the caller does not name."""

DEFAULT_RECENCY_HALF_LIFE = 7 * 86_400.0
"""An item's recency halves every 7 days unless configured otherwise."""

NORMALIZATIONS = ("none", "minmax", "zscore")

ProfileLike = Union["UserProfile", Mapping[str, float]]
"""A :class:`~penchant.UserProfile`, or a plain mapping feature name → interest weight."""


class RankedItem(NamedTuple):
    """One ranked result. ``contributions`` (with ``explain=True``) maps each factor to what it
    added; they sum to ``score``. ``item`` is the caller's own item object when there was one.
    ``explanation`` (from :class:`~penchant.PersonalizedRetriever` and :class:`~penchant.Engine`
    with ``explain=True``) says why: matched interests, the rules in force, and a ``why`` line.
    A named tuple: cheap to make, immutable, unpacks as ``(id, score, contributions, item,
    explanation)``."""

    id: str | int
    score: float
    contributions: Mapping[str, float] | None = None
    item: Any = None
    explanation: Explanation | None = None


@dataclass(frozen=True)
class Filters:
    """Hard rules: an item that breaks one is never returned.

    - ``blocked_features``: drop items that carry any of these features;
    - ``required_features``: keep only items that carry all of these;
    - ``any_features``: keep only items that carry at least one of these (when not empty);
    - ``excluded_ids``: drop these items;
    - ``attribute_ranges``: ``{"price": (None, 20)}`` keeps items whose numeric attribute lies in
      the inclusive range (``None`` leaves a side open); an item without the attribute is dropped.
    """

    blocked_features: frozenset[str] = frozenset()
    required_features: frozenset[str] = frozenset()
    any_features: frozenset[str] = frozenset()
    excluded_ids: frozenset[str | int] = frozenset()
    attribute_ranges: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("blocked_features", "required_features", "any_features"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValidationError(f"filters: {name} must be a collection of names, not a str")
            names = frozenset(check_name(v, f"filters: {name} entry") for v in value)
            object.__setattr__(self, name, names)
        if isinstance(self.excluded_ids, str | int):
            raise ValidationError("filters: excluded_ids must be a collection of ids")
        object.__setattr__(self, "excluded_ids", frozenset(self.excluded_ids))
        ranges: dict[str, tuple[float | None, float | None]] = {}
        for attribute, bounds in dict(self.attribute_ranges).items():
            check_name(attribute, "filters: attribute name")
            try:
                low, high = bounds
            except (TypeError, ValueError):
                raise ValidationError(
                    f"filters: the range of {attribute!r} must be a pair (low, high), got {bounds!r}"
                ) from None
            low = None if low is None else check_finite(low, f"filters: low bound of {attribute!r}")
            high = None if high is None else check_finite(high, f"filters: high bound of {attribute!r}")
            if low is not None and high is not None and low > high:
                raise ValidationError(f"filters: empty range for {attribute!r}: [{low}, {high}]")
            ranges[attribute] = (low, high)
        object.__setattr__(self, "attribute_ranges", ranges)

    @classmethod
    def coerce(cls, value: Filters | Mapping[str, Any] | None) -> Filters:
        """A ``Filters`` from itself, a mapping of its field names, or ``None`` (no rules)."""
        if value is None:
            return _NO_FILTERS
        if isinstance(value, Filters):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise ValidationError(
                    f"filters: unknown rule(s) {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}"
                )
            return cls(**value)
        raise ValidationError(f"filters must be a Filters or a mapping, got {type(value).__name__}")

    @property
    def feature_names(self) -> frozenset[str]:
        return self.blocked_features | self.required_features | self.any_features

    def __bool__(self) -> bool:
        return bool(
            self.blocked_features
            or self.required_features
            or self.any_features
            or self.excluded_ids
            or self.attribute_ranges
        )


_NO_FILTERS = Filters()


@dataclass(frozen=True)
class MMR:
    """Diversify by maximal marginal relevance: pick, one at a time, the candidate that maximises
    ``lambda_·relevance − (1 − lambda_)·(max similarity to those picked)``, among the ``pool``
    best-scored. Similarity is the cosine of embeddings, or the Jaccard index of features for
    items without one. ``lambda_ = 1`` keeps the score order."""

    lambda_: float = 0.7
    pool: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "lambda_", check_finite(self.lambda_, "MMR lambda_"))
        if not 0.0 <= self.lambda_ <= 1.0:
            raise ValidationError(f"MMR lambda_ must lie in [0, 1], got {self.lambda_}")
        _check_pool(self.pool)


@dataclass(frozen=True)
class FeatureCap:
    """Diversify by capping how many results may share a feature: at most ``cap`` per feature
    whose name starts with one of ``prefixes`` (every feature when empty), among the ``pool``
    best-scored. If fewer than k fit, the best of the rest fill the list."""

    cap: int = 2
    prefixes: tuple[str, ...] = ()
    pool: int = 100

    def __post_init__(self) -> None:
        if isinstance(self.cap, bool) or not isinstance(self.cap, int) or self.cap < 1:
            raise ValidationError(f"FeatureCap cap must be a positive int, got {self.cap!r}")
        if isinstance(self.prefixes, str):
            raise ValidationError("FeatureCap prefixes must be a tuple of str, not a str")
        object.__setattr__(self, "prefixes", tuple(check_name(p, "FeatureCap prefix") for p in self.prefixes))
        _check_pool(self.pool)


Diversity = MMR | FeatureCap
"""A diversity step for :func:`penchant.rank_items`: :class:`MMR` or :class:`FeatureCap`."""


def _check_pool(pool: object) -> None:
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValidationError(f"the diversity pool must be a positive int, got {pool!r}")


class Candidates:
    """What a custom scorer sees: the candidates of one request, in the caller's order. Columns
    are gathered on first use."""

    def __init__(
        self,
        table: _core.Table,
        rows: npt.NDArray[np.uint32] | None,
        base_scores: npt.NDArray[np.float64],
        items: Sequence[Any] | None,
    ) -> None:
        self._table = table
        # The rows as an array, for scorers that gather with NumPy (co-visitation); as a list
        # only when a column is read, since converting 1,000 rows costs more than the gather.
        self._row_array: npt.NDArray[np.intp] = (
            np.arange(len(table), dtype=np.intp) if rows is None else rows.astype(np.intp)
        )
        self.base_scores = base_scores
        self.items = items
        """The caller's items (``rank_items`` over objects), or ``None`` for a catalog."""

    @functools.cached_property
    def _rows(self) -> list[int]:
        rows: list[int] = self._row_array.tolist()
        return rows

    def __len__(self) -> int:
        return len(self._row_array)

    @property
    def ids(self) -> list[str | int]:
        return self._table.ids(self._rows)

    @property
    def embeddings(self) -> npt.NDArray[np.float32] | None:
        """(n, d) float32, a zero row where an item has none; ``None`` if no item has one."""
        return self._table.column("embeddings", self._rows)

    @property
    def timestamps(self) -> npt.NDArray[np.float64] | None:
        return self._table.column("timestamps", self._rows)

    @property
    def popularity(self) -> npt.NDArray[np.float64] | None:
        return self._table.column("popularity", self._rows)

    def attribute(self, name: str) -> npt.NDArray[np.float64] | None:
        """A numeric attribute (NaN where missing), if the items were read with it."""
        return self._table.column(name, self._rows)


Scorer = Callable[[Candidates], "npt.ArrayLike"]
"""A custom factor: takes the candidates, returns one raw value per candidate."""


def profile_interests(profile: ProfileLike, now: float) -> tuple[Mapping[str, float], npt.NDArray[np.float32] | None]:
    """A profile's interests (name → current weight) and taste vector. A mapping is passed on
    as it is: the Rust side checks its names and weights where it reads them."""
    from penchant.user_profile import UserProfile

    if isinstance(profile, UserProfile):
        taste = None if profile.taste_vector is None else np.asarray(profile.taste_vector, dtype=np.float32)
        return profile.interest_weights(now), taste
    if isinstance(profile, Mapping):
        return profile, None
    raise ValidationError(f"profile must be a UserProfile or a mapping feature -> weight, got {type(profile).__name__}")


def interest_arrays(interests: Mapping[str, float]) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Names and weights of ``interests`` as a list and an array, checked."""
    names = list(interests)
    bad = next((name for name in names if type(name) is not str), None)
    if bad is not None:
        raise ValidationError(f"interest names must be str, got {bad!r}")
    try:
        weights = np.fromiter(interests.values(), dtype=np.float64, count=len(names))
    except (TypeError, ValueError):
        weights = np.array([check_finite(interests[n], f"interest weight of {n!r}") for n in names])
    if not np.isfinite(weights).all():
        name = names[int(np.flatnonzero(~np.isfinite(weights))[0])]
        raise ValidationError(f"interest weight of {name!r} must be a finite number, got {interests[name]}")
    return names, weights


def merge_filters(filters: Filters, other: Filters) -> Filters | None:
    """Rules that an item passes when it passes both ``filters`` and ``other``, or ``None`` when
    an attribute's two ranges do not overlap (no item passes)."""
    if not other:
        return filters
    if not filters:
        return other
    ranges = dict(filters.attribute_ranges)
    for name, (low, high) in other.attribute_ranges.items():
        if name in ranges:
            other_low, other_high = ranges[name]
            low = other_low if low is None else low if other_low is None else max(low, other_low)
            high = other_high if high is None else high if other_high is None else min(high, other_high)
            if low is not None and high is not None and low > high:
                return None
        ranges[name] = (low, high)
    if filters.any_features and other.any_features:
        # "At least one of A" and "at least one of B" is not one list; keep the caller's, since
        # profiles state no such rule.
        any_features = filters.any_features
    else:
        any_features = filters.any_features or other.any_features
    return replace(
        filters,
        blocked_features=filters.blocked_features | other.blocked_features,
        required_features=filters.required_features | other.required_features,
        any_features=any_features,
        excluded_ids=filters.excluded_ids | other.excluded_ids,
        attribute_ranges=ranges,
    )


def profile_filters(profile: ProfileLike, filters: Filters) -> Filters | None:
    """The caller's ``filters`` plus the hard rules the user stated (``never`` a feature, ``min``
    / ``max`` of an attribute), or ``None`` when together they let no item through."""
    from penchant.user_profile import UserProfile

    if not isinstance(profile, UserProfile) or not profile.explicit_preferences:
        return filters
    return merge_filters(filters, profile.hard_filters())


@dataclass(frozen=True)
class _Options:
    weights: tuple[float, ...]
    normalization: tuple[str, ...]
    extra: tuple[tuple[str, Scorer, float, str], ...]
    recency_half_life: float


def _options(
    weights: Mapping[str, float] | None,
    normalization: str | Mapping[str, str],
    recency_half_life: float,
    scorers: Mapping[str, Scorer] | None,
) -> _Options:
    """Checked options. The common case (no custom scorers, one normalization) is cached, so a
    hot loop that passes the same options pays for the checks once."""
    if not scorers and isinstance(normalization, str):
        try:
            key = (tuple(sorted(weights.items())) if weights else (), normalization, recency_half_life)
            return _cached_options(key)
        except TypeError:  # unhashable or unsortable: let the full checks explain
            pass
    return _build_options(weights, normalization, recency_half_life, scorers)


@functools.lru_cache(maxsize=256)
def _cached_options(key: tuple[tuple[tuple[str, float], ...], str, float]) -> _Options:
    weights, normalization, half_life = key
    return _build_options(dict(weights), normalization, half_life, None)


def _build_options(
    weights: Mapping[str, float] | None,
    normalization: str | Mapping[str, str],
    recency_half_life: float,
    scorers: Mapping[str, Scorer] | None,
) -> _Options:
    scorers = dict(scorers or {})
    for name, scorer in scorers.items():
        check_name(name, "scorer name")
        if name in FACTORS:
            raise ValidationError(f"scorer name {name!r} is taken by a built-in factor")
        if not callable(scorer):
            raise ValidationError(f"scorer {name!r} is not callable")
    known = set(FACTORS) | set(scorers)
    weights = dict(weights or {})
    unknown = set(weights) - known
    if unknown:
        raise ValidationError(f"weights: unknown factor(s) {sorted(unknown)}; known: {sorted(known)}")
    merged = {name: check_finite(w, f"weight of {name!r}") for name, w in {**DEFAULT_WEIGHTS, **weights}.items()}
    if isinstance(normalization, str):
        norms = dict.fromkeys(known, normalization)
    elif isinstance(normalization, Mapping):
        unknown = set(normalization) - known
        if unknown:
            raise ValidationError(f"normalization: unknown factor(s) {sorted(unknown)}")
        norms = {name: normalization.get(name, "minmax") for name in known}
    else:
        raise ValidationError("normalization must be a str or a mapping factor -> str")
    for name, norm in norms.items():
        if norm not in NORMALIZATIONS:
            raise ValidationError(f"normalization of {name!r}: {norm!r} is not one of {NORMALIZATIONS}")
    half_life = check_finite(recency_half_life, "recency_half_life")
    if half_life <= 0:
        raise ValidationError(f"recency_half_life must be positive, got {half_life}")
    return _Options(
        weights=tuple(merged[f] for f in FACTORS),
        normalization=tuple(norms[f] for f in FACTORS),
        extra=tuple((name, s, merged.get(name, 1.0), norms[name]) for name, s in scorers.items()),
        recency_half_life=half_life,
    )


_FilterSpec = tuple[list[int], list[int], list[int], list[int], list[tuple[str, float, float]]]
_NO_FILTER_SPEC: _FilterSpec = ([], [], [], [], [])


def _filter_spec(table: _core.Table, filters: Filters) -> _FilterSpec | None:
    """``filters`` resolved against ``table`` (feature ids, rows), or ``None`` when they leave
    nothing: a required feature that no item has, or an "any" list of which none has any."""

    def ids(names: frozenset[str]) -> list[int]:
        return [fid for fid in table.feature_ids(sorted(names)) if fid is not None] if names else []

    blocked, required, any_of = ids(filters.blocked_features), ids(filters.required_features), ids(filters.any_features)
    if len(required) < len(filters.required_features) or (filters.any_features and not any_of):
        return None
    excluded = table.rows_of(list(filters.excluded_ids), missing_ok=True).tolist() if filters.excluded_ids else []
    ranges = [
        (name, -math.inf if low is None else low, math.inf if high is None else high)
        for name, (low, high) in filters.attribute_ranges.items()
    ]
    return blocked, required, any_of, excluded, ranges


def _diversity_args(
    table: _core.Table, diversity: Diversity | None, cache: dict[Any, Any] | None
) -> tuple[float | None, tuple[int, list[int]] | None, int]:
    """The (mmr_lambda, feature_cap, pool) arguments of ``Table.rank``."""
    if diversity is None:
        return None, None, 0
    if isinstance(diversity, MMR):
        return diversity.lambda_, None, diversity.pool
    if isinstance(diversity, FeatureCap):
        key = ("capped", diversity.prefixes)
        capped = None if cache is None else cache.get(key)
        if capped is None:
            capped = table.feature_ids_with_prefix(list(diversity.prefixes or ("",)))
            if cache is not None:
                cache[key] = capped
        return None, (diversity.cap, capped), diversity.pool
    raise ValidationError(f"diversity must be an MMR or a FeatureCap, got {type(diversity).__name__}")


def _check_k(k: int | None) -> int | None:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValidationError(f"k must be a positive int or None, got {type(k).__name__}")
    if k <= 0:
        raise ValidationError(f"k must be at least 1, got {k}")
    return int(k)


def rank_table(
    table: _core.Table,
    rows: npt.NDArray[np.uint32] | None,
    base_scores: npt.NDArray[np.float64],
    interests: tuple[npt.NDArray[np.uint32], npt.NDArray[np.float64]],
    taste: npt.NDArray[np.float32] | None,
    *,
    items: Sequence[Any] | None,
    k: int | None,
    weights: Mapping[str, float] | None,
    filters: Filters,
    now: float,
    explain: bool,
    normalization: str | Mapping[str, str],
    recency_half_life: float,
    scorers: Mapping[str, Scorer] | None,
    diversity: Diversity | None = None,
    filter_cache: dict[Any, Any] | None = None,
) -> list[RankedItem]:
    """Ranks ``rows`` of ``table`` (all rows when ``None``); the shared body of every entry point.
    ``filter_cache`` (kept by a long-lived table's owner) remembers how each ``Filters`` object
    resolved against the table, so reusing one costs nothing."""
    options = _options(weights, normalization, recency_half_life, scorers)
    k = _check_k(k)
    n = len(table) if rows is None else len(rows)
    if n == 0:
        return []
    if not filters:
        spec: _FilterSpec | None = _NO_FILTER_SPEC
    elif filter_cache is not None:
        cached = filter_cache.get(id(filters))
        if cached is None or cached[0] is not filters:
            if len(filter_cache) >= 64:
                filter_cache.clear()
            cached = filter_cache[id(filters)] = (filters, _filter_spec(table, filters))
        spec = cached[1]
    else:
        spec = _filter_spec(table, filters)
    if spec is None:
        return []
    extra = []
    if options.extra:
        candidates = Candidates(table, rows, base_scores, items)
        for name, scorer, weight, norm in options.extra:
            values = np.asarray(scorer(candidates), dtype=np.float64)
            if values.shape != (n,):
                raise ValidationError(f"scorer {name!r} returned shape {values.shape}; expected ({n},)")
            if not np.isfinite(values).all():
                raise ValidationError(f"scorer {name!r} returned NaN or infinite values")
            extra.append((values, weight, norm))
    ranked, _ = rank_prepared(
        table,
        rows,
        base_scores,
        interests,
        taste,
        weights=options.weights,
        normalization=options.normalization,
        now=now,
        recency_half_life=options.recency_half_life,
        extra_names=tuple(name for name, *_ in options.extra),
        extra=extra,
        spec=spec,
        k=n if k is None else min(k, n),
        diversity=_diversity_args(table, diversity, filter_cache),
        items=items,
        explain=explain,
    )
    return ranked


def rank_prepared(
    table: _core.Table,
    rows: npt.NDArray[np.uint32] | None,
    base_scores: npt.NDArray[np.float64],
    interests: tuple[npt.NDArray[np.uint32], npt.NDArray[np.float64]],
    taste: npt.NDArray[np.float32] | None,
    *,
    weights: tuple[float, ...],
    normalization: tuple[str, ...],
    now: float,
    recency_half_life: float,
    extra_names: tuple[str, ...],
    extra: Sequence[tuple[npt.NDArray[np.float64], float, str]],
    spec: _FilterSpec,
    k: int,
    diversity: tuple[float | None, tuple[int, list[int]] | None, int],
    items: Sequence[Any] | None,
    explain: bool,
    novelty: tuple[npt.NDArray[np.uint32], npt.NDArray[np.float64], float, float] | None = None,
) -> tuple[list[RankedItem], list[int]]:
    """The kernel call and its results, for options already checked (one weight and one
    normalization per built-in factor, extra factors as values): the ranked items and the table
    rows they came from. ``novelty`` (seen rows ascending, their times, half-life, weight) adds
    the novelty factor after the extras; ``extra_names`` then ends with its name. Shared by
    :func:`rank_table` and the retriever's ranking engine."""
    positions, scores, contributions, _passed = table.rank(
        rows,
        base_scores,
        interests[0],
        interests[1],
        taste,
        weights,
        normalization,
        now,
        recency_half_life,
        extra,
        spec,
        k,
        *diversity,
        novelty,
    )
    chosen = positions.tolist()
    chosen_rows = chosen if rows is None else rows[positions].tolist()
    ids = table.ids(chosen_rows)
    if not explain and items is None:  # the hot path: no per-item lists to build
        return list(map(RankedItem, ids, scores.tolist())), chosen_rows
    explained: list[Mapping[str, float] | None]
    if explain:
        names = FACTORS + extra_names
        explained = [dict(zip(names, column, strict=True)) for column in contributions.T.tolist()]
    else:
        explained = [None] * len(chosen)
    originals = [items[p] for p in chosen] if items is not None else [None] * len(chosen)
    return list(map(RankedItem, ids, scores.tolist(), explained, originals)), chosen_rows
