"""Offline evaluation: replay a timestamped interaction file through penchant's feedback path in
time order and measure how well it ranks (``penchant eval`` on the command line).

::

    from penchant import evaluation

    data = evaluation.read_interactions("../shared/data/ml-latest-small")
    result = evaluation.evaluate(data.with_features(["genre"]), [evaluation.PENCHANT, evaluation.MOST_POPULAR])
    print(result.primary.full.ndcg)          # NDCG@10 with its 95% interval

The protocol (temporal leave-last-out, pessimistic ties, sampled negatives) is documented in
:mod:`penchant.evaluation.protocol`; the results are in EVALUATION.md.
"""

from __future__ import annotations

from penchant.evaluation.datasets import (
    FORMATS,
    Interactions,
    read_csv,
    read_interactions,
    read_ml_100k,
    read_ml_latest_small,
)
from penchant.evaluation.protocol import (
    Metric,
    Metrics,
    Split,
    leave_last_out,
    metrics,
    paired_difference,
    pessimistic_rank,
    sampled_negatives,
    validation_split,
)
from penchant.evaluation.report import REFERENCE_NDCG, markdown, plot
from penchant.evaluation.runner import (
    MOST_POPULAR,
    PENCHANT,
    Evaluation,
    Ranker,
    RankerResult,
    ablations,
    evaluate,
    recent_interests,
    replay,
)

__all__ = [
    "FORMATS",
    "MOST_POPULAR",
    "PENCHANT",
    "REFERENCE_NDCG",
    "Evaluation",
    "Interactions",
    "Metric",
    "Metrics",
    "Ranker",
    "RankerResult",
    "Split",
    "ablations",
    "evaluate",
    "leave_last_out",
    "markdown",
    "metrics",
    "paired_difference",
    "pessimistic_rank",
    "plot",
    "read_csv",
    "read_interactions",
    "read_ml_100k",
    "read_ml_latest_small",
    "recent_interests",
    "replay",
    "sampled_negatives",
    "validation_split",
]
