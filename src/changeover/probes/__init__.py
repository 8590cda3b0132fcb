"""Read-only checks, one module per system; see ``base`` for what a probe is."""

from changeover.probes.base import (
    REGISTRY,
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    ProbeParams,
    Status,
    SystemParams,
    Unreachable,
    load_all,
    run_probe,
)

__all__ = [
    "REGISTRY",
    "CheckResult",
    "Measure",
    "Probe",
    "ProbeContext",
    "ProbeParams",
    "Status",
    "SystemParams",
    "Unreachable",
    "load_all",
    "run_probe",
]
