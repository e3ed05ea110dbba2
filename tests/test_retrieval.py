"""PersonalizedRetriever, RankingEngine and ContentFilter: strength, confidence, cold start,
novelty, filters and their explanations, the compiled-profile cache."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import penchant
from penchant import personalized_retrieval
from penchant.personalized_retrieval import ContentFilter, PersonalizedRetriever, RankingConfig, RankingEngine

NOW = float(int(time.time()))
HOUR = 3_600.0
DAY = 86_400.0

ITEMS: list[dict[str, Any]] = [
    {"id": "a", "score": 0.9, "features": ["genre:drama"], "attributes": {"price": 30.0}, "popularity": 1.0},
    {"id": "b", "score": 0.8, "features": ["genre:sci-fi", "tag:space"], "attributes": {"price": 10.0}},
    {"id": "c", "score": 0.7, "features": {"genre:sci-fi": 0.5}, "attributes": {"price": 5.0}, "popularity": 50.0},
    {"id": "d", "score": 0.6, "features": ["genre:horror"], "attributes": {"price": 8.0}},
    {"id": "e", "score": 0.5, "features": ["genre:sci-fi", "tag:robots"], "popularity": 3.0},
]
BY_ID = {item["id"]: item for item in ITEMS}


def ids(ranked: list[penchant.RankedItem]) -> list[str | int]:
    return [r.id for r in ranked]


def clicks(engine: penchant.Engine, user: str, item: dict[str, Any], n: int, *, ago: float = HOUR) -> None:
    engine.record_many(
        [{"user_id": user, "item": item, "feedback_type": "click", "timestamp": NOW - ago - i} for i in range(n)]
    )


@pytest.fixture
def engine() -> Any:
    with penchant.Engine(database_url="sqlite:///:memory:") as e:
        yield e


# -- strength, confidence, cold start ----------------------------------------------------------


ROBOT = {"id": "z", "features": ["genre:sci-fi", "tag:robots"]}
"""Not a candidate: clicks on it teach without the novelty penalty on a candidate."""


def test_strength_zero_is_the_callers_order_exactly(engine: penchant.Engine) -> None:
    clicks(engine, "u", ROBOT, 30)
    personalized = ids(engine.rank("u", ITEMS, now=NOW))
    assert personalized == ["b", "a", "e", "c", "d"]
    assert ids(engine.rank("u", ITEMS, strength=0.0, now=NOW)) == ["a", "b", "c", "d", "e"]
    catalog = penchant.Catalog(ITEMS)
    ranked = engine.rank("u", catalog, candidate_ids=["e", "c", "a"], base_scores=[1.0, 3.0, 2.0], strength=0, now=NOW)
    assert ids(ranked) == ["c", "a", "e"]
    # Relevance alone is not normalised, so the scores are the base scores themselves.
    assert [r.score for r in ranked] == [3.0, 2.0, 1.0]


@settings(max_examples=60, deadline=None)
@given(
    base=st.lists(
        st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([0.0, 1.0, 1.0 + 1e-15])),
        min_size=1,
        max_size=30,
    ),
    interest=st.floats(-5, 5, allow_nan=False),
)
def test_strength_zero_keeps_any_base_order(base: list[float], interest: float) -> None:
    """Whatever the profile and the base scores (ties, near-ties, negatives): strength 0 gives
    the base scores' order, ties in the given order."""
    profile = penchant.UserProfile("u")
    profile.explicit_preferences["like:genre:x"] = 3.0
    items = [{"id": i, "score": s, "features": ["genre:x" if i % 2 else "genre:y"]} for i, s in enumerate(base)]
    ranked = RankingEngine(RankingConfig(strength=0.0, weights={"affinity": interest})).rank(
        profile, items, k=None, now=NOW
    )
    expected = sorted(range(len(base)), key=lambda i: (-base[i], i))
    assert ids(ranked) == expected


def test_factor_weights_follow_the_documented_formula() -> None:
    engine = RankingEngine(RankingConfig(weights={"popularity": 0.4, "recency": 0.2}, cold_start_popularity=0.3))
    weights, lam = engine.factor_weights(confidence=0.5, strength=0.8)
    assert lam == pytest.approx(0.4)
    assert weights["relevance"] == pytest.approx((1 - 0.4) + 0.4 * 1.0)
    assert weights["affinity"] == pytest.approx(0.4)
    assert weights["recency"] == pytest.approx(0.4 * 0.2)
    assert weights["popularity"] == pytest.approx(0.4 * 0.4 + 0.8 * 0.5 * 0.3)
    assert weights["novelty"] == pytest.approx(0.4 * 0.5)
    assert weights["query"] == pytest.approx(0.8 * 1.0)
    cold, lam = engine.factor_weights(confidence=0.0, strength=1.0)
    assert lam == 0.0
    assert {k: v for k, v in cold.items() if v} == {"relevance": 1.0, "popularity": 0.3, "query": 1.0}
    blind = RankingEngine(RankingConfig(use_confidence=False))
    assert blind.factor_weights(confidence=0.01, strength=0.5)[1] == 0.5
    assert blind.factor_weights(confidence=0.0, strength=0.5)[1] == 0.0


