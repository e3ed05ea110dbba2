"""The ``penchant`` command. Each subcommand lives in a function of its own below; the group
only wires them together."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import click

import penchant

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(penchant.__version__, prog_name="penchant")
def main() -> None:
    """penchant: a personalization engine with a Rust core."""


@main.command("eval")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(path_type=Path),
    help="A MovieLens directory (ml-latest-small, ml-100k) or a CSV of user,item,value,timestamp[,features].",
)
@click.option(
    "--format", "data_format", default="auto", show_default=True, help="auto, ml-latest-small, ml-100k or csv."
)
@click.option(
    "--features",
    default="genre",
    show_default=True,
    help="Kinds of item feature the profiles learn from (comma-separated, e.g. genre,tag), or 'all'.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the metrics, nothing else.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the results as a Markdown table.")
@click.option("--ablation", is_flag=True, help="Also rank with each factor of the model removed in turn.")
@click.option("--baselines/--no-baselines", default=True, show_default=True, help="Also rank by popularity alone.")
@click.option(
    "--sampled/--no-sampled", default=True, show_default=True, help="Also rank against 100 sampled negatives."
)
@click.option("--max-users", type=click.IntRange(min=1), default=None, help="A fixed random subsample of test users.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --max-users subsample.")
@click.option("--positive-threshold", type=float, default=4.0, show_default=True, help="Least value of a test event.")
@click.option(
    "--min-prior", type=click.IntRange(min=0), default=5, show_default=True, help="Events a test user needs first."
)
@click.option("--feedback-type", default="rating", show_default=True, help="Feedback type of a generic CSV's events.")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=25_000, show_default=True, help="Events per record_many call."
)
@click.option(
    "--validation",
    is_flag=True,
    help="Score each test user's previous positive instead, with their test event and later ones dropped "
    "(for choosing options without looking at the test answers).",
)
@click.option(
    "--weights",
    default=None,
    help="Factor weights of the model, e.g. covisitation=1,affinity=0.1,learned_popularity=0.02.",
)
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None, help="Write a PNG plot here.")
def eval_command(
    data_path: Path,
    data_format: str,
    features: str,
    as_json: bool,
    as_markdown: bool,
    ablation: bool,
    baselines: bool,
    sampled: bool,
    max_users: int | None,
    seed: int,
    positive_threshold: float,
    min_prior: int,
    feedback_type: str,
    batch_size: int,
    validation: bool,
    weights: str | None,
    plot_path: Path | None,
) -> None:
    """Replay a timestamped interaction file through the FeedbackCollector in time order and
    measure ranking quality: temporal leave-last-out, full catalog and 100 sampled negatives,
    HR@10, NDCG@10 and MRR with 95% intervals (see EVALUATION.md)."""
    from rich.console import Console
    from rich.table import Table

    from penchant import evaluation
    from penchant.errors import ValidationError

    err = Console(stderr=True)
    say = (lambda message: err.print(f"[dim]{message}[/dim]")) if not as_json else None
    try:
        options = {"feedback_type": feedback_type} if data_format == "csv" or str(data_path).endswith(".csv") else {}
        data = evaluation.read_interactions(data_path, data_format, **options)
        if features != "all":
            kinds = [k.strip() for k in features.split(",") if k.strip()]
            unknown = set(kinds) - set(data.feature_prefixes())
            if unknown and data.feature_prefixes():
                raise ValidationError(
                    f"--features: the items have no feature of kind(s) {sorted(unknown)}; "
                    f"they have {data.feature_prefixes()}"
                )
            data = data.with_features(kinds)
        protocol = evaluation.validation_split if validation else evaluation.leave_last_out
        split = protocol(
            data, positive_threshold=positive_threshold, min_prior=min_prior, max_users=max_users, seed=seed
        )
        model = evaluation.PENCHANT
        if weights is not None:
            model = dataclasses.replace(model, weights=_parse_weights(weights))
        rankers = [model]
        if baselines:
            rankers.append(evaluation.MOST_POPULAR)
        if ablation:
            rankers.extend(evaluation.ablations())
        started = time.perf_counter()
        result = evaluation.evaluate(data, rankers, split=split, sampled=sampled, batch_size=batch_size, progress=say)
        if plot_path is not None:
            evaluation.plot([result], plot_path)
    except ValidationError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(result.as_json()))
        return
    if as_markdown:
        click.echo(evaluation.markdown(result))
    else:
        table = Table(title=f"{result.dataset}: {result.users} test users, {result.items:,} items")
        for column in ("model", "NDCG@10 (95% CI)", "HR@10", "MRR", "sampled NDCG@10", "sampled HR@10", "sampled MRR"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for row in evaluation.report.rows(result):
            ndcg = f"{row['ndcg']:.4f}" + (f" ± {row['ndcg_ci']:.4f}" if "ndcg_ci" in row else "")
            cells = [row.get(k) for k in ("hr", "mrr", "sampled_ndcg", "sampled_hr", "sampled_mrr")]
            table.add_row(
                row["model"],
                ndcg,
                *("" if v is None else f"{v:.4f}" for v in cells),
                style="dim" if row["reference"] else None,
            )
        # Wide enough for every column when the output is a file or a pipe.
        Console(width=None if sys.stdout.isatty() else 160).print(table)
    out = sys.stdout
    print(
        f"replayed {result.events_replayed:,} events through the FeedbackCollector in {result.replay_seconds:.1f} s "
        f"({result.replay_cpu_seconds:.1f} s of CPU); whole run {time.perf_counter() - started:.1f} s",
        file=out,
    )
    if plot_path is not None:
        print(f"plot written to {plot_path}", file=out)


def _parse_weights(text: str) -> dict[str, float]:
    from penchant.errors import ValidationError

    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValidationError(f"--weights: expected name=number pairs separated by commas, got {part!r}") from None
    return out


if __name__ == "__main__":  # pragma: no cover
    main()
