"""The plan's ``notify:`` channels: references or credential-free URLs, each listed once."""

from __future__ import annotations

import pytest

from changeover.errors import PlanError
from changeover.plan.load import parse_plan_text
from changeover.plan.secretref import FileRef

PLAN = """\
version: 1
name: t
cutover_at: 2026-12-01T02:00:00Z
contacts: [{role: lead, title: Lead}]
notify: NOTIFY
stages:
  - {id: pre, title: Pre, sections: [{title: S, steps: [{id: a, title: A, manual: {role: lead}}]}]}
"""


def plan_with(notify: str) -> str:
    return PLAN.replace("NOTIFY", notify)


def test_references_and_plain_webhook_urls_are_accepted() -> None:
    plan = parse_plan_text(
        plan_with(
            "['${SLACK_URL}', {file: secrets/pd_url}, 'json://hooks.internal:8080/cutover', "
            "'mailto://relay.internal?to=ops@example.org']"
        ),
        "changeover.yaml",
    )
    assert plan.notify[1] == FileRef(file="secrets/pd_url")
    assert len(plan.notify) == 4


@pytest.mark.parametrize(
    "url",
    [
        "slack://T0000/B0000/XXXXXXXX",
        "https://hooks.slack.com/services/T0000/B0000/XXXXXXXX",
        "pagerduty://integrationkey@apikey",
        "mailto://ops@smtp.example.org?to=oncall@example.org",
    ],
)
def test_a_literal_url_with_a_token_or_login_is_refused_at_its_line(url: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan_text(plan_with(f"['${{EMAIL_URL}}', '{url}']"), "changeover.yaml")
    (issue,) = caught.value.issues
    assert (issue.line, issue.path) == (5, "notify[1]")
    assert "carries its token or login" in issue.message
    assert "${SLACK_URL}" in issue.message


def test_a_channel_that_is_not_a_url_is_refused() -> None:
    with pytest.raises(PlanError, match="notify\\[0\\]: a notification channel is an apprise URL"):
        parse_plan_text(plan_with("['#cutover-war-room']"), "changeover.yaml")


def test_a_channel_listed_twice_is_refused() -> None:
    with pytest.raises(PlanError, match="channel '\\$\\{SLACK_URL\\}' is listed twice"):
        parse_plan_text(plan_with("['${SLACK_URL}', '${SLACK_URL}']"), "changeover.yaml")
