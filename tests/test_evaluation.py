"""penchant.evaluation and `penchant eval`: metrics on hand-computed cases, the protocol on tiny
hand-made data sets, the readers (good and bad files), an end-to-end run whose answer is known,
and a subsample of MovieLens when the data is there."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from penchant import ValidationError, evaluation
from penchant.cli import main
from penchant.evaluation import Interactions, leave_last_out, metrics, pessimistic_rank

from .conftest import DATA_DIR

# -- metrics ------------------------------------------------------------------------------------


def test_metrics_of_hand_computed_ranks() -> None:
    m = metrics([1, 2, 10, 11, 100])
    assert m.users == 5
    assert m.hr.mean == pytest.approx(3 / 5)
    assert m.ndcg.mean == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert m.mrr.mean == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 100) / 5)
    # Intervals: 1.96 · sample std / √n. For ranks 1 and 3: NDCG values 1 and 0.5.
    two = metrics([1, 3])
    assert two.ndcg.mean == pytest.approx(0.75)
    assert two.ndcg.half_width == pytest.approx(1.96 * math.sqrt(0.125) / math.sqrt(2))
    assert two.hr.half_width == 0.0
    assert two.mrr.mean == pytest.approx((1 + 1 / 3) / 2)


def test_paired_difference_by_hand() -> None:
    d = evaluation.paired_difference([1, 1, 20], [3, 1, 1])
    assert d.mean == pytest.approx(((1 - 0.5) + 0 + (0 - 1)) / 3)
    diffs = np.array([0.5, 0.0, -1.0])
    assert d.half_width == pytest.approx(1.96 * diffs.std(ddof=1) / math.sqrt(3))


def test_pessimistic_rank_counts_ties_against_the_item() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.5])
    assert pessimistic_rank(scores, 0) == 4
    assert pessimistic_rank(scores, 1) == 1
    assert pessimistic_rank(scores, 3) == 5


@pytest.mark.parametrize("ranks", [[0], [1, math.nan], [[1, 2]], [-3]])
def test_bad_ranks(ranks) -> None:
    with pytest.raises(ValidationError):
        metrics(ranks)


# -- the protocol on a tiny hand-made data set ----------------------------------------------------


def tiny(users, items, values, times, n_items=None) -> Interactions:
    n_items = n_items or max(items) + 1
    return Interactions(
        name="tiny",
        user_ids=[f"u{k}" for k in range(max(users) + 1)],
        item_ids=[f"i{k}" for k in range(n_items)],
        users=np.array(users),
        items=np.array(items),
        values=np.array(values, dtype=float),
        timestamps=np.array(times, dtype=float),
        item_features=[{"genre:x": 1.0}] * n_items,
    )


def test_the_split_takes_the_last_positive_after_enough_history() -> None:
    # u0: 6 events; its last rating >= 4 is item 6 (the 6th event in time); then a 2 at t=9.
    # u1: its last positive has only 2 events before it: not a test user.
    # Same-second events keep the file's order: u0's items 4 and 5 both at t=5.
    data = tiny(
        users=[0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
        items=[1, 2, 3, 5, 4, 6, 7, 1, 2, 3],
        values=[5, 3, 4, 4, 1, 4, 2, 5, 5, 5],
        times=[1, 2, 3, 5, 5, 6, 9, 1, 2, 3],
    )
    split = leave_last_out(data)
    assert split.test_users.tolist() == [0]
    assert split.test_items.tolist() == [6]
    assert split.test_events.tolist() == [5]
    assert split.histories[0].tolist() == [1, 2, 3, 4, 5]
    assert split.train.tolist() == [True] * 5 + [False, False] + [True] * 3
    # Replay order: by time, then by file row.
    assert split.order.tolist() == [0, 7, 1, 8, 2, 9, 3, 4, 5, 6]
    assert leave_last_out(data, min_prior=2).test_users.tolist() == [0, 1]
    assert leave_last_out(data, positive_threshold=6).n_test == 0


def test_the_validation_split_moves_back_one_positive() -> None:
    data = tiny(
        users=[0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
        items=[1, 2, 3, 5, 4, 6, 7, 1, 2, 3],
        values=[5, 3, 4, 4, 1, 4, 2, 5, 5, 5],
        times=[1, 2, 3, 5, 5, 6, 9, 1, 2, 3],
    )
    # With min_prior 2 both users are test users; without their test events and what followed,
    # u0's previous positive (item 5, after 1, 2, 3) is its validation event; u1 has too little.
    split = evaluation.validation_split(data, min_prior=2)
    assert split.data.n_events == 7
    assert split.test_users.tolist() == [0]
    assert split.test_items.tolist() == [5]
    assert split.histories[0].tolist() == [1, 2, 3]


def test_the_test_item_stays_a_candidate_when_met_before() -> None:
    data = tiny(users=[0] * 7, items=[1, 2, 3, 4, 5, 1, 1], values=[3, 3, 3, 3, 3, 3, 5], times=range(7))
    split = leave_last_out(data)
    assert split.test_items.tolist() == [1]
    assert split.candidates_excluded(0).tolist() == [2, 3, 4, 5]


def test_sampled_negatives_avoid_everything_the_user_touched() -> None:
    data = tiny(users=[0] * 6, items=[0, 1, 2, 3, 4, 5], values=[4] * 6, times=range(6), n_items=200)
    split = leave_last_out(data)
    negatives = evaluation.sampled_negatives(split)
    assert negatives.shape == (1, 100)
    assert len(set(negatives[0].tolist())) == 100
    assert not set(negatives[0].tolist()) & set(range(6))
    expected = np.random.default_rng(0).choice(np.arange(6, 200), 100, replace=False)
    assert negatives[0].tolist() == expected.tolist()


def test_a_fixed_subsample_of_test_users() -> None:
    users = [u for u in range(10) for _ in range(7)]
    data = tiny(users=users, items=list(range(7)) * 10, values=[4] * 70, times=list(range(70)))
    full = leave_last_out(data)
    part = leave_last_out(data, max_users=3, seed=5)
    assert full.n_test == 10
    assert part.n_test == 3
    assert part.test_users.tolist() == leave_last_out(data, max_users=3, seed=5).test_users.tolist()
    assert part.train.sum() == 70 - 3


# -- end to end, where the answer is known ----------------------------------------------------------


def sequential_data() -> Interactions:
    """Ten items in a ring. Twenty users (two per starting item s) each watch s, s+1, ..., s+7
    (mod 10) in that order, all rated 5, so each one's test item is s+7, right after s+6. A
    twenty-first user rated 120 other items 1 (no test event): the catalog has 130 items, enough
    for 100 sampled negatives. By rotation every ring item has 14 training events."""
    users, items, values, times = [], [], [], []
    for k in range(120):
        users.append(20)
        items.append(10 + k)
        values.append(1.0)
        times.append(float(k))
    for u in range(20):
        for step in range(8):
            users.append(u)
            items.append((u % 10 + step) % 10)
            values.append(5.0)
            times.append(1_000.0 * (u + 1) + step)
    return tiny(users, items, values, times, n_items=130)


def test_co_visitation_finds_the_next_item_first() -> None:
    data = sequential_data()
    result = evaluation.evaluate(data, [evaluation.PENCHANT, evaluation.MOST_POPULAR], sampled=True)
    ours, popular = result.results
    assert result.users == 20
    # Everybody else who watched s+6 went on to s+7: co-visitation ranks it first.
    assert ours.ranks.tolist() == [1] * 20
    assert (ours.full.ndcg.mean, ours.full.hr.mean, ours.full.mrr.mean) == (1.0, 1.0, 1.0)
    assert ours.sampled_ranks is not None
    assert ours.sampled_ranks.tolist() == [1] * 20
    # By popularity the three ring items the user has not seen tie (14 events each): rank 3.
    assert popular.ranks.tolist() == [3] * 20
    assert popular.full.hr.mean == 1.0
    assert popular.full.ndcg.mean == pytest.approx(1 / math.log2(4))
    assert popular.full.mrr.mean == pytest.approx(1 / 3)
    assert ours.paired_ndcg_difference(popular) == (pytest.approx(0.5), 0.0)
    payload = result.as_json()
    assert payload["users"] == 20
    assert payload["ndcg@10"] == 1.0
    assert payload["sampled"]["mrr"] == 1.0
    assert payload["rankers"]["most-popular"]["mrr"] == pytest.approx(1 / 3)


def test_evaluate_refuses_data_without_test_users() -> None:
    data = tiny(users=[0, 0], items=[0, 1], values=[5, 5], times=[0, 1])
    with pytest.raises(ValidationError, match="no user has a test event"):
        evaluation.evaluate(data, [evaluation.PENCHANT])
    with pytest.raises(ValidationError):
        evaluation.evaluate(sequential_data(), [])


# -- readers --------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def latest_small(root: Path) -> Path:
    write(root / "movies.csv", 'movieId,title,genres\n1,A (1995),Comedy|Drama\n2,"B, the (1996)",(no genres listed)\n')
    write(root / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,0.5,20\n1,1,4.0,10\n10,1,3.5,15\n")
    write(root / "tags.csv", "userId,movieId,tag,timestamp\n1,1,  Funny  Movie ,30\n")
    return root


def test_read_ml_latest_small(tmp_path: Path) -> None:
    data = evaluation.read_interactions(latest_small(tmp_path / "ml-latest-small"))
    assert data.name == "ml-latest-small"
    assert data.user_ids == ["1", "10"]
    assert data.item_ids == ["1", "2"]
    assert data.users.tolist() == [0, 0, 1]
    assert data.items.tolist() == [1, 0, 0]
    assert data.values.tolist() == [0.5, 4.0, 3.5]
    assert data.timestamps.tolist() == [20, 10, 15]
    assert data.item_features[0] == {"genre:Comedy": 0.5, "genre:Drama": 0.5, "tag:funny movie": 1.0}
    assert data.item_features[1] == {"genre:(no genres listed)": 1.0}
    assert data.rating_scale == (0.5, 5.0)
    assert data.feature_prefixes() == ["genre", "tag"]
    assert data.with_features(["genre"]).item_features[0] == {"genre:Comedy": 0.5, "genre:Drama": 0.5}


def test_read_ml_100k(tmp_path: Path) -> None:
    root = tmp_path / "ml-100k"
    write(root / "u.genre", "unknown|0\nAction|1\nDrama|2\n\n")
    write(root / "u.item", "1|A (1995)|01-Jan-1995||http://x|0|1|1\n2|B (1995)|01-Jan-1995||http://y|1|0|0\n")
    write(root / "u.data", "3\t2\t4\t100\n1\t1\t5\t50\n")
    data = evaluation.read_interactions(root)
    assert data.user_ids == ["1", "3"]
    assert data.item_ids == ["1", "2"]
    assert data.item_features == [{"genre:Action": 0.5, "genre:Drama": 0.5}, {"genre:unknown": 1.0}]
    assert data.rating_scale == (1.0, 5.0)


def test_read_generic_csv(tmp_path: Path) -> None:
    path = write(
        tmp_path / "events.csv",
        "user,item,value,timestamp,features\n"
        "alice,x,1,2024-01-01T00:00:00,genre:a|genre:b=3\n"
        "bob,y,3,1704067300,\n"
        "alice,y,2,2024-01-01T00:02:00Z,color:red\n",
    )
    data = evaluation.read_interactions(path)
    assert data.user_ids == ["alice", "bob"]
    assert data.item_ids == ["x", "y"]
    assert data.timestamps.tolist() == [1704067200.0, 1704067300.0, 1704067320.0]
    assert data.item_features == [{"genre:a": 1.0, "genre:b": 3.0}, {"color:red": 1.0}]
    assert data.rating_scale == (1.0, 3.0)
    clicks = evaluation.read_csv(path, feedback_type="click")
    assert clicks.feedback_type == "click"
    assert clicks.rating_scale is None


MOVIES = "movieId,title,genres\n1,A,D\n"
HEADER = "userId,movieId,rating,timestamp\n"
GENRES = "unknown|0\nAction|1\n"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"ratings.csv": "userId,movieId,rating\n1,1,4\n", "movies.csv": MOVIES}, "column"),
        ({"ratings.csv": HEADER + "1,9,4,1\n", "movies.csv": MOVIES}, "not in"),
        ({"ratings.csv": HEADER + "1,1,nan,1\n", "movies.csv": MOVIES}, "finite"),
        ({"ratings.csv": HEADER + "1,1,four,1\n", "movies.csv": MOVIES}, "number"),
        ({"ratings.csv": HEADER + "1,1,4,yesterday\n", "movies.csv": MOVIES}, "timestamp"),
        ({"ratings.csv": HEADER + "1,1,4\n", "movies.csv": MOVIES}, "fields"),
        ({"ratings.csv": "", "movies.csv": MOVIES}, "empty"),
        ({"ratings.csv": HEADER, "movies.csv": MOVIES}, "no events"),
        ({"u.data": "1\t1\t5\n", "u.item": "1|A|d||u|0|1\n", "u.genre": GENRES}, "4 tab-separated"),
        ({"u.data": "1\t2\t5\t1\n", "u.item": "1|A|d||u|0|1\n", "u.genre": GENRES}, "not in u.item"),
        ({"u.data": "1\t1\t5\t1\n", "u.item": "1|A|d||u|0|7\n", "u.genre": GENRES}, "0 or 1"),
        ({"u.data": "1\t1\t5\t1\n", "u.item": "1|A|d||u|0|1\n"}, "not found"),
        ({"notes.txt": "hello"}, "unknown data format"),
    ],
)
def test_bad_files_are_validation_errors(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        write(tmp_path / "d" / name, text)
    with pytest.raises(ValidationError, match=message):
        evaluation.read_interactions(tmp_path / "d")


def test_bad_generic_csv_and_formats(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="missing column"):
        evaluation.read_csv(write(tmp_path / "a.csv", "user,item,rating,time\nu,i,1,1\n"))
    with pytest.raises(ValidationError, match="negative weight"):
        evaluation.read_csv(write(tmp_path / "b.csv", "user,item,value,timestamp,features\nu,i,1,1,a=-1\n"))
    with pytest.raises(ValidationError, match="must not be empty"):
        evaluation.read_csv(write(tmp_path / "c.csv", "user,item,value,timestamp\n,i,1,1\n"))
    with pytest.raises(ValidationError, match="unknown feedback type"):
        evaluation.read_csv(write(tmp_path / "d.csv", "user,item,value,timestamp\nu,i,1,1\n"), feedback_type="poke")
    with pytest.raises(ValidationError, match="unknown format"):
        evaluation.read_interactions(tmp_path, "parquet")
    with pytest.raises(ValidationError, match="no such file"):
        evaluation.read_interactions(tmp_path / "missing")


# -- the command -----------------------------------------------------------------------------------


def sequential_csv(tmp_path: Path) -> Path:
    data = sequential_data()
    lines = ["user,item,value,timestamp,features"]
    for u, i, v, t in zip(data.users, data.items, data.values, data.timestamps, strict=True):
        lines.append(f"u{u},i{i},{v},{t},genre:x")
    return write(tmp_path / "seq.csv", "\n".join(lines) + "\n")


def test_cli_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["eval", "--data", str(sequential_csv(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert {"users", "hr@10", "ndcg@10", "mrr", "sampled"} <= set(payload)
    assert {"hr@10", "ndcg@10", "mrr"} <= set(payload["sampled"])
    assert payload["users"] == 20
    assert payload["ndcg@10"] == 1.0
    assert payload["rankers"]["most-popular"]["ndcg@10"] == pytest.approx(0.5)


def test_cli_table_markdown_and_plot(tmp_path: Path) -> None:
    path = sequential_csv(tmp_path)
    table = CliRunner().invoke(main, ["eval", "--data", str(path), "--ablation"])
    assert table.exit_code == 0, table.output
    assert "penchant" in table.output
    assert "- co-visitation" in table.output
    png = tmp_path / "out" / "plot.png"
    md = CliRunner().invoke(main, ["eval", "--data", str(path), "--markdown", "--no-sampled", "--plot", str(png)])
    assert md.exit_code == 0, md.output
    assert "| **penchant** | 1.0000" in md.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_weights_and_validation(tmp_path: Path) -> None:
    path = str(sequential_csv(tmp_path))
    by_popularity = CliRunner().invoke(
        main, ["eval", "--data", path, "--json", "--weights", "covisitation=0, learned_popularity=1"]
    )
    assert by_popularity.exit_code == 0, by_popularity.output
    assert json.loads(by_popularity.output)["ndcg@10"] == pytest.approx(0.5)
    # Validation: each user's test is now s+6, after s..s+5; co-visitation still finds it.
    validation = CliRunner().invoke(main, ["eval", "--data", path, "--json", "--validation"])
    assert validation.exit_code == 0, validation.output
    payload = json.loads(validation.output)
    assert payload["users"] == 20
    assert payload["ndcg@10"] == 1.0
    for bad in ("covisitation", "covisitation=x", "mystery=1"):
        result = CliRunner().invoke(main, ["eval", "--data", path, "--weights", bad])
        assert result.exit_code == 1
        assert "Traceback" not in result.output


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.csv", "user,item,value\nu,i,1\n")
    result = CliRunner().invoke(main, ["eval", "--data", str(bad)])
    assert result.exit_code == 1
    assert "missing column" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["eval", "--data", str(sequential_csv(tmp_path)), "--features", "mood"])
    assert result.exit_code == 1
    assert "no feature of kind" in result.output


# -- MovieLens (when ../shared/data is there) ---------------------------------------------------------

ML_SMALL = DATA_DIR / "ml-latest-small"
ML_100K = DATA_DIR / "ml-100k"
needs_small = pytest.mark.skipif(not ML_SMALL.is_dir(), reason=f"MovieLens data not at {ML_SMALL}")
needs_100k = pytest.mark.skipif(not ML_100K.is_dir(), reason=f"MovieLens data not at {ML_100K}")


@needs_small
def test_ml_latest_small_protocol_gives_609_test_users() -> None:
    data = evaluation.read_interactions(ML_SMALL)
    assert (data.n_events, data.n_users, data.n_items) == (100_836, 610, 9_724)
    assert leave_last_out(data).n_test == 609


@needs_100k
def test_ml_100k_protocol_gives_942_test_users() -> None:
    data = evaluation.read_interactions(ML_100K)
    assert (data.n_events, data.n_users, data.n_items) == (100_000, 943, 1_682)
    assert leave_last_out(data).n_test == 942


@needs_small
def test_ml_latest_small_subsample_end_to_end() -> None:
    """CI's check on real data: the whole replay, 80 fixed test users ranked."""
    result = CliRunner().invoke(main, ["eval", "--data", str(ML_SMALL), "--max-users", "80", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    split = leave_last_out(evaluation.read_interactions(ML_SMALL), max_users=80)
    assert payload["users"] == 80
    assert payload["events_replayed"] == int(split.train.sum())
    assert payload["ndcg@10"] > payload["rankers"]["most-popular"]["ndcg@10"] + 0.02
