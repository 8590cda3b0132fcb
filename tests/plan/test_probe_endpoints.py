"""Plan validation of the systems a probe's parameters name, nested ones included."""

from __future__ import annotations

from pathlib import Path

import pytest

from changeover.errors import PlanError
from changeover.plan.load import load_plan

PLAN = """
name: t
cutover_at: 2026-12-01T02:00:00Z
systems:
  legacy: {kind: app, url: "http://127.0.0.1:9001"}
  new: {kind: app, instances: [{name: go-1, url: "http://127.0.0.1:9002"}]}
stages:
  - id: checks
    title: Checks
    sections:
      - title: Checks
        steps:
          - id: s
            title: S
            check: CHECK
"""


def _problems(tmp_path: Path, check: str) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.replace("CHECK", check), encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    return str(caught.value)


def test_an_app_without_a_url_needs_an_instance(tmp_path: Path) -> None:
    message = _problems(tmp_path, "{http: {system: new, path: /healthz}}")
    assert "system 'new' has no url of its own" in message and "go-1" in message


def test_an_unknown_instance_is_named_with_the_known_ones(tmp_path: Path) -> None:
    message = _problems(tmp_path, "{http: {system: new, instance: go-2, path: /healthz}}")
    assert "no instance 'go-2'" in message and "go-1" in message


def test_a_nested_endpoint_with_a_typo_is_caught_at_load(tmp_path: Path) -> None:
    check = (
        "{http.session: {login: {system: legcy, path: /login}, "
        "use: {system: new, instance: go-1, path: /me}}}"
    )
    message = _problems(tmp_path, check)
    assert "login.system" in message and "unknown system 'legcy'" in message


def test_a_valid_plan_loads(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.replace("CHECK", "{http: {system: new, instance: go-1}}"), "utf-8")
    assert load_plan(path).plan.systems["new"].kind == "app"
