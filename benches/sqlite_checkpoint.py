"""Latency of one event into a heavy profile (500 history entries) in an SQLite store, with the
write-ahead log checkpointed by the store's thread (the default) or by SQLite inside commits
(``auto``: what stores did before), at ``synchronous`` NORMAL or FULL::

    python benches/sqlite_checkpoint.py thread normal
    python benches/sqlite_checkpoint.py auto normal

Prints min, median, p99, p99.9 and max over 3,000 events (wall clock: run it on a quiet
machine, and compare the two modes in the same session).
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benches.bench_store import event
from penchant.profile_store import SQLiteProfileStore
from penchant.user_profile import InterestModel


def main(mode: str, synchronous: str, events: int = 3000) -> None:
    path = os.path.join(tempfile.mkdtemp(), "checkpoint.db")
    store = SQLiteProfileStore(path, model=InterestModel(max_history=500), synchronous=synchronous)
    if mode == "auto":
        store._db.checkpointer = None  # type: ignore[attr-defined]  # SQLite's own checkpoints
    elif mode != "thread":
        raise SystemExit("mode: thread or auto")
    try:
        store.apply_feedback("alice", [event("alice", n) for n in range(600)])
        counter = itertools.count(1000)
        times = []
        for _ in range(events):
            start = time.perf_counter()
            store.apply_feedback("alice", [event("alice", next(counter))])
            times.append(time.perf_counter() - start)
    finally:
        store.close()
    times.sort()

    def ms(q: float) -> str:
        return f"{times[min(len(times) - 1, int(len(times) * q))] * 1e3:.3f}"

    print(
        f"{mode} {synchronous}: min {ms(0)} median {ms(0.5)} p99 {ms(0.99)} p99.9 {ms(0.999)} "
        f"max {times[-1] * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
