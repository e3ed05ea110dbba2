"""``penchant bench``: the seed's four performance targets measured end to end on this machine,
through the same calls an application makes, beside penchant's own tighter targets where an
issue sets one.

Each case is timed call by call with ``time.perf_counter`` after a short warm-up; a seed
target is judged on the 99th percentile (the seed names no statistic, so the strict reading),
a penchant target on the statistic its issue names (p99, or the median where the issue gives a
plain bound).
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

import penchant
from penchant.engine import Engine
from penchant.errors import ValidationError
from penchant.feedback_collector import FeedbackProcessor
from penchant.profile_store import open_database, open_store
from penchant.simulation import SimulationConfig, World, make_world
from penchant.user_profile import InterestModel, PreferenceExtractor, UserProfile

__all__ = ["BenchConfig", "CaseResult", "Target", "run_bench"]

DAY = 86_400.0
MS = 1e-3
US = 1e-6


def _ms(seconds: float) -> float:
    """Milliseconds to the nanosecond, the resolution of the clock."""
    return round(seconds / MS, 6)


@dataclass(frozen=True)
class Target:
    """A bound on a case: ``statistic`` (``"p99"`` or ``"median"``) below ``seconds``, set by
    ``source``."""

    seconds: float
    statistic: str
    source: str

    def met_by(self, p50: float, p99: float) -> bool:
        return (p99 if self.statistic == "p99" else p50) < self.seconds


SEED_TARGETS = {
    "profile retrieval": Target(10 * MS, "p99", "seed"),
    "preference extraction": Target(50 * MS, "p99", "seed"),
    "retrieval ranking": Target(100 * MS, "p99", "seed"),
    "feedback processing": Target(20 * MS, "p99", "seed"),
}


@dataclass(frozen=True)
class BenchConfig:
    """``candidates`` items per ranking request, ``interactions`` in the history that preference
    extraction reads, ``history`` events recorded for the stored user, ``samples`` timed calls
    per case."""

    candidates: int = 1_000
    interactions: int = 10_000
    history: int = 500
    samples: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("candidates", "interactions", "history", "samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class CaseResult:
    """One measured case: which seed target it belongs to, what was timed, and its latencies
    in seconds."""

    area: str
    operation: str
    calls: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    seed_target: Target
    penchant_target: Target | None

    @property
    def seed_met(self) -> bool:
        return self.seed_target.met_by(self.p50, self.p99)

    @property
    def penchant_met(self) -> bool | None:
        return None if self.penchant_target is None else self.penchant_target.met_by(self.p50, self.p99)

    def to_json(self) -> dict[str, Any]:
        def target(t: Target | None) -> dict[str, Any] | None:
            return None if t is None else {"ms": _ms(t.seconds), "statistic": t.statistic, "source": t.source}

        return {
            "area": self.area,
            "operation": self.operation,
            "calls": self.calls,
            "p50_ms": _ms(self.p50),
            "p90_ms": _ms(self.p90),
            "p99_ms": _ms(self.p99),
            "max_ms": _ms(self.max),
            "mean_ms": _ms(self.mean),
            "seed_target": target(self.seed_target),
            "seed_target_met": self.seed_met,
            "penchant_target": target(self.penchant_target),
            "penchant_target_met": self.penchant_met,
        }


def redacted(url: str | None) -> str | None:
    """``url`` without its password, fit to print."""
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _load_average() -> float | None:
    """The 1-minute load average, which says how much else competed for the CPUs."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover (platforms without it)
        return None


