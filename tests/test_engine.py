"""penchant.Engine: wiring, the embedded default, sync and async twins, lifecycle, and the
simulation in which personalization must beat the caller's order."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import penchant
from penchant.profile_store import default_database_url

from .store_support import cluster_url, new_tenant, postgres_url, redis_url

NOW = float(int(time.time()))
HOUR = 3_600.0

ITEMS: list[dict[str, Any]] = [
    {"id": "a", "score": 0.9, "features": ["genre:drama"]},
    {"id": "b", "score": 0.8, "features": ["genre:sci-fi", "tag:space"]},
    {"id": "c", "score": 0.7, "features": ["genre:sci-fi"]},
    {"id": "d", "score": 0.6, "features": ["genre:horror"]},
]


def memory_engine(**kwargs: Any) -> penchant.Engine:
    return penchant.Engine(database_url="sqlite:///:memory:", **kwargs)


# -- wiring and the embedded default -------------------------------------------------------------


def test_the_parts_share_one_store() -> None:
    with memory_engine() as engine:
        assert engine.profiles.store is engine.store
        assert engine.feedback.store is engine.store
        assert engine.retriever.store is engine.store
        assert engine.retriever.expander is engine.expander
        assert engine.feedback.processor.model is engine.store.model
        assert engine.tenant == "default"
        engine.record("u", ITEMS[1], "click")
        assert engine.profiles.get("u") is not None


def test_no_arguments_open_sqlite_in_the_users_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PENCHANT_DATABASE_URL", raising=False)
    monkeypatch.delenv("PENCHANT_REDIS_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = tmp_path / "data" / "penchant" / "penchant.db"
    assert default_database_url() == f"sqlite:///{expected}"
    with penchant.Engine() as engine:
        engine.record("u", ITEMS[1], "click")
    assert expected.is_file()
    with penchant.Engine() as engine:  # the profile is there for the next process
        profile = engine.profiles.get("u")
        assert profile is not None
        assert profile.event_count == 1
    monkeypatch.setenv("PENCHANT_DATABASE_URL", "sqlite:///:memory:")
    assert default_database_url() == "sqlite:///:memory:"


def test_a_given_store_is_used_as_it_is_and_left_open() -> None:
    store = penchant.InMemoryProfileStore(tenant="shop")
    with penchant.Engine(store=store) as engine:
        assert engine.store is store
        assert engine.tenant == "shop"
        engine.record("u", ITEMS[0], "click")
    assert store.get("u") is not None  # still usable: the engine did not close it
    assert penchant.Engine(store=store, tenant="shop").tenant == "shop"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"store": penchant.InMemoryProfileStore(), "database_url": "sqlite:///:memory:"}, "not both"),
        ({"store": penchant.InMemoryProfileStore(tenant="a"), "tenant": "b"}, "serves tenant 'a'"),
        ({"store": "redis://localhost"}, "store must be a ProfileStore"),
        ({"tenant": "bad\ntenant", "database_url": "sqlite:///:memory:"}, "control characters"),
        ({"config": {"ranking": None}}, "config must be an EngineConfig"),
        ({"database_url": "mysql://x"}, "database URLs start with"),
    ],
)
def test_bad_engine_arguments_are_validation_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(penchant.ValidationError, match=message):
        penchant.Engine(**kwargs)


def test_config_values_are_checked() -> None:
    with pytest.raises(penchant.ValidationError, match=r"EngineConfig\.ranking"):
        penchant.EngineConfig(ranking={"strength": 0.5})  # type: ignore[arg-type]
    with pytest.raises(penchant.ValidationError, match="strength"):
        penchant.RankingConfig(strength=1.5)
    with pytest.raises(penchant.ValidationError, match="unknown factor"):
        penchant.RankingConfig(weights={"freshness": 1.0})
    with pytest.raises(penchant.ValidationError, match="exclude_seen_within"):
        penchant.ContentFilter(exclude_seen_within=-1)
    with pytest.raises(penchant.ValidationError, match="rating_scale"):
        memory_engine(config=penchant.EngineConfig(feedback=penchant.FeedbackConfig(rating_scale=(5, 1))))


def test_config_reaches_every_part() -> None:
    config = penchant.EngineConfig(
        ranking=penchant.RankingConfig(strength=0.0),
        feedback=penchant.FeedbackConfig(weights={"click": 3.0}),
        max_history=7,
        compiled_cache_size=2,
    )
    with memory_engine(config=config) as engine:
        assert engine.store.model.max_history == 7
        assert engine.feedback.processor.rules[penchant.FeedbackType.CLICK].weight == 3.0
        for n in range(10):
            engine.record("u", {"id": f"x{n}", "features": ["genre:horror"]}, "click", timestamp=NOW - n)
        profile = engine.profiles.get("u")
        assert profile is not None
        assert len(profile.interaction_history) == 7
        assert [r.id for r in engine.rank("u", ITEMS, now=NOW)] == ["a", "b", "c", "d"]  # strength 0


def test_close_is_idempotent_and_a_closed_engine_refuses_work() -> None:
    engine = memory_engine()
    engine.close()
    engine.close()
    with pytest.raises(penchant.PenchantError, match="closed"):
        engine.rank("u", ITEMS)
    with pytest.raises(penchant.PenchantError, match="closed"):
        engine.record("u", ITEMS[0], "click")


# -- recording ---------------------------------------------------------------------------------


def test_bad_feedback_changes_nothing() -> None:
    with memory_engine() as engine:
        engine.record("u", ITEMS[1], "click", context={"query": "space"})
        before = engine.profiles.get("u")
        learned = engine.expander.to_dict()
        bad_calls: list[dict[str, Any]] = [
            {"item": ITEMS[1], "feedback_type": "rating", "value": 9},
            {"item": ITEMS[1], "feedback_type": "teleport"},
            {"item": {"id": "x"}, "feedback_type": "click"},
            {"item": ITEMS[1], "feedback_type": "click", "context": {"query": 42}},
            {"item": ITEMS[1], "feedback_type": "click", "context": {"query": "q" * 5000}},
            {"item": ITEMS[1], "feedback_type": "click", "timestamp": NOW + 10 * HOUR},
        ]
        for call in bad_calls:
            with pytest.raises(penchant.ValidationError):
                engine.record("u", **call)
        with pytest.raises(penchant.ValidationError, match="event 1"):
            engine.record_many(
                [
                    {"user_id": "u", "item": ITEMS[0], "feedback_type": "click"},
                    {"user_id": "u", "item": ITEMS[0], "feedback_type": "click", "context": {"query": ["x"]}},
                ]
            )
        assert engine.profiles.get("u") == before
        assert engine.expander.to_dict() == learned


def test_record_many_learns_queries_and_returns_event_ids() -> None:
    with memory_engine() as engine:
        event_ids = engine.record_many(
            [
                {"user_id": "u1", "item": ITEMS[1], "feedback_type": "click", "context": {"query": "space"}},
                penchant.ImplicitFeedback(
                    "u2", "c", "click", features={"genre:sci-fi": 1.0}, context={"query": "space"}, event_id="e2"
                ),
                {"user_id": "u1", "item": ITEMS[0], "feedback_type": "skip"},
            ]
        )
        assert len(event_ids) == 3
        assert event_ids[1] == "e2"
        assert engine.expander.associations("space") == pytest.approx({"genre:sci-fi": 0.75, "tag:space": 0.25})
        assert engine.record_many([]) == []


def test_a_bad_associations_file_is_refused_before_anything_opens(tmp_path: Path) -> None:
    path = tmp_path / "associations.json"
    path.write_text('{"version": 1, "terms": {"t": {"features": {"f": "NaN?"}}}}')
    with pytest.raises(penchant.ValidationError, match="association"):
        memory_engine(config=penchant.EngineConfig(query_associations_path=path))


def test_query_associations_are_kept_in_the_configured_file(tmp_path: Path) -> None:
    path = tmp_path / "associations.json"
    config = penchant.EngineConfig(query_associations_path=path)
    with memory_engine(config=config) as engine:
        engine.record("u", ITEMS[3], "click", context={"query": "scary"})
    assert path.is_file()
    with memory_engine(config=config) as engine:
        assert engine.expander.associations("scary") == {"genre:horror": 1.0}


# -- async twins ---------------------------------------------------------------------------------


def test_async_twins_do_what_the_sync_methods_do() -> None:
    catalog = penchant.Catalog(ITEMS)

    def sync_run() -> list[Any]:
        with memory_engine() as engine:
            feedback = engine.record("u", ITEMS[2], "click", timestamp=NOW - HOUR, event_id="e1")
            engine.record_many(
                [
                    {
                        "user_id": "u",
                        "item": ITEMS[3],
                        "feedback_type": "rating",
                        "value": 5,
                        "timestamp": NOW - HOUR,
                        "event_id": "e2",
                        "context": {"query": "scary"},
                    }
                ]
            )
            return [
                feedback.event_id,
                engine.rank("u", catalog, explain=True, now=NOW),
                engine.rank_many([{"user_id": "u", "items": ITEMS, "now": NOW}]),
                engine.expand_query("u", "scary", now=NOW),
                engine.exclusions("u", ITEMS, filters={"blocked_features": {"genre:drama"}}, now=NOW),
            ]

    async def async_run() -> list[Any]:
        async with memory_engine() as engine:
            feedback = await engine.arecord("u", ITEMS[2], "click", timestamp=NOW - HOUR, event_id="e1")
            await engine.arecord_many(
                [
                    {
                        "user_id": "u",
                        "item": ITEMS[3],
                        "feedback_type": "rating",
                        "value": 5,
                        "timestamp": NOW - HOUR,
                        "event_id": "e2",
                        "context": {"query": "scary"},
                    }
                ]
            )
            results = [
                feedback.event_id,
                await engine.arank("u", catalog, explain=True, now=NOW),
                await engine.arank_many([{"user_id": "u", "items": ITEMS, "now": NOW}]),
                await engine.aexpand_query("u", "scary", now=NOW),
                await engine.aexclusions("u", ITEMS, filters={"blocked_features": {"genre:drama"}}, now=NOW),
            ]
        with pytest.raises(penchant.PenchantError, match="closed"):
            await engine.arank("u", ITEMS)
        return results

    expected = sync_run()
    got = asyncio.run(async_run())
    assert got == expected
    assert got[1][0].id == "d"
    assert got[3].expansions
    assert got[4][0].id == "a"


def test_the_collector_has_async_twins_too() -> None:
    async def run() -> tuple[Any, Any]:
        store = penchant.InMemoryProfileStore()
        collector = penchant.FeedbackCollector(store)
        await collector.arecord("u", ITEMS[0], "click", event_id="x")
        await collector.arecord_many([{"user_id": "u", "item": ITEMS[0], "feedback_type": "click", "event_id": "x"}])
        return store.get("u"), await penchant.PersonalizedRetriever(store).aretrieve("u", ITEMS, k=1, now=NOW)

    profile, ranked = asyncio.run(run())
    assert profile is not None
    assert profile.event_count == 1
    assert ranked[0].id == "a"


# -- the simulation ------------------------------------------------------------------------------

GENRES = 8
TAGS_PER_GENRE = 5


def ndcg_at_10(ranked: list[Any], relevant: set[Any]) -> float:
    gains = sum(1.0 / math.log2(i + 2) for i, item in enumerate(ranked[:10]) if item in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return gains / ideal if ideal else 0.0


def test_personalization_beats_the_base_order_in_a_simulation() -> None:
    """Users with hidden tastes (two liked genres of eight) see the top 10 of 200 candidates
    ranked by the engine, click what they like and skip the rest, for six rounds. The
    candidates' base scores know nothing of tastes. NDCG@10 of the engine's order must start
    where the base order is and end far above it."""
    rng = np.random.default_rng(7)
    n_items, n_users, rounds = 1_000, 40, 6
    genre = rng.integers(0, GENRES, n_items)
    items = [
        {
            "id": i,
            "features": [f"genre:{genre[i]}", f"tag:{genre[i]}-{rng.integers(TAGS_PER_GENRE)}", f"tag:any-{i % 13}"],
            "popularity": float(rng.pareto(2.0)),
        }
        for i in range(n_items)
    ]
    catalog = penchant.Catalog(items)
    tastes = {f"user{u}": set(rng.choice(GENRES, 2, replace=False).tolist()) for u in range(n_users)}
    start = NOW - 30 * 86_400.0

    def evaluate(engine: penchant.Engine, when: float) -> tuple[float, float]:
        personalized, base_order = [], []
        for user, liked in tastes.items():
            candidates = rng.choice(n_items, 200, replace=False)
            base = rng.random(200)
            relevant = {int(i) for i in candidates if genre[i] in liked}
            ranked = engine.rank(user, catalog, candidate_ids=candidates, base_scores=base, now=when)
            personalized.append(ndcg_at_10([r.id for r in ranked], relevant))
            base_order.append(ndcg_at_10(candidates[np.argsort(-base, kind="stable")].tolist(), relevant))
        return float(np.mean(personalized)), float(np.mean(base_order))

    with memory_engine() as engine:
        first, first_base = evaluate(engine, start)
        assert first == pytest.approx(first_base)  # nobody known: the base order itself
        for round_ in range(rounds):
            when = start + round_ * HOUR
            events = []
            for user, liked in tastes.items():
                candidates = rng.choice(n_items, 200, replace=False)
                shown = engine.rank(user, catalog, candidate_ids=candidates, base_scores=rng.random(200), now=when)
                for r in shown:
                    kind = "click" if genre[r.id] in liked else "skip"
                    events.append({"user_id": user, "item": items[r.id], "feedback_type": kind, "timestamp": when})
            engine.record_many(events)
        final, final_base = evaluate(engine, start + rounds * HOUR)
    assert final > final_base + 0.3, (final, final_base)
    assert final > 0.75


# -- on the real servers --------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.parametrize("redis", ["standalone", "cluster"])
def test_two_engines_on_shared_servers_see_each_others_feedback(redis: str) -> None:
    """Two engines (two processes' worth: each with its own in-process tier and compiled
    profiles) on one Redis and one PostgreSQL: what one records, the other ranks with."""
    url = redis_url() if redis == "standalone" else cluster_url()
    tenant = new_tenant()
    catalog = penchant.Catalog(ITEMS)
    with (
        penchant.Engine(redis_url=url, database_url=postgres_url(), tenant=tenant) as first,
        penchant.Engine(redis_url=url, database_url=postgres_url(), tenant=tenant) as second,
    ):
        assert second.store.wait_until_listening()  # type: ignore[attr-defined]
        assert [r.id for r in second.rank("u", catalog, now=NOW)] == ["a", "b", "c", "d"]
        for n in range(30):
            first.record("u", {"id": f"x{n}", "features": ["genre:horror"]}, "click", timestamp=NOW - n)
        deadline = time.monotonic() + 10
        while second.rank("u", catalog, now=NOW)[0].id != "d" and time.monotonic() < deadline:
            time.sleep(0.05)  # the invalidation travels by pub/sub
        assert second.rank("u", catalog, now=NOW)[0].id == "d"
        first.profiles.delete("u")
        deadline = time.monotonic() + 10
        while second.rank("u", catalog, now=NOW)[0].id != "a" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r.id for r in second.rank("u", catalog, now=NOW)] == ["a", "b", "c", "d"]
