"""The runbook-only report (Markdown or JSON), kept for its callers.

The cutover report — criteria, timeline, charts, with this runbook as one of its sections —
lives in ``changeover.report``; the runbook rendering moved to ``changeover.report.runbook``.
"""

from __future__ import annotations

from changeover.report.runbook import runbook_json as report_json
from changeover.report.runbook import runbook_markdown as report_markdown

__all__ = ["report_json", "report_markdown"]
