"""The ``penchant`` command. Each subcommand lives in a function of its own below; the group
only wires them together."""

from __future__ import annotations

import click

import penchant

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(penchant.__version__, prog_name="penchant")
def main() -> None:
    """penchant: a personalization engine with a Rust core."""


if __name__ == "__main__":  # pragma: no cover
    main()
