"""Loading a plan file: what comes back, and every way a file can be unusable (no tracebacks)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from changeover.errors import PlanError, UsageError
from changeover.plan.load import LoadedPlan, load_plan, parse_plan_text
from changeover.plan.systems import PostgresSystem

PLAN = """\
version: 1
name: Test cutover
cutover_at: 2026-12-01T02:00:00Z
contacts: [{role: dba, title: Database administrator}]
systems:
  postgres: {url: "${PG_URL}"}
  redis: {url: {file: secrets/redis_url}}
stages:
  - id: pre
    title: Pre-deployment
    window: {opens: -72h, due: -24h}
    phase: {weight: 12.5, bake: {min: 30m, max: 1h}}
    sections:
      - title: Database
        steps:
          - {id: a, title: A, manual: {role: dba}, required: false}
"""


def write(tmp_path: Path, text: str | bytes, name: str = "changeover.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def plan_error(path: Path) -> PlanError:
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    return caught.value


def test_load_returns_the_plan_its_absolute_path_base_dir_and_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, PLAN)
    monkeypatch.chdir(tmp_path)
    loaded = load_plan("changeover.yaml")
    assert isinstance(loaded, LoadedPlan)
    assert loaded.plan.name == "Test cutover"
    assert loaded.path == path
    assert loaded.base_dir == tmp_path
    assert loaded.text_sha256 == hashlib.sha256(PLAN.encode()).hexdigest()


def test_digest_changes_when_the_file_changes(tmp_path: Path) -> None:
    first = load_plan(write(tmp_path, PLAN)).text_sha256
    second = load_plan(write(tmp_path, PLAN.replace("Test cutover", "Test cutover 2"))).text_sha256
    assert first != second


def test_yaml_values_become_plain_python_types(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, PLAN)).plan
    stage = plan.stages[0]
    assert stage.phase is not None and type(stage.phase.weight) is float
    assert stage.phase.bake is not None and stage.phase.bake.min == timedelta(minutes=30)
    assert stage.window is not None and stage.window.opens == timedelta(hours=-72)
    assert plan.step("a").required is False


@pytest.mark.parametrize(
    "written",
    ["2026-12-01T02:00:00Z", "'2026-12-01T02:00:00Z'", "2026-12-01T04:00:00+02:00"],
)
def test_cutover_at_as_yaml_timestamp_or_quoted_string(tmp_path: Path, written: str) -> None:
    plan = load_plan(write(tmp_path, PLAN.replace("2026-12-01T02:00:00Z", written))).plan
    assert plan.cutover_at == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    assert plan.cutover_at.utcoffset() is not None


def test_cutover_at_keeps_the_written_offset(tmp_path: Path) -> None:
    text = PLAN.replace("2026-12-01T02:00:00Z", "2026-12-01T04:00:00+02:00")
    plan = load_plan(write(tmp_path, text)).plan
    assert plan.cutover_at.tzinfo == timezone(timedelta(hours=2))


def test_secret_references_are_not_resolved_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_URL", "postgresql://app:s3cret-value@db/app")
    plan = load_plan(write(tmp_path, PLAN)).plan  # secrets/redis_url does not exist either
    postgres = plan.systems["postgres"]
    assert isinstance(postgres, PostgresSystem) and postgres.url == "${PG_URL}"
    assert "s3cret-value" not in plan.model_dump_json()


def test_anchors_aliases_and_merge_keys_work(tmp_path: Path) -> None:
    text = PLAN.replace(
        "          - {id: a, title: A, manual: {role: dba}, required: false}\n",
        "          - &signoff {id: a, title: A, manual: &dba {role: dba}}\n"
        "          - {<<: *signoff, id: b, title: B}\n"
        "          - {id: c, title: C, manual: *dba}\n",
    )
    plan = load_plan(write(tmp_path, text)).plan
    assert [(s.id, s.title, s.manual and s.manual.role) for s in plan.all_steps()] == [
        ("a", "A", "dba"),
        ("b", "B", "dba"),
        ("c", "C", "dba"),
    ]


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    assert load_plan(write(tmp_path, b"\xef\xbb\xbf" + PLAN.encode())).plan.name == "Test cutover"


def test_missing_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        load_plan(tmp_path / "nope.yaml")
    assert not isinstance(caught.value, PlanError)
    assert str(caught.value) == f"plan file {tmp_path / 'nope.yaml'} does not exist"


def test_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory, not a file"):
        load_plan(tmp_path)


def test_file_that_is_not_utf8_names_the_first_bad_byte(tmp_path: Path) -> None:
    text = PLAN.encode().replace(b"name: Test cutover", b"name: Caf\xe9 cutover")
    error = plan_error(write(tmp_path, text))
    assert str(error) == (
        f"{tmp_path / 'changeover.yaml'}:2:10: the file is not UTF-8 text (byte 0xe9); "
        "save it as UTF-8"
    )


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file_is_a_plan_error(tmp_path: Path, text: str) -> None:
    error = plan_error(write(tmp_path, text))
    assert [issue.message for issue in error.issues] == [
        "the plan is empty; start from `changeover init` or the README's example"
    ]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("- a\n- b\n", "a list"),
        ("just words\n", "the value 'just words'"),
        ("42\n", "the value 42"),
    ],
)
def test_top_level_that_is_not_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    error = plan_error(write(tmp_path, text, "p.yaml"))
    assert str(error) == (
        f"{tmp_path / 'p.yaml'}:1:1: a plan is a mapping "
        f"(version, name, cutover_at, stages, ...); found {found}"
    )


def test_two_documents_in_one_file(tmp_path: Path) -> None:
    (issue,) = plan_error(write(tmp_path, PLAN + "---\nname: other\n")).issues
    assert (issue.line, issue.column) == (17, 1)
    assert issue.message.startswith("YAML syntax: but found another document")


def test_control_character_is_located(tmp_path: Path) -> None:
    (issue,) = plan_error(write(tmp_path, PLAN.replace("Test cutover", "Test\x07cutover"))).issues
    assert (issue.line, issue.column) == (2, 11)
    assert issue.message == (
        "character U+0007 is not allowed in YAML (special characters are not allowed)"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!set {a}", "a set (!!set) is not supported; use a list"),
        ("!include notes.md", "YAML tag !include is not supported; write the plain value"),
    ],
)
def test_yaml_features_a_plan_cannot_use(tmp_path: Path, value: str, message: str) -> None:
    (issue,) = plan_error(write(tmp_path, PLAN + f"notes: {value}\n")).issues
    assert (issue.line, issue.column, issue.message) == (17, 8, message)


def test_list_as_a_mapping_key_is_refused(tmp_path: Path) -> None:
    (issue,) = plan_error(write(tmp_path, PLAN + "? [a, b]\n: 1\n")).issues
    assert (issue.line, issue.message) == (17, "a key must be a plain value")


def test_parse_plan_text_names_the_given_file() -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan_text(PLAN.replace("name: Test cutover\n", ""), "plans/night.yaml")
    assert str(caught.value) == "plans/night.yaml:1:1: name: required key is missing"


def test_plan_error_is_a_usage_error_with_exit_code_2() -> None:
    with pytest.raises(UsageError) as caught:
        parse_plan_text("name: [\n", "p.yaml")
    assert isinstance(caught.value, PlanError)
    assert caught.value.exit_code == 2
