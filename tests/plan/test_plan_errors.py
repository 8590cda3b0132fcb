"""Plan mistakes and the errors they give: file:line:column, the path in the plan, a plain message.

Each test writes a small plan with one kind of mistake and asserts the exact issue; ``token``
shows what the reported position points at in the text, so each position is checked twice.
"""

from __future__ import annotations

from typing import Any

import pytest

from changeover.errors import PlanError, PlanIssue
from changeover.plan.load import MAX_ISSUES, parse_plan_text

# 13 lines; the steps a test adds start on line 14, indented by 10 ("          - id: ...").
HEADER = """\
version: 1
name: Test cutover
cutover_at: 2026-12-01T02:00:00Z
contacts: [{role: dba, title: Database administrator}]
systems:
  postgres: {url: "${PG_URL}"}
  redis: {url: "${REDIS_URL}"}
stages:
  - id: pre
    title: Pre-deployment
    sections:
      - title: Database
        steps:
"""

pytestmark = pytest.mark.usefixtures("echo_probe")


def problems(text: str) -> list[PlanIssue]:
    with pytest.raises(PlanError) as caught:
        parse_plan_text(text, "changeover.yaml")
    return caught.value.issues


def rendered(text: str) -> list[str]:
    return [str(issue) for issue in problems(text)]


def token(text: str, issue: PlanIssue) -> str:
    """The text from the issue's position to the end of that line."""
    assert issue.line is not None and issue.column is not None
    return text.splitlines()[issue.line - 1][issue.column - 1 :]


def test_header_alone_is_a_valid_plan_with_one_step() -> None:
    plan = parse_plan_text(HEADER + "          - {id: a, title: A, manual: {role: dba}}\n", "p")
    assert [step.id for step in plan.all_steps()] == ["a"]


def test_yaml_syntax_error_names_line_and_column() -> None:
    text = HEADER + "          - {id: a, title: A, manual: {role: dba}\n"
    (issue,) = problems(text)
    assert str(issue).startswith("changeover.yaml:15:1: YAML syntax: ")
    assert "while parsing a flow mapping" in issue.message


def test_tab_indentation_is_a_syntax_error_at_the_tab() -> None:
    text = HEADER + "          - id: a\n\t    title: A\n"
    (issue,) = problems(text)
    assert (issue.line, issue.column) == (15, 1)
    assert "'\\t'" in issue.message


def test_every_duplicate_key_is_reported_with_its_first_line() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            title: A\n"
        "            title: B\n"
        "            manual: {role: dba}\n"
        "          - {id: b, title: B, manual: {role: dba}, id: c}\n"
    )
    assert rendered(text) == [
        "changeover.yaml:16:13: duplicate key 'title' (first defined at line 15)",
        "changeover.yaml:18:52: duplicate key 'id' (first defined at line 18)",
    ]


def test_unknown_top_level_key_suggests_the_right_one() -> None:
    text = HEADER.replace("stages:", "stagse:") + (
        "          - {id: a, title: A, manual: {role: dba}}\n"
    )
    issues = problems(text)
    assert [str(i) for i in issues] == [
        "changeover.yaml:1:1: stages: required key is missing",
        "changeover.yaml:8:1: stagse: unknown key 'stagse' (did you mean 'stages'?)",
    ]
    assert token(text, issues[1]) == "stagse:"


def test_unknown_key_in_a_step_points_at_the_key() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            tittle: PostgreSQL is provisioned\n"
        "            manual: {role: dba}\n"
    )
    assert rendered(text) == [
        "changeover.yaml:14:13: stages[0].sections[0].steps[0].title: required key is missing",
        "changeover.yaml:15:13: stages[0].sections[0].steps[0].tittle: "
        "unknown key 'tittle' (did you mean 'title'?)",
    ]


def test_missing_title_points_at_the_step() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            title: A\n"
        "            manual: {role: dba}\n"
        "          - id: b\n"
        "            manual: {role: dba}\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:17:13: stages[0].sections[0].steps[1].title: required key is missing"
    )
    assert token(text, issue) == "id: b"


def test_step_with_two_kinds_is_one_error_naming_both() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            title: A\n"
        "            check: {test.echo: {system: postgres}}\n"
        "            manual: {role: dba}\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:14:13: stages[0].sections[0].steps[0]: "
        "a step needs exactly one of check, action, gate or manual (has check, manual)"
    )
    assert token(text, issue).startswith("id: a")


