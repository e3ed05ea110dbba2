"""The profile kernels (rust/profile.rs) against plain NumPy references, and their refusals."""

from __future__ import annotations

import contextlib
import enum
import functools
import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import penchant
from penchant import _core
from penchant.user_profile import Interaction, PreferenceExtractor, UserProfile

from . import profile_reference as ref

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)
HALF_LIVES = [3_600.0, 86_400.0, 604_800.0]


@st.composite
def signal_batches(draw: st.DrawFn) -> tuple[list[float], list[float], list[int], list[int], list[int], list[float]]:
    n = draw(st.integers(0, 30))
    times = draw(st.lists(st.floats(0, 10 * 86_400.0), min_size=n, max_size=n))
    weights = draw(st.lists(finite, min_size=n, max_size=n))
    channels = draw(st.lists(st.integers(0, len(HALF_LIVES) - 1), min_size=n, max_size=n))
    sizes = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    indptr = [0, *np.cumsum(sizes, dtype=int).tolist()]
    nnz = indptr[-1]
    drawn = draw(st.lists(st.integers(0, 7), min_size=nnz, max_size=nnz))
    # Feature ids are dense per batch (the binding refuses more features than entries).
    dense = {f: i for i, f in enumerate(sorted(set(drawn)))}
    feature_ids = [dense[f] for f in drawn]
    feature_weights = draw(st.lists(st.floats(0, 5), min_size=nnz, max_size=nnz))
    return times, weights, channels, indptr, feature_ids, feature_weights


@given(signal_batches(), st.floats(0, 10 * 86_400.0))
@settings(max_examples=200, deadline=None)
def test_accumulate_signals_matches_reference(batch: tuple, landmark: float) -> None:  # type: ignore[type-arg]
    times, weights, channels, indptr, feature_ids, feature_weights = batch
    n_features = max(feature_ids, default=-1) + 1
    got = _core.accumulate_signals(
        times, weights, channels, HALF_LIVES, indptr, feature_ids, feature_weights, landmark, n_features
    )
    fids, chans, positive, amounts, counts, latest = got
    expected = ref.accumulate_signals(
        times, weights, channels, HALF_LIVES, indptr, feature_ids, feature_weights, landmark, n_features
    )
    keys = list(zip(fids, chans, positive, strict=True))
    assert keys == sorted(expected, key=lambda k: (k[0], k[1], not k[2]))
    for key, amount in zip(keys, amounts, strict=True):
        assert amount == pytest.approx(expected[key], rel=1e-12, abs=1e-300)

    # Counts and latest times per feature, by brute force (evidence that underflows to 0 adds
    # nothing, as in InterestModel.increments).
    def amount(i: int, j: int) -> float:
        return (weights[i] * feature_weights[j]) * 2.0 ** ((times[i] - landmark) / HALF_LIVES[channels[i]])

    for f in range(n_features):
        touching = [
            times[i]
            for i in range(len(times))
            for j in range(indptr[i], indptr[i + 1])
            if feature_ids[j] == f and amount(i, j) != 0
        ]
        assert counts[f] == len(touching)
        assert latest[f] == (max(touching) if touching else -math.inf)


@given(
    st.lists(st.tuples(st.floats(0, 1e6), finite, st.sampled_from(HALF_LIVES)), max_size=50),
    st.floats(0, 2e6),
)
def test_decayed_weights_match_reference(rows: list[tuple[float, float, float]], now: float) -> None:
    times, weights, half_lives = (np.array([r[i] for r in rows], dtype=np.float64) for i in range(3))
    got = _core.decayed_weights(times, weights, half_lives, now)
    np.testing.assert_allclose(got, ref.decayed_weights(times, weights, half_lives, now), rtol=1e-12, atol=0)


@given(
    st.lists(st.tuples(st.integers(0, 3), st.floats(-1e6, 1e6), st.floats(0, 10)), max_size=60),
    st.lists(st.floats(0, 1), min_size=1, max_size=5),
)
@settings(max_examples=200)
def test_attribute_quantiles_match_reference(samples: list[tuple[int, float, float]], quantiles: list[float]) -> None:
    ids = np.array([s[0] for s in samples], dtype=np.uint32)
    values = np.array([s[1] for s in samples], dtype=np.float64)
    weights = np.array([s[2] for s in samples], dtype=np.float64)
    n_attributes = 4
    got_q, totals, squares, counts = _core.attribute_quantiles(ids, values, weights, n_attributes, quantiles)
    exp_q, exp_totals, exp_counts = ref.attribute_quantiles(ids, values, weights, n_attributes, quantiles)
    np.testing.assert_array_equal(np.array(got_q).reshape(n_attributes, len(quantiles)), exp_q)
    np.testing.assert_array_equal(totals, exp_totals)
    assert list(counts) == exp_counts
    for a in range(n_attributes):
        w = weights[(ids == a) & (weights > 0)]
        assert squares[a] == pytest.approx(float((w * w).sum()), rel=1e-12)


