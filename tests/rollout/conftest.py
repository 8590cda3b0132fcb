"""Fixtures shared with the notification tests: a real local webhook receiver."""

from notify.conftest import Receiver, receiver

__all__ = ["Receiver", "receiver"]