def test_step_without_a_kind_says_which_kinds_exist() -> None:
    text = HEADER + "          - {id: a, title: A}\n"
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:14:13: stages[0].sections[0].steps[0]: "
        "a step needs exactly one of check, action, gate or manual"
    )
    assert token(text, issue).startswith("{id: a, title: A}")


def _issue_example_plan() -> str:
    """The plan of the issue's example: the unknown probe sits at line 41, column 9."""
    lines = [
        "version: 1",
        "name: API cutover",
        "cutover_at: 2026-12-01T02:00:00Z",
        "contacts:",
        "- {role: dba, title: Database administrator}",
        "systems:",
        "  postgres: {url: '${PG_URL}'}",
        "  redis: {url: '${REDIS_URL}'}",
        "stages:",
        "- id: pre-deployment",
        "  title: Pre-deployment (72 hours before cutover)",
        "  sections:",
        "  - title: Environment preparation",
        "    steps:",
        "    - {id: pg-provisioned, title: PostgreSQL provisioned, manual: {role: dba}}",
        "    - {id: redis-provisioned, title: Redis provisioned, manual: {role: dba}}",
        "  - title: Code",
        "    steps:",
        "    - {id: code-frozen, title: Code freeze, manual: {role: dba}}",
        "  - title: Database",
        "    steps:",
        "    - id: pg-reachable",
        "      title: PostgreSQL reachable",
        "      check:",
        "        postgres.connect: {system: postgres}",
        "    - id: redis-reachable",
        "      title: Redis reachable",
        "      check:",
        "        redis.ping: {system: redis}",
        "    - id: pg-stat-statements",
        "      title: pg_stat_statements installed",
        "      check:",
        "        postgres.extension: {system: postgres}",
        "    - id: pg-version",
        "      title: PostgreSQL 15 or later",
        "      how: |",
        "        SELECT version();",
        "        The connection probe also reports it.",
        "      required: true",
        "      check:",
        "        postgress.connect: {system: postgres, min_version: 15}",
    ]
    return "\n".join(lines) + "\n"


def test_unknown_probe_is_shown_as_in_the_issue_with_did_you_mean() -> None:
    text = _issue_example_plan()
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:41:9: stages[0].sections[2].steps[3].check: "
        "unknown probe 'postgress.connect' (did you mean 'postgres.connect'?)"
    )
    assert token(text, issue).startswith("postgress.connect:")


def test_bad_parameter_type_of_a_real_probe() -> None:
    text = _issue_example_plan().replace("min_version: 15", "min_version: fifteen")
    text = text.replace("postgress.connect", "postgres.connect")
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:41:59: "
        "stages[0].sections[2].steps[3].check['postgres.connect'].min_version: "
        "expected an integer (got 'fifteen')"
    )
    assert token(text, issue) == "fifteen}"


def test_bad_parameter_type_points_at_the_value() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            title: A\n"
        "            check:\n"
        "              test.echo:\n"
        "                system: postgres\n"
        "                min_version: fifteen\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:19:30: stages[0].sections[0].steps[0].check['test.echo'].min_version: "
        "expected an integer (got 'fifteen')"
    )
    assert token(text, issue).startswith("fifteen")


def test_unknown_parameter_of_a_probe_suggests_the_right_one() -> None:
    text = HEADER + (
        "          - {id: a, title: A, check: {test.echo: {system: postgres, min_versoin: 9}}}\n"
    )
    (issue,) = problems(text)
    assert issue.message == "unknown key 'min_versoin' (did you mean 'min_version'?)"
    assert token(text, issue).startswith("min_versoin: 9")


def test_missing_probe_parameter_points_at_the_probe() -> None:
    text = HEADER + "          - {id: a, title: A, check: {test.echo: {min_version: 15}}}\n"
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:14:39: stages[0].sections[0].steps[0].check['test.echo'].system: "
        "required key is missing"
    )
    assert token(text, issue).startswith("test.echo:")


def test_probe_parameters_that_disagree_point_at_the_probe() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            title: A\n"
        "            check:\n"
        "              test.echo: {system: postgres, min_version: 15, max_version: 14}\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:17:15: stages[0].sections[0].steps[0].check['test.echo']: "
        "max_version must not be below min_version"
    )
    assert token(text, issue).startswith("test.echo:")


def test_two_reference_problems_in_one_check_are_both_reported() -> None:
    text = HEADER + (
        "          - {id: a, title: A, check: {test.echo: {system: redis}}}\n"
        "          - {id: b, title: B, check: {test.echo: {system: redis}}}\n"
    )
    assert [(i.line, i.message) for i in problems(text)] == [
        (14, "system 'redis' is a redis; test.echo needs a postgres"),
        (15, "system 'redis' is a redis; test.echo needs a postgres"),
    ]