@given(
    st.lists(st.tuples(st.floats(-1e9, 1e10), st.floats(0, 10)), max_size=60),
    st.sampled_from([(86_400.0, 24, 0.0), (7 * 86_400.0, 7, 3 * 86_400.0), (3_600.0, 5, -120.5)]),
)
def test_periodic_histogram_matches_reference(rows: list[tuple[float, float]], shape: tuple[float, int, float]) -> None:
    period, bins, offset = shape
    times = np.array([r[0] for r in rows], dtype=np.float64)
    weights = np.array([r[1] for r in rows], dtype=np.float64)
    got = _core.periodic_histogram(times, weights, period, bins, offset)
    np.testing.assert_allclose(got, ref.periodic_histogram(times, weights, period, bins, offset), rtol=1e-12)


def test_hours_and_weekdays_of_known_dates() -> None:
    # 2024-03-04 was a Monday; 21:15 UTC.
    t = 1_709_586_900.0
    hours = _core.periodic_histogram(np.array([t]), np.array([1.0]), 86_400.0, 24, 0.0)
    days = _core.periodic_histogram(np.array([t]), np.array([1.0]), 7 * 86_400.0, 7, 3 * 86_400.0)
    assert hours.index(1.0) == 21
    assert days.index(1.0) == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: _core.accumulate_signals([0.0], [math.nan], [0], [1.0], [0, 1], [0], [1.0], 0.0, 1), "NaN"),
        (lambda: _core.accumulate_signals([0.0], [1.0], [0], [0.0], [0, 1], [0], [1.0], 0.0, 1), "half_lives"),
        (lambda: _core.accumulate_signals([0.0], [1.0], [3], [1.0], [0, 1], [0], [1.0], 0.0, 1), "channels"),
        (lambda: _core.accumulate_signals([0.0], [1.0], [0], [1.0], [0, 2], [0], [1.0], 0.0, 1), "indptr"),
        (lambda: _core.accumulate_signals([0.0], [1.0], [0], [1.0], [0, -1], [0], [1.0], 0.0, 1), "negative"),
        (lambda: _core.accumulate_signals([0.0], [1.0], [0], [1.0], [0, 1], [5], [1.0], 0.0, 1), "feature_ids"),
        (lambda: _core.accumulate_signals([0.0], [1.0], [0], [1.0], [0, 1], [0], [1.0], 0.0, 10**12), "n_features"),
        (lambda: _core.accumulate_signals([1e9], [1.0], [0], [1.0], [0, 1], [0], [1.0], 0.0, 1), "rebase"),
        (lambda: _core.accumulate_signals([0.0, 1.0], [1.0], [0], [1.0], [0, 1], [0], [1.0], 0.0, 1), "length"),
        (
            lambda: _core.attribute_quantiles(np.array([0], np.uint32), np.array([1.0]), np.array([-1.0]), 1, [0.5]),
            "negative",
        ),
        (
            lambda: _core.attribute_quantiles(np.array([0], np.uint32), np.array([1.0]), np.array([1.0]), 1, [2.0]),
            "quantiles",
        ),
        (
            lambda: _core.attribute_quantiles(np.array([0], np.uint32), np.array([1.0]), np.array([1.0]), 10**9, [0.5]),
            "n_attributes",
        ),
        (lambda: _core.periodic_histogram(np.array([0.0]), np.array([1.0]), -1.0, 24, 0.0), "period"),
        (lambda: _core.periodic_histogram(np.array([0.0]), np.array([1.0]), 1.0, 10**9, 0.0), "bins"),
        (lambda: _core.decayed_weights(np.array([0.0]), np.array([1.0]), np.array([0.0]), 0.0), "half_lives"),
        (lambda: _core.read_history([object()]), "timestamp"),
    ],
)
def test_kernels_refuse_bad_input_with_validation_error(call: object, message: str) -> None:
    with pytest.raises(penchant.ValidationError, match=message):
        call()  # type: ignore[operator]


def test_read_history_reads_columns_and_skips_non_numeric_attributes() -> None:
    history = [
        Interaction("a", "click", 1.0, 1.0, {"f": 1.0}, {"price": 5.0, "colour": "red"}, 86_400.0, "e1", 60.0),  # type: ignore[arg-type]
        Interaction("b", "skip", 1.0, -0.5, {"f": 1.0}, {"price": 7, "length": 2.5}, 2 * 86_400.0, "e2"),  # type: ignore[arg-type]
    ]
    times, weights, half_lives, rows, ids, values, names = _core.read_history(history)
    assert times.tolist() == [86_400.0, 172_800.0]
    assert weights.tolist() == [1.0, -0.5]
    assert half_lives.tolist() == [60.0, penchant.user_profile.DEFAULT_HALF_LIFE]
    assert names == ["price", "length"]
    assert list(zip(rows.tolist(), ids.tolist(), values.tolist(), strict=True)) == [
        (0, 0, 5.0),
        (1, 0, 7.0),
        (1, 1, 2.5),
    ]
    history[0].attributes["price"] = math.nan
    with pytest.raises(penchant.ValidationError, match="NaN"):
        _core.read_history(history)


