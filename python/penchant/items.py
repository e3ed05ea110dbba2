"""Items through generic interfaces: dicts or objects (read by Rust field by field), a columnar
:class:`ItemBatch` built from NumPy arrays, and a :class:`Catalog` registered once in Rust so
that repeated rankings pass only candidate ids and base scores."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from penchant import _core
from penchant._time import TimeLike, to_epoch
from penchant.errors import ValidationError
from penchant.scoring import (
    DEFAULT_RECENCY_HALF_LIFE,
    Diversity,
    Filters,
    ProfileLike,
    RankedItem,
    Scorer,
    merge_filters,
    profile_filters,
    profile_interests,
    rank_table,
)

__all__ = ["Catalog", "CompiledProfile", "ItemBatch", "numeric_attribute_names"]


@dataclass(frozen=True, eq=False)
class CompiledProfile:
    """A profile compiled for one :class:`Catalog` (see :meth:`Catalog.compile`): its interests
    as feature ids and weights, and its taste vector."""

    catalog: Catalog
    interest_ids: npt.NDArray[np.uint32]
    interest_weights: npt.NDArray[np.float64]
    taste: npt.NDArray[np.float32] | None
    hard_filters: Filters = field(default_factory=Filters)
    """The rules the user stated, which every ranking applies (``never``, ``min``, ``max``)."""


def _float_column(values: Any, n: int, what: str, dtype: type = np.float64) -> npt.NDArray[Any] | None:
    if values is None:
        return None
    try:
        array: npt.NDArray[Any] = np.ascontiguousarray(values, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"{what}: cannot be read as numbers ({e})") from None
    if array.ndim != 1 or len(array) != n:
        raise ValidationError(f"{what}: expected shape ({n},), got {array.shape}")
    return array


def numeric_attribute_names(items: Iterable[Any]) -> list[str]:
    """The attribute names that have a number in at least one item (sorted)."""
    names: set[str] = set()
    for item in items:
        attributes = item.get("attributes") if isinstance(item, Mapping) else getattr(item, "attributes", None)
        if isinstance(attributes, Mapping):
            names.update(k for k, v in attributes.items() if isinstance(v, numbers.Real) and not isinstance(v, bool))
    return sorted(names)


class ItemBatch:
    """Items as columns of NumPy arrays.

    ``ids``: a sequence of str or int. ``scores``: the caller's base relevance (default 0).
    ``features``: a list with, per item, a list of names or a mapping name → weight.
    ``embeddings``: (n, d) floats. ``timestamps``: epoch seconds (NaN where unknown).
    ``popularity``: floats. ``attributes``: name → (n,) floats (NaN where missing).
    Arrays of the wrong dtype or layout are copied, never rejected for that alone.
    """

    def __init__(
        self,
        ids: Sequence[str | int] | npt.ArrayLike,
        *,
        scores: npt.ArrayLike | None = None,
        features: Sequence[Sequence[str] | Mapping[str, float]] | None = None,
        embeddings: npt.ArrayLike | None = None,
        timestamps: npt.ArrayLike | None = None,
        popularity: npt.ArrayLike | None = None,
        attributes: Mapping[str, npt.ArrayLike] | None = None,
    ) -> None:
        id_list: list[Any] = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)  # type: ignore[arg-type]
        n = len(id_list)
        score_column = _float_column(scores, n, "scores")
        self.scores: npt.NDArray[np.float64] = np.zeros(n) if score_column is None else score_column
        if not np.isfinite(self.scores).all():
            raise ValidationError("scores: NaN or infinite values")
        vocabulary: dict[str, int] = {}
        indptr = [0]
        feature_ids: list[int] = []
        feature_weights: list[float] = []
        if features is not None:
            if len(features) != n:
                raise ValidationError(f"features: expected {n} entries, got {len(features)}")
            for row, entry in enumerate(features):
                if isinstance(entry, str):
                    raise ValidationError(f"features[{row}]: expected a list of names or a mapping, got a str")
                pairs = entry.items() if isinstance(entry, Mapping) else ((name, 1.0) for name in entry)
                for name, weight in pairs:
                    if not isinstance(name, str) or not name:
                        raise ValidationError(f"features[{row}]: feature names must be non-empty str")
                    feature_ids.append(vocabulary.setdefault(name, len(vocabulary)))
                    feature_weights.append(weight)
                indptr.append(len(feature_ids))
        else:
            indptr = [0] * (n + 1)
        emb = None
        if embeddings is not None:
            try:
                emb = np.ascontiguousarray(embeddings, dtype=np.float32)
            except (TypeError, ValueError) as e:
                raise ValidationError(f"embeddings: cannot be read as floats ({e})") from None
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValidationError(f"embeddings: expected shape ({n}, d), got {emb.shape}")
        attribute_columns: dict[str, npt.NDArray[np.float64]] = {}
        for name, values in (attributes or {}).items():
            column = _float_column(values, n, f"attributes[{name!r}]")
            assert column is not None
            attribute_columns[name] = column
        weights = _float_column(feature_weights, len(feature_weights), "feature weights", np.float32)
        self._table = _core.Table.from_columns(
            id_list,
            np.asarray(indptr, dtype=np.int64),
            np.asarray(feature_ids, dtype=np.uint32),
            weights if weights is not None else np.zeros(0, np.float32),
            list(vocabulary),
            emb,
            _float_column(timestamps, n, "timestamps"),
            _float_column(popularity, n, "popularity"),
            list(attribute_columns),
            list(attribute_columns.values()),
        )

    def __len__(self) -> int:
        return len(self._table)


class Catalog:
    """Items registered once in Rust: ids → rows, features interned to integer ids (CSR),
    embeddings float32 (N, D), timestamps, popularity and numeric attributes. Rank against it
    with only candidate ids and base scores. Immutable, so any number of threads can rank at once.

    ``items`` are dicts or objects as :func:`penchant.rank_items` accepts, or an :class:`ItemBatch`.
    ``attributes`` names the numeric attributes to keep for filtering; by default every attribute
    that holds a number in some item.
    """

    def __init__(self, items: Iterable[Any] | ItemBatch, *, attributes: Sequence[str] | None = None) -> None:
        self._filter_cache: dict[int, Any] = {}
        if isinstance(items, ItemBatch):
            self._table = items._table
            return
        items = list(items)
        names = numeric_attribute_names(items) if attributes is None else list(attributes)
        self._table, _ = _core.Table.from_items(items, names)

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, item_id: object) -> bool:
        try:
            return len(self._table.rows_of([item_id], missing_ok=True)) == 1
        except ValidationError:
            return False

    @property
    def dim(self) -> int | None:
        """The embedding dimension, or ``None`` without embeddings."""
        return self._table.dim

    @property
    def feature_names(self) -> list[str]:
        return self._table.feature_names

    @property
    def attribute_names(self) -> list[str]:
        return self._table.attribute_names

    def compile(self, profile: ProfileLike, *, now: TimeLike | None = None) -> CompiledProfile:
        """``profile`` resolved against this catalog's features at ``now``: what ranking needs,
        ready to reuse. A :class:`~penchant.UserProfile`'s interests decay, so a compiled
        profile is a snapshot; recompile when the profile changes or time has moved on."""
        interests, taste = profile_interests(profile, to_epoch(now, "now"))
        ids, weights = self._table.interest_ids(interests if type(interests) is dict else dict(interests))
        if taste is not None and self.dim is not None and len(taste) != self.dim:
            raise ValidationError(
                f"the profile's taste vector has {len(taste)} dimensions but the catalog's embeddings have {self.dim}"
            )
        own = profile_filters(profile, Filters())
        assert own is not None  # a profile's own rules are consistent (checked when set)
        return CompiledProfile(self, ids, weights, taste, own)

    def rank(
        self,
        profile: ProfileLike | CompiledProfile,
        candidate_ids: Sequence[str | int] | npt.NDArray[np.integer[Any]] | None = None,
        base_scores: npt.ArrayLike | None = None,
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
        """Ranks ``candidate_ids`` (every item when ``None``) for ``profile``; see
        :func:`penchant.rank_items` for the options. Integer ids passed as a NumPy array take a
        fast path with no Python object per id. Unknown or repeated candidate ids are a
        :class:`~penchant.ValidationError`."""
        moment = to_epoch(now, "now")
        compiled = profile if isinstance(profile, CompiledProfile) else self.compile(profile, now=moment)
        if compiled.catalog is not self:
            raise ValidationError("this CompiledProfile was compiled for another catalog")
        # A user's stated hard rules ("never horror", "max price 20") always apply.
        rules = merge_filters(Filters.coerce(filters), compiled.hard_filters)
        if rules is None:
            return []
        if isinstance(candidate_ids, np.ndarray) and candidate_ids.dtype.kind in "iu":
            if candidate_ids.dtype.kind == "u" and candidate_ids.size and candidate_ids.max() > np.iinfo(np.int64).max:
                raise ValidationError("candidate ids do not fit in 64-bit signed integers")
            candidate_ids = np.ascontiguousarray(candidate_ids, dtype=np.int64)
        rows = None if candidate_ids is None else self._table.rows_of(candidate_ids)
        n = len(self._table) if rows is None else len(rows)
        base = _float_column(base_scores, n, "base_scores")
        if base is None:
            base = np.zeros(n)
        return rank_table(
            self._table,
            rows,
            base,
            (compiled.interest_ids, compiled.interest_weights),
            compiled.taste,
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
            filter_cache=self._filter_cache,
        )