def test_union_parameter_mistake_gives_one_message() -> None:
    text = HEADER + (
        "          - {id: a, title: A, check: {test.echo: {system: postgres, status: ok}}}\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:14:77: stages[0].sections[0].steps[0].check['test.echo'].status: "
        "expected a number or a list (got 'ok')"
    )
    assert token(text, issue).startswith("ok}}}")


def test_unknown_system_lists_the_systems() -> None:
    text = HEADER + "          - {id: a, title: A, check: {test.echo: {system: postgress}}}\n"
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:14:59: stages[0].sections[0].steps[0].check['test.echo'].system: "
        "unknown system 'postgress' (did you mean 'postgres'?) (systems: postgres, redis)"
    )
    assert token(text, issue).startswith("postgress}")


def test_probe_on_a_system_of_the_wrong_kind() -> None:
    text = HEADER + "          - {id: a, title: A, check: {test.echo: {system: redis}}}\n"
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:14:59: stages[0].sections[0].steps[0].check['test.echo'].system: "
        "system 'redis' is a redis; test.echo needs a postgres"
    )
    assert token(text, issue).startswith("redis}}}")


def test_unknown_role_in_manual_suggests_a_contact() -> None:
    text = HEADER + "          - {id: a, title: A, manual: {role: dab}}\n"
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:14:46: stages[0].sections[0].steps[0].manual.role: "
        "unknown role 'dab' (did you mean 'dba'?)"
    )
    assert token(text, issue) == "dab}}"


def test_duplicate_step_id_names_where_it_was_first_used() -> None:
    text = HEADER + (
        "          - {id: pg-ready, title: A, manual: {role: dba}}\n"
        "          - {id: redis-ready, title: B, manual: {role: dba}}\n"
        "          - {id: pg-ready, title: C, manual: {role: dba}}\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:16:18: stages[0].sections[0].steps[2].id: "
        "duplicate id 'pg-ready' (first used at stages[0].sections[0].steps[0].id)"
    )
    assert token(text, issue).startswith("pg-ready, title: C")


def test_bad_duration_in_bake() -> None:
    text = HEADER.replace(
        "    title: Pre-deployment\n",
        "    title: Pre-deployment\n    phase: {weight: 10, bake: {min: 30 minutes, max: 1h}}\n",
    ) + ("          - {id: a, title: A, manual: {role: dba}}\n")
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:11:37: stages[0].phase.bake.min: "
        "expected a duration like '30m', '2h', '-24h' or '500ms', got '30 minutes'"
    )
    assert token(text, issue).startswith("30 minutes,")


def test_bake_max_shorter_than_min() -> None:
    text = HEADER.replace(
        "    title: Pre-deployment\n",
        "    title: Pre-deployment\n"
        "    phase:\n"
        "      weight: 10\n"
        "      bake: {min: 1h, max: 30m}\n",
    ) + ("          - {id: a, title: A, manual: {role: dba}}\n")
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:13:7: stages[0].phase.bake: bake.max must not be shorter than bake.min"
    )
    assert token(text, issue).startswith("bake: {min: 1h")


@pytest.mark.parametrize("value", ["2026-12-01T02:00:00", "'2026-12-01T02:00:00'", "2026-12-01"])
def test_cutover_at_without_time_zone(value: str) -> None:
    text = HEADER.replace("2026-12-01T02:00:00Z", value) + (
        "          - {id: a, title: A, manual: {role: dba}}\n"
    )
    (issue,) = problems(text)
    assert (issue.line, issue.column, issue.path) == (3, 13, "cutover_at")
    assert "needs a time zone, e.g. 2026-12-01T02:00:00Z" in issue.message


def test_cutover_at_that_is_not_a_time() -> None:
    text = HEADER.replace("2026-12-01T02:00:00Z", "next tuesday") + (
        "          - {id: a, title: A, manual: {role: dba}}\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:3:13: cutover_at: "
        "expected a date and time like 2026-12-01T02:00:00Z (got 'next tuesday')"
    )
    assert token(text, issue).startswith("next tuesday")


def test_literal_password_in_a_url_is_refused_without_showing_it() -> None:
    text = HEADER.replace(
        'postgres: {url: "${PG_URL}"}', 'postgres: {url: "postgresql://app:hunter2@db:5432/app"}'
    ) + ("          - {id: a, title: A, manual: {role: dba}}\n")
    (issue,) = problems(text)
    assert (issue.line, issue.column, issue.path) == (6, 19, "systems.postgres.url")
    assert "contains a literal password" in issue.message
    assert "${PG_URL}" in issue.message
    assert "hunter2" not in str(issue)
    assert token(text, issue).startswith('"postgresql://')


