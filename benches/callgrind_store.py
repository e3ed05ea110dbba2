"""Instruction counts of profile store operations, which do not move with the machine's load.

Runs one operation N times after its setup; the count of an operation is the difference between
N calls and none, divided by N (the Redis cases need the servers of .ci/services.sh)::

    for n in 0 100; do
        valgrind --tool=callgrind --callgrind-out-file=cg.$n python benches/callgrind_store.py owned-heavy $n
    done
    # then (totals of cg.100 - totals of cg.0) / 100, e.g. from `callgrind_annotate cg.100 | head`

Operations: owned-heavy, sqlite-apply-50, sqlite-apply-500, decode-snapshot, redis-get,
redis-get-many (N calls of get_many of 100 users; after the first, the store skips sliding their
TTLs, as for any user read again within a quarter of the TTL), redis-get-many-sliding (the same,
with every user's TTL slid each time: users not read within the last quarter of the TTL).
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benches.bench_store import event, typical_events
from penchant.profile_store import (
    InMemoryProfileStore,
    ProfileSerializer,
    RedisProfileStore,
    SQLiteProfileStore,
)
from penchant.user_profile import InterestModel


def sqlite_apply(history: int) -> Callable[[], Any]:
    path = os.path.join(tempfile.mkdtemp(), "callgrind.db")
    store = SQLiteProfileStore(path, model=InterestModel(max_history=history), synchronous="NORMAL")
    store.apply_feedback("alice", [event("alice", n) for n in range(history)])
    counter = itertools.count(100_000)
    return lambda: store.apply_feedback("alice", [event("alice", next(counter))])


def owned_heavy() -> Callable[[], Any]:
    store = InMemoryProfileStore(model=InterestModel(max_history=500))
    store.apply_feedback("alice", [event("alice", n) for n in range(500)])
    return lambda: store.get("alice")


def decode_snapshot() -> Callable[[], Any]:
    profile = InMemoryProfileStore(model=InterestModel()).apply_feedback("alice", typical_events("alice"))
    serializer = ProfileSerializer()
    snapshot = serializer.encode_snapshot(profile)
    return lambda: serializer.decode_snapshot(snapshot, version=1, landmark=0, updated_at=0, event_count=50)


def redis(many: bool, *, sliding: bool = False) -> Callable[[], Any]:
    store = RedisProfileStore(os.environ["PENCHANT_TEST_REDIS_URL"], tenant="cg" + uuid.uuid4().hex[:8])
    users = [f"user{i}" for i in range(100)]
    store.apply_feedback_many([s for u in users for s in typical_events(u)])
    store.get_many(users)  # stores the snapshots
    if sliding:

        def get_many_sliding() -> Any:
            store._slid.clear()  # as if a quarter of the TTL had passed since the last read
            return store.get_many(users)

        return get_many_sliding
    return (lambda: store.get_many(users)) if many else (lambda: store.get("user1"))


OPERATIONS: dict[str, Callable[[], Callable[[], Any]]] = {
    "owned-heavy": owned_heavy,
    "sqlite-apply-50": lambda: sqlite_apply(50),
    "sqlite-apply-500": lambda: sqlite_apply(500),
    "decode-snapshot": decode_snapshot,
    "redis-get": lambda: redis(False),
    "redis-get-many": lambda: redis(True),
    "redis-get-many-sliding": lambda: redis(True, sliding=True),
}


def main() -> None:
    operation = OPERATIONS[sys.argv[1]]()
    operation()  # warm: first-call costs (imports, script loading) stay out of the difference
    for _ in range(int(sys.argv[2])):
        operation()


if __name__ == "__main__":
    main()
