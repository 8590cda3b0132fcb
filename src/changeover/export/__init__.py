"""Exports of a plan for the monitoring around a cutover: Prometheus alerts, a Grafana dashboard.

Pure functions from a validated ``Plan`` to files: ``prometheus_rules`` (alerting rules from the
gates and rollback triggers) and ``grafana_dashboard`` (a dashboard JSON model, a row per phase
and per backend). Both read a gate's metric through the same PromQL (``export.gates``), and both
return the gates they could not express with the reason, for the CLI to show.
"""

from changeover.export.gates import Skipped
from changeover.export.grafana import DashboardExport, grafana_dashboard
from changeover.export.prometheus_rules import RulesExport, prometheus_rules

__all__ = ["DashboardExport", "RulesExport", "Skipped", "grafana_dashboard", "prometheus_rules"]