def test_profile_confidence_is_evidence_over_evidence_plus_prior(engine: penchant.Engine) -> None:
    clicks(engine, "u", BY_ID["b"], 5, ago=0.0)
    profile = engine.store.get("u")
    assert profile is not None
    # Five clicks of weight 1, at most seconds old: evidence ≈ 5, confidence ≈ 5 / (5 + 5).
    assert profile.evidence_total(NOW) == pytest.approx(5.0, rel=1e-4)
    assert profile.profile_confidence(NOW) == pytest.approx(0.5, rel=1e-4)
    ranked = engine.rank("u", ITEMS, explain=True, now=NOW)
    assert ranked[0].explanation is not None
    assert ranked[0].explanation.confidence == pytest.approx(0.5, rel=1e-4)
    assert ranked[0].explanation.personalization == pytest.approx(0.5, rel=1e-4)
    assert penchant.UserProfile("x").profile_confidence(NOW) == 0.0


def test_a_new_user_gets_mostly_the_base_order(engine: penchant.Engine) -> None:
    """One click on a robot story leaves the base order; thirty move "e" (the last of the base
    order, the other robot story) up to third: personalization grows with confidence."""
    clicks(engine, "u", ROBOT, 1)
    weak = engine.rank("u", ITEMS, explain=True, now=NOW)
    assert ids(weak) == ["a", "b", "c", "d", "e"]
    assert weak[0].explanation is not None
    assert weak[0].explanation.personalization < 0.2
    assert "little known about you yet (17% personalized)" in weak[0].explanation.why
    clicks(engine, "u", ROBOT, 29)
    assert ids(engine.rank("u", ITEMS, now=NOW)) == ["b", "a", "e", "c", "d"]


def test_cold_start_is_the_base_order_optionally_blended_with_popularity() -> None:
    plain = PersonalizedRetriever()
    assert ids(plain.retrieve("nobody", ITEMS, now=NOW)) == ["a", "b", "c", "d", "e"]
    explained = plain.retrieve("nobody", ITEMS, explain=True, now=NOW)
    assert explained[0].explanation is not None
    assert explained[0].explanation.personalization == 0.0
    assert explained[0].explanation.why.startswith("no profile yet")
    popular = PersonalizedRetriever(ranking=RankingConfig(cold_start_popularity=2.0))
    assert ids(popular.retrieve("nobody", ITEMS, now=NOW))[0] == "c"  # popularity 50
    assert ids(popular.retrieve("nobody", ITEMS, strength=0.0, now=NOW)) == ["a", "b", "c", "d", "e"]


# -- novelty and seen items ------------------------------------------------------------------


def test_seen_items_are_penalised_and_the_penalty_fades(engine: penchant.Engine) -> None:
    clicks(engine, "u", BY_ID["b"], 1, ago=0.0)
    engine.record("u", BY_ID["c"], "impression", timestamp=NOW - 7 * DAY)
    ranked = {r.id: r for r in engine.rank("u", ITEMS, k=None, explain=True, now=NOW)}
    lam = ranked["a"].explanation.personalization  # type: ignore[union-attr]
    novelty = {i: r.contributions["novelty"] for i, r in ranked.items()}  # type: ignore[index]
    # Weight 0.5 × λ, times 2^(−age/7 days): just seen ≈ full, a week ago half, never 0.
    assert novelty["b"] == pytest.approx(-0.5 * lam, rel=1e-3)
    assert novelty["c"] == pytest.approx(-0.25 * lam, rel=1e-3)
    assert novelty["a"] == novelty["d"] == novelty["e"] == 0.0
    assert ranked["b"].explanation is not None
    assert ranked["b"].explanation.seen_at == pytest.approx(NOW, abs=2)
    assert "seen" in ranked["b"].explanation.why
    assert ranked["a"].explanation is not None
    assert ranked["a"].explanation.seen_at is None