@given(
    st.dictionaries(
        st.sampled_from(["genre:a", "genre:b", "tag:c", "x"]),
        st.dictionaries(
            st.builds(
                lambda positive, h: ("+" if positive else "-") + repr(h),
                st.booleans(),
                st.floats(1.0, 1e7),
            ),
            st.floats(0, 1e6),
            max_size=3,
        ),
        max_size=4,
    ),
    st.floats(-1e6, 1e6),
    st.floats(-1e6, 1e6),
)
def test_interest_evidence_matches_the_python_interest(
    sums: dict[str, dict[str, float]], now: float, landmark: float
) -> None:
    from penchant.user_profile import Interest

    interests = {name: Interest(name, sums=channel_sums) for name, channel_sums in sums.items()}
    try:
        expected = {name: interest.evidence(now, landmark) for name, interest in interests.items()}
    except penchant.ValidationError:
        # Far before the landmark the decay factor overflows: both sides refuse it.
        with pytest.raises(penchant.ValidationError, match="before the profile's landmark"):
            _core.interest_evidence(interests, now, landmark)
        return
    names, positive, negative = _core.interest_evidence(interests, now, landmark)
    assert names == list(interests)
    for name, p, n in zip(names, positive, negative, strict=True):
        want_p, want_n = expected[name]
        assert p == pytest.approx(want_p, rel=1e-12, abs=1e-300)
        assert n == pytest.approx(want_n, rel=1e-12, abs=1e-300)


def test_interest_evidence_refuses_bad_channels_and_sums() -> None:
    from penchant.user_profile import Interest

    interest = Interest("f", sums={"+60": 1.0})
    for key, value, message in (("*60", 1.0, "channel key"), ("+0", 1.0, "channel key"), ("+60", -1.0, "negative")):
        interest.sums = {key: value}
        with pytest.raises(penchant.ValidationError, match=message):
            _core.interest_evidence({"f": interest}, 0.0, 0.0)


class _SlottedInteraction:
    """An interaction without an instance dict: the reader's general path."""

    __slots__ = ("attributes", "half_life", "timestamp", "weight")

    def __init__(self, interaction: Interaction) -> None:
        self.timestamp, self.weight = interaction.timestamp, interaction.weight
        self.half_life, self.attributes = interaction.half_life, interaction.attributes


@st.composite
def histories(draw: st.DrawFn) -> list[Any]:
    """Interactions in the common form (floats, a dict of float attributes) mixed with forms the
    reader's fast path hands to its general path: int weights and values, bool and str
    attributes, an object without an instance dict."""
    out: list[Any] = []
    for k in range(draw(st.integers(0, 25))):
        attributes = draw(
            st.dictionaries(
                st.sampled_from(["price", "length", "colour", "flag"]),
                st.one_of(finite, st.integers(-5, 5), st.booleans(), st.just("red")),
                max_size=3,
            )
        )
        weight: float = draw(st.one_of(finite, st.integers(-3, 3)))
        interaction = Interaction(
            f"i{k}",
            "click",
            1.0,
            weight,
            {"f": 1.0},
            attributes,
            draw(st.floats(0, 1e6)),
            f"e{k}",
            draw(st.sampled_from(HALF_LIVES)),
        )
        interaction.weight = weight  # keep an int as an int (the constructor makes a float)
        out.append(_SlottedInteraction(interaction) if draw(st.booleans()) and k % 3 == 0 else interaction)
    return out


SUMMARY_QUANTILES = [0.1, 0.5, 0.9]


def summary_from_kernels(history: list[Any], now: float, utc_offset: float) -> tuple[Any, ...]:
    """What ``summarize_history`` computes, made of the separately tested kernels and the
    plain references: read the columns, decay, weigh, take quantiles and histograms."""
    times, weights, half_lives, rows, ids, values, names = _core.read_history(history)
    activity = _core.decayed_weights(times, np.ones(len(times)), half_lives, now)
    liked = np.maximum(weights * activity, 0.0)
    if len(liked) and liked.max() > 0:
        liked = liked / liked.max()
    quantiles, totals, squares, counts = _core.attribute_quantiles(
        ids, values, liked[rows], len(names), SUMMARY_QUANTILES
    )
    temporal = None
    if len(activity) and activity.max() > 0:
        relative = activity / activity.max()
        effective = float(relative.sum()) ** 2 / float((relative * relative).sum())
        periods = []
        for period, bins, offset in ((86_400.0, 24, utc_offset), (7 * 86_400.0, 7, 3 * 86_400.0 + utc_offset)):
            histogram = _core.periodic_histogram(times, relative, period, bins, offset)
            periods += [ref.concentration(histogram), ref.peak_bins(histogram, 0.5)]
        temporal = (effective, *periods)
    return names, counts, totals, squares, quantiles, len(times), temporal


