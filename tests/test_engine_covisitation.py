"""penchant.Engine with co-visitation (EngineConfig(covisitation=CoVisitationConfig())): fed by
every record path, a ranking factor for every candidate form, explained, and kept across
restarts (a model file, or a rebuild from the event log)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import penchant

NOW = float(int(time.time())) - 3_600.0
LATER = NOW + 1_000.0  # when the rankings are asked for: a fixed moment, so they compare equal

# Every item carries the same feature, so the profile's interests cannot tell them apart, and
# the same base score, so the caller's order is the input order: "next" comes last unless
# co-visitation lifts it.
IDS = ["first", "x1", "x2", "x3", "x4", "x5", "next"]
ITEMS: list[dict[str, Any]] = [{"id": i, "score": 0.0, "features": ["genre:film"]} for i in IDS]
BY_ID = {item["id"]: item for item in ITEMS}
CANDIDATES = [item for item in ITEMS if item["id"] != "first"]


def on(**options: Any) -> penchant.EngineConfig:
    return penchant.EngineConfig(covisitation=penchant.CoVisitationConfig(**options))


def others_events() -> list[dict[str, Any]]:
    """Twenty other users who each took "first" and then "next", and thirty who took only "x5",
    which is so the most popular candidate but co-visited with nothing."""
    events = [
        {"user_id": f"fan{u}", "item": BY_ID["x5"], "feedback_type": "click", "timestamp": NOW + u, "event_id": f"f{u}"}
        for u in range(30)
    ]
    for u in range(20):
        for step, item in enumerate(("first", "next")):
            events.append(
                {
                    "user_id": f"other{u}",
                    "item": BY_ID[item],
                    "feedback_type": "click",
                    "timestamp": NOW + 10 * u + step,
                    "event_id": f"o{u}-{step}",
                }
            )
    return events


def teach(engine: penchant.Engine) -> None:
    engine.record_many(others_events())
    engine.record("me", BY_ID["first"], "click", timestamp=NOW + 500, event_id="me-0")


async def ateach(engine: penchant.Engine) -> None:
    await engine.arecord_many(others_events())
    await engine.arecord("me", BY_ID["first"], "click", timestamp=NOW + 500, event_id="me-0")


def position(ranked: list[penchant.RankedItem], item_id: str) -> int:
    return [r.id for r in ranked].index(item_id)


def memory_engine(config: penchant.EngineConfig | None = None, **kwargs: Any) -> penchant.Engine:
    return penchant.Engine(database_url="sqlite:///:memory:", config=config, **kwargs)


# The three candidate forms, each ranking every item but "first".
def as_dicts() -> tuple[Any, dict[str, Any]]:
    return CANDIDATES, {}


def as_batch() -> tuple[Any, dict[str, Any]]:
    return penchant.ItemBatch([i["id"] for i in CANDIDATES], features=[i["features"] for i in CANDIDATES]), {}


def as_catalog() -> tuple[Any, dict[str, Any]]:
    return penchant.Catalog(ITEMS), {"candidate_ids": [i["id"] for i in CANDIDATES]}


FORMS = pytest.mark.parametrize("form", [as_dicts, as_batch, as_catalog], ids=["dicts", "batch", "catalog"])


# -- ranking ----------------------------------------------------------------------------------


@FORMS
def test_the_co_visited_item_ranks_higher_with_the_option(form: Any) -> None:
    items, kwargs = form()
    with memory_engine() as off, memory_engine(on()) as with_covisitation:
        teach(off)
        teach(with_covisitation)
        without = off.rank("me", items, k=None, **kwargs)
        ranked = with_covisitation.rank("me", items, k=None, **kwargs)
    assert position(without, "next") == len(CANDIDATES) - 1  # the caller's order: last
    assert position(ranked, "next") == 0
    assert position(ranked, "x5") == 1  # the most popular, after the co-visited one
    assert off.covisitation is None
    assert with_covisitation.covisitation is not None
    assert with_covisitation.covisitation.events == 71


def test_integer_catalog_ids_match_the_feedbacks_string_ids() -> None:
    items = [{"id": n, "features": ["genre:film"]} for n in range(1, 8)]  # 1 = first, 7 = next
    with memory_engine(on()) as engine:
        for u in range(5):
            engine.record(f"o{u}", items[0], "click", timestamp=NOW + 10 * u)
            engine.record(f"o{u}", items[6], "click", timestamp=NOW + 10 * u + 1)
        engine.record("me", items[0], "click", timestamp=NOW + 500)
        ranked = engine.rank("me", penchant.Catalog(items), candidate_ids=np.arange(2, 8, dtype=np.int64), k=1)
    assert ranked[0].id == 7


def test_a_user_without_a_profile_keeps_the_callers_order() -> None:
    with memory_engine(on()) as engine:
        teach(engine)
        ranked = engine.rank("stranger", CANDIDATES, k=None)
    assert [r.id for r in ranked] == [i["id"] for i in CANDIDATES]


def test_weights_of_zero_turn_the_factors_off() -> None:
    with memory_engine(on(weights={"covisitation": 0.0, "learned_popularity": 0.0})) as engine:
        teach(engine)
        ranked = engine.rank("me", CANDIDATES, k=None, now=LATER)
    assert position(ranked, "next") == len(CANDIDATES) - 1


def test_the_learned_popularity_alone_prefers_the_most_taken_item() -> None:
    with memory_engine(on(weights={"covisitation": 0.0})) as engine:
        teach(engine)
        ranked = engine.rank("me", CANDIDATES, k=None, now=LATER)
    assert [r.id for r in ranked[:2]] == ["x5", "next"]


def test_rank_many_uses_it_too() -> None:
    with memory_engine(on()) as engine:
        teach(engine)
        [ranked] = engine.rank_many([{"user_id": "me", "items": CANDIDATES, "k": 1}])
    assert ranked[0].id == "next"


# -- explanations -----------------------------------------------------------------------------


def test_the_explanation_names_the_factor_and_the_item_it_follows() -> None:
    with memory_engine(on()) as engine:
        teach(engine)
        ranked = engine.rank("me", CANDIDATES, k=None, explain=True, now=LATER)
    top = ranked[0]
    assert top.id == "next"
    assert top.contributions is not None
    assert top.contributions["covisitation"] > 0
    assert sum(top.contributions.values()) == pytest.approx(top.score)
    assert top.explanation is not None
    assert top.explanation.co_visited == (("first", pytest.approx(1.0)),)
    assert "often chosen after first (+" in top.explanation.why
    # Every result names both factors; one nobody took after "first" gets nothing from them.
    rest = ranked[1]
    assert rest.contributions is not None
    assert rest.explanation is not None
    assert rest.contributions["covisitation"] == 0.0
    assert "learned_popularity" in rest.contributions
    assert rest.explanation.co_visited == ()


def test_without_the_option_explanations_have_no_co_visitation() -> None:
    with memory_engine() as engine:
        teach(engine)
        ranked = engine.rank("me", CANDIDATES, k=1, explain=True)
    assert ranked[0].contributions is not None
    assert "covisitation" not in ranked[0].contributions
    assert ranked[0].explanation is not None
    assert ranked[0].explanation.co_visited == ()


# -- async --------------------------------------------------------------------------------------


def test_the_async_twins_learn_and_rank_as_the_sync_methods_do() -> None:
    async def run() -> tuple[list[penchant.RankedItem], bytes]:
        async with memory_engine(on()) as engine:
            await ateach(engine)
            ranked = await engine.arank("me", CANDIDATES, k=None, explain=True, now=LATER)
            assert engine.covisitation is not None
            return ranked, engine.covisitation.to_bytes()

    aranked, abytes = asyncio.run(run())
    with memory_engine(on()) as engine:
        teach(engine)
        ranked = engine.rank("me", CANDIDATES, k=None, explain=True, now=LATER)
        assert engine.covisitation is not None
        assert engine.covisitation.to_bytes() == abytes
    assert [(r.id, r.score) for r in aranked] == [(r.id, r.score) for r in ranked]
    assert aranked[0].id == "next"
    assert aranked[0].explanation is not None
    assert ranked[0].explanation is not None
    assert aranked[0].explanation.why == ranked[0].explanation.why


# -- persistence --------------------------------------------------------------------------------


def test_the_model_file_is_written_at_close_and_loaded_at_open(tmp_path: Path) -> None:
    path = tmp_path / "covisitation.bin"
    database = f"sqlite:///{tmp_path / 'p.db'}"
    config = on(path=path, rebuild=False)
    with penchant.Engine(database_url=database, config=config) as engine:
        teach(engine)
        assert engine.covisitation is not None
        saved = engine.covisitation.to_bytes()
        before = engine.rank("me", CANDIDATES, k=None, now=LATER)
    assert path.read_bytes() == saved
    with penchant.Engine(database_url=database, config=config) as engine:
        assert engine.covisitation is not None
        assert engine.covisitation.events == 71
        assert engine.rank("me", CANDIDATES, k=None, now=LATER) == before
        engine.record("me", BY_ID["x1"], "click", timestamp=NOW + 600)
        engine.save_covisitation()  # at any time, not only at close
        assert engine.covisitation.to_bytes() == path.read_bytes()
    assert not list(tmp_path.glob("*.partial"))


def test_without_a_file_the_model_is_rebuilt_from_the_event_log(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'p.db'}"
    with penchant.Engine(database_url=database, config=on()) as engine:
        teach(engine)
        before = engine.rank("me", CANDIDATES, k=None, explain=True, now=LATER)
        assert engine.covisitation is not None
        learned = engine.covisitation.neighbours("first")
    with penchant.Engine(database_url=database, config=on()) as engine:
        assert engine.covisitation is not None
        assert engine.covisitation.events == 71
        assert dict(engine.covisitation.neighbours("first")) == pytest.approx(dict(learned))
        assert engine.rank("me", CANDIDATES, k=None, explain=True, now=LATER) == before
        # A retried event (same id) teaches nothing after a restart either.
        engine.record("me", BY_ID["first"], "click", timestamp=NOW + 500, event_id="me-0")
        assert engine.covisitation.events == 71
    with penchant.Engine(database_url=database, config=on(rebuild=False)) as engine:
        assert engine.covisitation is not None
        assert engine.covisitation.events == 0


def test_deleting_a_user_leaves_no_trace_of_them_in_the_model(tmp_path: Path) -> None:
    path = tmp_path / "covisitation.bin"
    database = f"sqlite:///{tmp_path / 'p.db'}"
    secret = "user-4f1c9e-secret@example.org"
    with penchant.Engine(database_url=database, config=on(path=path)) as engine:
        teach(engine)
        engine.record(secret, BY_ID["x3"], "click", timestamp=NOW + 700, event_id="s-0")
        engine.record(secret, BY_ID["x4"], "click", timestamp=NOW + 701, event_id="s-1")
        assert engine.covisitation is not None
        assert dict(engine.covisitation.neighbours("x3"))["x4"] > 0
        engine.profiles.delete(secret)
    # The saved model holds items and weights only: no user id (nor event id) in any form.
    data = path.read_bytes()
    for needle in (secret, "4f1c9e", "other1", "me-0", "s-0"):
        assert needle.encode() not in data
        assert needle.encode("utf-16-le") not in data
    # Rebuilt from the log, it no longer holds what the deleted user taught.
    path.unlink()
    with penchant.Engine(database_url=database, config=on(path=path)) as engine:
        assert engine.covisitation is not None
        assert engine.covisitation.events == 71
        assert engine.covisitation.neighbours("x3") == []


def test_a_model_file_with_other_options_or_damaged_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "covisitation.bin"
    path.write_bytes(penchant.CoVisitation(window=5).to_bytes())
    with pytest.raises(penchant.ValidationError, match=r"other options.*window"):
        memory_engine(on(path=path))
    penchant.Engine(database_url="sqlite:///:memory:", config=on(path=path, options={"window": 5})).close()
    path.write_bytes(b"not a model")
    with pytest.raises(penchant.ValidationError, match="co-visitation model"):
        memory_engine(on(path=path))


def test_save_without_a_path_is_a_validation_error() -> None:
    with memory_engine(on()) as engine, pytest.raises(penchant.ValidationError, match="path"):
        engine.save_covisitation()
    with memory_engine() as engine, pytest.raises(penchant.ValidationError, match="path"):
        engine.save_covisitation()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weights": {"covisitation": float("nan")}}, "weight"),
        ({"weights": {"bogus": 1.0}}, "unknown factor"),
        ({"weights": [1.0]}, "mapping"),
        ({"options": {"window": 0}}, "window"),
        ({"options": {"nonsense": 1}}, "nonsense"),
        ({"options": 3}, "mapping"),
        ({"path": 3}, "path"),
        ({"rebuild": "yes"}, "rebuild"),
    ],
)
def test_bad_co_visitation_config_is_a_validation_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(penchant.ValidationError, match=message):
        penchant.CoVisitationConfig(**options)


def test_the_config_is_immutable_and_completes_the_weights() -> None:
    config = penchant.CoVisitationConfig(weights={"covisitation": 2.0}, options={"window": 5})
    assert dict(config.weights) == {"covisitation": 2.0, "learned_popularity": 0.02}
    with pytest.raises(TypeError):
        config.weights["covisitation"] = 3.0  # type: ignore[index]
    with pytest.raises(TypeError):
        config.options["window"] = 6  # type: ignore[index]


def test_engine_config_refuses_anything_but_a_co_visitation_config() -> None:
    with pytest.raises(penchant.ValidationError, match="CoVisitationConfig"):
        penchant.EngineConfig(covisitation=True)  # type: ignore[arg-type]


def test_the_retriever_refuses_a_bad_model_or_weights_without_one() -> None:
    with pytest.raises(penchant.ValidationError, match="CoVisitation"):
        penchant.PersonalizedRetriever(covisitation=object())  # type: ignore[arg-type]
    with pytest.raises(penchant.ValidationError, match="need a covisitation"):
        penchant.PersonalizedRetriever(covisitation_weights={"covisitation": 1.0})