def test_novelty_finds_catalog_items_known_by_int_ids(engine: penchant.Engine) -> None:
    items = [{"id": i, "score": 1.0 - i / 10, "features": ["genre:x"]} for i in range(5)]
    catalog = penchant.Catalog(items)
    clicks(engine, "u", items[0], 3, ago=0.0)  # recorded with the str id "0"
    ranked = engine.rank("u", catalog, k=None, explain=True, now=NOW)
    novelty = {r.id: r.contributions["novelty"] for r in ranked}  # type: ignore[index]
    assert novelty[0] < 0
    assert all(v == 0 for i, v in novelty.items() if i != 0)


def test_items_seen_within_the_window_are_excluded_and_explained() -> None:
    store = penchant.InMemoryProfileStore()
    collector = penchant.FeedbackCollector(store)
    collector.record("u", BY_ID["b"], "click", timestamp=NOW - 10 * 60)
    collector.record("u", BY_ID["c"], "click", timestamp=NOW - 2 * HOUR)
    retriever = PersonalizedRetriever(store, content_filter=ContentFilter(exclude_seen_within=HOUR))
    for items in (ITEMS, penchant.Catalog(ITEMS)):
        got = ids(retriever.retrieve("u", items, k=None, now=NOW))
        assert "b" not in got
        assert "c" in got
        excluded = retriever.exclusions("u", items, now=NOW)
        assert [(e.id, e.rule, e.source) for e in excluded] == [("b", "excluded", "seen")]
        assert excluded[0].detail == "seen 10 min ago"
    # An hour later b is back.
    assert "b" in ids(retriever.retrieve("u", ITEMS, k=None, now=NOW + HOUR))
    explained = retriever.retrieve("u", ITEMS, explain=True, now=NOW)[0].explanation
    assert explained is not None
    assert "not seen in the last 1 h (always)" in explained.filters


# -- the content filter ------------------------------------------------------------------------


def test_rules_from_every_source_compose_and_each_exclusion_names_its_source(engine: penchant.Engine) -> None:
    engine.profiles.set_preference("u", "never", "genre:horror")
    engine.profiles.set_preference("u", "max", "price", 20)
    retriever = PersonalizedRetriever(
        engine.store,
        content_filter=ContentFilter(
            rules=penchant.Filters(blocked_features=frozenset({"tag:robots"})), required_attributes={"price"}
        ),
    )
    request = {"attribute_ranges": {"price": (6, None)}}
    for items in (ITEMS, penchant.Catalog(ITEMS)):
        assert ids(retriever.retrieve("u", items, k=None, filters=request, now=NOW)) == ["b"]
        excluded = {e.id: e for e in retriever.exclusions("u", items, filters=request, now=NOW)}
        assert excluded["a"][1:] == ("range", "price", "profile")  # 30 > the user's max 20
        assert excluded["c"][1:] == ("range", "price", "request")  # 5 < the request's min 6
        assert excluded["d"][1:] == ("blocked", "genre:horror", "profile")
        assert excluded["e"][1:] == ("blocked", "tag:robots", "config")
        assert "b" not in excluded
    explanation = retriever.retrieve("u", ITEMS, filters=request, explain=True, now=NOW)[0].explanation
    assert explanation is not None
    assert set(explanation.filters) == {
        "never genre:horror (your rule)",
        "price ≤ 20 (your rule)",
        "never tag:robots (always)",
        "has price (always)",
        "price ≥ 6 (this request)",
    }


def test_rules_that_no_item_can_pass_exclude_everything_with_a_reason(engine: penchant.Engine) -> None:
    engine.profiles.set_preference("u", "max", "price", 20)
    conflicting = {"attribute_ranges": {"price": (25, None)}}
    assert engine.rank("u", ITEMS, filters=conflicting, now=NOW) == []
    excluded = engine.exclusions("u", ITEMS, filters=conflicting, now=NOW)
    assert {(e.rule, e.detail, e.source) for e in excluded} == {("range", "price", "profile+request")}
    assert len(excluded) == len(ITEMS)
    unknown = {"required_features": {"genre:western"}}
    assert engine.rank("u", penchant.Catalog(ITEMS), filters=unknown, now=NOW) == []
    reasons = {(e.rule, e.detail) for e in engine.exclusions("u", penchant.Catalog(ITEMS), filters=unknown, now=NOW)}
    assert reasons == {("required", "genre:western")}
    no_attribute = penchant.Catalog([{"id": "x", "features": ["f"]}])
    assert engine.rank("u", no_attribute, now=NOW) == []
    assert engine.exclusions("u", no_attribute, now=NOW)[0][1:] == ("range", "price", "profile")


# -- explanations ----------------------------------------------------------------------------


