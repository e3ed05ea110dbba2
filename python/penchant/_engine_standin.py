"""TEMPORARY: a minimal stand-in for ``penchant.Engine`` (issue 5, being built on the
``retrieval`` branch), so that the ``penchant`` command can be written and tested against the
Engine's fixed API before it lands. It wires what exists (tiered store, FeedbackCollector,
ProfileManager, Catalog.rank) and nothing more. Delete this file when ``penchant.Engine`` is
in main."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import numpy.typing as npt

from penchant.feedback_collector import Feedback, FeedbackCollector, FeedbackType
from penchant.items import Catalog, ItemBatch
from penchant.personalized_retrieval import rank_items
from penchant.profile_store import ProfileStore, open_store
from penchant.scoring import Filters, RankedItem
from penchant.user_profile import ProfileManager

__all__ = ["Engine"]


class Engine:
    def __init__(
        self,
        *,
        redis_url: str | None = None,
        database_url: str | None = None,
        store: ProfileStore | None = None,
        tenant: str = "default",
        config: Any = None,
    ) -> None:
        self.store = store if store is not None else open_store(redis_url, database_url, tenant)
        self.feedback = FeedbackCollector(self.store)
        self.profiles = ProfileManager(self.store)

    def record(
        self, user_id: str, item: Any, feedback_type: FeedbackType | str, value: float | None = None, **options: Any
    ) -> Feedback:
        return self.feedback.record(user_id, item, feedback_type, value, **options)

    def record_many(self, events: Iterable[Feedback | Mapping[str, Any]]) -> list[str]:
        return self.feedback.record_many(events)

    def rank(
        self,
        user_id: str,
        items: Sequence[Any] | ItemBatch | Catalog,
        *,
        query: str | None = None,
        k: int = 10,
        explain: bool = False,
        filters: Filters | Mapping[str, Any] | None = None,
        candidate_ids: Sequence[str | int] | npt.NDArray[Any] | None = None,
        base_scores: npt.ArrayLike | None = None,
    ) -> list[RankedItem]:
        profile = self.store.get_shared(user_id)
        interests: Any = profile if profile is not None else {}
        if isinstance(items, Catalog):
            return items.rank(interests, candidate_ids, base_scores, k=k, explain=explain, filters=filters)
        return rank_items(interests, items, k=k, explain=explain, filters=filters)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
