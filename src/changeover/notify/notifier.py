"""Deliver a notification to every channel of the plan through apprise, without ever blocking.

Each channel is a secret reference (``${SLACK_URL}``, ``{file: path}``) or an apprise URL,
resolved at send time. ``send`` waits only for each channel's first attempt (bounded by a
timeout); a failed channel is retried with backoff in the background. ``send_nowait`` is what a
rollback calls: it schedules and returns at once. Every attempt is journaled with the channel
shown as apprise's privacy URL (tokens and passwords masked, and registered with ``REDACTOR``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise

from changeover.errors import ChangeoverError
from changeover.journal.events import NOTIFY_FAILED, NOTIFY_SENT
from changeover.notify.message import Notification
from changeover.plan.secretref import FileRef, resolve_ref
from changeover.secrets import REDACTED, REDACTOR, has_reference, mask_url

if TYPE_CHECKING:
    from changeover.journal import Journal
    from changeover.plan.model import Plan

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
# Seconds to wait before each retry: four attempts over about 40 s, then the channel is given up.
DEFAULT_RETRY_DELAYS = (2.0, 10.0, 30.0)
_SECRET_QUERY_KEY = re.compile(r"token|key|secret|pass|auth|sig", re.IGNORECASE)


@dataclass(frozen=True)
class Delivery:
    """The outcome of one attempt to deliver a notification to one channel."""

    channel: str  # apprise's privacy URL (no token, no password) or the plan's reference
    ok: bool
    attempt: int
    attempts_max: int
    reason: str = ""  # why it failed, in plain words, secrets scrubbed
    will_retry: bool = False
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "ok": self.ok,
            "attempt": self.attempt,
            "of": self.attempts_max,
            "reason": self.reason,
            "will_retry": self.will_retry,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class _Unusable(Exception):
    """A channel that no retry can fix: its reference does not resolve, or apprise rejects it."""


class _Channel:
    """One configured channel: its reference as the plan wrote it, resolved when used."""

    def __init__(self, ref: str | FileRef, index: int, base_dir: Path | None) -> None:
        self.ref = ref
        self.what = f"notify[{index}]"
        self.base_dir = base_dir
        self.reference = _reference(ref)
        # A literal URL may carry a token in its path: show only its scheme until apprise masks it.
        scheme = str(ref).split("://", 1)[0] + "://…" if "://" in str(ref) else "(not a URL)"
        self.label = self.reference or scheme

    def open(self, environ: Mapping[str, str] | None) -> tuple[apprise.Apprise, str]:
        """An apprise object for this channel and its safe label; ``_Unusable`` if impossible."""
        try:
            url = resolve_ref(self.ref, base=self.base_dir, environ=environ, what=self.what)
        except ChangeoverError as exc:  # SecretError: its message never holds the value
            raise _Unusable(str(exc)) from None
        plugin: Any = apprise.Apprise.instantiate(url.strip())
        if plugin is None:
            scheme = url.split("://", 1)[0] if "://" in url else ""
            raise _Unusable(
                f"{self.what} ({self.label}) is not a notification URL apprise understands"
                + (f" (scheme {REDACTOR.scrub(scheme)!r})" if scheme else " (no scheme://)")
            ) from None
        privacy = str(plugin.url(privacy=True))
        _register_private_parts(url, plugin, privacy)
        label = REDACTOR.scrub(mask_url(privacy.split("?", 1)[0]))
        if self.reference is not None:
            # A value read from ${ENV} or a file is a secret as a whole: then show the reference.
            label = self.reference if REDACTED in label else f"{label} ({self.reference})"
        channel = apprise.Apprise()
        channel.add(plugin)
        return channel, label


class Notifier:
    """Sends notifications to a fixed list of channels; failed channels retry in the background.

    ``urls`` are plan references (``${SLACK_URL}``, ``{file: path}``) or apprise URLs.
    """

    def __init__(
        self,
        urls: Sequence[str | FileRef],
        journal: Journal | None = None,
        *,
        base_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    ) -> None:
        self._channels = [_Channel(ref, i, base_dir) for i, ref in enumerate(urls)]
        self.journal = journal
        self.environ = environ
        self.timeout = timeout
        self.retry_delays = tuple(retry_delays)
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def channels(self) -> list[str]:
        """The channels as the plan names them (references, never resolved values)."""
        return [c.label for c in self._channels]

    async def send(self, notification: Notification) -> list[Delivery]:
        """Try every channel once, concurrently; return those outcomes. Retries go on behind."""
        firsts: list[asyncio.Future[Delivery]] = []
        for channel in self._channels:
            first: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
            self._spawn(self._run_channel(channel, notification, first))
            firsts.append(first)
        return list(await asyncio.gather(*firsts))

    def send_nowait(self, notification: Notification) -> asyncio.Task[list[Delivery]]:
        """Schedule ``send`` and return at once: a rollback never waits for a notification."""
        return self._spawn(self.send(notification))

    async def deliver(self, notification: Notification) -> list[Delivery]:
        """Every channel with all its retries; the final outcome per channel (for a test)."""
        return list(
            await asyncio.gather(
                *(self._run_channel(channel, notification, None) for channel in self._channels)
            )
        )

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for background deliveries and retries; False if some were still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._background:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            await asyncio.wait(set(self._background), timeout=left)
        return True

    async def aclose(self) -> None:
        """Stop retrying; pending attempts are abandoned (their last outcome is journaled)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        # Keep a reference: the event loop holds tasks only weakly.
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _run_channel(
        self,
        channel: _Channel,
        notification: Notification,
        first: asyncio.Future[Delivery] | None,
    ) -> Delivery:
        attempts = 1 + len(self.retry_delays)
        delivery = Delivery(channel.label, False, 0, attempts, "not attempted")
        try:
            try:
                target, label = channel.open(self.environ)
            except _Unusable as exc:
                delivery = Delivery(channel.label, False, 1, 1, str(exc))
                self._record(notification, delivery)
                return delivery
            for attempt in range(1, attempts + 1):
                ok, reason, elapsed = await self._attempt(target, notification)
                delivery = Delivery(
                    label, ok, attempt, attempts, reason, not ok and attempt < attempts, elapsed
                )
                self._record(notification, delivery)
                if first is not None and not first.done():
                    first.set_result(delivery)
                if not delivery.will_retry:
                    return delivery
                await asyncio.sleep(self.retry_delays[attempt - 1])
            return delivery
        finally:
            if first is not None and not first.done():
                first.set_result(delivery)

    async def _attempt(
        self, target: apprise.Apprise, notification: Notification
    ) -> tuple[bool, str, float]:
        started = time.monotonic()
        try:
            # apprise bounds the call itself; the outer wait is a guard against a stuck plugin.
            result = await asyncio.wait_for(
                target.async_notify(
                    body=notification.text() or notification.title,
                    title=notification.title,
                    notify_type=notification.level,
                    body_format=apprise.NotifyFormat.TEXT,
                    timeout=self.timeout,
                ),
                self.timeout + 2,
            )
        except TimeoutError:
            return False, f"no answer within {self.timeout:g} s", time.monotonic() - started
        except Exception as exc:  # a third-party plugin's bug must not kill the retry loop
            reason = REDACTOR.scrub(f"apprise failed: {type(exc).__name__}: {exc}")
            return False, reason, time.monotonic() - started
        elapsed = time.monotonic() - started
        if result:
            return True, "", elapsed
        return False, _failure_reason(result), elapsed

    def _record(self, notification: Notification, delivery: Delivery) -> None:
        if not delivery.ok:
            log.warning(
                "notification %r to %s failed (attempt %d of %d%s): %s",
                notification.title,
                delivery.channel,
                delivery.attempt,
                delivery.attempts_max,
                ", will retry" if delivery.will_retry else "",
                delivery.reason,
            )
        if self.journal is None:
            return
        payload = {
            "notification": notification.id,
            "kind": notification.kind,
            "title": notification.title,
            **delivery.to_json(),
        }
        try:
            self.journal.append(NOTIFY_SENT if delivery.ok else NOTIFY_FAILED, payload)
        except ChangeoverError as exc:
            # A journal problem is reported elsewhere; the notification path must not die of it.
            log.error("could not journal a notification outcome: %s", exc)