@pytest.mark.parametrize("bad_id", ["PG-Ready", "pg ready", "-pg"])
def test_bad_id_format(bad_id: str) -> None:
    text = HEADER + f"          - {{id: '{bad_id}', title: A, manual: {{role: dba}}}}\n"
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:14:18: stages[0].sections[0].steps[0].id: an id is lowercase letters, "
        f"digits and dashes, e.g. 'pg-ready' (got {bad_id!r})"
    )


def test_bad_system_name_points_at_the_key() -> None:
    text = HEADER.replace("  redis: {url:", "  Redis Cache: {kind: redis, url:") + (
        "          - {id: a, title: A, manual: {role: dba}}\n"
    )
    (issue,) = problems(text)
    assert issue.path == "systems['Redis Cache']"
    assert (issue.line, issue.column) == (7, 3)
    assert issue.message.startswith("an id is lowercase letters, digits and dashes")
    assert token(text, issue).startswith("Redis Cache:")


def test_gate_with_no_condition_is_one_error_at_the_gate() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            title: Error rate\n"
        "            gate:\n"
        "              metric: error_rate\n"
        "              of: postgres\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:16:13: stages[0].sections[0].steps[0].gate: "
        "a gate needs one of below, above or ratio"
    )
    assert token(text, issue).startswith("gate:")


def test_gate_list_error_points_at_the_element() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            title: Error rate\n"
        "            gate:\n"
        "              - {metric: error_rate, of: postgres, below: 1%}\n"
        "              - {metric: latency_p95, of: postgres}\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:18:17: stages[0].sections[0].steps[0].gate[1]: "
        "a gate needs one of below, above or ratio"
    )
    assert token(text, issue).startswith("{metric: latency_p95")


def test_gate_of_an_unknown_system() -> None:
    text = (
        HEADER + "          - {id: a, title: A, gate: {metric: error_rate, of: neww, below: 1%}}\n"
    )
    (issue,) = problems(text)
    assert issue.path == "stages[0].sections[0].steps[0].gate.of"
    assert issue.message == "unknown system 'neww' (systems: postgres, redis)"
    assert token(text, issue).startswith("neww,")


def test_list_valued_check_error_points_into_the_right_element() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            title: A\n"
        "            check:\n"
        "              - test.echo: {system: postgres}\n"
        "              - test.echo: {system: postgres, min_version: fifteen}\n"
        "              - test.echo: {system: postgres}\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:18:60: stages[0].sections[0].steps[0].check[1]['test.echo'].min_version: "
        "expected an integer (got 'fifteen')"
    )
    assert token(text, issue).startswith("fifteen}")


def test_list_valued_check_with_an_unknown_probe_in_the_second_element() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            title: A\n"
        "            check:\n"
        "              - test.echo: {system: postgres}\n"
        "              - test.ecko: {system: postgres}\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:18:17: stages[0].sections[0].steps[0].check[1]: "
        "unknown probe 'test.ecko' (did you mean 'test.echo'?)"
    )
    assert token(text, issue).startswith("test.ecko:")


def test_list_valued_check_element_naming_two_probes() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            title: A\n"
        "            check:\n"
        "              - test.echo: {system: postgres}\n"
        "              - {test.echo: {system: postgres}, redis.ping: {system: redis}}\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:18:17: stages[0].sections[0].steps[0].check[1]: a check names exactly "
        "one probe, e.g. {postgres.connect: {...}}; got keys test.echo, redis.ping"
    )
    assert token(text, issue).startswith("{test.echo")


def test_check_written_as_a_bare_probe_name_gets_one_message() -> None:
    text = HEADER + "          - {id: a, title: A, check: test.echo}\n"
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:14:38: stages[0].sections[0].steps[0].check: "
        "expected a check {probe.name: {parameters}} or a list of them (got 'test.echo')"
    )
    assert token(text, issue).startswith("test.echo}")


def test_unknown_action_suggests_one() -> None:
    text = HEADER + "          - {id: a, title: A, action: {deplyo: {instance: go-1}}}\n"
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:14:40: stages[0].sections[0].steps[0].action: "
        "unknown action 'deplyo' (did you mean 'deploy'?)"
    )
    assert token(text, issue).startswith("deplyo:")