def test_explanations_name_factors_interests_and_filters(engine: penchant.Engine) -> None:
    clicks(engine, "u", BY_ID["b"], 20)
    engine.profiles.set_preference("u", "never", "genre:horror")
    for items in (ITEMS, penchant.Catalog(ITEMS), penchant.ItemBatch(["b", "e"], features=[["genre:sci-fi"], ["x"]])):
        ranked = engine.rank("u", items, explain=True, now=NOW)
        for r in ranked:
            assert r.explanation is not None
            assert r.contributions is not None
            assert set(r.contributions) == set(penchant.RETRIEVAL_FACTORS)
            assert sum(r.contributions.values()) == pytest.approx(r.score)
            assert r.explanation.contributions == r.contributions
            assert "never genre:horror (your rule)" in r.explanation.filters
        top = ranked[0]
        assert top.explanation is not None
        matched = dict(top.explanation.matched_interests)
        assert "genre:sci-fi" in matched
        assert matched["genre:sci-fi"] > 0
        assert "you like genre:sci-fi" in top.explanation.why
    assert engine.rank("u", ITEMS, now=NOW)[0].explanation is None


def test_disliked_interests_are_explained_as_such(engine: penchant.Engine) -> None:
    engine.profiles.set_preference("u", "dislike", "genre:drama")
    ranked = {r.id: r for r in engine.rank("u", ITEMS, k=None, explain=True, now=NOW)}
    assert next(iter(ranked)) != "a"
    drama = ranked["a"].explanation
    assert drama is not None
    assert dict(drama.matched_interests)["genre:drama"] < 0
    # Min-max scaling gives the disliked item 0 affinity (the others gain); the line says why.
    assert drama.contributions["affinity"] == 0.0
    assert "you dislike genre:drama" in drama.why


# -- the compiled-profile cache --------------------------------------------------------------


