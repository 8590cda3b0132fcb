"""Delivery through apprise to real local endpoints: a webhook receiver and an SMTP server.

apprise's Slack and PagerDuty plugins post to fixed hosts (hooks.slack.com, events.pagerduty.com)
and cannot be pointed at a local server, so webhooks are tested through ``json://``, the generic
webhook that shares apprise's HTTP path; email goes to a real aiosmtpd server with login.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email import message_from_bytes
from typing import Any

import pytest

from changeover.journal import Journal
from changeover.notify import Notification, Notifier, notifier_for
from changeover.plan.load import parse_plan_text
from support.process import free_port

from .conftest import Mailbox, Receiver, run_async

VERDICT = {
    "gate": "error-rate",
    "outcome": "fail_immediate",
    "observed": 0.1,
    "bound": [0.091, 0.109],
    "threshold": 0.01,
    "samples": 5000,
    "reason": "new errors above 1%",
}
ROLLBACK = Notification(
    "rollback", "Rolled back phase 2", "All traffic is on legacy.", {"verdicts": [VERDICT]}
)
FAST = {"timeout": 3.0, "retry_delays": (0.05, 0.05)}


def events(journal: Journal, kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in journal.events(kinds=[kind])]


@run_async
async def test_webhook_receives_the_rollback_with_its_evidence(
    receiver: Receiver, journal: Journal
) -> None:
    notifier = Notifier([receiver.url()], journal, **FAST)  # type: ignore[arg-type]
    (delivery,) = await notifier.send(ROLLBACK)
    assert delivery.ok and delivery.attempt == 1
    assert delivery.channel == f"json://127.0.0.1:{receiver.port}/hook"
    ((path, body),) = receiver.requests
    assert path == "/hook"
    assert body["title"] == "Rolled back phase 2"
    assert body["type"] == "failure"
    assert "observed 0.1 (bound 0.091–0.109) vs threshold 0.01, 5000 samples" in body["message"]
    (sent,) = events(journal, "notify.sent")
    assert sent["kind"] == "rollback" and sent["notification"] == ROLLBACK.id
    assert events(journal, "notify.failed") == []


@run_async
async def test_email_reaches_the_smtp_server_with_the_evidence(
    mailbox: Mailbox, journal: Journal
) -> None:
    notifier = Notifier([mailbox.url()], journal, **FAST)  # type: ignore[arg-type]
    (delivery,) = await notifier.send(ROLLBACK)
    assert delivery.ok, delivery.reason
    (envelope,) = mailbox.messages
    assert envelope.rcpt_tos == ["oncall@example.org"]
    mail = message_from_bytes(envelope.original_content or b"")
    assert mail["Subject"] == "Rolled back phase 2"
    text = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "threshold 0.01, 5000 samples" in text
    assert mailbox.password not in str(delivery) + str(events(journal, "notify.sent"))


@run_async
async def test_every_channel_is_tried_concurrently_and_reported_separately(
    receiver: Receiver, mailbox: Mailbox, journal: Journal
) -> None:
    refused = f"json://127.0.0.1:{free_port()}/hook"
    notifier = Notifier(
        [receiver.url(), mailbox.url(), refused], journal, timeout=3.0, retry_delays=()
    )
    deliveries = await notifier.send(Notification("complete", "Cutover complete"))
    assert [d.ok for d in deliveries] == [True, True, False]
    assert "connection error" in deliveries[2].reason.lower()
    assert len(events(journal, "notify.sent")) == 2


@run_async
async def test_refusing_channel_is_retried_then_journaled_as_failed(
    receiver: Receiver, journal: Journal
) -> None:
    receiver.status = 500
    notifier = Notifier([receiver.url()], journal, **FAST)  # type: ignore[arg-type]
    (first,) = await notifier.send(ROLLBACK)
    assert not first.ok and first.will_retry and first.attempt == 1
    assert await notifier.drain(timeout=10)
    assert len(receiver.requests) == 3
    failed = events(journal, "notify.failed")
    assert [(f["attempt"], f["of"], f["will_retry"]) for f in failed] == [
        (1, 3, True),
        (2, 3, True),
        (3, 3, False),
    ]
    assert "500" in failed[-1]["reason"]


@run_async
async def test_retry_succeeds_once_the_channel_recovers(
    receiver: Receiver, journal: Journal
) -> None:
    receiver.status = 500
    notifier = Notifier([receiver.url()], journal, timeout=3.0, retry_delays=(0.3, 0.3))
    await notifier.send(ROLLBACK)
    receiver.status = 200
    assert await notifier.drain(timeout=10)
    assert len(events(journal, "notify.failed")) == 1
    (sent,) = events(journal, "notify.sent")
    assert sent["attempt"] == 2


@run_async
async def test_send_nowait_never_blocks_on_a_silent_channel(
    silent_port: int, journal: Journal
) -> None:
    notifier = Notifier(
        [f"json://127.0.0.1:{silent_port}/hook"], journal, timeout=0.5, retry_delays=()
    )
    started = time.monotonic()
    task = notifier.send_nowait(ROLLBACK)
    assert time.monotonic() - started < 0.05
    assert not task.done()
    # The event loop stays free for the rollback while the channel hangs.
    await asyncio.sleep(0.1)
    assert events(journal, "notify.failed") == []
    assert await notifier.drain(timeout=10)
    (failed,) = events(journal, "notify.failed")
    assert failed["will_retry"] is False


@run_async
async def test_unresolvable_or_unknown_channel_fails_at_once_without_retry(
    journal: Journal,
) -> None:
    notifier = Notifier(["${NOTIFY_TEST_UNSET_URL}", "bogus://x"], journal, environ={}, **FAST)  # type: ignore[arg-type]
    missing, unknown = await notifier.send(ROLLBACK)
    assert (missing.ok, missing.attempt, missing.attempts_max) == (False, 1, 1)
    assert "NOTIFY_TEST_UNSET_URL is not set" in missing.reason
    assert "not a notification URL apprise understands (scheme 'bogus')" in unknown.reason
    assert len(events(journal, "notify.failed")) == 2


@run_async
async def test_secrets_in_channel_urls_never_reach_journal_logs_or_results(
    receiver: Receiver, journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.status = 500
    from_env = f"json://hook:env-CANARY-5b1e@127.0.0.1:{receiver.port}/hook"
    literal = f"json://hook:lit-CANARY-8c2d@127.0.0.1:{receiver.port}/x?token=tok-CANARY-3a7f"
    notifier = Notifier(
        ["${HOOK_URL}", literal],
        journal,
        environ={"HOOK_URL": from_env},
        **FAST,  # type: ignore[arg-type]
    )
    deliveries = await notifier.send(ROLLBACK)
    assert await notifier.drain(timeout=10)
    assert len(receiver.requests) == 6  # the channels were really used, with their logins
    seen = repr(deliveries) + repr(list(journal.events())) + caplog.text
    assert "CANARY" not in seen
    assert "json://hook:***@127.0.0.1" in seen or "json://hook:****@127.0.0.1" in seen


@run_async
async def test_notifier_for_uses_the_plans_channels(receiver: Receiver, journal: Journal) -> None:
    plan = parse_plan_text(
        "version: 1\nname: t\ncutover_at: 2026-12-01T02:00:00Z\n"
        "contacts: [{role: lead, title: Lead}]\n"
        "notify: ['${HOOK_URL}']\n"
        "stages: [{id: pre, title: Pre, sections: [{title: S, steps: "
        "[{id: a, title: A, manual: {role: lead}}]}]}]\n",
        "changeover.yaml",
    )
    notifier = notifier_for(plan, journal, environ={"HOOK_URL": receiver.url()}, retry_delays=())
    assert notifier.channels == ["${HOOK_URL}"]
    (delivery,) = await notifier.send(Notification("phase_started", "Phase 1 started"))
    assert delivery.ok
    assert delivery.channel == "${HOOK_URL}"  # the whole value came from the environment
    assert receiver.requests[0][1]["type"] == "info"
