"""How long replaying a whole MovieLens file through the FeedbackCollector takes: every event, in
time order, into profiles and co-visitation, in batches of each size given. Not a pytest
benchmark (it needs the data and takes seconds per run); EVALUATION.md quotes its output.

    python benches/replay_movielens.py ../shared/data/ml-latest-small 1000,5000,25000,200000

Wall and CPU seconds are both printed: on a shared machine the wall clock also counts other
jobs, while the replay itself runs on one core.
"""

from __future__ import annotations

import gc
import sys
import time

import numpy as np

import penchant
from penchant.evaluation import read_interactions, replay


def main(path: str, batches: str) -> None:
    data = read_interactions(path).with_features(["genre"])
    order = np.lexsort((np.arange(data.n_events), data.timestamps))
    gc.disable()  # as penchant.evaluation.evaluate does: long-lived profiles make GC passes costly
    for batch_size in (int(b) for b in batches.split(",")):
        wall, cpu = time.perf_counter(), time.process_time()
        collector, _ = replay(data, order, covisitation=penchant.CoVisitation(), batch_size=batch_size)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        model = collector.covisitation
        assert model is not None
        print(
            f"{data.name}: {data.n_events:,} events in batches of {batch_size:,}: "
            f"{wall:.1f} s wall, {cpu:.1f} s CPU ({data.n_events / cpu:,.0f} events per CPU second); "
            f"co-visitation {len(model):,} items, {model.entries:,} weights, "
            f"{len(model.to_bytes()) / 2**20:.1f} MiB saved",
            flush=True,
        )
        del collector
        gc.collect()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "25000")
