"""Instructions per retrieval, counted by valgrind's callgrind: a figure that does not move with
the machine's load, unlike the wall times of bench_retrieval.py.

    python benches/callgrind_retrieval.py typical       # or heavy; prints instructions per call

It runs this file under callgrind twice per case (``--child``: the set-up of bench_retrieval.py,
then 0 or ``CALLS`` calls) and divides the difference of the two totals by ``CALLS``, so the
set-up (catalog, feedback, compiling) cancels out. Cases: ``engine`` (``Engine.rank`` with the
profile in the in-process tier) and ``catalog`` (``Catalog.rank`` with the profile compiled
beforehand). The set-up itself varies by a few million instructions between runs (random event
ids, the clock), about ±30,000 per call at 200 calls.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

CALLS = 200


def child(profile: str, calls: int, case: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import penchant
    from benches import bench_retrieval as bench

    _, catalog, requests = bench.workload()
    with penchant.Engine(database_url="sqlite:///:memory:") as engine:
        stored = bench.prepared_engine(engine, profile)
        compiled = catalog.compile(stored)
        for n in range(20 + calls):  # 20 to warm the caches, then the counted calls
            ids, base = requests[n % len(requests)]
            if case == "engine" or n < 20:
                engine.rank(bench.USER, catalog, candidate_ids=ids, base_scores=base)
            if case == "catalog" or n < 20:
                catalog.rank(compiled, ids, base, k=10)


def collected(profile: str, calls: int, case: str) -> int:
    with tempfile.TemporaryDirectory() as directory:
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={directory}/out",
                sys.executable,
                __file__,
                "--child",
                profile,
                str(calls),
                case,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(run.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    if sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    profile = sys.argv[1]
    for case in ("engine", "catalog"):
        per_call = (collected(profile, CALLS, case) - collected(profile, 0, case)) / CALLS
        print(f"{profile} {case}: {per_call:,.0f} instructions per call")


if __name__ == "__main__":
    main()
