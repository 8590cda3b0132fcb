"""What every command module shares: consoles, the --plan and --json options, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from changeover.secrets import REDACTOR

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEFAULT_PLAN = "changeover.yaml"

# Piped output (CI logs, files) gets a wide fixed width instead of rich's 80-column fallback.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, highlight=False, soft_wrap=True)

plan_option = click.option(
    "--plan",
    "-p",
    "plan",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_PLAN,
    show_default=True,
    envvar="CHANGEOVER_PLAN",
    help="Plan file (env CHANGEOVER_PLAN).",
)
json_option = click.option("--json", "json_", is_flag=True, help="Print JSON instead of a table.")


def print_json(data: Any) -> None:
    text = json.dumps(REDACTOR.scrub_value(data), indent=2, ensure_ascii=False, default=str)
    sys.stdout.write(text + "\n")


_print_json = print_json


def positive_seconds(option: str, text: str) -> float:
    """A command-line duration ('10s', '5m') as seconds; a bad or non-positive one is a usage
    error naming the option."""
    from changeover.errors import UsageError
    from changeover.units import parse_duration

    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from exc
    if seconds <= 0:
        raise UsageError(f"{option} must be positive, got {text!r}")
    return seconds