def notifier_for(
    plan: Plan,
    journal: Journal | None,
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
) -> Notifier:
    """The notifier for the plan's ``notify:`` channels; ``{file:}`` paths are from base_dir."""
    return Notifier(
        plan.notify,
        journal,
        base_dir=base_dir,
        environ=environ,
        timeout=timeout,
        retry_delays=retry_delays,
    )


def _reference(ref: str | FileRef) -> str | None:
    """How the plan names a referenced channel (``${SLACK_URL}``, ``{file: path}``), else None."""
    if isinstance(ref, FileRef):
        return f"{{file: {ref.file}}}"
    return ref if has_reference(ref) else None


def _failure_reason(result: Any) -> str:
    """The last warnings apprise logged for this call: its own words, secrets scrubbed."""
    messages: list[str] = []
    for service in result:
        messages += [e.message for e in service.logs() if e.level in ("WARNING", "ERROR")]
    messages += [e.message for e in result.call_logs() if e.level in ("WARNING", "ERROR")]
    if not messages:
        return f"apprise reported {result.status.name.lower()}"
    return REDACTOR.scrub("; ".join(dict.fromkeys(messages[-3:])))


def _register_private_parts(url: str, plugin: Any, privacy: str) -> None:
    """Register what apprise keeps out of its privacy URL, so no output can show it.

    Apprise masks a service's tokens in ``url(privacy=True)``; any part of the URL missing from
    that form (user, password, host, path segment, token-like query value) is treated as secret,
    as are the plugin's own private template fields.
    """
    shown = unquote(privacy)
    parts = urlsplit(url.strip())
    candidates = [parts.username, parts.password, parts.hostname]
    candidates += [unquote(segment) for segment in parts.path.split("/")]
    candidates += [v for k, v in parse_qsl(parts.query) if _SECRET_QUERY_KEY.search(k)]
    for value in candidates:
        if value and value not in shown:
            REDACTOR.register(value)
    if parts.password:
        REDACTOR.register(unquote(parts.password))
    templates = {**getattr(plugin, "template_tokens", {}), **getattr(plugin, "template_args", {})}
    for key, spec in templates.items():
        if isinstance(spec, Mapping) and spec.get("private"):
            value = getattr(plugin, str(spec.get("map_to", key)), None)
            if isinstance(value, str):
                REDACTOR.register(value)