def assert_same_summary(got: tuple[Any, ...], want: tuple[Any, ...], rtol: float | None = None) -> None:
    """Equal summaries, bit for bit (quantiles of an attribute without weight are NaN on both
    sides), or with the temporal sums within ``rtol`` (the kernel sums in order, NumPy
    pairwise)."""
    assert (got[0], got[1], got[5]) == (want[0], want[1], want[5])
    for g, w in zip(got[2:5], want[2:5], strict=True):
        np.testing.assert_array_equal(g, w)
    if want[6] is None or rtol is None:
        assert got[6] == want[6]
        return
    assert got[6] is not None
    effective, hours, peak_hours, days, peak_days = got[6]
    assert effective == pytest.approx(want[6][0], rel=rtol, abs=0)
    assert hours == pytest.approx(want[6][1], rel=1e-12, abs=1e-15)
    assert days == pytest.approx(want[6][3], rel=1e-12, abs=1e-15)
    assert (peak_hours, peak_days) == (want[6][2], want[6][4])


@given(histories())
@settings(max_examples=200, deadline=None)
def test_read_history_matches_the_reference(history: list[Any]) -> None:
    times, weights, half_lives, rows, ids, values, names = _core.read_history(history)
    expected = ref.history_columns(history)
    # Times from datetimes differ from datetime.timestamp() in the last bit at most.
    np.testing.assert_allclose(times, expected["times"], rtol=1e-15, atol=1e-9)
    np.testing.assert_array_equal(weights, expected["weights"])
    np.testing.assert_array_equal(half_lives, expected["half_lives"])
    np.testing.assert_array_equal(rows, expected["rows"])
    np.testing.assert_array_equal(ids, expected["ids"])
    np.testing.assert_array_equal(values, expected["values"])
    assert names == expected["names"]


@given(histories(), st.floats(0, 2e6), st.sampled_from([0.0, -5 * 3_600.0, 9.5 * 3_600.0]))
@settings(max_examples=200, deadline=None)
def test_summarize_history_matches_the_kernels_it_is_made_of(history: list[Any], now: float, offset: float) -> None:
    """One call does what extraction did with five kernels and NumPy: the same quantiles,
    totals and histograms, bit for bit; the effective number of events to rounding."""
    got = _core.summarize_history(history, now, SUMMARY_QUANTILES, offset)
    assert_same_summary(got, summary_from_kernels(history, now, offset), rtol=1e-12)


def test_summarize_history_refuses_what_read_history_refuses() -> None:
    good = Interaction("a", "click", 1.0, 1.0, {"f": 1.0}, {"price": 5.0}, 86_400.0, "e1", 60.0)  # type: ignore[arg-type]
    summarize = lambda history, now=0.0: _core.summarize_history(history, now, SUMMARY_QUANTILES, 0.0)  # noqa: E731
    with pytest.raises(penchant.ValidationError, match="timestamp"):
        summarize([good, object()])
    with pytest.raises(penchant.ValidationError, match="NaN"):
        summarize([good, Interaction("b", "click", 1.0, 1.0, {}, {"price": math.inf})])
    with pytest.raises(penchant.ValidationError, match="now"):
        summarize([good], math.nan)
    bad_weight = Interaction("c", "click", 1.0, 1.0, {"f": 1.0}, {}, 0.0, "e3")
    bad_weight.weight = math.nan
    with pytest.raises(penchant.ValidationError, match="weight"):
        summarize([good, bad_weight])
    with pytest.raises(penchant.ValidationError, match="quantiles"):
        _core.summarize_history([good], 0.0, [1.5], 0.0)
    with pytest.raises(penchant.ValidationError, match="16 quantiles"):
        _core.summarize_history([good], 0.0, [0.5] * 17, 0.0)
    with pytest.raises(penchant.ValidationError, match="utc_offset"):
        _core.summarize_packed_history(b"\x90", 0.0, 60.0, SUMMARY_QUANTILES, math.inf)


def test_a_history_whose_activity_decayed_away_has_no_temporal_summary() -> None:
    """An event with a half-life of a second, 2,000 seconds on, weighs nothing (2^-2000 is
    below a double's range): no activity, no numeric weight, and no such preferences."""
    old = Interaction("a", "click", 1.0, 1.0, {"f": 1.0}, {"price": 5.0}, 1_000.0, "e1", 1.0)  # type: ignore[arg-type]
    names, counts, _, squares, _, events, activity = _core.summarize_history([old], 3_000.0, SUMMARY_QUANTILES, 0.0)
    assert (names, counts, squares, events, activity) == (["price"], [0], [0.0], 1, None)
    extractor = PreferenceExtractor(min_numeric_samples=1, min_temporal_events=1)
    profile = UserProfile("u", interaction_history=[old])
    assert extractor.extract(profile, now=3_000.0) == {}


