"""Pick a renderer by format name: ``html``, ``md`` or ``json`` (what ``--format`` takes)."""

from __future__ import annotations

from collections.abc import Callable

from changeover.errors import UsageError
from changeover.report.build import Report
from changeover.report.render_html import render_html
from changeover.report.render_json import render_json
from changeover.report.render_md import render_md

RENDERERS: dict[str, Callable[[Report], str]] = {
    "html": render_html,
    "md": render_md,
    "json": render_json,
}
FORMATS = tuple(RENDERERS)


def render(report: Report, format_: str) -> str:
    try:
        renderer = RENDERERS[format_]
    except KeyError:
        raise UsageError(
            f"unknown report format {format_!r}: use one of {', '.join(FORMATS)}"
        ) from None
    return renderer(report)
