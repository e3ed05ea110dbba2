"""Instructions per ranking, counted by valgrind's callgrind: a figure that does not move with
the machine's load, unlike the wall times of bench_rank.py.

    python benches/callgrind_rank.py            # catalog and dicts at 1,000 candidates
    python benches/callgrind_rank.py 10000      # another size

It runs this file under callgrind twice per case (``--child``: bench_rank.py's set-up and 20
warm-up calls, then 0 or ``CALLS`` counted calls) and divides the difference of the two totals
by ``CALLS``, so the set-up cancels out. Cases: ``catalog`` (``Catalog.rank`` with the profile
compiled beforehand, the issue's Catalog path) and ``dicts`` (``rank_items`` over a list of
dicts). OpenBLAS's threads are limited to one so that their spinning is not counted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CALLS = 100


def child(case: str, n: int, calls: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import penchant
    from benches import bench_rank as bench
    from benches.workload import NOW

    workload, catalog, base, profile = bench.setup(n)
    compiled = catalog.compile(profile, now=NOW)
    items = workload.dicts(workload.ids, base)
    for _ in range(20 + calls):
        if case == "catalog":
            catalog.rank(compiled, workload.ids, base, **bench.OPTIONS)
        else:
            penchant.rank_items(profile, items, **bench.OPTIONS)


def collected(case: str, n: int, calls: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--dump-instr=no",
                f"--callgrind-out-file={directory}/out",
                sys.executable,
                __file__,
                "--child",
                case,
                str(n),
                str(calls),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(run.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000
    for case in ("catalog", "dicts"):
        per_call = (collected(case, n, CALLS) - collected(case, n, 0)) / CALLS
        print(f"{case} {n}: {per_call:,.0f} instructions per call")


if __name__ == "__main__":
    main()
