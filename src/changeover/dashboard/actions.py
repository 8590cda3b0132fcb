"""The page's three actions, through exactly the calls the CLI makes: approve, sign off, roll back.

Each takes the request's JSON body, checks it (a plain ``Refused(400, ...)`` names the field),
and calls ``rollout.controller.approve``, ``Runbook.signoff`` or
``rollout.controller.request_rollback`` — the same journal events as ``changeover approve``,
``signoff`` and ``rollback``, with the person who acted as their actor. The running controller
(``changeover run``, another process) reads them from the journal and acts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from changeover.dashboard.auth import Refused
from changeover.engine.runbook import Runbook
from changeover.errors import UsageError
from changeover.rollout.controller import approve as approve_phase
from changeover.rollout.controller import request_rollback

MAX_TEXT = 500  # a name, a reason, a note: one line an operator types, not a document
MODES = ("immediate", "graceful")


def approve(runbook: Runbook, body: Mapping[str, Any]) -> str:
    phase, by = _text(body, "phase"), _text(body, "by")
    _library(lambda: approve_phase(runbook, phase, by))
    return f"approved {phase} (by {by}); the running controller proceeds"


def signoff(runbook: Runbook, body: Mapping[str, Any]) -> str:
    step, by = _text(body, "step"), _text(body, "by")
    note = _text(body, "note", required=False)
    _library(lambda: runbook.signoff(step, by=by, note=note or None))
    return f"signed off {step} (by {by})"


def rollback(runbook: Runbook, body: Mapping[str, Any]) -> str:
    mode = _text(body, "mode")
    if mode not in MODES:
        raise Refused(400, f"mode must be immediate or graceful, not {mode!r}")
    reason, by = _text(body, "reason"), _text(body, "by")
    _library(lambda: request_rollback(runbook, mode, reason, by))
    return (
        f"{mode} rollback requested (by {by}); the running controller carries it out within a "
        "second — if no 'changeover run' is running, start it"
    )


def _text(body: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise Refused(400, f"{name} is required (a line of text)")
    if len(value) > MAX_TEXT:
        raise Refused(400, f"{name} is longer than {MAX_TEXT} characters")
    return value.strip()


def _library(call: Callable[[], object]) -> None:
    """Run the library call; its ``UsageError`` (an unknown phase or step) is a 400."""
    try:
        call()
    except UsageError as exc:
        raise Refused(400, str(exc)) from exc
