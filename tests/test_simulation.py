"""The simulation behind ``penchant demo``: its metrics on hand-computed cases, its world, and
the claim the demo makes: that penchant's order, learning from the simulated feedback, beats
the non-personalized order."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from penchant import ValidationError
from penchant.engine import Engine
from penchant.simulation import (
    DAY,
    SimulationConfig,
    explain_next_request,
    make_world,
    ndcg_at_k,
    plot_learning_curve,
    precision_at_k,
    run_simulation,
    simulation_start,
    summarize_latencies,
)

SMALL = SimulationConfig(users=16, items=1_000, candidates=200, rounds=6, seed=3)


@pytest.fixture
def engine() -> Iterator[Engine]:
    with Engine(database_url="sqlite:///:memory:") as e:
        yield e


# -- metrics --------------------------------------------------------------------------------------


def test_precision_counts_relevant_grades_in_the_first_k() -> None:
    assert precision_at_k([3, 0, 1, 0, 2], 4) == 0.5
    assert precision_at_k([0, 0, 0], 3) == 0.0
    # A list shorter than k counts its missing positions as misses.
    assert precision_at_k([1, 1], 4) == 0.5


def test_ndcg_on_hand_computed_cases() -> None:
    # DCG = (2^0 − 1)/log2(2) + (2^2 − 1)/log2(3) = 3/1.58496; ideal = 3/1.
    assert ndcg_at_k([0, 2], [2, 0], 2) == pytest.approx((3 / math.log2(3)) / 3)
    assert ndcg_at_k([3, 1, 0], [0, 1, 3], 3) == pytest.approx(1.0)
    # Only the first k count, against the best k of all candidates.
    assert ndcg_at_k([1, 3], [3, 1, 2], 1) == pytest.approx(1 / 7)
    assert ndcg_at_k([0, 0], [0, 0, 0], 2) == 0.0


def test_latency_summary_percentiles() -> None:
    summary = summarize_latencies("step", [float(v) for v in range(1, 101)])
    assert summary.calls == 100
    assert summary.p50 == pytest.approx(50.5)
    assert summary.p99 == pytest.approx(99.01)
    assert summary.max == 100.0
    assert math.isnan(summarize_latencies("none", []).p50)


# -- the world ------------------------------------------------------------------------------------


def test_world_is_deterministic_for_a_seed() -> None:
    a, b, c = make_world(SMALL), make_world(SMALL), make_world(replace(SMALL, seed=4))
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.category_taste, b.category_taste)
    assert a.item_records == b.item_records
    assert not np.array_equal(a.category_taste, c.category_taste)


def test_world_shape_and_grades() -> None:
    world = make_world(SMALL)
    assert len(world.item_ids) == len(set(world.item_ids)) == SMALL.items
    np.testing.assert_allclose(np.linalg.norm(world.embeddings, axis=1), 1.0, rtol=1e-5)
    every_item = np.arange(SMALL.items)
    for user in range(SMALL.users):
        grades = world.grades(user, every_item)
        # Grades follow the catalog quantiles 90/95/98 %.
        assert (grades >= 1).mean() == pytest.approx(0.10, abs=0.002)
        assert (grades == 3).mean() == pytest.approx(0.02, abs=0.002)
    record = world.item_records[0]
    assert record["features"][0].startswith("category:")
    assert len(record["features"]) == 4


def test_favourite_categories_are_the_users_most_relevant() -> None:
    """Hidden tastes drive relevance: most of a user's relevant items lie in the categories
    that user's hidden weights favour."""
    world = make_world(SMALL)
    every_item = np.arange(SMALL.items)
    for user in range(SMALL.users):
        relevant = world.grades(user, every_item) >= 1
        top_categories = np.argsort(-world.category_taste[user])[:3]
        assert np.isin(world.category[relevant], top_categories).mean() > 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users": 0}, "users must be a positive int"),
        ({"candidates": 2_000}, "cannot exceed items"),
        ({"k": 300}, "cannot exceed candidates"),
        ({"seed": -1}, "seed must be a non-negative int"),
        ({"tags": 2}, "tags must be at least"),
    ],
)
def test_bad_config_is_a_validation_error(change: dict[str, int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        replace(SMALL, **change)


# -- the loop -------------------------------------------------------------------------------------


def test_personalization_beats_the_base_order(engine: Engine) -> None:
    result = run_simulation(engine, SMALL)
    first, last = result.rounds[0], result.rounds[-1]
    # Round 1 is the cold start: no profile yet, so penchant keeps the search's order.
    assert first.penchant_ndcg == pytest.approx(first.base_ndcg)
    assert first.penchant_precision == pytest.approx(first.base_precision)
    # After a few rounds of feedback penchant's order is clearly better on every metric.
    assert last.penchant_ndcg > last.base_ndcg + 0.1
    assert last.penchant_precision > last.base_precision + 0.15
    assert last.penchant_ctr > last.base_ctr + 0.05
    late = result.rounds[-3:]
    assert min(m.penchant_ndcg for m in late) > first.penchant_ndcg + 0.1
    assert all(m.events > 0 for m in result.rounds)
    assert len(result.rank_seconds) == SMALL.users * SMALL.rounds
    assert len(result.record_seconds) <= SMALL.users * SMALL.rounds


def test_explain_next_request_shows_the_hidden_grade_and_why(engine: Engine) -> None:
    world = make_world(SMALL)
    result = run_simulation(engine, SMALL, world=world)
    explained = explain_next_request(engine, world, result, user=2, k=3)
    assert len(explained) == 3
    row_of = {item_id: row for row, item_id in enumerate(world.item_ids)}
    for item in explained:
        assert item.grade == world.grades(2, np.asarray([row_of[item.item_id]]))[0]
        assert item.features == world.item_records[row_of[item.item_id]]["features"]
        assert item.why
    assert "likes category:c" in world.hidden_tastes(2)


def test_a_run_is_deterministic_for_a_seed() -> None:
    config = replace(SMALL, rounds=3, users=8)
    runs = []
    for _ in range(2):
        with Engine(database_url="sqlite:///:memory:") as engine:
            runs.append(run_simulation(engine, config).rounds)
    assert runs[0] == runs[1]


def test_a_run_does_not_depend_on_the_day_it_starts() -> None:
    """Rounds are simulated days from a start; forward decay depends only on differences of
    times, so a demo run today and one a month ago agree."""
    config = replace(SMALL, rounds=3, users=8)
    runs = []
    for start in (simulation_start(3), simulation_start(3) - 37 * DAY):
        with Engine(database_url="sqlite:///:memory:") as engine:
            runs.append(run_simulation(engine, config, start=start).rounds)
    assert runs[0] == runs[1]


def test_simulation_start_leaves_every_event_in_the_past() -> None:
    now = 1_800_000_000.5
    start = simulation_start(10, now=now)
    assert start % DAY == 0
    assert start + 10 * DAY <= now < start + 11 * DAY


def test_round_callbacks(engine: Engine) -> None:
    config = replace(SMALL, rounds=2, users=5)
    seen_rounds: list[int] = []
    requests = []
    run_simulation(
        engine, config, on_round=lambda m: seen_rounds.append(m.round), on_request=lambda: requests.append(1)
    )
    assert seen_rounds == [1, 2]
    assert len(requests) == 10


def test_plot_is_a_png(tmp_path: Path, engine: Engine) -> None:
    config = replace(SMALL, rounds=2, users=4)
    result = run_simulation(engine, config)
    path = plot_learning_curve(result, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
