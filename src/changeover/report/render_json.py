"""The cutover report as JSON: the same content as the HTML page, for tickets and tooling.

``criteria`` is a list of ``Criterion.to_json()`` (``Criterion.from_json`` reads it back);
charts carry their points, so another tool can draw them. Redacted value by value before
serialising (an escaped secret would not match), then the whole text once more.
"""

from __future__ import annotations

import json

from changeover.report.build import Report
from changeover.secrets import REDACTOR


def render_json(report: Report) -> str:
    data = REDACTOR.scrub_value(report.to_json())
    return REDACTOR.scrub(json.dumps(data, indent=2, ensure_ascii=False, default=str)) + "\n"
