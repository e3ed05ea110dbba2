"""The evaluation through penchant.Engine: the evaluated model by `Catalog.rank` with scorers
(`evaluate`), the same through `Engine` with co-visitation and affinity 0.1 (`evaluate_engine`'s
default), and through `Engine` with co-visitation and the engine's default weights, on one
leave-last-out split. Not a pytest benchmark (it needs the data and takes minutes);
EVALUATION.md quotes its output.

    python benches/engine_movielens.py ../shared/data/ml-latest-small [MAX_USERS]
"""

from __future__ import annotations

import sys
import time

import numpy as np

import penchant
from penchant import evaluation


def main(path: str, max_users: int | None) -> None:
    data = evaluation.read_interactions(path).with_features(["genre"])
    split = evaluation.leave_last_out(data, max_users=max_users)
    wall, cpu = time.perf_counter(), time.process_time()
    reference = evaluation.evaluate(data, [evaluation.PENCHANT], split=split).primary
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{data.name}: {split.n_test} test users; Catalog.rank: {wall:.1f} s wall, {cpu:.1f} s CPU")
    rows = [("Catalog.rank with co-visitation scorers", reference)]
    configs = [
        ("Engine, co-visitation, affinity 0.1", None),
        ("Engine, co-visitation, default weights", penchant.EngineConfig(covisitation=penchant.CoVisitationConfig())),
    ]
    for name, config in configs:
        wall, cpu = time.perf_counter(), time.process_time()
        rows.append((name, evaluation.evaluate_engine(data, config, split=split)))
        print(f"{name}: {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU")
    for name, result in rows:
        assert result.sampled is not None
        same = np.array_equal(result.ranks, reference.ranks)
        print(
            f"{name}: full NDCG@10 {result.full.ndcg.mean:.4f} ± {result.full.ndcg.half_width:.4f}, "
            f"sampled {result.sampled.ndcg.mean:.4f}; same ranks as Catalog.rank: {same}"
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