def test_system_without_a_kind_needs_one() -> None:
    text = HEADER.replace("  redis: {url:", "  cache: {url:") + (
        "          - {id: a, title: A, manual: {role: dba}}\n"
    )
    (issue,) = problems(text)
    assert (issue.line, issue.column, issue.path) == (7, 3, "systems.cache")
    assert issue.message.startswith("system 'cache' needs a kind (postgres, redis, app,")
    assert token(text, issue).startswith("cache:")


def test_system_with_an_unknown_kind_points_at_the_kind() -> None:
    text = HEADER.replace("  redis: {url:", "  cache: {kind: rediss, url:") + (
        "          - {id: a, title: A, manual: {role: dba}}\n"
    )
    (issue,) = problems(text)
    assert (issue.line, issue.column, issue.path) == (7, 17, "systems.cache.kind")
    assert issue.message.startswith("unknown kind 'rediss' (did you mean 'redis'?)")
    assert token(text, issue).startswith("rediss,")


def test_system_url_of_the_wrong_type_gets_one_message() -> None:
    text = HEADER.replace('{url: "${REDIS_URL}"}', "{url: [a, b]}") + (
        "          - {id: a, title: A, manual: {role: dba}}\n"
    )
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:7:11: systems.redis.url: expected a string or a mapping (got a list)"
    )
    assert token(text, issue).startswith("url: [a, b]")


def test_secret_file_reference_with_a_typo_points_inside_it() -> None:
    text = HEADER.replace('{url: "${REDIS_URL}"}', "{url: {fille: /run/secrets/redis}}") + (
        "          - {id: a, title: A, manual: {role: dba}}\n"
    )
    assert rendered(text) == [
        "changeover.yaml:7:11: systems.redis.url.file: required key is missing",
        "changeover.yaml:7:17: systems.redis.url.fille: unknown key 'fille' (did you mean 'file'?)",
    ]


def test_custom_yaml_tag_is_refused() -> None:
    text = HEADER + "          - {id: a, title: !env TITLE, manual: {role: dba}}\n"
    (issue,) = problems(text)
    assert str(issue) == (
        "changeover.yaml:14:28: YAML tag !env is not supported; write the plain value"
    )
    assert token(text, issue).startswith("!env TITLE")


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = HEADER + (
        "          - {id: a, title: A, manual: {role: dba}, bogus: 1}\n"
        "          - {id: b, manual: {role: dba}}\n"
        "          - {id: C, title: C, manual: {role: dba}}\n"
    )
    issues = problems(text)
    assert [(i.line, i.path) for i in issues] == [
        (14, "stages[0].sections[0].steps[0].bogus"),
        (15, "stages[0].sections[0].steps[1].title"),
        (16, "stages[0].sections[0].steps[2].id"),
    ]


def test_reference_problems_are_all_reported_at_once() -> None:
    text = HEADER + (
        "          - {id: a, title: A, manual: {role: dab}}\n"
        "          - {id: b, title: B, check: {test.echo: {system: redis}}}\n"
        "          - {id: a, title: C, check: {test.ecko: {system: postgres}}}\n"
    )
    assert [i.line for i in problems(text)] == [14, 15, 16, 16]


def test_many_problems_are_capped_with_a_count_of_the_rest() -> None:
    steps = "".join(f"          - {{id: s{n}, manual: {{role: dba}}}}\n" for n in range(80))
    issues = problems(HEADER + steps)
    assert len(issues) == MAX_ISSUES
    assert [i.line for i in issues[:-1]] == list(range(14, 14 + MAX_ISSUES - 1))
    last = issues[-1]
    assert (last.line, str(last)) == (
        None,
        f"changeover.yaml: {81 - MAX_ISSUES} more problems not shown",
    )


def test_problems_inside_an_alias_point_at_the_anchor() -> None:
    text = HEADER + (
        "          - &step {id: a, title: A, manual: {role: dba}, bogus: 1}\n          - *step\n"
    )
    issues: list[Any] = problems(text)
    assert {(i.line, i.column) for i in issues} == {(14, 58)}


def test_a_gates_synthetic_check_is_validated_like_a_steps_check() -> None:
    text = HEADER + (
        "          - id: a\n"
        "            title: A\n"
        "            gate:\n"
        "              metric: features\n"
        "              check: {test.ecko: {system: postgres}}\n"
    )
    (issue,) = problems(text)
    assert str(issue).startswith(
        "changeover.yaml:18:23: stages[0].sections[0].steps[0].gate.check: "
        "unknown probe 'test.ecko' (did you mean 'test.echo'?)"
    ), str(issue)
    good = text.replace("test.ecko", "test.echo")
    (step,) = parse_plan_text(good, "p").all_steps()
    assert [c.probe for c in step.gates[0].checks] == ["test.echo"]
