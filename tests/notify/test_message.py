"""What a notification says: the evidence rendered as plain text, verdict numbers included."""

from __future__ import annotations

import pytest

from changeover.notify import Notification, render_evidence

VERDICT = {
    "gate": "error-rate",
    "outcome": "fail_immediate",
    "observed": 0.1,
    "bound": [0.091, 0.109],
    "threshold": 0.01,
    "samples": 5000,
    "elapsed_s": 1.25,
    "reason": "new errors 10.0% > 1% with 99% confidence",
    "unit": "",
}


def test_rollback_text_carries_the_verdict_numbers() -> None:
    message = Notification(
        "rollback", "Rolled back phase 2", "All traffic is on legacy.", {"verdicts": [VERDICT]}
    )
    text = message.text()
    assert text.startswith("All traffic is on legacy.\n\nEvidence:\n")
    assert (
        "  - error-rate fail_immediate: observed 0.1 (bound 0.091–0.109) vs threshold 0.01, "
        "5000 samples, after 1.25 s — new errors 10.0% > 1% with 99% confidence"
    ) in text
    assert message.level == "failure"


def test_nested_evidence_is_indented_key_value_lines() -> None:
    lines = render_evidence(
        {"phase": "canary-10", "weights": {"legacy": 90, "new": 10}, "ids": [1, 2]}
    )
    assert lines == [
        "  phase: canary-10",
        "  weights:",
        "    legacy: 90",
        "    new: 10",
        "  ids: 1, 2",
    ]


def test_a_missing_bound_or_infinite_number_still_renders() -> None:
    line = render_evidence({"gate": {"observed": None, "threshold": 0.5, "samples": 0}})[0]
    assert line == "  gate: observed n/a vs threshold 0.5, 0 samples"


@pytest.mark.parametrize(
    ("kind", "level"),
    [("phase_started", "info"), ("phase_passed", "success"), ("decision_needed", "warning")],
)
def test_severity_follows_the_kind_unless_given(kind: str, level: str) -> None:
    assert Notification(kind, "t").level == level  # type: ignore[arg-type]
    assert Notification(kind, "t", severity="failure").level == "failure"  # type: ignore[arg-type]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown notification kind 'oops'"):
        Notification("oops", "t")  # type: ignore[arg-type]