def test_summarize_history_finds_the_peak_hours_and_days() -> None:
    """Three events at 09:00 UTC on Mondays and one at 21:00 on a Thursday: hour 9 and Monday
    hold the most activity; with an offset of +2 hours, hour 11."""
    monday_9 = 4 * 86_400.0 + 9 * 3_600.0  # 1970-01-05 was a Monday
    times = [monday_9, monday_9 + 7 * 86_400.0, monday_9 + 14 * 86_400.0, 21 * 3_600.0]
    history = [Interaction(f"i{k}", "click", 1.0, 1.0, {"f": 1.0}, {}, t, f"e{k}", 1e12) for k, t in enumerate(times)]
    summary = _core.summarize_history(history, max(times), SUMMARY_QUANTILES, 0.0)
    effective, hours, peak_hours, days, peak_days = summary[6]
    assert (summary[5], effective) == (4, pytest.approx(4.0))
    assert (peak_hours, peak_days) == ([9], [0])
    assert 0 < min(hours, days) <= max(hours, days) < 1
    assert _core.summarize_history(history, max(times), SUMMARY_QUANTILES, 7_200.0)[6][2] == [11]


STORED_TIMES = st.one_of(
    st.integers(0, 2**32 - 1).map(float),  # 32-bit seconds
    st.floats(0, 1.6e10),  # 34-bit seconds and nanoseconds
    st.floats(-6e10, -1e-6),  # 96-bit: before 1970
)
STORED_ATTRIBUTES = st.dictionaries(
    st.sampled_from(["price", "length", "colour", "flag"]),
    st.one_of(finite, st.integers(-(2**40), 2**40), st.booleans(), st.just("red")),
    max_size=3,
)
stored_histories = st.lists(
    st.builds(
        lambda t, w, a, h: Interaction("i", "click", 1.0, w, {"f": 1.0}, a, t, "e", h),
        STORED_TIMES,
        finite,
        STORED_ATTRIBUTES,
        st.sampled_from(HALF_LIVES),
    ),
    max_size=25,
)
"""Histories as a store keeps them: times before and after 1970 (each of MessagePack's three
timestamp sizes), whole seconds and microseconds; int, float, bool and str attributes."""


@functools.cache
def serializer() -> Any:
    from penchant.profile_store.serializer import ProfileSerializer

    return ProfileSerializer()


def packed(history: list[Interaction]) -> bytes:
    encode = serializer().encode_interaction
    return serializer().pack_history([encode(i) for i in history])


@given(stored_histories, st.floats(-6e10, 2e10), st.sampled_from([0.0, 3_600.0, -34_200.0]))
@settings(max_examples=300, deadline=None)
def test_packed_history_reads_as_its_decoded_entries(history: list[Interaction], now: float, offset: float) -> None:
    """Extraction's reader of a history still encoded gives the columns and the summary, bit for
    bit, that the reader of its decoded entries gives, and refuses what decoding refuses (an attribute that
    is not a number); and the last entry's time as datetime.timestamp()."""
    data = packed(history)
    try:
        decoded = serializer()._history.decode(data)
    except penchant.ValidationError:
        for read in (
            lambda: _core.read_packed_history(data, 60.0),
            lambda: _core.summarize_packed_history(data, now, 60.0, SUMMARY_QUANTILES, offset),
        ):
            with pytest.raises(penchant.ValidationError):
                read()
        return
    for got_column, want_column in zip(_core.read_packed_history(data, 60.0), _core.read_history(decoded), strict=True):
        if isinstance(want_column, list):
            assert got_column == want_column
        else:
            np.testing.assert_array_equal(got_column, want_column)
            assert got_column.dtype == want_column.dtype
    got = _core.summarize_packed_history(data, now, 60.0, SUMMARY_QUANTILES, offset)
    assert_same_summary(got, _core.summarize_history(decoded, now, SUMMARY_QUANTILES, offset))
    if history and abs(history[-1].timestamp.timestamp()) * 1e6 > 2**53:
        # Microseconds a double cannot hold exactly: the caller decodes (and Python rounds).
        with pytest.raises(penchant.ValidationError, match="too far"):
            _core.packed_history_last_time(data)
        return
    last = _core.packed_history_last_time(memoryview(data))
    assert last == (history[-1].timestamp.timestamp() if history else None)


