"""Where the time of ``apply_feedback`` through every tier goes: one event at a time into one
user's profile (the store benchmark's workload: 50 events, then 1,000 more, so the history
fills to 500 entries), each call's time split into the SQL transaction (the model's work
included: it runs inside it; on PostgreSQL, a one-statement write's part also holds the
caller's copy and the Redis commands, made while the server runs the statement), the Redis
round trip, and the rest; then the slowest calls, with
their place in the cycle of ``refresh_every`` (0: the call whose events crossed a multiple of
it, which re-extracts the preferences from the whole history)::

    eval "$(bash .ci/services.sh)"
    python benches/store_latency.py sqlite      # cache -> Redis -> SQLite (synchronous=normal)
    python benches/store_latency.py postgres    # cache -> Redis -> PostgreSQL

Wall clock: run it on a quiet machine. It also prints the CPU time per call of this process
and of the PostgreSQL and Redis servers when they run on this machine (every process of theirs,
so run nothing else against them meanwhile).
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benches.bench_store import event, server, typical_events
from penchant.profile_store import open_store, redis_store, sql_store

SPENT: dict[str, list[float]] = {"redis": [0.0], "sql": [0.0]}
"""Per call: the time of each part (a call may run several of a part's steps)."""


def timed(cls: type, name: str, part: str) -> None:
    original: Callable[..., Any] = getattr(cls, name)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            SPENT[part][-1] += time.perf_counter() - start

    setattr(cls, name, wrapper)


def server_cpu() -> dict[str, float]:
    """CPU seconds spent so far by the PostgreSQL and Redis processes of this machine (Linux:
    read from /proc; servers elsewhere count nothing)."""
    spent = {"postgres": 0.0, "redis-server": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                line = stat.read()
        except OSError:
            continue
        name = line[line.index("(") + 1 : line.rindex(")")]
        fields = line[line.rindex(")") + 2 :].split()
        for server_name in spent:
            if name.startswith(server_name):
                spent[server_name] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return spent


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3  # noqa: E731
    return f"min {ordered[0] * 1e3:.3f}  median {at(0.5):.3f}  p90 {at(0.9):.3f}  p99 {at(0.99):.3f} ms"


def main(database: str, calls: int = 1000) -> None:
    timed(redis_store.RedisConnection, "run_sync", "redis")
    timed(sql_store._SQLiteDatabase, "run_sync", "sql")
    timed(sql_store._PostgresDatabase, "run_sync", "sql")
    timed(sql_store._PostgresDatabase, "run_statement_sync", "sql")  # a one-statement write
    url = (
        f"sqlite:///{tempfile.mkdtemp()}/latency.db?synchronous=normal"
        if database == "sqlite"
        else server("PENCHANT_TEST_POSTGRES_URL")
    )
    store = open_store(server("PENCHANT_TEST_REDIS_URL"), url, "latency" + uuid.uuid4().hex[:8])
    try:
        store.apply_feedback("alice", typical_events("alice"))
        numbers = itertools.count(1000)
        for _ in range(20):  # warm-up, as the benchmark's
            store.apply_feedback("alice", [event("alice", next(numbers))])
        total = []
        cycle = []
        cpu_before, servers_before = time.process_time(), server_cpu()
        for spent in SPENT.values():
            spent.clear()
        for _ in range(calls):
            for spent in SPENT.values():
                spent.append(0.0)
            start = time.perf_counter()
            profile = store.apply_feedback("alice", [event("alice", next(numbers))])
            total.append(time.perf_counter() - start)
            cycle.append(profile.event_count % store.model.refresh_every if store.model.refresh_every else -1)
        cpu, servers = time.process_time() - cpu_before, server_cpu()
        print(f"{calls} calls, {database}")
        print(
            f"cpu per call: this process {cpu / calls * 1e6:.0f} µs, PostgreSQL's "
            f"{(servers['postgres'] - servers_before['postgres']) / calls * 1e6:.0f} µs, Redis's "
            f"{(servers['redis-server'] - servers_before['redis-server']) / calls * 1e6:.0f} µs "
            "(servers on this machine)"
        )
        print("total ", summary(total))
        print("sql   ", summary(SPENT["sql"]))
        print("redis ", summary(SPENT["redis"]))
        print("rest  ", summary([t - s - r for t, s, r in zip(total, SPENT["sql"], SPENT["redis"], strict=True)]))
        rest = [t - s - r for t, s, r in zip(total, SPENT["sql"], SPENT["redis"], strict=True)]
        for part, values in (("sql", SPENT["sql"]), ("redis", SPENT["redis"]), ("rest", rest)):
            refresh = [v for v, place in zip(values, cycle, strict=True) if place == 0]
            others = [v for v, place in zip(values, cycle, strict=True) if place != 0]
            if refresh and others:
                print(
                    f"{part:6s} median of the calls that refresh preferences {statistics.median(refresh) * 1e3:.3f} ms,"
                    f" of the others {statistics.median(others) * 1e3:.3f} ms"
                )
        slowest = sorted(range(calls), key=lambda i: -total[i])[:15]
        print("slowest (ms, place in the refresh cycle):", [(round(total[i] * 1e3, 2), cycle[i]) for i in slowest])
    finally:
        store.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqlite")
