"""The cutover report: the seed's 13 success criteria with evidence, the night's timeline,
charts of every backend's traffic, decisions, rollbacks, incidents, the runbook and its notes.

Everything comes from the journal. ``timeline`` folds the events into what happened, ``series``
and ``criteria`` turn that into charts and verdicts (pure), ``build`` assembles a ``Report``,
and ``render_md`` / ``render_html`` / ``render_json`` write it; every text passes the redactor.
"""

from changeover.report.build import Report, build_report, make_report
from changeover.report.criteria import Criterion, Status
from changeover.report.render import FORMATS, render

__all__ = [
    "FORMATS",
    "Criterion",
    "Report",
    "Status",
    "build_report",
    "make_report",
    "render",
]