def test_packed_history_fills_a_missing_half_life_and_refuses_what_it_cannot_read() -> None:
    import msgspec

    stamp = Interaction("a", "click", 1.0, 1.0, timestamp=60.0).timestamp
    entry = {"item_id": "a", "feedback_type": "click", "value": 1, "weight": 2.0, "timestamp": stamp, "x": [1, {}]}
    # Both at 00:01 on a Thursday; one half-life of 7 s later the entry without its own (14 s)
    # weighs 1/2 and the other 2^(-1/2): (1 + 2^(-1/2))^2 / (1 + 1/2) effective events.
    both = [entry, {**entry, "half_life": 14.0, "attributes": {"p": 3}}]
    summary = _core.summarize_packed_history(msgspec.msgpack.encode(both), 67.0, 7.0, SUMMARY_QUANTILES, 0.0)
    effective, _, peak_hours, _, peak_days = summary[6]
    assert effective == pytest.approx((1 + 2**-0.5) ** 2 / 1.5)
    assert (summary[0], summary[1], summary[4], summary[5], peak_hours, peak_days) == (
        ["p"],
        [1],
        [3.0, 3.0, 3.0],
        2,
        [0],
        [3],
    )
    good = msgspec.msgpack.encode([entry])
    for bad in (
        b"",
        b"\x91",  # an array of one entry, cut short
        b"\x81\xa1x\x01",  # not an array
        msgspec.msgpack.encode([{"weight": 1.0}]),  # no time
        msgspec.msgpack.encode([{**entry, "timestamp": "1970-01-01T00:01:00Z"}]),  # a time as text
        msgspec.msgpack.encode([{**entry, "weight": "1"}]),
        msgspec.msgpack.encode([{**entry, "half_life": 0.0}]),
        msgspec.msgpack.encode([{**entry, "attributes": {"p": math.nan}}]),
        msgspec.msgpack.encode([{**entry, "attributes": [1]}]),
        msgspec.msgpack.encode([{**entry, "attributes": {"p": True}}]),  # decoding refuses a bool
        msgspec.msgpack.encode([{k: v for k, v in entry.items() if k != "item_id"}]),  # a field it needs
        msgspec.msgpack.encode([{**entry, "value": "1"}]),
        good[:-1],
        b"\xdd\xff\xff\xff\xff",  # a huge count
    ):
        with pytest.raises(penchant.ValidationError):
            _core.summarize_packed_history(bad, 0.0, 60.0, SUMMARY_QUANTILES, 0.0)
    with pytest.raises(penchant.ValidationError, match="read-only"):
        _core.summarize_packed_history(bytearray(good), 0.0, 60.0, SUMMARY_QUANTILES, 0.0)


@given(st.binary(max_size=200), st.integers(0, 150))
@settings(max_examples=300, deadline=None)
def test_packed_history_readers_refuse_corrupt_bytes_without_crashing(noise: bytes, cut: int) -> None:
    """Truncated or altered stored bytes: a result or a ValidationError, never a crash."""
    data = packed([Interaction("a", "click", 1.0, 0.5, {"f": 1.0}, {"price": 3.0}, 1e9, "e1")])
    for blob in (noise, data[:cut], data[:cut] + noise):
        for read in (
            lambda b: _core.summarize_packed_history(b, 0.0, 60.0, SUMMARY_QUANTILES, 0.0),
            _core.packed_history_last_time,
        ):
            with contextlib.suppress(penchant.ValidationError):
                read(blob)


@given(
    st.lists(
        st.tuples(
            st.floats(0, 50),
            st.floats(0, 50),
            st.sampled_from([0.0, 0.0, 0.0, 3.0, -3.0, 40.0]),
            st.booleans(),
        ),
        max_size=30,
    ),
    st.sampled_from(["none", "stated", "blocked", "both"]),
    st.floats(0, 1),
    st.integers(0, 6),
)
@settings(max_examples=300, deadline=None)
def test_categorical_choice_matches_the_numpy_reference(
    rows: list[tuple[float, float, float, bool]], given_: str, min_confidence: float, max_features: int
) -> None:
    """Ties in weight included (evidence drawn from few values), statements and blocks or none."""
    names = [f"f{k % 7}:{k}" for k in range(len(rows))][::-1]  # not in name order
    positive = [float(round(p)) for p, _, _, _ in rows]
    negative = [float(round(n)) for _, n, _, _ in rows]
    strength = [s for _, _, s, _ in rows] if given_ in ("stated", "both") else None
    unwanted = [b for _, _, _, b in rows] if given_ in ("blocked", "both") else None
    args = (names, positive, negative, strength, unwanted, min_confidence, max_features, 5.0)
    assert _core.categorical_choice(*args) == ref.categorical_choice(*args)


def test_categorical_choice_refuses_bad_input() -> None:
    with pytest.raises(penchant.ValidationError, match="positive"):
        _core.categorical_choice(["a"], [1.0, 2.0], [0.0], None, None, 0.1, 3, 5.0)
    with pytest.raises(penchant.ValidationError, match="NaN"):
        _core.categorical_choice(["a"], [math.nan], [0.0], None, None, 0.1, 3, 5.0)
    with pytest.raises(penchant.ValidationError, match="strength"):
        _core.categorical_choice(["a"], [1.0], [0.0], [1.0, 2.0], None, 0.1, 3, 5.0)


TEXTS = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)
IDS = TEXTS | st.sampled_from(["é" * 20, "x" * 255, "名前" * 40])
NAMES = TEXTS | st.sampled_from(["genre:jazz", "x" * 300, "名前" * 170])
"""Ids and feature names, short and long (each of MessagePack's string headers), not ASCII."""


