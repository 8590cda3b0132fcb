"""Flow control for one transport: reading paused for named reasons, writing paused by the peer.

Reading is paused while any reason holds (the upstream cannot take more body, too many pipelined
requests queued, a body buffer full) and resumes only when the last reason is lifted, so two
parts of the core can never resume each other's pause by accident. Both directions are
idempotent. Write pauses come from asyncio's high/low water marks (``pause_writing`` /
``resume_writing``); listeners are told so the other side of the proxy can stop reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Transport write buffer marks: above HIGH the protocol is told to pause producing.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024


class FlowControl:
    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._read_paused_for: set[str] = set()
        self.write_paused = False
        self._drained: list[asyncio.Future[None]] = []
        #: called with True when writing pauses and False when it resumes
        self.on_write_pause: Callable[[bool], None] | None = None
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)

    @property
    def reading_paused(self) -> bool:
        return bool(self._read_paused_for)

    def pause_reading(self, reason: str) -> None:
        if not self._read_paused_for and not self._transport.is_closing():
            self._transport.pause_reading()
        self._read_paused_for.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._read_paused_for:
            return
        self._read_paused_for.discard(reason)
        if not self._read_paused_for and not self._transport.is_closing():
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        if self.write_paused:
            return
        self.write_paused = True
        if self.on_write_pause is not None:
            self.on_write_pause(True)

    def resume_writing(self) -> None:
        if not self.write_paused:
            return
        self.write_paused = False
        waiters, self._drained = self._drained, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self.on_write_pause is not None:
            self.on_write_pause(False)

    async def drain(self) -> None:
        """Wait until the peer has taken enough of what was written (or the transport closed)."""
        if not self.write_paused or self._transport.is_closing():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drained.append(waiter)
        await waiter

    def release(self) -> None:
        """The transport is gone: wake every drain waiter so nobody waits forever."""
        self.write_paused = False
        waiters, self._drained = self._drained, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
