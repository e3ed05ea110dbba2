"""Personalized retrieval (seed module 3): user-aware ranking and filtering of candidates.

This release has the top-level :func:`rank_items`; the retriever, ranking engine, query
expander and content filter build on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from penchant import _core
from penchant._time import TimeLike, to_epoch
from penchant.items import Catalog, ItemBatch
from penchant.scoring import (
    DEFAULT_RECENCY_HALF_LIFE,
    Diversity,
    FeatureCap,
    Filters,
    ProfileLike,
    RankedItem,
    Scorer,
    interest_arrays,
    profile_filters,
    profile_interests,
    rank_table,
)

__all__ = ["rank_items"]


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
