"""QueryExpander: how much it expands (short or specific query, weak or confident profile),
where terms come from (learned associations, the user's interests), what it never adds, how
associations are bounded and kept, and how the query factor uses them in ranking."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import penchant
from penchant.query_expansion import ProfileView, QueryExpansionConfig, default_feature_term, tokenize

NOW = float(int(time.time()))


def profile_with_clicks(clicks: dict[str, int], user: str = "u") -> penchant.UserProfile:
    """A profile that clicked items carrying each feature so many times, an hour ago."""
    profile = penchant.UserProfile(user)
    processor = penchant.FeedbackProcessor()
    events = [
        processor.feedback(user, {"id": f"{feature}-{n}", "features": [feature]}, "click", timestamp=NOW - 3_600)
        for feature, count in clicks.items()
        for n in range(count)
    ]
    processor.apply(profile, events)
    return profile


def jaguar_expander(**config: Any) -> penchant.QueryExpander:
    """ "jaguar" leads to cars 6 times out of 10 and to animals 4 times."""
    expander = penchant.QueryExpander(QueryExpansionConfig(**config))
    for _ in range(6):
        expander.learn("jaguar", {"category:cars": 1.0}, 1.0)
    for _ in range(4):
        expander.learn("jaguar", {"category:animals": 1.0}, 1.0)
    return expander


def added(expanded: penchant.ExpandedQuery) -> dict[str, float]:
    return {t.feature or "": t.weight for t in expanded.expansions}


def test_the_original_query_is_always_kept_first() -> None:
    expander = jaguar_expander()
    profile = profile_with_clicks({"category:animals": 30})
    expanded = expander.expand("Jaguar", profile, now=NOW)
    assert expanded.terms[0] == penchant.ExpansionTerm("jaguar", 1.0, "query")
    assert all(t.weight < 1.0 for t in expanded.expansions)
    assert expanded.to_text().startswith("Jaguar ")
    assert expanded.weighted_terms()[0] == ("jaguar", 1.0)
    assert expander.expand("", profile, now=NOW).terms == ()
    assert expander.expand("the of", profile, now=NOW).terms == ()


def test_the_users_taste_picks_among_a_terms_meanings() -> None:
    expander = jaguar_expander()
    animal_lover = expander.expand("jaguar", profile_with_clicks({"category:animals": 30}), now=NOW)
    car_lover = expander.expand("jaguar", profile_with_clicks({"category:cars": 30}), now=NOW)
    assert animal_lover.expansions[0].feature == "category:animals"
    assert animal_lover.expansions[0].source == "association"
    assert car_lover.expansions[0].feature == "category:cars"
    assert animal_lover.to_text() == f"jaguar animals^{animal_lover.expansions[0].weight:.3g} " + (
        f"cars^{animal_lover.expansions[1].weight:.3g}"
    )


def test_a_short_query_expands_more_than_a_specific_one() -> None:
    expander = penchant.QueryExpander()
    profile = profile_with_clicks({"genre:jazz": 40, "genre:blues": 30})
    short = expander.expand("music", profile, now=NOW)
    longer = expander.expand("live music from new orleans", profile, now=NOW)  # 4 terms after stopwords
    specific = expander.expand("miles davis kind of blue 1959 columbia remaster", profile, now=NOW)
    assert short.amount > longer.amount > 0
    assert longer.amount == pytest.approx(short.amount * 2 / 4)
    assert set(added(short)) == {"genre:jazz", "genre:blues"}
    assert added(short)["genre:jazz"] > added(longer)["genre:jazz"]
    assert specific.amount == 0.0
    assert specific.expansions == ()
    assert [t.term for t in specific.terms] == tokenize("miles davis kind of blue 1959 columbia remaster")


def test_an_ambiguous_term_expands_more_than_an_unambiguous_one() -> None:
    expander = jaguar_expander()
    for _ in range(10):
        expander.learn("lasagna", {"cuisine:italian": 1.0}, 1.0)
    profile = profile_with_clicks({"category:cars": 30})
    assert expander.expand("jaguar", profile, now=NOW).amount > expander.expand("lasagna", profile, now=NOW).amount


def test_a_weak_profile_expands_less_and_none_expands_nothing() -> None:
    expander = penchant.QueryExpander()
    confident = expander.expand("music", profile_with_clicks({"genre:jazz": 40}), now=NOW)
    weak = expander.expand("music", profile_with_clicks({"genre:jazz": 1}), now=NOW)
    nobody = expander.expand("music", None, now=NOW)
    assert confident.amount > 0.85
    assert 0 < weak.amount < 0.2
    # The strongest term weighs max_term_weight (0.5) × amount.
    assert added(confident)["genre:jazz"] == pytest.approx(0.5 * confident.amount)
    assert added(weak)["genre:jazz"] == pytest.approx(0.5 * weak.amount)
    assert added(weak)["genre:jazz"] < 0.1
    assert nobody.amount == 0
    assert nobody.expansions == ()
    assert nobody.terms[0].term == "music"


def test_blocked_and_disliked_features_are_never_added() -> None:
    expander = penchant.QueryExpander()
    for _ in range(10):
        expander.learn("spooky", {"genre:horror": 1.0}, 1.0)
        expander.learn("spooky", {"genre:thriller": 1.0}, 1.0)
    blocked = profile_with_clicks({"genre:horror": 30, "genre:thriller": 5})
    blocked.set_explicit_preference("never", "genre:horror")
    assert "genre:horror" not in added(expander.expand("spooky", blocked, now=NOW))
    assert "genre:horror" not in expander.expand("spooky", blocked, now=NOW).features
    disliked = profile_with_clicks({"genre:thriller": 30})
    disliked.set_explicit_preference("dislike", "genre:horror")
    assert set(added(expander.expand("spooky", disliked, now=NOW))) == {"genre:thriller"}


def test_negative_feedback_unteaches_an_association() -> None:
    expander = jaguar_expander()
    assert expander.associations("jaguar") == pytest.approx({"category:cars": 0.6, "category:animals": 0.4})
    expander.learn("jaguar", {"category:cars": 1.0}, -6.0)
    assert expander.associations("JAGUAR") == {"category:animals": 1.0}
    assert expander.associations("unknown") == {}


def test_learned_associations_are_bounded() -> None:
    expander = penchant.QueryExpander(QueryExpansionConfig(max_terms=10, max_features_per_term=3))
    for n in range(30):
        expander.learn(f"term{n}", {"f": 1.0}, 1.0 + n)
    assert len(expander) <= 10
    assert expander.associations("term29") == {"f": 1.0}  # the best-supported terms stay
    assert expander.associations("term0") == {}
    expander.learn("wide", {f"f{n}": 1.0 + n for n in range(6)}, 1.0)
    assert set(expander.associations("wide")) == {"f5", "f4", "f3"}  # a new term is kept, trimmed
    assert len(expander) <= 10
    # Only the first terms of a long query teach.
    expander.learn(" ".join(f"w{n}" for n in range(20)), {"f": 1.0}, 1.0)
    assert expander.associations("w19") == {}


def test_associations_round_trip_through_a_dict_and_a_file(tmp_path: Path) -> None:
    expander = jaguar_expander()
    profile = profile_with_clicks({"category:animals": 30})
    copy = penchant.QueryExpander()
    copy.from_dict(json.loads(json.dumps(expander.to_dict())))
    assert copy.expand("jaguar", profile, now=NOW) == expander.expand("jaguar", profile, now=NOW)
    path = tmp_path / "associations.json"
    expander.save(path)
    loaded = penchant.QueryExpander()
    loaded.load(path)
    assert loaded.to_dict() == expander.to_dict()


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"version": 2, "terms": {}},
        {"version": 1, "terms": []},
        {"version": 1, "terms": {"": {"features": {}}}},
        {"version": 1, "terms": {"t": {}}},
        {"version": 1, "terms": {"t": {"features": {"f": "x"}}}},
        {"version": 1, "terms": {"t": {"features": {"f": float("nan")}}}},
        {"version": 1, "terms": {"t": {"features": {"\x00": 1.0}}}},
    ],
)
def test_bad_association_data_is_refused_and_changes_nothing(data: Any) -> None:
    expander = jaguar_expander()
    before = expander.to_dict()
    with pytest.raises(penchant.ValidationError):
        expander.from_dict(data)
    assert expander.to_dict() == before


def test_unreadable_files_are_validation_errors(tmp_path: Path) -> None:
    with pytest.raises(penchant.ValidationError, match="cannot read"):
        penchant.QueryExpander().load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(penchant.ValidationError, match="cannot read"):
        penchant.QueryExpander().load(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("query", "message"),
    [(None, "query must be a str"), (42, "query must be a str"), ("x" * 2000, "the limit is 1024")],
)
def test_bad_queries_are_validation_errors(query: Any, message: str) -> None:
    with pytest.raises(penchant.ValidationError, match=message):
        penchant.QueryExpander().expand(query)
    with pytest.raises(penchant.ValidationError, match=message):
        penchant.QueryExpander().learn(query, {"f": 1.0}, 1.0)


def test_odd_but_valid_queries_are_handled() -> None:
    expander = jaguar_expander()
    profile = profile_with_clicks({"category:animals": 30})
    assert tokenize("Ünïcode\tqueries\x00 with\ncontrol chars!!") == ["ünïcode", "queries", "control", "chars"]
    assert expander.expand("jaguar\x00\x01", profile, now=NOW).expansions
    assert expander.expand("x" * 500, profile, now=NOW).terms == ()  # one over-long token: nothing
    assert default_feature_term("genre:sci-fi") == "sci fi"
    assert default_feature_term("plain_name") == "plain name"
    assert default_feature_term("genre:") is None


def test_config_is_checked() -> None:
    for bad in ({"max_expansions": 0}, {"max_term_weight": 2.0}, {"association_prior": 0}, {"feature_term": 3}):
        with pytest.raises(penchant.ValidationError):
            QueryExpansionConfig(**bad)
    with pytest.raises(penchant.ValidationError):
        penchant.QueryExpander(config={"max_expansions": 3})  # type: ignore[arg-type]
    with pytest.raises(penchant.ValidationError):
        penchant.QueryExpander().expand("q", profile={"f": 1.0})  # type: ignore[arg-type]


def test_a_profile_view_from_a_profile_matches_the_retrievers() -> None:
    profile = profile_with_clicks({"genre:jazz": 10, "genre:rock": 3})
    view = ProfileView.of(profile, NOW)
    assert view.confidence == pytest.approx(profile.profile_confidence(NOW))
    assert [name for name, _ in view.top_interests] == ["genre:jazz", "genre:rock"]


# -- the query factor in ranking, through the engine --------------------------------------------


def test_learned_associations_move_matching_items_up_for_a_query() -> None:
    cars = [{"id": f"car{n}", "score": 0.5, "features": ["category:cars"]} for n in range(3)]
    animals = [{"id": f"cat{n}", "score": 0.6, "features": ["category:animals"]} for n in range(3)]
    with penchant.Engine(database_url="sqlite:///:memory:") as engine:
        # Other users searched "jaguar" and clicked cars (mostly).
        for n in range(12):
            engine.record(f"other{n}", cars[n % 3], "click", timestamp=NOW - 600, context={"query": "jaguar"})
        for n in range(3):
            engine.record(f"other{n}", animals[n], "click", timestamp=NOW - 600, context={"query": "jaguar"})
        # This user is well known, for something else entirely.
        for n in range(30):
            engine.record("u", {"id": f"album{n}", "features": ["genre:jazz"]}, "click", timestamp=NOW - 600)
        plain = engine.rank("u", cars + animals, k=3, now=NOW)
        assert [r.id for r in plain] == ["cat0", "cat1", "cat2"]
        searched = engine.rank("u", cars + animals, k=3, query="jaguar", explain=True, now=NOW)
        assert [r.id for r in searched] == ["car0", "car1", "car2"]
        top = searched[0].explanation
        assert top is not None
        assert dict(top.query_matches)["category:cars"] > 0
        assert "fits the query via category:cars" in top.why
        expanded = engine.expand_query("u", "jaguar", now=NOW)
        assert expanded.expansions[0].feature == "category:cars"
        assert engine.expand_query("nobody", "jaguar", now=NOW).expansions == ()
