"""The one object an application holds: :class:`Engine` wires a profile store, the profile
manager, the feedback collector, the query expander and the personalized retriever.

    with penchant.Engine() as engine:                     # the embedded default
        engine.record("u1", item, "click", context={"query": "space opera"})
        results = engine.rank("u1", catalog, candidate_ids=ids, base_scores=scores, query="space")

Every method has an async twin with an ``a`` prefix; both run the same operation (a generator of
store effects, :mod:`penchant._io`), so the logic exists once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from penchant._io import Op, run_async, run_sync
from penchant._time import TimeLike
from penchant._validate import check_id
from penchant.covisitation import DEFAULT_COVISITATION_WEIGHTS, CoVisitation
from penchant.errors import PenchantError, ValidationError
from penchant.feedback_collector import Feedback, FeedbackCollector, FeedbackProcessor, FeedbackType, Signal
from penchant.items import Catalog, ItemBatch
from penchant.personalized_retrieval import (
    COVISITATION_FACTORS,
    DEFAULT_MAX_AGE,
    ContentFilter,
    Exclusion,
    PersonalizedRetriever,
    RankingConfig,
    RankingEngine,
    RetrievalRequest,
    _check_covisitation_weights,
)
from penchant.profile_store import ProfileStore, SQLProfileStore, TieredProfileStore, open_store
from penchant.query_expansion import ExpandedQuery, QueryExpander, QueryExpansionConfig
from penchant.scoring import Filters, RankedItem
from penchant.user_profile import InterestModel, ProfileManager

__all__ = ["CoVisitationConfig", "Engine", "EngineConfig", "FeedbackConfig"]


@dataclass(frozen=True)
class FeedbackConfig:
    """Options of the engine's :class:`~penchant.FeedbackProcessor`; ``None`` keeps the
    processor's own default (see :mod:`penchant.feedback_collector` for the table)."""

    weights: Mapping[FeedbackType | str, float] | None = None
    half_lives: Mapping[FeedbackType | str, float] | None = None
    rating_scale: tuple[float, float] | None = None
    expected_dwell: float | None = None
    bounce_dwell: float | None = None
    max_count: float | None = None
    max_clock_skew: float | None = None

    def processor(self, model: InterestModel) -> FeedbackProcessor:
        options = {name: getattr(self, name) for name in self.__dataclass_fields__ if getattr(self, name) is not None}
        return FeedbackProcessor(model=model, **options)


