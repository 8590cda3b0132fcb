"""The built-in proxy as a ``Router``: its authenticated admin API over HTTP (httpx).

Weights are percentages per backend on the proxy itself (no per-server weights: the proxy
splits sessions by backend and balances instances inside it). Every change is read back from
``GET /v1/state``; the proxy persists the state before applying it, so what this router reads is
what a restarted proxy will do. Write owner, hold (optionally waiting for the writes already
in flight), release and the writes-in-flight count belong to the data handoff and are exposed
here as extra methods, not part of the ``Router`` protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from changeover.secrets import REDACTOR, mask_url
from changeover.traffic.router import (
    RESPONSE_CLASSES,
    InstanceStats,
    RouterError,
    RouterStats,
    Server,
    WeightMismatch,
    Weights,
    normalise_percent,
)


class BuiltinRouter:
    """Drives ``changeover proxy serve`` through its admin API at ``admin`` (http://host:port)."""

    def __init__(
        self,
        admin: str,
        token: str | None,
        servers: Sequence[Server] = (),
        *,
        timeout: float = 10.0,
        verify: bool = True,
    ) -> None:
        self.admin = admin.rstrip("/")
        self.token = token  # for other clients of the same admin API (the metrics source)
        self.servers = list(servers)
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(
            base_url=self.admin, headers=headers, timeout=timeout, verify=verify
        )

    async def _call(
        self, method: str, path: str, body: Any = None, *, longer_by: float = 0.0
    ) -> Any:
        where = f"built-in proxy admin API at {mask_url(self.admin)}"
        try:
            response = await self._client.request(
                method, path, json=body, timeout=self.timeout + longer_by
            )
        except httpx.ConnectError as exc:
            raise RouterError(f"{where}: cannot connect ({exc}); is the proxy running?") from exc
        except httpx.TimeoutException as exc:
            raise RouterError(f"{where}: no answer in time") from exc
        except httpx.HTTPError as exc:
            raise RouterError(f"{where}: {REDACTOR.scrub(str(exc))}") from exc
        if response.status_code == 401:
            raise RouterError(f"{where}: the admin token was refused (systems.router.token)")
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise RouterError(f"{where}: {method} {path} → {response.status_code}: {message}")
        return response.json()

    async def state(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("GET", "/v1/state")
        return data

    async def set_weights(self, weights: Mapping[str, float]) -> Weights:
        backends = list((await self.state())["weights"])
        wanted = normalise_percent(weights, backends)
        await self._call("PUT", "/v1/weights", wanted)
        observed = await self.weights()
        for backend, share in wanted.items():
            if abs(observed[backend] - share) > 0.01:
                raise WeightMismatch(
                    f"built-in proxy shows {observed.describe()} after setting "
                    + " ".join(f"{b}={s:g}%" for b, s in sorted(wanted.items()))
                )
        return observed

    async def weights(self) -> Weights:
        state = await self.state()
        return Weights({name: float(share) for name, share in state["weights"].items()})

    async def drain(self, backend: str, instance: str) -> None:
        await self._call("POST", f"/v1/instances/{backend}/{instance}/drain")

    async def ready(self, backend: str, instance: str) -> None:
        await self._call("POST", f"/v1/instances/{backend}/{instance}/ready")

    async def stats(self) -> RouterStats:
        data = await self._call("GET", "/v1/stats?window=all")
        state = await self.state()
        drained = set(state.get("drained", []))
        found: list[InstanceStats] = []
        for backend, totals in data.get("backends", {}).items():
            for name, numbers in totals.get("instances", {}).items():
                responses = {k: int(numbers["status"].get(k, 0)) for k in RESPONSE_CLASSES}
                found.append(
                    InstanceStats(
                        backend=backend,
                        instance=name,
                        status="DRAIN" if f"{backend}/{name}" in drained else "UP",
                        weight=None,
                        current_sessions=int(numbers.get("in_flight", 0)),
                        requests=int(numbers.get("requests", 0)),
                        responses=responses,
                    )
                )
        return RouterStats(tuple(found))

    # --- the data handoff's operations (not part of the Router protocol) ---

    async def set_write_owner(self, backend: str) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("PUT", "/v1/write-owner", {"backend": backend})
        return data

    async def hold(self, wait_writes: float | None = None) -> dict[str, Any]:
        """Hold writes; with ``wait_writes``, also wait up to that many seconds for the writes
        routed before the hold to end. The answer is the routing state with
        ``writes_in_flight`` per backend, and ``writes_settled`` (true when none was left in
        time) when it waited."""
        if wait_writes is None:
            data: dict[str, Any] = await self._call("POST", "/v1/hold")
        else:
            data = await self._call(
                "POST", "/v1/hold", {"wait_writes": wait_writes}, longer_by=max(0.0, wait_writes)
            )
        return data

    async def writes_in_flight(self) -> dict[str, int]:
        """Writes routed to each backend whose answer has not ended yet."""
        counts = (await self.state()).get("writes_in_flight", {})
        return {str(backend): int(n) for backend, n in counts.items()}

    async def release(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("POST", "/v1/release")
        return data

    async def close(self) -> None:
        await self._client.aclose()