def _time_calls(call: Callable[[], object], samples: int) -> list[float]:
    for _ in range(max(3, samples // 10)):
        call()
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return timings


def _case(area: str, operation: str, timings: list[float], penchant_target: Target | None = None) -> CaseResult:
    values = np.asarray(timings)
    p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    return CaseResult(
        area,
        operation,
        len(values),
        p50,
        p90,
        p99,
        float(values.max()),
        float(values.mean()),
        SEED_TARGETS[area],
        penchant_target,
    )


def _events(world: World, user_id: str, count: int, rng: np.random.Generator, start: float) -> list[dict[str, Any]]:
    """``count`` varied events of ``user_id`` on random items, spread from ``start`` to now."""
    kinds: list[tuple[str, float | None]] = [("click", None), ("dwell", 45.0), ("skip", None), ("rating", 4.0)]
    rows = rng.integers(0, len(world.item_ids), count)
    step = (time.time() - 60.0 - start) / count
    events = []
    for n, row in enumerate(rows):
        kind, value = kinds[n % len(kinds)]
        event: dict[str, Any] = {
            "user_id": user_id,
            "item": world.item_records[row],
            "feedback_type": kind,
            "timestamp": start + n * step,
            "event_id": f"{user_id}-{n}",
        }
        if value is not None:
            event["value"] = value
        events.append(event)
    return events


@contextmanager
def _bench_store_urls(database_url: str | None) -> Iterator[str]:
    """The database URL to bench against: the given one, or a throwaway SQLite file (the
    embedded default's kind of store) removed afterwards."""
    if database_url is not None:
        yield database_url
        return
    directory = tempfile.mkdtemp(prefix="penchant-bench-")
    try:
        yield f"sqlite:///{os.path.join(directory, 'penchant.db')}"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_bench(
    config: BenchConfig,
    *,
    redis_url: str | None = None,
    database_url: str | None = None,
    on_case: Callable[[str], None] | None = None,
) -> tuple[list[CaseResult], dict[str, Any]]:
    """Measures every case; returns the results and a description of the run (machine,
    workload, stores). ``on_case`` is told the name of each case before it runs."""
    world = make_world(
        SimulationConfig(
            users=1,
            items=config.candidates,
            candidates=config.candidates,
            k=min(10, config.candidates),
            dim=64,
            categories=20,
            tags=200,
            seed=config.seed,
        )
    )
    catalog = world.catalog()
    rng = np.random.default_rng([config.seed, 7])
    candidate_ids = list(world.item_ids)
    base_scores = rng.normal(size=len(candidate_ids))
    item_dicts = [
        {"id": record["id"], "score": float(score), "features": record["features"], "embedding": world.embeddings[row]}
        for row, (record, score) in enumerate(zip(world.item_records, base_scores, strict=True))
    ]
    tenant = "bench-" + uuid.uuid4().hex[:12]
    user_id = "bench-user"
    results: list[CaseResult] = []

    def announce(name: str) -> None:
        if on_case is not None:
            on_case(name)

    samples = config.samples
    load_before = _load_average()
    with (
        _bench_store_urls(database_url) as db_url,
        Engine(redis_url=redis_url, database_url=db_url, tenant=tenant) as engine,
    ):
        try:
            kind = "PostgreSQL" if db_url.startswith("postgres") else "SQLite"
            announce("recording the user's history")
            start = time.time() - 30 * DAY
            history = _events(world, user_id, config.history, rng, start)
            for offset in range(0, len(history), 100):
                engine.record_many(history[offset : offset + 100])

            announce("profile retrieval")
            store = engine.store
            results.append(
                _case(
                    "profile retrieval",
                    "store.get_shared, in-process tier",
                    _time_calls(lambda: store.get_shared(user_id), samples),
                    Target(5 * US, "median", "issue 4"),
                )
            )
            results.append(
                _case(
                    "profile retrieval",
                    "engine.profiles.get (an owned copy), in-process tier",
                    _time_calls(lambda: engine.profiles.get(user_id), samples),
                )
            )
            if redis_url is not None:
                with open_store(redis_url, db_url, tenant, cache=False) as no_cache:
                    results.append(
                        _case(
                            "profile retrieval",
                            "store.get from Redis, no in-process tier",
                            _time_calls(lambda: no_cache.get(user_id), samples),
                            Target(1 * MS, "p99", "issue 4"),
                        )
                    )
            with open_database(db_url, tenant=tenant) as database:
                results.append(
                    _case(
                        "profile retrieval",
                        f"store.get from {kind} alone",
                        _time_calls(lambda: database.get(user_id), samples),
                    )
                )

            announce("preference extraction")
            processor = FeedbackProcessor(model=InterestModel(max_history=config.interactions, refresh_every=0))
            big_profile = UserProfile("extraction-user")
            big_events = [
                processor.feedback(**event)
                for event in _events(world, "extraction-user", config.interactions, rng, time.time() - 90 * DAY)
            ]
            processor.apply(big_profile, big_events)
            extractor = PreferenceExtractor()
            results.append(
                _case(
                    "preference extraction",
                    f"PreferenceExtractor.extract, {config.interactions:,} interactions",
                    _time_calls(lambda: extractor.extract(big_profile), samples),
                    Target(5 * MS, "median", "issue 3") if config.interactions == 10_000 else None,
                )
            )
            results.append(
                _case(
                    "preference extraction",
                    "engine.profiles.refresh_preferences (read, extract, write)",
                    _time_calls(lambda: engine.profiles.refresh_preferences(user_id), samples),
                )
            )

            announce("retrieval ranking")
            n = config.candidates
            results.append(
                _case(
                    "retrieval ranking",
                    f"engine.rank, {n:,} catalog candidates, top 10",
                    _time_calls(
                        lambda: engine.rank(
                            user_id, catalog, k=10, candidate_ids=candidate_ids, base_scores=base_scores
                        ),
                        samples,
                    ),
                    Target(1 * MS, "p99", "issue 5") if n == 1_000 else None,
                )
            )
            if redis_url is not None:
                with (
                    open_store(redis_url, db_url, tenant, cache=False) as no_cache,
                    Engine(store=no_cache) as redis_engine,
                ):
                    results.append(
                        _case(
                            "retrieval ranking",
                            f"engine.rank, {n:,} catalog candidates, top 10, profile from Redis",
                            _time_calls(
                                lambda: redis_engine.rank(
                                    user_id, catalog, k=10, candidate_ids=candidate_ids, base_scores=base_scores
                                ),
                                samples,
                            ),
                            Target(2 * MS, "p99", "issue 5") if n == 1_000 else None,
                        )
                    )
            results.append(
                _case(
                    "retrieval ranking",
                    f"engine.rank, {n:,} items as dicts, top 10",
                    _time_calls(lambda: engine.rank(user_id, item_dicts, k=10), samples),
                )
            )

            announce("feedback processing")
            memory_profile = UserProfile("memory-user")
            memory_processor = FeedbackProcessor()
            memory_processor.apply(
                memory_profile,
                [memory_processor.feedback(**e) for e in _events(world, "memory-user", 500, rng, start)],
            )
            item_count = len(world.item_records)
            counter = iter(range(10**9))

            def process_in_memory() -> None:
                n = next(counter)
                feedback = memory_processor.feedback("memory-user", world.item_records[n % item_count], "click")
                memory_processor.apply(memory_profile, [feedback])

            results.append(
                _case(
                    "feedback processing",
                    "FeedbackProcessor: one click into a profile in memory",
                    _time_calls(process_in_memory, samples),
                    Target(50 * US, "median", "issue 3"),
                )
            )

            def record_durably() -> None:
                n = next(counter)
                engine.record(user_id, world.item_records[n % item_count], "click")

            tiers = "cache, Redis and " if redis_url is not None else "cache and "
            results.append(
                _case(
                    "feedback processing",
                    f"engine.record of one click, durable ({tiers}{kind})",
                    _time_calls(record_durably, samples),
                    Target(2 * MS, "p99", "issue 4"),
                )
            )
        finally:
            engine.profiles.delete(user_id)

    description = {
        "penchant": penchant.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "workload": {
            "candidates": config.candidates,
            "features_per_item": len(world.item_records[0]["features"]),
            "embedding_dim": world.config.dim,
            "stored_history_events": config.history,
            "extraction_interactions": config.interactions,
            "samples_per_case": samples,
        },
        "redis_url": redacted(redis_url),
        "database_url": redacted(database_url) if database_url is not None else "a temporary SQLite file",
        "tenant": tenant,
        "load_average_1min": {"before": load_before, "after": _load_average()},
    }
    return results, description


def format_seconds(seconds: float) -> str:
    """``seconds`` in the unit that suits it: µs, ms or s."""
    if math.isnan(seconds):
        return "—"
    if seconds < 1 * MS:
        return f"{seconds / US:.1f} µs"
    if seconds < 1.0:
        return f"{seconds / MS:.2f} ms"
    return f"{seconds:.2f} s"


def format_bound(seconds: float) -> str:
    """A target such as 10 ms or 5 µs, without trailing zeros."""
    if seconds < 1 * MS:
        return f"{seconds / US:g} µs"
    return f"{seconds / MS:g} ms"
