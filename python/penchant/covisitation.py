"""Item-to-item co-visitation ("people who took this next took that"), learned online from every
feedback event, for the whole tenant.

A user's profile says what *kinds* of item they like; co-visitation says which *items* go with
the ones they just touched, from everybody's sequences. On MovieLens it is what lifts penchant
from popularity-level ranking to above the best offline recommenders (EVALUATION.md).

How it learns. When a user engages with item ``i``, ``i`` is paired with the ``window`` items
that user engaged with just before it (newest first, from the profile's
``interaction_history``). The pair at lag ``d`` (1 = the item just before) adds
``exp(−(d−1)/lag_scale)`` to the weight of the pair, both ways. Every item keeps at most
``max_neighbours`` neighbours (its map is pruned to the heaviest when it reaches twice that), so
memory is bounded whatever the traffic. With ``half_life`` (seconds), older evidence fades by
forward decay; the default is no decay, which measured best on MovieLens.

How it scores. For a user whose recent items are ``h_0, h_1, …`` (newest first, at most
``recent``), candidate ``j`` scores

    Σ_p exp(−p/recency_scale) · C[h_p][j] / n[h_p]^beta  /  n[j]^alpha

where ``n`` counts each item's events: ``beta`` stops a very common history item from speaking
for all, ``alpha`` damps candidates that co-occur with everything because they are popular.

In ranking it is one more factor: pass :meth:`CoVisitation.scorers` as ``scorers`` to
:func:`penchant.rank_items` or :meth:`penchant.Catalog.rank`. Events that show no engagement
(impressions, skips, dismissals) teach it nothing; every other type counts as a visit, whatever
its value (a 1-star rating still says what the user watched next).

Item ids are strings, as in :class:`~penchant.Feedback`; integer ids are matched by their
decimal string.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from penchant import _core
from penchant._time import TimeLike, to_epoch
from penchant.errors import ValidationError
from penchant.feedback_collector import Feedback, FeedbackType, Signal
from penchant.scoring import Candidates, Scorer
from penchant.user_profile import Interaction, UserProfile

__all__ = ["DEFAULT_COVISITATION_WEIGHTS", "ENGAGEMENT_TYPES", "CoVisitation"]

ENGAGEMENT_TYPES: frozenset[FeedbackType] = frozenset(FeedbackType) - {
    FeedbackType.IMPRESSION,
    FeedbackType.SKIP,
    FeedbackType.DISMISS,
}
"""The feedback types co-visitation learns from: every type that shows the user engaged."""

DEFAULT_COVISITATION_WEIGHTS: Mapping[str, float] = {"covisitation": 1.0, "learned_popularity": 0.02}
"""Weights of the factors :meth:`CoVisitation.scorers` adds, as measured on MovieLens
(EVALUATION.md): the popularity prior is a tie-breaker and the cold-start fallback."""

History = UserProfile | Sequence[str | int]
"""A user's recent items: their profile, or item ids newest first."""

_UNKNOWN = _core.COVISIT_UNKNOWN
_ENGAGEMENT_NAMES = frozenset(t.value for t in ENGAGEMENT_TYPES)
_MAX_ALIGNED_TABLES = 8


