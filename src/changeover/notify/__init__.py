"""Notifications: phase started / passed, decision needed, rollback, complete — through apprise.

``Notification`` is what is said (pure, see ``message``); ``Notifier`` delivers it to the plan's
``notify:`` channels concurrently, retries failures in the background and journals each attempt.
"""

from changeover.notify.message import KINDS, Kind, Notification, Severity, render_evidence
from changeover.notify.notifier import Delivery, Notifier, notifier_for

__all__ = [
    "KINDS",
    "Delivery",
    "Kind",
    "Notification",
    "Notifier",
    "Severity",
    "notifier_for",
    "render_evidence",
]
