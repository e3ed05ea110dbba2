"""How the weights of penchant's evaluated model were chosen: a grid over the weights of the
genre-affinity and learned-popularity factors (co-visitation weighs 1), with the profile's
interests or the recent items' features, scored on the *validation* split of each data set
(each test user's previous positive, their test event and later ones dropped), so that nothing
of the test answers is seen. Prints a Markdown table; EVALUATION.md quotes it.

    python benches/tune_weights.py ../shared/data/ml-latest-small ../shared/data/ml-100k
"""

from __future__ import annotations

import sys

from penchant import evaluation
from penchant.evaluation import Ranker

AFFINITY = (0.05, 0.1, 0.2, 0.4)
POPULARITY = (0.02, 0.1)


def grid() -> list[Ranker]:
    rankers = [evaluation.PENCHANT]
    for popularity in POPULARITY:
        rankers.append(
            Ranker(f"no affinity, popularity {popularity}", {"covisitation": 1.0, "learned_popularity": popularity})
        )
    for interests in ("profile", "recent"):
        for affinity in AFFINITY:
            for popularity in POPULARITY:
                weights = {"covisitation": 1.0, "affinity": affinity, "learned_popularity": popularity}
                name = f"{interests} interests, affinity {affinity}, popularity {popularity}"
                if (interests, weights) != (evaluation.PENCHANT.interests, dict(evaluation.PENCHANT.weights)):
                    rankers.append(Ranker(name, weights, interests=interests))
    return rankers


def main(paths: list[str]) -> None:
    rankers = grid()
    columns = []
    for path in paths:
        data = evaluation.read_interactions(path).with_features(["genre"])
        split = evaluation.validation_split(data)
        result = evaluation.evaluate(data, rankers, split=split, sampled=False)
        columns.append((data.name, split.n_test, result))
    header = " | ".join(f"{name} ({users} users): NDCG@10, Δ (paired 95% CI)" for name, users, _ in columns)
    print(f"| model | {header} | mean NDCG@10 |")
    print("|---|" + "---|" * (len(columns) + 1))
    for k, ranker in enumerate(rankers):
        cells, means = [], []
        for _, _, result in columns:
            r = result.results[k]
            means.append(r.full.ndcg.mean)
            if k == 0:
                cells.append(f"{r.full.ndcg.mean:.4f}")
            else:
                d, h = r.paired_ndcg_difference(result.primary)
                cells.append(f"{r.full.ndcg.mean:.4f}, {d:+.4f} ± {h:.4f}")
        name = f"**{ranker.name}** (profile interests, affinity 0.1, popularity 0.02)" if k == 0 else ranker.name
        print(f"| {name} | " + " | ".join(cells) + f" | {sum(means) / len(means):.4f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
