"""Adaptive query expansion: extra, weighted search terms for one user's query.

:class:`QueryExpander` adds to a query terms drawn from two sources:

- **learned associations** term → feature, from feedback on past queries: an event recorded
  with ``context={"query": ...}`` adds its signed weight to every (query term, item feature)
  pair, spread over the item's features. A term's share of a feature is its positive
  association over the sum of its positive associations; a term's reliability is
  ``n / (n + association_prior)`` with ``n`` its total absolute evidence.
- **the user's confident interests**: features with positive weight and a confidence of at
  least ``min_interest_confidence``.

**How much to expand.** ``amount = ambiguity × c`` where ``c`` is the profile's confidence
(:meth:`~penchant.UserProfile.profile_confidence`, 0 without a profile) and

    ambiguity = length × (0.5 + 0.5·H̄)
    length    = 1 for up to ``short_query_terms`` terms, ``short_query_terms / n`` above, and 0
                above ``max_query_terms`` terms (a long query is specific: no expansion)
    H̄         = the mean normalised entropy of the learned feature shares of the query's known
                terms (0: each points at one feature; 1: spread evenly); 1 when none is known.

So a short, ambiguous query from a well-known user expands most; a long query, or any query
from a user penchant knows little about, expands little or not at all.

**Which features.** With learned associations for some query term, candidates are those
features, each scored ``a(f)·(1 + u(f)·conf(f))`` where ``a(f)`` is the mean over the query's
terms of reliability × share, ``u(f)`` the user's interest in ``f`` relative to their strongest
(0 to 1) and ``conf(f)`` its confidence: the user's tastes pick among a term's meanings. Without
any, the user's confident interests are the candidates, scored ``interest_share·u(f)·conf(f)``.
Features the user blocked (``never``) or dislikes are never added. The best
``round(max_expansions × amount)`` (at least one) are kept, weighted
``max_term_weight × amount × score / best score``, and those under ``min_term_weight`` dropped.
Original terms weigh 1, so the query always dominates.

**Where associations live.** In memory, in the expander of one :class:`~penchant.Engine` (which
serves one tenant), bounded by ``max_terms`` terms of ``max_features_per_term`` features each.
They are not shared between processes. :meth:`QueryExpander.save` and :meth:`QueryExpander.load`
keep them in a JSON file (``EngineConfig.query_associations_path`` makes the engine load it when
it opens and save it when it closes); each recorded event also keeps its query in the durable
event log (in its context), from which they can be learned again.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from penchant import _core
from penchant._time import TimeLike, to_epoch
from penchant._validate import check_finite, check_name
from penchant.errors import ValidationError
from penchant.user_profile import PROFILE_CONFIDENCE_PRIOR, UserProfile, profile_confidence_of
from penchant.user_profile import confidence as interest_confidence

if TYPE_CHECKING:
    from penchant.feedback_collector import Signal

__all__ = [
    "STOPWORDS",
    "ExpandedQuery",
    "ExpansionTerm",
    "ProfileView",
    "QueryExpander",
    "QueryExpansionConfig",
    "default_feature_term",
    "tokenize",
]

STOPWORDS = frozenset(
    {
        *("a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "how", "i", "in", "is"),
        *("it", "me", "my", "of", "on", "or", "show", "the", "to", "what", "with"),
    }
)
"""English words too common to expand or learn from."""

_TOKEN = re.compile(r"\w+")
MAX_TERM_CHARS = 64
"""Longer tokens (hashes, pasted junk) are neither expanded nor learned."""
MAX_LEARNED_TERMS_PER_QUERY = 8
"""A query teaches associations for its first terms only."""
_MAX_INTERESTS_CONSIDERED = 32


def tokenize(query: str) -> list[str]:
    """The query's distinct terms, lowercased, in order, without :data:`STOPWORDS`."""
    seen: dict[str, None] = {}
    for token in _TOKEN.findall(query.lower()):
        if token not in STOPWORDS and len(token) <= MAX_TERM_CHARS:
            seen.setdefault(token)
    return list(seen)