def test_compiled_profiles_are_reused_per_version_and_replaced_when_it_changes(
    engine: penchant.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[Any] = []
    original = personalized_retrieval._TableProfile.__init__

    def counting(self: Any, table: Any, snapshot: Any) -> None:
        compiled.append(snapshot.key)
        original(self, table, snapshot)

    monkeypatch.setattr(personalized_retrieval._TableProfile, "__init__", counting)
    catalog = penchant.Catalog(ITEMS)
    clicks(engine, "u", BY_ID["d"], 10)
    first = ids(engine.rank("u", catalog, now=NOW))
    assert first[0] == "d"
    for _ in range(5):
        assert ids(engine.rank("u", catalog, now=NOW + 1)) == first
    assert len(compiled) == 1
    assert engine.retriever.cache_info() == {"profiles": 1, "catalog_profiles": 1}
    # A new version (more feedback) is compiled again, and ranks differently.
    clicks(engine, "u", BY_ID["e"], 40)
    assert ids(engine.rank("u", catalog, now=NOW + 2))[0] == "e"
    assert len(compiled) == 2
    assert compiled[0] != compiled[1]
    # Past max_age the same version is compiled again (its interests have decayed).
    engine.rank("u", catalog, now=NOW + 2 + personalized_retrieval.DEFAULT_MAX_AGE + 1)
    assert len(compiled) == 3
    # Another catalog gets its own compiled form.
    engine.rank("u", penchant.Catalog(ITEMS), now=NOW + 2)
    assert engine.retriever.cache_info()["catalog_profiles"] == 2


def test_a_deleted_and_recreated_profile_is_never_served_from_the_cache(engine: penchant.Engine) -> None:
    catalog = penchant.Catalog(ITEMS)
    clicks(engine, "u", BY_ID["d"], 1)  # version 1
    engine.rank("u", catalog, now=NOW)
    engine.profiles.delete("u")
    assert ids(engine.rank("u", catalog, now=NOW)) == ["a", "b", "c", "d", "e"]
    clicks(engine, "u", BY_ID["e"], 1)  # version 1 again, other content
    profile = engine.store.get("u")
    assert profile is not None
    assert profile.version == 1
    ranked = engine.rank("u", catalog, k=None, explain=True, now=NOW)
    matched = {name for r in ranked for name, _ in r.explanation.matched_interests}  # type: ignore[union-attr]
    assert "genre:horror" not in matched


def test_the_cache_is_bounded() -> None:
    store = penchant.InMemoryProfileStore()
    collector = penchant.FeedbackCollector(store)
    retriever = PersonalizedRetriever(store, cache_size=3)
    catalog = penchant.Catalog(ITEMS)
    for n in range(10):
        collector.record(f"u{n}", BY_ID["b"], "click", timestamp=NOW - HOUR)
        retriever.retrieve(f"u{n}", catalog, now=NOW)
    assert retriever.cache_info() == {"profiles": 3, "catalog_profiles": 3}
    retriever.clear_cache()
    assert retriever.cache_info() == {"profiles": 0, "catalog_profiles": 0}


# -- forms of candidates, batches, threads ---------------------------------------------------


def test_lists_batches_and_catalogs_rank_alike(engine: penchant.Engine) -> None:
    clicks(engine, "u", BY_ID["e"], 8)
    engine.record("u", BY_ID["c"], "skip", timestamp=NOW - HOUR)
    catalog = penchant.Catalog(ITEMS)
    batch = penchant.ItemBatch(
        [i["id"] for i in ITEMS],
        scores=[i["score"] for i in ITEMS],
        features=[i["features"] for i in ITEMS],
        popularity=[i.get("popularity", math.nan) for i in ITEMS],
    )
    from_list = engine.rank("u", ITEMS, k=None, now=NOW)
    from_catalog = engine.rank("u", catalog, base_scores=[i["score"] for i in ITEMS], k=None, now=NOW)
    from_batch = engine.rank("u", batch, k=None, now=NOW)
    assert ids(from_list) == ids(from_catalog) == ids(from_batch)
    assert [r.score for r in from_list] == pytest.approx([r.score for r in from_catalog])
    assert from_list[0].item is BY_ID[from_list[0].id]
    assert from_catalog[0].item is None


def test_retrieve_many_matches_one_by_one(engine: penchant.Engine) -> None:
    clicks(engine, "u1", BY_ID["e"], 10)
    clicks(engine, "u2", BY_ID["d"], 10)
    catalog = penchant.Catalog(ITEMS)
    requests: list[Any] = [
        {"user_id": "u1", "items": catalog, "now": NOW},
        penchant.RetrievalRequest("u2", ITEMS, k=2, now=NOW),
        {"user_id": "nobody", "items": ITEMS, "k": 3, "now": NOW},
        {"user_id": "u1", "items": catalog, "candidate_ids": ["a", "e"], "now": NOW, "explain": True},
    ]
    batch = engine.rank_many(requests)
    one_by_one = [
        engine.rank("u1", catalog, now=NOW),
        engine.rank("u2", ITEMS, k=2, now=NOW),
        engine.rank("nobody", ITEMS, k=3, now=NOW),
        engine.rank("u1", catalog, candidate_ids=["a", "e"], now=NOW, explain=True),
    ]
    assert [ids(b) for b in batch] == [ids(o) for o in one_by_one]
    assert batch[3][0].explanation == one_by_one[3][0].explanation
    assert engine.rank_many([]) == []


def test_a_diversity_step_applies(engine: penchant.Engine) -> None:
    items = [{"id": i, "score": 1.0 - i / 100, "features": [f"genre:{'x' if i < 5 else 'y'}"]} for i in range(10)]
    capped = PersonalizedRetriever(engine.store, ranking=RankingConfig(diversity=penchant.FeatureCap(cap=2)))
    got = capped.retrieve("u", items, k=4, now=NOW)
    assert ids(got) == [0, 1, 5, 6]


def test_threads_retrieve_at_once(engine: penchant.Engine) -> None:
    rng = np.random.default_rng(3)
    items = [{"id": i, "features": [f"genre:{i % 7}", f"tag:{i % 11}"]} for i in range(500)]
    catalog = penchant.Catalog(items)
    for u in range(8):
        clicks(engine, f"u{u}", items[u], 5)
    requests = [(f"u{n % 8}", rng.choice(500, 100, replace=False), rng.random(100)) for n in range(64)]
    expected = [ids(engine.rank(u, catalog, candidate_ids=c, base_scores=b, now=NOW)) for u, c, b in requests]
    results: list[list[Any]] = [[] for _ in requests]
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for n in range(offset, len(requests), 4):
                u, c, b = requests[n]
                results[n] = ids(engine.rank(u, catalog, candidate_ids=c, base_scores=b, now=NOW))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == expected


def test_ranking_engine_ranks_a_profile_without_a_store() -> None:
    profile = penchant.UserProfile("u")
    profile.set_explicit_preference("like", "genre:horror")
    engine = RankingEngine()
    assert ids(engine.rank(profile, ITEMS, k=1, now=NOW)) == ["d"]
    assert ids(engine.rank(None, ITEMS, k=2, now=NOW)) == ["a", "b"]
    filtered = engine.rank(profile, ITEMS, content_filter=ContentFilter(required_attributes={"price"}), k=None, now=NOW)
    assert "e" not in ids(filtered)
