"""The ``penchant`` command. Each subcommand lives in a function of its own below; the group
only wires them together. Errors that penchant raises on purpose (bad input, a store that cannot
be reached) end the command with a one-line message and exit code 1, never a traceback."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import penchant
from penchant.bench import BenchConfig, CaseResult, Target, format_bound, format_seconds, redacted, run_bench
from penchant.engine import Engine
from penchant.errors import PenchantError, ValidationError
from penchant.profile_store import DEFAULT_TENANT, default_database_url, open_store
from penchant.profile_store import rebuild as rebuild_redis
from penchant.simulation import (
    ExplainedItem,
    RoundMetrics,
    SimulationConfig,
    SimulationResult,
    World,
    explain_next_request,
    make_world,
    plot_learning_curve,
    run_simulation,
)
from penchant.user_profile import ProfileManager

__all__ = ["main"]

PLOT_NAME = "penchant-demo.png"

F = TypeVar("F", bound=Callable[..., Any])


class _PenchantGroup(click.Group):
    """Turns penchant's own errors into click errors: a message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PenchantError as e:
            raise click.ClickException(str(e)) from None
        except (ImportError, OSError) as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from None


@click.group(cls=_PenchantGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(penchant.__version__, prog_name="penchant")
def main() -> None:
    """penchant: a personalization engine with a Rust core."""


# -- shared options -----------------------------------------------------------------------------


def _store_options(function: F) -> F:
    """--redis-url, --database-url and --tenant, read from the environment when not given."""
    function = click.option(
        "--tenant", default=DEFAULT_TENANT, show_default=True, help="The tenant whose profiles to use."
    )(function)
    function = click.option(
        "--database-url",
        envvar="PENCHANT_DATABASE_URL",
        metavar="URL",
        help="The durable store: sqlite:///path.db or postgresql://... [env PENCHANT_DATABASE_URL; "
        "default: penchant.db in the user's data directory, $XDG_DATA_HOME/penchant or ~/.local/share/penchant]",
    )(function)
    function = click.option(
        "--redis-url",
        envvar="PENCHANT_REDIS_URL",
        metavar="URL",
        help="The Redis tier: redis://host:port/db, rediss://, redis+cluster://... [env PENCHANT_REDIS_URL]",
    )(function)
    return function


def _existing_database(database_url: str | None) -> str:
    """The database URL to open for a command that reads stored profiles: a SQLite file must
    already exist, since opening a missing one would create an empty database and report
    nothing found."""
    url = database_url or default_database_url()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "sqlite" and not parts.netloc:
        path = urllib.parse.unquote(parts.path[1:])
        if path and path != ":memory:" and not Path(path).exists():
            raise click.ClickException(
                f"no database at {path} ({url}); give --database-url or set PENCHANT_DATABASE_URL"
            )
    return url


# -- demo ---------------------------------------------------------------------------------------


def _demo_round_table(k: int) -> Table:
    table = Table(title="Learning, round by round (means over the users)", title_justify="left")
    table.add_column("round", justify="right")
    for metric in (f"P@{k}", f"NDCG@{k}", "CTR"):
        table.add_column(f"{metric}\nbase", justify="right")
        table.add_column(f"{metric}\npenchant", justify="right", style="bold")
    table.add_column("events", justify="right")
    return table


def _add_round(table: Table, m: RoundMetrics) -> None:
    table.add_row(
        str(m.round),
        f"{m.base_precision:.3f}",
        f"{m.penchant_precision:.3f}",
        f"{m.base_ndcg:.3f}",
        f"{m.penchant_ndcg:.3f}",
        f"{m.base_ctr:.3f}",
        f"{m.penchant_ctr:.3f}",
        f"{m.events:,}",
    )


def _latency_table(result: SimulationResult) -> Table:
    table = Table(title="Latency of each step, measured in this run", title_justify="left")
    for name in ("step", "calls", "p50", "p90", "p99", "max"):
        table.add_column(name, justify="left" if name == "step" else "right")
    for s in result.latencies():
        table.add_row(
            s.step,
            f"{s.calls:,}",
            format_seconds(s.p50),
            format_seconds(s.p90),
            format_seconds(s.p99),
            format_seconds(s.max),
        )
    return table


def _example_table(world: World, example: list[ExplainedItem]) -> Table:
    user_id = world.user_ids[0]
    table = Table(
        title=f"What {user_id} sees from one more search, and why; hidden tastes: {world.hidden_tastes(0)}",
        title_justify="left",
    )
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("features")
    table.add_column("hidden grade", justify="right")
    table.add_column("penchant's explanation")
    for position, item in enumerate(example, 1):
        table.add_row(str(position), item.item_id, " ".join(item.features), str(item.grade), item.why)
    return table


def _relative(new: float, old: float) -> str:
    return f"{(new - old) / old:+.0%}" if old > 0 else "n/a"


def _wide_console(**options: Any) -> Console:
    """A console for tables: the terminal's width, or 120 columns when writing to a file or a
    pipe (rich would wrap at 80)."""
    console = Console(highlight=False, **options)
    if not console.is_terminal:
        console.width = max(console.width, 120)
    return console


@contextmanager
def _demo_engine(
    redis_url: str | None, database_url: str | None, tenant: str, user_ids: list[str], keep: bool
) -> Iterator[tuple[Engine, str]]:
    """The engine the demo runs on, and a description of its store. Without a database URL the
    durable tier is a temporary SQLite file, removed afterwards; the simulated users are deleted
    at the end unless ``keep``."""
    directory = None
    if database_url is None:
        directory = tempfile.mkdtemp(prefix="penchant-demo-")
        database_url = f"sqlite:///{os.path.join(directory, 'penchant.db')}"
        described = "in-process cache over a temporary SQLite file (the embedded default)"
    else:
        described = f"in-process cache over {redacted(database_url)}"
    if redis_url is not None:
        described = described.replace("in-process cache over", f"in-process cache, Redis {redacted(redis_url)},")
    try:
        with Engine(redis_url=redis_url, database_url=database_url, tenant=tenant) as engine:
            try:
                yield engine, described
            finally:
                # Leave nothing behind in a given database or in Redis, whose keys would
                # otherwise outlive the temporary file for a month.
                if not keep:
                    for user_id in user_ids:
                        engine.profiles.delete(user_id)
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


@main.command()
@click.option(
    "--users",
    type=click.IntRange(1, 10_000),
    default=SimulationConfig.users,
    show_default=True,
    help="Simulated users.",
)
@click.option(
    "--items",
    type=click.IntRange(10, 200_000),
    default=SimulationConfig.items,
    show_default=True,
    help="Items in the synthetic catalog.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 1_000),
    default=SimulationConfig.rounds,
    show_default=True,
    help="Rounds of retrieve → feedback → learning.",
)
@click.option(
    "--candidates",
    type=click.IntRange(10, 200_000),
    default=SimulationConfig.candidates,
    show_default=True,
    help="Items the simulated search returns per request (penchant re-ranks them).",
)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the simulation.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory for the PNG plot of the learning curve.",
)
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write the PNG plot (needs matplotlib).")
@click.option(
    "--keep-profiles",
    is_flag=True,
    help="Keep the simulated users' profiles in the given --database-url (they are deleted by default).",
)
@click.option("--redis-url", metavar="URL", help="Run against this Redis (redis://, rediss://, redis+cluster://).")
@click.option(
    "--database-url",
    metavar="URL",
    help="Run against this database (sqlite:///path.db, postgresql://...); default: a temporary SQLite file.",
)
@click.option("--tenant", help="Tenant for the simulated users [default: a new one per run, demo-<random>].")
def demo(
    users: int,
    items: int,
    rounds: int,
    candidates: int,
    seed: int,
    out_dir: Path,
    plot: bool,
    keep_profiles: bool,
    redis_url: str | None,
    database_url: str | None,
    tenant: str | None,
) -> None:
    """The main job, simulated: personalization learning from feedback, measured.

    Builds a synthetic catalog and users with hidden tastes, then runs rounds in which every user
    searches, is shown penchant's top 10 of the search's candidates, and clicks, dwells, rates and
    skips according to their tastes (with noise and position bias); penchant learns from each
    event. Prints precision@10, NDCG@10 and click-through per round for penchant's order and for
    the search's own order, one more search explained, the latency of each step, and writes a
    plot of the learning curve.
    Runs with no servers; --redis-url and --database-url run the same against real ones.
    """
    if candidates > items:
        raise click.BadParameter(f"{candidates} candidates cannot exceed {items} items", param_hint="--candidates")
    if keep_profiles and database_url is None:
        raise click.UsageError("--keep-profiles needs --database-url: the default store is a temporary file")
    if plot and importlib.util.find_spec("matplotlib") is None:
        raise click.ClickException(
            "the learning-curve plot needs matplotlib: pip install 'penchant[plot]', or run with --no-plot"
        )
    if plot:
        out_dir.mkdir(parents=True, exist_ok=True)
    config = SimulationConfig(users=users, items=items, rounds=rounds, candidates=candidates, seed=seed)
    console = _wide_console()
    tenant = tenant or "demo-" + uuid.uuid4().hex[:8]
    world = make_world(config)
    console.print(
        f"[bold]penchant demo[/bold]: {config.users:,} simulated users, {config.items:,} items "
        f"({config.categories} categories, {config.tags} tags, {config.dim}-dim embeddings), "
        f"{config.candidates:,} search candidates per request, top {config.k} shown, "
        f"{config.rounds} rounds, seed {config.seed}."
    )
    with _demo_engine(redis_url, database_url, tenant, world.user_ids, keep_profiles) as (engine, store_described):
        console.print(f"Store: {store_described}; tenant {tenant}.")
        console.print(
            "Each round is a simulated day. Round 1 is the cold start; from round 2 penchant ranks with what "
            "it learned in the rounds before.\n"
        )
        table = _demo_round_table(config.k)
        progress = Progress(
            TextColumn("simulating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("requests"),
            TimeElapsedColumn(),
            console=console,
        )
        task = progress.add_task("requests", total=config.users * config.rounds)
        shown = Group(table, progress) if console.is_terminal else table
        with Live(shown, console=console, refresh_per_second=8):
            result = run_simulation(
                engine,
                config,
                world=world,
                on_request=lambda: progress.advance(task),
                on_round=lambda m: _add_round(table, m),
            )
        example = explain_next_request(engine, world, result)
    first, last = result.rounds[0], result.rounds[-1]
    console.print()
    console.print(
        f"After {len(result.rounds)} rounds penchant's order scores NDCG@{config.k} {last.penchant_ndcg:.3f} against "
        f"{last.base_ndcg:.3f} for the base order ({_relative(last.penchant_ndcg, last.base_ndcg)}), "
        f"precision@{config.k} {last.penchant_precision:.3f} against {last.base_precision:.3f}, "
        f"click-through {last.penchant_ctr:.3f} against {last.base_ctr:.3f}; "
        f"in round 1 (cold start) NDCG@{config.k} was {first.penchant_ndcg:.3f}."
    )
    console.print()
    console.print(_example_table(world, example))
    console.print()
    console.print(_latency_table(result))
    if plot:
        path = plot_learning_curve(result, out_dir / PLOT_NAME)
        console.print(f"\nLearning curve written to {path}")
    if keep_profiles:
        console.print(
            f"Profiles kept under tenant {tenant}: penchant export-user {world.user_ids[0]} "
            f"--database-url {redacted(database_url)} --tenant {tenant}"
        )


# -- bench --------------------------------------------------------------------------------------


def _target_cell(target: Target | None, met: bool | None, *, with_source: bool) -> str:
    if target is None or met is None:
        return "—"
    source = f" ({target.source})" if with_source else ""
    verdict = "[green]met[/green]" if met else "[red]not met[/red]"
    return f"{target.statistic} < {format_bound(target.seconds)}{source}: {verdict}"


def _bench_table(results: list[CaseResult]) -> Table:
    table = Table(title="penchant bench", title_justify="left")
    table.add_column("operation")
    table.add_column("p50", justify="right")
    table.add_column("p99", justify="right")
    table.add_column("seed target")
    table.add_column("penchant target")
    area = None
    for r in results:
        if r.area != area:
            if area is not None:
                table.add_section()
            area = r.area
            table.add_row(f"[bold]{area}[/bold]")
        table.add_row(
            "  " + r.operation,
            format_seconds(r.p50),
            format_seconds(r.p99),
            _target_cell(r.seed_target, r.seed_met, with_source=False),
            _target_cell(r.penchant_target, r.penchant_met, with_source=True),
        )
    return table


@main.command()
@click.option(
    "--candidates",
    type=click.IntRange(1, 1_000_000),
    default=1_000,
    show_default=True,
    help="Candidates per ranking request.",
)
@click.option(
    "--interactions",
    type=click.IntRange(1, 1_000_000),
    default=10_000,
    show_default=True,
    help="Interactions in the history that preference extraction reads.",
)
@click.option(
    "--history",
    type=click.IntRange(1, 1_000_000),
    default=500,
    show_default=True,
    help="Events recorded for the stored user before timing.",
)
@click.option(
    "--samples",
    type=click.IntRange(1, 1_000_000),
    default=300,
    show_default=True,
    help="Timed calls per case (after a warm-up of a tenth as many).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object instead of a table.")
@click.option(
    "--redis-url",
    envvar="PENCHANT_REDIS_URL",
    metavar="URL",
    help="Also measure the Redis tier. [env PENCHANT_REDIS_URL]",
)
@click.option(
    "--database-url",
    envvar="PENCHANT_DATABASE_URL",
    metavar="URL",
    help="The durable store to measure; default: a temporary SQLite file. [env PENCHANT_DATABASE_URL]",
)
def bench(
    candidates: int,
    interactions: int,
    history: int,
    samples: int,
    as_json: bool,
    redis_url: str | None,
    database_url: str | None,
) -> None:
    """The seed's four performance targets, measured end to end on this machine.

    Profile retrieval (< 10 ms), preference extraction (< 50 ms), ranking 1,000 items (< 100 ms)
    and feedback processing (< 20 ms), each through the calls an application makes, with
    penchant's own tighter targets beside them. Seed targets are judged on the 99th percentile.
    """
    config = BenchConfig(candidates=candidates, interactions=interactions, history=history, samples=samples)
    status = Console(stderr=True, highlight=False)
    with status.status("measuring") as spinner:
        results, described = run_bench(
            config,
            redis_url=redis_url,
            database_url=database_url,
            on_case=lambda name: spinner.update(f"measuring {name}"),
        )
    if as_json:
        click.echo(json.dumps({**described, "cases": [r.to_json() for r in results]}, indent=2, ensure_ascii=False))
        return
    console = _wide_console()
    workload = described["workload"]
    console.print(
        f"penchant {described['penchant']} on {described['machine']}, Python {described['python']}. "
        f"Store: in-process cache, {'Redis ' + described['redis_url'] + ', ' if described['redis_url'] else ''}"
        f"{described['database_url']}. {workload['samples_per_case']:,} timed calls per case; "
        f"{workload['candidates']:,} candidates with {workload['features_per_item']} features and "
        f"{workload['embedding_dim']}-dim embeddings; "
        f"stored profile built from {workload['stored_history_events']:,} events."
    )
    load = described["load_average_1min"]
    if load["before"] is not None:
        console.print(f"Load average (1 min): {load['before']} before, {load['after']} after.")
    console.print(_bench_table(results))
    console.print("Seed targets are judged on the 99th percentile; penchant's on the statistic its issue names.")


# -- store maintenance --------------------------------------------------------------------------


@main.command()
@_store_options
@click.option(
    "--user",
    "user_ids",
    multiple=True,
    metavar="USER_ID",
    help="Rebuild only this user (repeatable); default: every user of the tenant.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Users replayed per round trip.",
)
def rebuild(
    redis_url: str | None, database_url: str | None, tenant: str, user_ids: tuple[str, ...], batch_size: int
) -> None:
    """Replay the event log of the database into Redis.

    Recomputes each user's interests and history from the logged events and replaces what Redis
    holds, for every user of the tenant or only those given with --user.
    """
    if not redis_url:
        raise click.UsageError("rebuild replays the event log into Redis: give --redis-url or set PENCHANT_REDIS_URL")
    url = _existing_database(database_url)
    report = rebuild_redis(redis_url, url, tenant, user_ids=list(user_ids) or None, batch_size=batch_size)
    click.echo(
        f"Rebuilt {report.users:,} user(s) of tenant {tenant} in Redis from {report.events:,} logged event(s) "
        f"in {redacted(url)}."
    )


@main.command(name="export-user")
@click.argument("user_id")
@_store_options
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the export to this file instead of standard output.",
)
def export_user(
    user_id: str, redis_url: str | None, database_url: str | None, tenant: str, out_file: Path | None
) -> None:
    """Export everything stored about USER_ID as JSON (a data-access request, GDPR art. 15).

    The document holds the profile in full (interests, history, preferences, explicit
    preferences) and each interest's current weight and confidence; its profile is null when
    nothing is stored about the user.
    """
    with open_store(redis_url, _existing_database(database_url), tenant) as store:
        document = ProfileManager(store).export(user_id)
    text = json.dumps(document, indent=2, ensure_ascii=False)
    if document["profile"] is None:
        click.echo(f"Nothing is stored about user {user_id!r} in tenant {tenant}.", err=True)
    if out_file is None:
        click.echo(text)
    else:
        out_file.write_text(text + "\n", encoding="utf-8")
        click.echo(f"Wrote the export of user {user_id!r} to {out_file}.", err=True)