def default_feature_term(feature: str) -> str | None:
    """The search term of a feature: its value after the last ``:`` (the whole name without
    one), lowercased, with ``_`` and ``-`` as spaces: ``"genre:sci-fi"`` → ``"sci fi"``."""
    value = feature.rpartition(":")[2]
    term = " ".join(value.replace("_", " ").replace("-", " ").lower().split())
    return term or None


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{what} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class QueryExpansionConfig:
    """The knobs of :class:`QueryExpander` (module documentation)."""

    max_expansions: int = 5
    max_term_weight: float = 0.5
    min_term_weight: float = 0.05
    short_query_terms: int = 2
    max_query_terms: int = 6
    min_interest_confidence: float = 0.3
    interest_share: float = 0.5
    association_prior: float = 3.0
    confidence_prior: float = PROFILE_CONFIDENCE_PRIOR
    max_terms: int = 50_000
    max_features_per_term: int = 32
    max_query_chars: int = 1_024
    feature_term: Callable[[str], str | None] = default_feature_term

    def __post_init__(self) -> None:
        for name in ("max_expansions", "short_query_terms", "max_query_terms", "max_terms"):
            _positive_int(getattr(self, name), name)
        _positive_int(self.max_features_per_term, "max_features_per_term")
        _positive_int(self.max_query_chars, "max_query_chars")
        for name in ("max_term_weight", "min_term_weight", "min_interest_confidence", "interest_share"):
            value = check_finite(getattr(self, name), name)
            if not 0.0 <= value <= 1.0:
                raise ValidationError(f"{name} must lie in [0, 1], got {value}")
            object.__setattr__(self, name, value)
        for name in ("association_prior", "confidence_prior"):
            value = check_finite(getattr(self, name), name)
            if value <= 0:
                raise ValidationError(f"{name} must be positive, got {value}")
            object.__setattr__(self, name, value)
        if not callable(self.feature_term):
            raise ValidationError("feature_term must be callable")


@dataclass(frozen=True)
class ExpansionTerm:
    """One term of an expanded query: ``source`` is ``"query"`` (the user's own words, weight
    1), ``"association"`` (learned from past queries) or ``"interest"`` (the user's tastes);
    ``feature`` is the feature it stands for (``None`` for the user's own words)."""

    term: str
    weight: float
    source: str
    feature: str | None = None