def _check_int(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValidationError(f"{what} must be an int of at least {low}, got {value!r}")
    return value


class CoVisitation:
    """The co-visitation model of a tenant (module documentation). Thread-safe: one thread may
    learn while others score.

    Learning: ``window`` (previous items paired with each event), ``lag_scale`` (lag decay;
    ``math.inf`` for none), ``max_neighbours`` (per item; 0 for no bound), ``half_life``
    (seconds, ``None`` for no decay). Scoring defaults: ``recent`` (the user's items that
    speak), ``recency_scale`` (``math.inf`` weighs them alike), ``alpha``, ``beta``.
    ``dedupe_window``: how many recent event ids are remembered so that an event recorded twice
    teaches once (0 turns this off).
    """

    def __init__(
        self,
        *,
        window: int = 20,
        lag_scale: float = 5.0,
        max_neighbours: int = 200,
        half_life: float | None = None,
        recent: int = 20,
        recency_scale: float = 4.0,
        alpha: float = 0.3,
        beta: float = 0.5,
        dedupe_window: int = 100_000,
    ) -> None:
        for name, value, low in (("window", window, 1), ("max_neighbours", max_neighbours, 0), ("recent", recent, 1)):
            _check_int(value, name, low)
        self._init(
            _core.CoVisitation(window, lag_scale, max_neighbours, half_life, recent, recency_scale, alpha, beta),
            dedupe_window,
        )

    def _init(self, model: _core.CoVisitation, dedupe_window: int) -> None:
        self._model = model
        self.dedupe_window = _check_int(dedupe_window, "dedupe_window", 0)
        self._seen: dict[str, None] = {}
        # Catalog tables aligned to the model's dense ids: id(table) → (table, dense id per row,
        # model size when aligned). Rows unknown then are looked up again once the model grows.
        self._aligned: dict[int, tuple[_core.Table, npt.NDArray[np.uint32], int]] = {}
        self._lock = threading.Lock()

    # -- what it is -------------------------------------------------------------------------

    @property
    def options(self) -> dict[str, Any]:
        """The learning and scoring options (what the constructor took)."""
        m = self._model
        return {
            "window": m.window,
            "lag_scale": m.lag_scale,
            "max_neighbours": m.max_neighbours,
            "half_life": m.half_life,
            "recent": m.recent,
            "recency_scale": m.recency_scale,
            "alpha": m.alpha,
            "beta": m.beta,
        }

    def __len__(self) -> int:
        """The number of items the model knows."""
        return len(self._model)

    def __repr__(self) -> str:
        return f"CoVisitation(items={len(self)}, events={self.events}, entries={self.entries})"

    @property
    def events(self) -> int:
        """The number of events learned from."""
        return self._model.events

    @property
    def entries(self) -> int:
        """The number of stored (item, neighbour) weights, the model's size (8 bytes each)."""
        return self._model.entries

    def neighbours(self, item_id: str | int, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` items most often taken next to ``item_id`` (both ways), with their weights."""
        return self._model.neighbours(item_id, _check_int(k, "k", 0))

    def counts(self, item_ids: Sequence[str | int]) -> npt.NDArray[np.float64]:
        """Each item's number of events (decayed to the latest event with a half-life)."""
        return self._model.counts(self._model.lookup(item_ids))

    # -- learning ---------------------------------------------------------------------------

    def observe(self, item_id: str | int, previous: Sequence[str | int] = (), timestamp: TimeLike = 0.0) -> None:
        """Learns one event: ``item_id`` engaged with after ``previous`` (the user's earlier
        items, newest first). ``timestamp`` matters only with a half-life."""
        self._model.observe(item_id, previous, to_epoch(timestamp, "timestamp"))

    def observe_many(
        self,
        user_ids: Sequence[str],
        item_ids: Sequence[str | int],
        timestamps: npt.ArrayLike,
        previous: Mapping[str, Sequence[str | int]] | None = None,
    ) -> None:
        """Learns a batch of events, in the order given (time order): event ``e`` is
        ``item_ids[e]`` by ``user_ids[e]`` at ``timestamps[e]`` (epoch seconds). ``previous``
        gives, per user, their items before the batch (newest first)."""
        if len(user_ids) != len(item_ids):
            raise ValidationError(f"user_ids and item_ids differ in length ({len(user_ids)}, {len(item_ids)})")
        try:
            times = np.ascontiguousarray(timestamps, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValidationError(f"timestamps: cannot be read as numbers ({e})") from None
        if times.shape != (len(user_ids),):
            raise ValidationError(f"timestamps: expected shape ({len(user_ids)},), got {times.shape}")
        codes: dict[str, int] = {}
        users = np.fromiter((codes.setdefault(u, len(codes)) for u in user_ids), dtype=np.uint32, count=len(user_ids))
        before = previous or {}
        seeds = [list(before.get(u, ())) for u in codes]
        self._model.observe_many(users, item_ids, times, seeds)

    def learn(self, events: Iterable[Feedback | Signal]) -> int:
        """Learns from logged events (in any order: they are sorted by time, then event id, as
        a profile's history is), skipping event ids it has seen and types that show no
        engagement. Each user's sequence starts empty: use it to build a model from the whole
        event log. Returns the number of events learned."""
        rows: list[tuple[float, str, str, str]] = []
        for position, event in enumerate(events):
            if isinstance(event, Feedback):
                t = event.timestamp.timestamp()
            elif isinstance(event, Signal):
                t = event.timestamp
            else:
                raise ValidationError(f"event {position}: expected a Feedback or a Signal, got {type(event).__name__}")
            if event.feedback_type in ENGAGEMENT_TYPES:
                rows.append((t, event.event_id, event.user_id, event.item_id))
        rows.sort()
        fresh = self._fresh([r[1] for r in rows])
        rows = [r for r, new in zip(rows, fresh, strict=True) if new]
        if rows:
            self.observe_many([r[2] for r in rows], [r[3] for r in rows], [r[0] for r in rows])
        return len(rows)

    @classmethod
    def rebuild(cls, events: Iterable[Feedback | Signal], **options: Any) -> CoVisitation:
        """A new model (``options`` as the constructor's) learned from an event log."""
        model = cls(**options)
        model.learn(events)
        return model

    def observe_profile(self, profile: UserProfile, signals: Sequence[Signal]) -> int:
        """Learns ``signals``, just applied to ``profile`` (the profile as the store returned it,
        so its ``interaction_history`` holds them): each event is paired with the user's items
        that precede it in time. Returns the number of events learned."""
        return self.observe_profiles([(profile, signals)])

    def observe_profiles(self, updates: Iterable[tuple[UserProfile, Sequence[Signal]]]) -> int:
        """:meth:`observe_profile` for several users' batches at once, learned in time order
        across the users (then by event id), as :meth:`learn` would learn them: this is how
        :class:`~penchant.FeedbackCollector` feeds the model, so that the model does not
        depend on how events were batched. Returns the number of events learned."""
        events: list[tuple[float, str, str, list[str]]] = []
        for profile, signals in updates:
            events.extend(self._in_sequence(profile, signals))
        events.sort(key=lambda e: (e[0], e[1]))
        for t, _, item, previous in events:
            self._model.observe(item, previous, t)
        return len(events)

    def _in_sequence(self, profile: UserProfile, signals: Sequence[Signal]) -> list[tuple[float, str, str, list[str]]]:
        """The new engagement events among ``signals`` as (time, event id, item, the user's
        previous items newest first)."""
        engaged = [s for s in signals if s.feedback_type in ENGAGEMENT_TYPES and s.user_id == profile.user_id]
        if not engaged:
            return []
        fresh = self._fresh([s.event_id for s in engaged])
        new = [s for s, f in zip(engaged, fresh, strict=True) if f]
        if not new:
            return []
        # The user's sequence: the history (bounded) plus this batch (which may be longer than
        # the bound), in the history's order, time then event id.
        sequence: dict[str, tuple[float, str, str]] = {
            i.event_id: (i.timestamp.timestamp(), i.event_id, i.item_id)
            for i in profile.interaction_history
            if i.feedback_type in _ENGAGEMENT_NAMES
        }
        for s in engaged:
            sequence[s.event_id] = (s.timestamp, s.event_id, s.item_id)
        ordered = sorted(sequence.values())
        position = {event_id: k for k, (_, event_id, _) in enumerate(ordered)}
        items = [item for _, _, item in ordered]
        window = self._model.window
        out = []
        for s in new:
            k = position[s.event_id]
            out.append((s.timestamp, s.event_id, s.item_id, items[max(k - window, 0) : k][::-1]))
        return out

    def _fresh(self, event_ids: Sequence[str]) -> list[bool]:
        """Which event ids are new (remembering them): an event recorded twice teaches once."""
        if not self.dedupe_window:
            return [True] * len(event_ids)
        out = []
        with self._lock:
            seen = self._seen
            for event_id in event_ids:
                new = event_id not in seen
                out.append(new)
                if new:
                    seen[event_id] = None
            excess = len(seen) - self.dedupe_window
            if excess > 0:
                for old in list(_take(seen, excess)):
                    del seen[old]
        return out

    # -- scoring ----------------------------------------------------------------------------

    def recent_items(self, profile: UserProfile, limit: int | None = None) -> list[str]:
        """The items of ``profile``'s engagement history, newest first: ``limit`` of them (by
        default as many as scoring reads)."""
        if not isinstance(profile, UserProfile):
            raise ValidationError(f"expected a UserProfile, got {type(profile).__name__}")
        limit = self._model.recent if limit is None else _check_int(limit, "limit", 1)
        out: list[str] = []
        history: list[Interaction] = profile.interaction_history
        for interaction in reversed(history):
            if interaction.feedback_type in _ENGAGEMENT_NAMES:
                out.append(interaction.item_id)
                if len(out) == limit:
                    break
        return out

    def _history(self, history: History, scoring: Mapping[str, Any]) -> npt.NDArray[np.uint32]:
        if isinstance(history, UserProfile):
            return self._model.lookup(self.recent_items(history, scoring.get("recent")))
        return self._model.lookup(history)

    def scores(self, history: History, candidate_ids: Sequence[str | int], **scoring: Any) -> npt.NDArray[np.float64]:
        """The co-visitation score of each candidate for a user (their profile, or their recent
        item ids newest first). ``scoring`` may override ``recent``, ``recency_scale``,
        ``alpha`` and ``beta``. Unknown candidates score 0."""
        options = _scoring(scoring)
        return self._model.scores(self._history(history, options), self._model.lookup(candidate_ids), **options)

    def scorer(self, history: History, **scoring: Any) -> Scorer:
        """A custom factor for ``rank_items`` / ``Catalog.rank`` (``scorers=``): the candidates'
        co-visitation scores for this user."""
        options = _scoring(scoring)
        dense_history = self._history(history, options)

        def covisitation(candidates: Candidates) -> npt.NDArray[np.float64]:
            return self._model.scores(dense_history, self._dense(candidates), **options)

        return covisitation

    def popularity_scorer(self) -> Scorer:
        """A custom factor: the candidates' event counts learned from the feedback stream, as
        ``ln(1 + n)`` (the built-in ``popularity`` factor reads the catalog's static column)."""

        def learned_popularity(candidates: Candidates) -> npt.NDArray[np.float64]:
            return np.log1p(self._model.counts(self._dense(candidates)))

        return learned_popularity

    def scorers(self, history: History, **scoring: Any) -> dict[str, Scorer]:
        """Both factors, named ``covisitation`` and ``learned_popularity``; weigh them with
        :data:`DEFAULT_COVISITATION_WEIGHTS` (or your own ``weights``)."""
        return {"covisitation": self.scorer(history, **scoring), "learned_popularity": self.popularity_scorer()}

    def _dense(self, candidates: Candidates) -> npt.NDArray[np.uint32]:
        """The model's dense ids of the candidates. A catalog's rows are aligned once (and again
        only for rows the model did not know, once it has grown), so a request costs a gather."""
        table = candidates._table
        size = len(self._model)
        with self._lock:
            entry = self._aligned.get(id(table))
        if entry is None or entry[0] is not table:
            aligned = self._model.lookup(table.ids(list(range(len(table)))))
        else:
            aligned = entry[1]
            if entry[2] != size:
                unknown = np.flatnonzero(aligned == _UNKNOWN)
                if len(unknown):
                    aligned = aligned.copy()
                    aligned[unknown] = self._model.lookup(table.ids(unknown.tolist()))
        if entry is None or entry[1] is not aligned or entry[2] != size:
            with self._lock:
                if len(self._aligned) >= _MAX_ALIGNED_TABLES:
                    self._aligned.pop(next(iter(self._aligned)))
                self._aligned[id(table)] = (table, aligned, size)
        return aligned[candidates._row_array]

    # -- persistence ------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole model (options included) as bytes: a checked binary format, no pickle."""
        return self._model.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, dedupe_window: int = 100_000) -> CoVisitation:
        """A model from :meth:`to_bytes`. Damaged or foreign bytes are a ``ValidationError``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValidationError(f"expected bytes, got {type(data).__name__}")
        model = cls.__new__(cls)
        model._init(_core.CoVisitation.from_bytes(bytes(data)), dedupe_window)
        return model


def _take(mapping: dict[str, None], n: int) -> Iterable[str]:
    iterator = iter(mapping)
    for _ in range(n):
        yield next(iterator)


_SCORING_OPTIONS = frozenset({"recent", "recency_scale", "alpha", "beta"})


def _scoring(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(options) - _SCORING_OPTIONS
    if unknown:
        raise ValidationError(f"unknown scoring option(s) {sorted(unknown)}; expected {sorted(_SCORING_OPTIONS)}")
    if "recent" in options:
        _check_int(options["recent"], "recent", 1)
    return dict(options)