@main.command(name="delete-user")
@click.argument("user_id")
@_store_options
@click.option("--yes", is_flag=True, help="Delete without asking for confirmation.")
def delete_user(user_id: str, redis_url: str | None, database_url: str | None, tenant: str, yes: bool) -> None:
    """Delete every trace of USER_ID (GDPR art. 17): profile, history and logged events, from
    every tier (the cache, Redis and the database)."""
    url = _existing_database(database_url)
    if not yes:
        click.confirm(f"Delete every trace of user {user_id!r} in tenant {tenant} from {redacted(url)}?", abort=True)
    with open_store(redis_url, url, tenant) as store:
        had_profile = ProfileManager(store).delete(user_id)
        # The tiered store carries on without Redis and would delete there later, but this
        # process ends now: keys it could not delete would stay until their TTL.
        if store.redis_is_down:
            raise click.ClickException(
                f"deleted user {user_id!r} from {redacted(url)}, but Redis could not be reached, so its copy "
                "remains there until its keys expire; run delete-user again when Redis answers"
            )
    if had_profile:
        click.echo(f"Deleted user {user_id!r} of tenant {tenant}: profile, history and logged events.")
    else:
        click.echo(f"No profile was stored for user {user_id!r} in tenant {tenant}; any other trace is removed.")


# -- eval ---------------------------------------------------------------------------------------


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
    from penchant import evaluation

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
    except PenchantError as e:
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