@given(
    st.one_of(STORED_TIMES, st.floats(-6.2e10, 2.5e11)),
    IDS,
    IDS,
    st.sampled_from(["click", "rating", "dwell"]),
    finite,
    finite,
    st.dictionaries(NAMES, finite, max_size=20),
    st.dictionaries(NAMES, finite, max_size=3),
    st.sampled_from(HALF_LIVES),
)
@settings(max_examples=300, deadline=None)
def test_signal_history_member_is_the_members_python_writes(
    timestamp: float,
    event_id: str,
    item_id: str,
    feedback_type: str,
    value: float,
    weight: float,
    features: dict[str, float],
    attributes: dict[str, float],
    half_life: float,
) -> None:
    """Byte for byte what ProfileSerializer.history_member writes for the Interaction that
    InterestModel makes of the signal: times in each of the three timestamp sizes, rounded to
    the microsecond as datetime rounds them; maps of 16 entries or more; long and non-ASCII text."""
    from penchant.feedback_collector import FeedbackType, Signal

    kind: Any = feedback_type
    signal = Signal(event_id, "u", item_id, kind, value, weight, half_life, timestamp, features, attributes)
    entry = Interaction(item_id, kind, value, weight, dict(features), dict(attributes), timestamp, event_id, half_life)
    assert _core.signal_history_member(signal, FeedbackType) == serializer().history_member(entry)


@pytest.mark.parametrize(
    "timestamp",
    [0.0, 2.0**31, 2.0**32 - 1, 2.0**32, 2.0**32 + 0.5, 2.0**34 - 1, 2.0**34, 1.7e9 + 0.0000005, 1.7e9 + 0.0000015,
     -1e-6, -0.5, -62_135_596_800.0, 253_402_300_799.0],
)  # fmt: skip
def test_signal_history_member_at_the_edges_of_each_timestamp_size(timestamp: float) -> None:
    """The edges of MessagePack's 32-, 64- and 96-bit timestamps, ties of the microsecond
    rounding, and the first and last second datetime can hold."""
    from penchant.feedback_collector import FeedbackType, Signal

    signal = Signal("e", "u", "i", FeedbackType.CLICK, 1.0, 1.0, 60.0, timestamp, {"f": 0.5})
    entry = Interaction("i", "click", 1.0, 1.0, {"f": 0.5}, {}, timestamp, "e", 60.0)
    assert _core.signal_history_member(signal, FeedbackType) == serializer().history_member(entry)


def test_signal_history_member_leaves_what_it_does_not_write_to_the_general_path() -> None:
    from types import MappingProxyType

    from penchant.feedback_collector import FeedbackType, Signal

    def signal(**changes: Any) -> Signal:
        fields: dict[str, Any] = dict(
            event_id="e", user_id="u", item_id="i", feedback_type=FeedbackType.CLICK, value=1.0, weight=1.0,
            half_life=60.0, timestamp=1.7e9, features={"f": 1.0}, attributes={"a": 2.0},
        )  # fmt: skip
        return Signal(**{**fields, **changes})

    assert _core.signal_history_member(signal(), FeedbackType) is not None
    as_float_reads = signal(value=1, timestamp=1_700_000_000)  # ints, read as float() reads them
    assert _core.signal_history_member(as_float_reads, FeedbackType) is not None
    for odd in (
        signal(features={"f": 1}),  # an int weight: msgspec writes an int
        signal(attributes={"a": True}),
        signal(features=MappingProxyType({"f": 1.0})),
        signal(item_id="\ud800"),  # not UTF-8
        signal(timestamp=1e12),  # past the year 9999
        signal(value=True),
        # Types the general path writes otherwise or refuses: the general path decides.
        signal(item_id=Text("i")),
        signal(event_id=Text("e")),
        signal(feedback_type=Kind.CLICK),  # str() is "Kind.CLICK", not its text
        signal(timestamp=np.int64(1_700_000_000)),
        signal(timestamp=np.float32(1.7e9)),
        signal(timestamp=Decimal("1700000000")),
        signal(weight=Number(1.0)),
    ):
        assert _core.signal_history_member(odd, FeedbackType) is None
    assert _core.signal_history_member(signal(feedback_type="click"), FeedbackType) is not None


class Text(str):
    pass


class Number(float):
    def __float__(self) -> float:
        return 2.0


class Kind(str, enum.Enum):  # noqa: UP042 - a (str, Enum), whose str() is not its text
    CLICK = "click"


SHARES = st.one_of(st.just(0.0), st.floats(1e-6, 1e3), st.floats(-1e3, -1e-6), st.integers(-5, 5))


@given(
    st.lists(
        st.tuples(
            st.floats(-40.0, 40.0),  # half-lives from the landmark
            SHARES,
            st.sampled_from([3_600.0, 86_400.0, 90.5, 1e15 + 2.0]),
            st.dictionaries(st.sampled_from(["a", "b", "genre:jazz", "é"]), SHARES, max_size=4),
            st.booleans(),
        ),
        max_size=12,
    ),
    st.floats(0, 1e9),
)
@settings(max_examples=300, deadline=None)
def test_signal_increments_match_the_reference(rows: list[tuple[Any, ...]], landmark: float) -> None:
    """Per signal and feature, in order: the channel key of the share's sign and half-life and
    its amount; zero shares left out; feature dicts and other mappings, int weights."""
    from types import MappingProxyType

    from penchant.feedback_collector import FeedbackType, Signal
    from penchant.user_profile import InterestModel

    signals = []
    for n, (at, weight, h, features, proxy) in enumerate(rows):
        shares = MappingProxyType(features) if proxy else features
        signals.append(Signal(f"e{n}", "u", "i", FeedbackType.CLICK, 1.0, weight, h, landmark + at * h, shares))
    got = InterestModel.increments_of(landmark, signals)
    expected = ref.increments(landmark, signals)
    assert [[(name, key) for name, key, _ in row] for row in got] == [
        [(name, key) for name, key, _ in row] for row in expected
    ]
    for row, expected_row in zip(got, expected, strict=True):
        for (_, _, amount), (_, _, want) in zip(row, expected_row, strict=True):
            assert amount == pytest.approx(want, rel=1e-12)


