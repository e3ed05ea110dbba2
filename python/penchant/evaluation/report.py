"""Evaluation results as text: the reference figures, a Markdown table, a terminal table and a
PNG plot (matplotlib, the ``penchant[plot]`` extra)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from penchant.errors import ValidationError

from .runner import Evaluation, RankerResult

__all__ = ["REFERENCE_NDCG", "markdown", "plot", "rows"]

REFERENCE_NDCG: Mapping[str, float] = {
    "most-popular": 0.0247,
    "implicit item-kNN": 0.0333,
    "implicit BPR": 0.0398,
    "LightFM WARP with genres": 0.0432,
    "implicit ALS, best setting": 0.0435,
    "genre-affinity profile alone": 0.0064,
}
"""Full-catalog NDCG@10 of peer libraries on ml-latest-small under the same protocol (issue 6),
measured elsewhere and quoted, not run here."""


def _has_reference(evaluation: Evaluation) -> bool:
    return evaluation.dataset == "ml-latest-small" and evaluation.users == 609


def rows(evaluation: Evaluation, *, reference: bool = True) -> list[dict[str, Any]]:
    """One row per ranker (then, on the full ml-latest-small run, per reference figure):
    ``model``, ``ndcg``, ``ndcg_ci``, ``hr``, ``mrr``, the same with ``sampled_``, and
    ``delta`` / ``delta_ci``, the paired NDCG@10 difference to the primary ranker."""
    out: list[dict[str, Any]] = []
    primary = evaluation.primary
    for r in evaluation.results:
        row: dict[str, Any] = {
            "model": r.ranker.name,
            "ndcg": r.full.ndcg.mean,
            "ndcg_ci": r.full.ndcg.half_width,
            "hr": r.full.hr.mean,
            "mrr": r.full.mrr.mean,
            "reference": False,
        }
        if r.sampled is not None:
            row |= {
                "sampled_ndcg": r.sampled.ndcg.mean,
                "sampled_hr": r.sampled.hr.mean,
                "sampled_mrr": r.sampled.mrr.mean,
            }
        if r is not primary:
            row["delta"], row["delta_ci"] = r.paired_ndcg_difference(primary)
        out.append(row)
    if reference and _has_reference(evaluation):
        out.extend({"model": f"{name} (reference)", "ndcg": v, "reference": True} for name, v in REFERENCE_NDCG.items())
    return out


def _cell(row: Mapping[str, Any], key: str, digits: int = 4) -> str:
    value = row.get(key)
    return "" if value is None else f"{value:.{digits}f}"


def markdown(evaluation: Evaluation, *, reference: bool = True) -> str:
    """A Markdown table of :func:`rows`."""
    lines = [
        "| model | NDCG@10 (95% CI) | HR@10 | MRR | sampled NDCG@10 | sampled HR@10 | sampled MRR "
        "| Δ NDCG@10 (paired 95% CI) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows(evaluation, reference=reference):
        ndcg = _cell(row, "ndcg") + (f" ± {row['ndcg_ci']:.4f}" if "ndcg_ci" in row else "")
        delta = f"{row['delta']:+.4f} ± {row['delta_ci']:.4f}" if "delta" in row else ""
        name = f"**{row['model']}**" if row["model"] == evaluation.primary.ranker.name else row["model"]
        cells = [name, ndcg, _cell(row, "hr"), _cell(row, "mrr")]
        cells += [_cell(row, "sampled_ndcg"), _cell(row, "sampled_hr"), _cell(row, "sampled_mrr"), delta]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(evaluations: list[Evaluation], path: str | Path) -> Path:
    """A PNG: full-catalog NDCG@10 with 95% intervals for every ranker of each evaluation (one
    panel each), with the reference figures as open bars on ml-latest-small."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValidationError("plotting needs matplotlib: pip install 'penchant[plot]'") from None
    if not evaluations:
        raise ValidationError("nothing to plot")
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ValidationError(f"the plot is a PNG: {target} should end in .png")
    heights = [len(rows(e)) for e in evaluations]
    fig, axes = plt.subplots(
        len(evaluations),
        1,
        figsize=(8, 0.38 * sum(heights) + 1.2 * len(evaluations)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for axis, evaluation in zip(axes[:, 0], evaluations, strict=True):
        table = rows(evaluation)[::-1]
        measured = [r for r in table if not r["reference"]]
        quoted = [r for r in table if r["reference"]]
        # Quoted reference figures come without intervals: open bars, no error bars.
        if quoted:
            names, values = [r["model"] for r in quoted], [r["ndcg"] for r in quoted]
            axis.barh(names, values, color="white", edgecolor="black", linewidth=0.6)
        axis.barh(
            [r["model"] for r in measured],
            [r["ndcg"] for r in measured],
            xerr=[r["ndcg_ci"] for r in measured],
            color=[_colour(r["model"], evaluation.primary) for r in measured],
            edgecolor="black",
            linewidth=0.6,
            capsize=2,
        )
        axis.set_title(f"{evaluation.dataset}: {evaluation.users} test users, full-catalog NDCG@10 (95% CI)")
        axis.grid(axis="x", alpha=0.3)
        axis.tick_params(axis="y", labelsize=8)
        if _has_reference(evaluation):
            axis.axvline(0.048, color="tab:red", linestyle="--", linewidth=1, label="target 0.048")
            axis.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target


def _colour(name: str, primary: RankerResult) -> str:
    if name == primary.ranker.name:
        return "tab:blue"
    if name.startswith("- "):
        return "lightsteelblue"
    return "tab:gray"