@dataclass(frozen=True)
class ExpandedQuery:
    """A query and its expansion: ``terms`` (the original terms first, weight 1, then the added
    ones, heaviest first), ``features`` (the added features with their weights, for a search
    engine that can filter or boost on them, and for ranking) and ``amount`` (how much it was
    expanded, in [0, 1])."""

    query: str
    terms: tuple[ExpansionTerm, ...]
    features: Mapping[str, float] = field(default_factory=dict)
    amount: float = 0.0

    @property
    def expansions(self) -> tuple[ExpansionTerm, ...]:
        """The added terms only."""
        return tuple(t for t in self.terms if t.source != "query")

    def weighted_terms(self) -> list[tuple[str, float]]:
        """``(term, weight)`` pairs, original terms first: what a BM25 engine's per-term boosts
        or a weighted average of term embeddings take."""
        return [(t.term, t.weight) for t in self.terms]

    def to_text(self) -> str:
        """The query as text with Lucene boosts (Elasticsearch and OpenSearch ``query_string``,
        Solr): the original query as typed, then ``term^weight`` per added term (multi-word
        terms quoted)."""
        parts = [self.query.strip()]
        for t in self.expansions:
            text = f'"{t.term}"' if " " in t.term else t.term
            parts.append(f"{text}^{t.weight:.3g}")
        return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class ProfileView:
    """What expansion needs from a profile, computed once per profile version: its confidence,
    interest weights, per-interest confidences, its strongest confident interests, and what it
    blocks."""

    confidence: float
    weights: Mapping[str, float]
    confidences: Mapping[str, float]
    top_interests: tuple[tuple[str, float], ...]
    """``(feature, u·conf)`` of the confident positive interests, best first."""
    blocked: frozenset[str]

    @classmethod
    def of(
        cls,
        profile: UserProfile | None,
        now: float,
        *,
        prior: float = PROFILE_CONFIDENCE_PRIOR,
        min_confidence: float = 0.3,
    ) -> ProfileView:
        """The view of ``profile`` at ``now``; ``prior`` is the profile confidence's."""
        if profile is None:
            return _NO_PROFILE
        names, positive, negative = _core.interest_evidence(profile.interests, now, profile.landmark)
        priors = profile.explicit_priors()
        weights = {name: p - n for name, p, n in zip(names, positive, negative, strict=True)}
        for name, strength in priors.items():
            weights[name] = weights.get(name, 0.0) + strength
        evidence = math.fsum(positive) + math.fsum(negative) + sum(abs(v) for v in priors.values())
        return cls.build(
            names,
            positive,
            negative,
            priors,
            profile.hard_filters().blocked_features,
            weights=weights,
            confidence=profile_confidence_of(evidence, prior),
            min_confidence=min_confidence,
        )

    @classmethod
    def build(
        cls,
        names: Sequence[str],
        positive: Sequence[float],
        negative: Sequence[float],
        priors: Mapping[str, float],
        blocked: frozenset[str],
        *,
        weights: Mapping[str, float],
        confidence: float,
        min_confidence: float,
    ) -> ProfileView:
        """The view from a profile's evidence (as ``_core.interest_evidence`` gives it), its
        explicit priors, blocked features, interest weights and profile confidence."""
        confidences = {
            name: interest_confidence(p, n, priors.get(name, 0.0))
            for name, p, n in zip(names, positive, negative, strict=True)
        }
        for name, strength in priors.items():
            confidences.setdefault(name, interest_confidence(0.0, 0.0, strength))
        strongest = max((w for w in weights.values() if w > 0), default=0.0)
        top: list[tuple[str, float]] = []
        if strongest > 0:
            for name, weight in weights.items():
                sure = confidences.get(name, 0.0)
                if weight > 0 and sure >= min_confidence and name not in blocked:
                    top.append((name, weight / strongest * sure))
            top.sort(key=lambda pair: (-pair[1], pair[0]))
        return cls(
            confidence=confidence,
            weights=weights,
            confidences=confidences,
            top_interests=tuple(top[:_MAX_INTERESTS_CONSIDERED]),
            blocked=blocked,
        )


_NO_PROFILE = ProfileView(0.0, {}, {}, (), frozenset())