def test_signal_increments_refuse_what_they_cannot_add() -> None:
    from penchant.feedback_collector import FeedbackType, Signal
    from penchant.user_profile import InterestModel

    def signal(**changes: Any) -> Signal:
        fields: dict[str, Any] = dict(
            event_id="e", user_id="u", item_id="i", feedback_type=FeedbackType.CLICK, value=1.0, weight=1.0,
            half_life=60.0, timestamp=0.0, features={"f": 1.0},
        )  # fmt: skip
        return Signal(**{**fields, **changes})

    with pytest.raises(penchant.ValidationError, match="rebase the landmark"):
        InterestModel.increments_of(0.0, [signal(), signal(timestamp=1e9)])
    with pytest.raises(penchant.ValidationError, match="feature weight"):
        InterestModel.increments_of(0.0, [signal(features={"f": "x"})])
    with pytest.raises(penchant.ValidationError, match="features must be a mapping"):
        InterestModel.increments_of(0.0, [signal(features=[("f", 1.0)])])
    with pytest.raises(penchant.ValidationError, match="overflows"):
        InterestModel.increments_of(0.0, [signal(weight=1e300, features={"f": 1e300})])
    # A signal without features adds nothing, whatever its time.
    assert InterestModel.increments_of(0.0, [signal(timestamp=1e9, features={})]) == [[]]

    class Growing:
        """A weight whose conversion adds a feature to the dict being read."""

        def __float__(self) -> float:
            shares[f"g{len(shares)}"] = 1.0
            return 1.0

    shares: dict[str, Any] = {"f": 1.0}
    shares["g"] = Growing()
    rows = InterestModel.increments_of(0.0, [signal(features=shares)])  # no panic: the items read first
    assert [name for name, _, _ in rows[0]] == ["f", "g"]


ODD_TEXT = st.sampled_from(["ok", "", "x" * 257, "x" * 1025, "tab\there", "é", "\x7f", "new\nline"])
ODD_NUMBER = st.sampled_from([1.0, 0.0, -2.5, 3, True, math.nan, math.inf, "1", None])


def test_a_user_id_that_is_not_utf8_is_refused_as_invalid() -> None:
    from penchant.feedback_collector import FeedbackType, Signal
    from penchant.profile_store import InMemoryProfileStore

    user = "\udc80"
    signal = Signal("e", user, "i", FeedbackType.CLICK, 1.0, 1.0, 60.0, 1.7e9, {"f": 1.0})
    assert _core.signals_fit_to_store([signal], user, Signal, FeedbackType, 256, 1024) is False
    with pytest.raises(penchant.ValidationError):
        InMemoryProfileStore().apply_feedback(user, [signal])


@given(
    st.tuples(ODD_TEXT, ODD_TEXT, ODD_TEXT),
    st.sampled_from(["click", "CLICK", "unknown", None]),
    st.tuples(ODD_NUMBER, ODD_NUMBER, ODD_NUMBER, ODD_NUMBER),
    st.dictionaries(ODD_TEXT, ODD_NUMBER, max_size=3),
    st.dictionaries(ODD_TEXT, ODD_NUMBER, max_size=2),
    st.sampled_from([{}, None, "ctx"]),
    st.sampled_from([None, "ok", "other"]),
)
@settings(max_examples=400, deadline=None)
def test_signals_fit_to_store_only_when_check_signal_accepts_them(
    ids: tuple[Any, ...],
    kind: Any,
    numbers: tuple[Any, ...],
    features: dict[Any, Any],
    attributes: dict[Any, Any],
    context: Any,
    user_id: str | None,
) -> None:
    """The Rust check says yes only for signals check_signal accepts (else check_signal runs
    and names the problem), and says yes to plain valid ones, which then skip it."""
    from penchant.feedback_collector import FeedbackType, Signal
    from penchant.profile_store.serializer import check_signal

    event_id, user, item_id = ids
    value, weight, timestamp, half_life = numbers
    kind = FeedbackType.CLICK if kind == "click" else kind
    signal = Signal(event_id, user, item_id, kind, value, weight, half_life, timestamp, features, attributes, context)
    fits = _core.signals_fit_to_store([signal], user_id, Signal, FeedbackType, 256, 1024)
    try:
        check_signal(signal, user_id)
    except penchant.ValidationError:
        assert not fits
    else:
        plain = (
            all(type(x) is float for x in numbers)
            and all(type(x) is float for x in [*features.values(), *attributes.values()])
            and all(x == "ok" for x in [*ids, *features, *attributes])
            and isinstance(kind, FeedbackType)
        )
        assert fits == plain