@dataclass(frozen=True)
class CoVisitationConfig:
    """The engine's item-to-item co-visitation (:class:`~penchant.CoVisitation`), the model
    that EVALUATION.md measured. With it, :meth:`Engine.record` and its kin teach one model per
    engine (so per tenant) from every engaged event, and :meth:`Engine.rank` adds its two
    factors, ``covisitation`` and ``learned_popularity``.

    - ``weights``: their fully personalized weights (missing ones from
      :data:`~penchant.DEFAULT_COVISITATION_WEIGHTS`: 1 and 0.02), scaled by ``λ`` as every
      personalized factor is, so a user without a profile still gets the caller's order.
    - ``options``: the :class:`~penchant.CoVisitation` constructor's options (``window``,
      ``max_neighbours``, ``alpha``, ...; defaults as measured).
    - ``path``: a file for the model. When it exists, the model is loaded from it at open (its
      options must match ``options``); it is written at close and by
      :meth:`Engine.save_covisitation`. Events learned since the last write are lost if the
      process dies. ``None`` (the default): no file.
    - ``rebuild``: when no file was loaded, rebuild the model at open from the store's durable
      event log (the SQL tier's; a store without one starts empty). This reads every logged
      event of the tenant once, so it costs time at open in proportion to the log.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_COVISITATION_WEIGHTS))
    options: Mapping[str, Any] = field(default_factory=dict)
    path: str | os.PathLike[str] | None = None
    rebuild: bool = True

    def __post_init__(self) -> None:
        weights = _check_covisitation_weights(self.weights)
        named = dict(zip(COVISITATION_FACTORS, weights, strict=True))
        object.__setattr__(self, "weights", MappingProxyType(named))
        if not isinstance(self.options, Mapping):
            raise ValidationError(f"CoVisitationConfig.options must be a mapping, got {type(self.options).__name__}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        self.new_model()  # checks the options
        if self.path is not None and not isinstance(self.path, str | os.PathLike):
            raise ValidationError(f"CoVisitationConfig.path must be a path, got {type(self.path).__name__}")
        if not isinstance(self.rebuild, bool):
            raise ValidationError("CoVisitationConfig.rebuild must be a bool")

    def new_model(self) -> CoVisitation:
        """An empty model with these options."""
        try:
            return CoVisitation(**self.options)
        except TypeError as e:
            raise ValidationError(f"CoVisitationConfig.options: {e}") from None


@dataclass(frozen=True)
class EngineConfig:
    """Everything an :class:`Engine` can be tuned with; the defaults suit a start.

    - ``ranking``: factor weights, personalization strength, confidence and cold start,
      novelty, diversity (:class:`~penchant.RankingConfig`).
    - ``content_filter``: rules for every request, required attributes, hiding recently seen
      items (:class:`~penchant.ContentFilter`).
    - ``query_expansion``: :class:`~penchant.QueryExpansionConfig`.
    - ``feedback``: per-type weights and half-lives, rating scale, dwell (:class:`FeedbackConfig`).
    - ``max_history``, ``refresh_every``: the :class:`~penchant.InterestModel` (history entries
      kept per user; implicit preferences re-extracted every so many events).
    - ``cache_size``, ``cache_ttl``: the store's in-process tier (profiles kept; seconds a copy
      is kept from when it was cached). Unused when the engine is given a ready ``store``.
    - ``compiled_cache_size``, ``compiled_max_age``: the retriever's compiled profiles (kept;
      seconds before one is recompiled although unchanged).
    - ``query_associations_path``: a JSON file of learned query associations, loaded when the
      engine opens (if it exists) and written when it closes; ``None`` keeps them in memory.
    - ``covisitation``: a :class:`CoVisitationConfig` turns on item-to-item co-visitation
      (learned from feedback, a ranking factor); ``None`` (the default) leaves it off.
    """

    ranking: RankingConfig = field(default_factory=RankingConfig)
    content_filter: ContentFilter = field(default_factory=ContentFilter)
    query_expansion: QueryExpansionConfig = field(default_factory=QueryExpansionConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    max_history: int = 500
    refresh_every: int = 50
    cache_size: int = 10_000
    cache_ttl: float | None = 60.0
    compiled_cache_size: int = 10_000
    compiled_max_age: float = DEFAULT_MAX_AGE
    query_associations_path: str | os.PathLike[str] | None = None
    covisitation: CoVisitationConfig | None = None

    def __post_init__(self) -> None:
        if self.covisitation is not None and not isinstance(self.covisitation, CoVisitationConfig):
            raise ValidationError("EngineConfig.covisitation must be a CoVisitationConfig or None")
        for name, kind in (
            ("ranking", RankingConfig),
            ("content_filter", ContentFilter),
            ("query_expansion", QueryExpansionConfig),
            ("feedback", FeedbackConfig),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ValidationError(f"EngineConfig.{name} must be a {kind.__name__}")


class Engine:
    """Personalization for one tenant: profiles, feedback, retrieval, query expansion.

    With no arguments it runs embedded: an in-process cache over a SQLite file at
    :func:`~penchant.profile_store.default_database_url` (``$PENCHANT_DATABASE_URL``, else
    ``penchant.db`` in the user's data directory, ``$XDG_DATA_HOME/penchant`` or
    ``~/.local/share/penchant``). ``database_url`` picks the durable tier
    (``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:`` for a
    throwaway one, ``postgresql://...``); ``redis_url`` adds Redis (``redis://``, ``rediss://``,
    ``redis+cluster://``); ``store`` takes a ready :class:`~penchant.ProfileStore` instead of
    URLs (the engine then neither configures nor closes it). ``tenant`` names the tenant; with
    ``store`` it must be left at ``"default"`` or equal the store's.

    Attributes: ``store``, ``profiles`` (:class:`~penchant.ProfileManager`), ``feedback``
    (:class:`~penchant.FeedbackCollector`), ``retriever``
    (:class:`~penchant.PersonalizedRetriever`), ``expander``
    (:class:`~penchant.QueryExpander`), ``covisitation`` (the tenant's
    :class:`~penchant.CoVisitation` when ``config.covisitation`` is set, else ``None``),
    ``config``.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        database_url: str | None = None,
        store: ProfileStore | None = None,
        tenant: str = "default",
        config: EngineConfig | None = None,
    ) -> None:
        if config is not None and not isinstance(config, EngineConfig):
            raise ValidationError(f"config must be an EngineConfig, got {type(config).__name__}")
        self.config = config = config or EngineConfig()
        check_id(tenant, "tenant")
        # Everything that can fail on bad input happens before a store is opened.
        self.expander = QueryExpander(config.query_expansion)
        path = config.query_associations_path
        if path is not None and os.path.exists(path):
            self.expander.load(path)
        self.covisitation: CoVisitation | None = None
        covisitation_file = False
        if config.covisitation is not None:
            self.covisitation, covisitation_file = _load_covisitation(config.covisitation)
        if store is not None:
            if not isinstance(store, ProfileStore):
                raise ValidationError(f"store must be a ProfileStore, got {type(store).__name__}")
            if redis_url is not None or database_url is not None:
                raise ValidationError("give either a store or URLs, not both")
            if tenant not in ("default", store.tenant):
                raise ValidationError(f"the store serves tenant {store.tenant!r}, not {tenant!r}")
            self._owns_store = False
        else:
            model = InterestModel(max_history=config.max_history, refresh_every=config.refresh_every)
            store = open_store(
                redis_url,
                database_url,
                tenant,
                cache_size=config.cache_size,
                cache_ttl=config.cache_ttl,
                model=model,
            )
            self._owns_store = True
        self.store = store
        self.tenant = store.tenant
        self.profiles = ProfileManager(store)
        try:
            rebuild = config.covisitation is not None and config.covisitation.rebuild and not covisitation_file
            if self.covisitation is not None and rebuild:
                self.covisitation.learn(_logged_events(store))
            self.feedback = FeedbackCollector(
                store, config.feedback.processor(store.model), covisitation=self.covisitation
            )
        except BaseException:
            if self._owns_store:
                store.close()
            raise
        self.retriever = PersonalizedRetriever(
            store,
            ranking=RankingEngine(config.ranking),
            content_filter=config.content_filter,
            expander=self.expander,
            cache_size=config.compiled_cache_size,
            max_age=config.compiled_max_age,
            covisitation=self.covisitation,
            covisitation_weights=None if config.covisitation is None else config.covisitation.weights,
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"Engine(tenant={self.tenant!r}, store={self.store!r})"

    def _check_open(self) -> None:
        if self._closed:
            raise PenchantError("this Engine is closed")

    # -- feedback ---------------------------------------------------------------------------

    def record(
        self,
        user_id: str,
        item: Any,
        feedback_type: FeedbackType | str,
        value: float | None = None,
        *,
        timestamp: TimeLike | None = None,
        event_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Feedback:
        """Records one event, as :meth:`FeedbackCollector.record` does, and returns it. With
        ``context={"query": "..."}`` the event also teaches the query expander which features
        the query's terms lead to."""
        return run_sync(self._record_op(user_id, item, feedback_type, value, timestamp, event_id, context))

    async def arecord(
        self,
        user_id: str,
        item: Any,
        feedback_type: FeedbackType | str,
        value: float | None = None,
        *,
        timestamp: TimeLike | None = None,
        event_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Feedback:
        """:meth:`record`, awaiting the store."""
        return await run_async(self._record_op(user_id, item, feedback_type, value, timestamp, event_id, context))

    def _query_of(self, context: Any) -> str | None:
        if not isinstance(context, Mapping) or "query" not in context:
            return None
        try:
            return self.expander.check_query(context["query"])
        except ValidationError as e:
            raise ValidationError(f"context: {e}") from None

    def _record_op(
        self,
        user_id: str,
        item: Any,
        feedback_type: FeedbackType | str,
        value: float | None,
        timestamp: TimeLike | None,
        event_id: str | None,
        context: Mapping[str, Any] | None,
    ) -> Op[Feedback]:
        self._check_open()
        query = self._query_of(context)
        feedback, signal = yield from self.feedback.record_op(
            user_id, item, feedback_type, value, timestamp=timestamp, event_id=event_id, context=context
        )
        if query is not None:
            self.expander.learn(query, signal.features, signal.weight)
        return feedback

    def record_many(self, events: Iterable[Feedback | Mapping[str, Any]]) -> list[str]:
        """Records many events (see :meth:`FeedbackCollector.record_many`): all validated before
        any is stored; returns their event ids in order."""
        return run_sync(self._record_many_op(events))

    async def arecord_many(self, events: Iterable[Feedback | Mapping[str, Any]]) -> list[str]:
        """:meth:`record_many`, awaiting the store."""
        return await run_async(self._record_many_op(events))

    def _record_many_op(self, events: Iterable[Feedback | Mapping[str, Any]]) -> Op[list[str]]:
        self._check_open()
        batch = events if isinstance(events, list) else list(events)
        for position, event in enumerate(batch):
            context = (
                event.context
                if isinstance(event, Feedback)
                else (event.get("context") if isinstance(event, Mapping) else None)
            )
            try:
                self._query_of(context)
            except ValidationError as e:
                raise ValidationError(f"event {position}: {e}") from None
        feedbacks, signals = yield from self.feedback.record_many_op(batch)
        self.expander.learn_signals(signals)
        return [f.event_id for f in feedbacks]

    # -- ranking ----------------------------------------------------------------------------

    def rank(
        self,
        user_id: str,
        items: Iterable[Any] | ItemBatch | Catalog,
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
        """The best ``k`` of ``items`` for ``user_id``, best first: see
        :meth:`PersonalizedRetriever.retrieve`. ``items`` is a list of dicts or objects, an
        :class:`~penchant.ItemBatch`, or a :class:`~penchant.Catalog` (then ``candidate_ids``
        and ``base_scores`` select and score its candidates)."""
        self._check_open()
        return self.retriever.retrieve(
            user_id,
            items,
            query=query,
            k=k,
            explain=explain,
            filters=filters,
            candidate_ids=candidate_ids,
            base_scores=base_scores,
            strength=strength,
            now=now,
        )

    async def arank(
        self,
        user_id: str,
        items: Iterable[Any] | ItemBatch | Catalog,
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
        """:meth:`rank`, awaiting the store."""
        self._check_open()
        return await self.retriever.aretrieve(
            user_id,
            items,
            query=query,
            k=k,
            explain=explain,
            filters=filters,
            candidate_ids=candidate_ids,
            base_scores=base_scores,
            strength=strength,
            now=now,
        )

    def rank_many(self, requests: Iterable[RetrievalRequest | Mapping[str, Any]]) -> list[list[RankedItem]]:
        """One :meth:`rank` per request, the profiles loaded in one batch: see
        :meth:`PersonalizedRetriever.retrieve_many`."""
        self._check_open()
        return self.retriever.retrieve_many(requests)

    async def arank_many(self, requests: Iterable[RetrievalRequest | Mapping[str, Any]]) -> list[list[RankedItem]]:
        """:meth:`rank_many`, awaiting the store."""
        self._check_open()
        return await self.retriever.aretrieve_many(requests)

    def exclusions(
        self,
        user_id: str,
        items: Iterable[Any] | ItemBatch | Catalog,
        *,
        filters: Filters | Mapping[str, Any] | None = None,
        candidate_ids: Sequence[str | int] | npt.NDArray[np.integer[Any]] | None = None,
        now: TimeLike | None = None,
    ) -> list[Exclusion]:
        """The candidates :meth:`rank` would drop, each with its rule and the rule's source."""
        self._check_open()
        return self.retriever.exclusions(user_id, items, filters=filters, candidate_ids=candidate_ids, now=now)

    async def aexclusions(
        self,
        user_id: str,
        items: Iterable[Any] | ItemBatch | Catalog,
        *,
        filters: Filters | Mapping[str, Any] | None = None,
        candidate_ids: Sequence[str | int] | npt.NDArray[np.integer[Any]] | None = None,
        now: TimeLike | None = None,
    ) -> list[Exclusion]:
        """:meth:`exclusions`, awaiting the store."""
        self._check_open()
        return await self.retriever.aexclusions(user_id, items, filters=filters, candidate_ids=candidate_ids, now=now)

    def expand_query(self, user_id: str, query: str, *, now: TimeLike | None = None) -> ExpandedQuery:
        """``query`` with weighted expansion terms for the user (:class:`~penchant.QueryExpander`)."""
        self._check_open()
        return self.retriever.expand_query(user_id, query, now=now)

    async def aexpand_query(self, user_id: str, query: str, *, now: TimeLike | None = None) -> ExpandedQuery:
        """:meth:`expand_query`, awaiting the store."""
        self._check_open()
        return await self.retriever.aexpand_query(user_id, query, now=now)

    # -- lifecycle --------------------------------------------------------------------------

    def save_covisitation(self) -> None:
        """Writes the co-visitation model to ``config.covisitation.path`` now (atomically: a
        reader sees the old file or the new one). Without a path or co-visitation, a
        ``ValidationError``."""
        self._check_open()
        self._save_covisitation(required=True)

    def _save_covisitation(self, *, required: bool = False) -> None:
        options = self.config.covisitation
        if self.covisitation is None or options is None or options.path is None:
            if required:
                raise ValidationError("no co-visitation path is configured (EngineConfig.covisitation.path)")
            return
        path = os.fspath(options.path)
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "wb") as f:
            f.write(self.covisitation.to_bytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)

    def close(self) -> None:
        """Writes the query associations and the co-visitation model (if paths are configured)
        and closes the store if the engine opened it. Closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        self._save_associations()
        if self._owns_store:
            self.store.close()

    async def aclose(self) -> None:
        """:meth:`close`, awaiting the store."""
        if self._closed:
            return
        self._closed = True
        self._save_associations()
        if self._owns_store:
            await self.store.aclose()

    def _save_associations(self) -> None:
        path = self.config.query_associations_path
        if path is not None:
            self.expander.save(path)
        self._save_covisitation()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _load_covisitation(config: CoVisitationConfig) -> tuple[CoVisitation, bool]:
    """The engine's model: from ``config.path`` when that file exists (then ``True``), else a
    new one."""
    wanted = config.new_model()
    if config.path is None or not os.path.exists(config.path):
        return wanted, False
    with open(config.path, "rb") as f:
        data = f.read()
    try:
        model = CoVisitation.from_bytes(data)
    except ValidationError as e:
        raise ValidationError(f"co-visitation model {os.fspath(config.path)!r}: {e}") from None
    if model.options != wanted.options:
        differ = sorted(k for k, v in wanted.options.items() if model.options.get(k) != v)
        raise ValidationError(
            f"co-visitation model {os.fspath(config.path)!r} was learned with other options ({', '.join(differ)}); "
            "remove the file to rebuild it from the event log, or configure its options"
        )
    return model, True


def _logged_events(store: ProfileStore) -> Iterable[Signal]:
    """Every event of the store's durable log (its SQL tier's), user by user; nothing for a
    store without one."""
    database = store.database if isinstance(store, TieredProfileStore) else store
    if not isinstance(database, SQLProfileStore):
        return
    after: str | None = None
    while True:
        page = run_sync(database._user_ids_op(after, 500))
        if not page:
            return
        after = page[-1]
        for user_id in page:
            yield from run_sync(database._events_op(user_id))
