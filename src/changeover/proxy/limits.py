"""The proxy's named limits and the fixed answers they turn into.

One frozen ``Limits`` value is handed to the core at start; every bound the data path enforces
(head size, body size, concurrency, timeouts, pipelining depth, idle upstream connections) is a
field here with a finite default, so no client can make the proxy hold unbounded memory or time.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True)
class Limits:
    """Bounds of the data path; the comment after each says what exceeding it answers."""

    max_header_bytes: int = 64 * KIB  # request line + headers -> 431
    max_body_bytes: int = 4 * GIB  # request body -> 413 (before or while streaming)
    max_concurrency: int = 10_000  # requests in flight across the proxy -> 503
    keepalive_timeout: float = 15.0  # idle client connection between requests -> closed
    header_timeout: float = 10.0  # time to receive a request head (slowloris) -> 408 / closed
    upstream_connect_timeout: float = 3.0  # TCP connect to an instance -> 504 (502 if refused)
    upstream_timeout: float = 60.0  # request sent -> first response byte -> 504
    max_pipeline: int = 16  # parsed requests queued on one connection before reading pauses
    max_idle_per_instance: int = 64  # idle keep-alive connections kept per upstream instance
    upstream_idle_timeout: float = 30.0  # an idle pooled upstream connection is closed after this
    max_retries: int = 2  # extra attempts for idempotent requests that never reached an upstream
    body_buffer_bytes: int = 256 * KIB  # request body held while no upstream takes it yet
    mirror_capture_bytes: int = 1 * MIB  # body kept of primary and shadow answers for comparison
    max_mirror_tasks: int = 64  # concurrent shadow requests; more are dropped (and counted)
    mirror_timeout: float = 10.0  # a shadow request's whole exchange

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if value < 0 or (value == 0 and name not in ("max_retries",)):
                raise ValueError(f"proxy limit {name} must be positive, got {value!r}")