class QueryExpander:
    """Expands queries for a user and learns term → feature associations from feedback (module
    documentation). Thread-safe."""

    def __init__(self, config: QueryExpansionConfig | None = None) -> None:
        if config is not None and not isinstance(config, QueryExpansionConfig):
            raise ValidationError(f"config must be a QueryExpansionConfig, got {type(config).__name__}")
        self.config = config or QueryExpansionConfig()
        self._associations: dict[str, dict[str, float]] = {}
        self._evidence: dict[str, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """The number of terms with learned associations."""
        return len(self._associations)

    # -- queries ----------------------------------------------------------------------------

    def check_query(self, query: Any) -> str:
        """``query`` if it is a str within ``max_query_chars``; a ``ValidationError`` otherwise."""
        if not isinstance(query, str):
            raise ValidationError(f"query must be a str, got {type(query).__name__}")
        if len(query) > self.config.max_query_chars:
            raise ValidationError(f"query is {len(query)} characters long; the limit is {self.config.max_query_chars}")
        return query

    # -- learning ---------------------------------------------------------------------------

    def learn(self, query: str, features: Mapping[str, float], weight: float) -> None:
        """Adds ``weight`` (signed: a click teaches, a skip unteaches) to the association of each
        of the query's terms with each feature, spread in proportion to the feature weights."""
        query = self.check_query(query)
        weight = check_finite(weight, "weight")
        shares: dict[str, float] = {}
        for name, value in features.items():
            check_name(name, "feature name")
            value = check_finite(value, f"weight of feature {name!r}")
            if value > 0:
                shares[name] = value
        total = math.fsum(shares.values())
        terms = tokenize(query)[:MAX_LEARNED_TERMS_PER_QUERY]
        if not terms or total <= 0 or weight == 0:
            return
        with self._lock:
            for term in terms:
                table = self._associations.setdefault(term, {})
                for name, value in shares.items():
                    table[name] = table.get(name, 0.0) + weight * value / total
                self._evidence[term] = self._evidence.get(term, 0.0) + abs(weight)
                if len(table) > self.config.max_features_per_term:
                    keep = sorted(table.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
                    self._associations[term] = dict(keep[: self.config.max_features_per_term])
            self._prune(terms)

    def learn_signals(self, signals: Iterable[Signal]) -> int:
        """Learns from every signal whose context holds a ``"query"`` str (for example events
        read back from the event log); returns how many taught something."""
        taught = 0
        for signal in signals:
            query = signal.context.get("query") if isinstance(signal.context, Mapping) else None
            if isinstance(query, str) and len(query) <= self.config.max_query_chars:
                self.learn(query, signal.features, signal.weight)
                taught += 1
        return taught

    def _prune(self, keep: Iterable[str] = ()) -> None:
        """Once there are too many terms, drops the tenth with the least evidence, sparing
        ``keep`` (the terms just learned, so that a new term is not dropped as it arrives)."""
        excess = len(self._associations) - self.config.max_terms
        if excess <= 0:
            return
        drop = max(excess, self.config.max_terms // 10)
        spared = set(keep)
        candidates = [kv for kv in self._evidence.items() if kv[0] not in spared]
        for term, _ in sorted(candidates, key=lambda kv: (kv[1], kv[0]))[:drop]:
            self._associations.pop(term, None)
            self._evidence.pop(term, None)

    def associations(self, term: str) -> dict[str, float]:
        """The learned shares of ``term`` (lowercased) over features, in [0, 1], summing to 1
        (empty when nothing positive was learned)."""
        with self._lock:
            return self._shares(term.lower())[0]

    def _shares(self, term: str) -> tuple[dict[str, float], float]:
        table = self._associations.get(term)
        if not table:
            return {}, 0.0
        positive = {name: value for name, value in table.items() if value > 0}
        total = math.fsum(positive.values())
        if total <= 0:
            return {}, 0.0
        return {name: value / total for name, value in positive.items()}, self._evidence.get(term, 0.0)

    # -- expansion --------------------------------------------------------------------------

    def expand(
        self, query: str, profile: UserProfile | ProfileView | None = None, *, now: TimeLike | None = None
    ) -> ExpandedQuery:
        """``query`` expanded for ``profile`` (a :class:`~penchant.UserProfile`, ``None`` for a
        user without one, or a :class:`ProfileView`) at ``now`` (module documentation)."""
        query = self.check_query(query)
        if isinstance(profile, ProfileView):
            view = profile
        elif profile is None or isinstance(profile, UserProfile):
            view = ProfileView.of(
                profile,
                to_epoch(now, "now"),
                prior=self.config.confidence_prior,
                min_confidence=self.config.min_interest_confidence,
            )
        else:
            raise ValidationError(f"profile must be a UserProfile, a ProfileView or None, got {type(profile).__name__}")
        return self._expand(query, view)

    def _expand(self, query: str, view: ProfileView) -> ExpandedQuery:
        cfg = self.config
        terms = tokenize(query)
        original = tuple(ExpansionTerm(t, 1.0, "query") for t in terms)
        if not terms or view.confidence <= 0:
            return ExpandedQuery(query, original)
        n = len(terms)
        length = 0.0 if n > cfg.max_query_terms else min(1.0, cfg.short_query_terms / n)
        with self._lock:
            known = [(t, *self._shares(t)) for t in terms]
        known = [(t, shares, evidence) for t, shares, evidence in known if shares]
        if known:
            entropy = sum(_normalised_entropy(shares.values()) for _, shares, _ in known) / len(known)
            ambiguity = length * (0.5 + 0.5 * entropy)
        else:
            ambiguity = length
        amount = ambiguity * view.confidence
        if amount <= 0:
            return ExpandedQuery(query, original)
        strongest = max((w for w in view.weights.values() if w > 0), default=0.0)

        def interest(name: str) -> float:
            weight = view.weights.get(name, 0.0)
            if weight <= 0 or strongest <= 0:
                return 0.0
            return weight / strongest * view.confidences.get(name, 0.0)

        scores: dict[str, float] = {}
        source = "association"
        if known:
            for _, shares, evidence in known:
                reliability = evidence / (evidence + cfg.association_prior)
                for name, share in shares.items():
                    scores[name] = scores.get(name, 0.0) + reliability * share / n
            for name in scores:
                scores[name] *= 1.0 + interest(name)
        else:
            source = "interest"
            for name, value in view.top_interests:
                scores[name] = cfg.interest_share * value
        for name in list(scores):
            if name in view.blocked or view.weights.get(name, 0.0) < 0 or scores[name] <= 0:
                del scores[name]
        if not scores:
            return ExpandedQuery(query, original, amount=amount)
        keep = max(1, round(cfg.max_expansions * amount))
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
        top = best[0][1]
        features: dict[str, float] = {}
        added: dict[str, ExpansionTerm] = {}
        in_query = set(terms)
        for name, score in best:
            weight = cfg.max_term_weight * amount * score / top
            if weight < cfg.min_term_weight:
                continue
            features[name] = weight
            term = cfg.feature_term(name)
            if not term or term in in_query or term in added:
                continue
            added[term] = ExpansionTerm(term, weight, source, name)
        return ExpandedQuery(query, original + tuple(added.values()), features, amount)

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The learned associations as a JSON-able dict (:meth:`from_dict` reads it back)."""
        with self._lock:
            return {
                "version": 1,
                "terms": {
                    term: {"evidence": self._evidence.get(term, 0.0), "features": dict(table)}
                    for term, table in self._associations.items()
                },
            }

    def from_dict(self, data: Mapping[str, Any]) -> None:
        """Replaces the learned associations with ``data`` (from :meth:`to_dict`), checked first."""
        if not isinstance(data, Mapping) or data.get("version") != 1 or not isinstance(data.get("terms"), Mapping):
            raise ValidationError("query associations: expected a mapping with version 1 and terms")
        associations: dict[str, dict[str, float]] = {}
        evidence: dict[str, float] = {}
        for term, entry in data["terms"].items():
            if not isinstance(term, str) or not term or len(term) > MAX_TERM_CHARS or not isinstance(entry, Mapping):
                raise ValidationError(f"query associations: invalid term {term!r}")
            features = entry.get("features")
            if not isinstance(features, Mapping):
                raise ValidationError(f"query associations: term {term!r} has no features")
            associations[term] = {
                check_name(name, "feature name"): check_finite(value, f"association of {term!r}")
                for name, value in features.items()
            }
            evidence[term] = abs(check_finite(entry.get("evidence", 0.0), f"evidence of {term!r}"))
        with self._lock:
            self._associations = associations
            self._evidence = evidence
            self._prune()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the associations to ``path`` as JSON (atomically: a temporary file, renamed)."""
        target = Path(path)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(json.dumps(self.to_dict(), separators=(",", ":")), encoding="utf-8")
        os.replace(temporary, target)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Reads associations written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValidationError(f"cannot read query associations from {str(path)!r}: {e}") from None
        self.from_dict(data)


def _normalised_entropy(shares: Iterable[float]) -> float:
    values = [s for s in shares if s > 0]
    if len(values) < 2:
        return 0.0
    entropy = -sum(s * math.log(s) for s in values)
    return min(1.0, entropy / math.log(len(values)))
