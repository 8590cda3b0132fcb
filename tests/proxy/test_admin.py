"""The admin API: auth on changes, validation naming the field, every endpoint, and real uvicorn."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from changeover.proxy.admin import AdminRefused, build_admin_app
from changeover.proxy.persist import StateStore
from changeover.proxy.state import Instance, RoutingState
from changeover.proxy.stats import ProxyStats

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INSTANCES = [
    Instance("legacy", "a", "127.0.0.1", 9001),
    Instance("legacy", "b", "127.0.0.1", 9002),
    Instance("new", "a", "127.0.0.1", 9003),
]


@dataclass
class Controller:
    """A small in-memory proxy controller: real state store and statistics, no data path."""

    store: StateStore
    current: RoutingState = field(
        default_factory=lambda: RoutingState({"legacy": 100.0, "new": 0.0}, "legacy")
    )
    held: int = 0

    def __post_init__(self) -> None:
        self.proxy_stats = ProxyStats(INSTANCES, routing=self.state, held=lambda: self.held)

    def state(self) -> RoutingState:
        return self.current

    def instances(self) -> Sequence[Instance]:
        return INSTANCES

    def _commit(self, **changes: Any) -> RoutingState:
        self.current = self.store.commit(self.current, **changes)
        return self.current

    async def set_weights(self, weights: dict[str, float]) -> RoutingState:
        return self._commit(weights=weights)

    async def set_write_owner(self, backend: str) -> RoutingState:
        return self._commit(write_owner=backend)

    async def hold(self) -> RoutingState:
        if self.current.holding:
            raise AdminRefused(409, "writes are already held")
        return self._commit(holding=True)

    async def release(self) -> RoutingState:
        return self._commit(holding=False)

    def writes_in_flight(self) -> dict[str, int]:
        return dict.fromkeys(self.current.weights, 0)

    async def wait_writes(self, timeout: float) -> bool:
        return True

    async def set_mirror_share(self, share: float) -> RoutingState:
        return self._commit(mirror_share=share)

    async def set_drained(self, instance: Instance, drained: bool) -> RoutingState:
        keys = self.current.drained
        return self._commit(drained=keys | {instance.key} if drained else keys - {instance.key})

    def stats(self, window_s: int | None) -> dict[str, Any]:
        return self.proxy_stats.snapshot(window_s)

    def metrics(self) -> bytes:
        return self.proxy_stats.render_prometheus()

    def shadow_report(self) -> dict[str, Any]:
        return {"compared": 3, "mismatches": 1}

    def health(self) -> dict[str, Any]:
        return {"legacy/a": {"healthy": True}}


def call(
    controller: Controller,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    open_reads: bool = False,
    **kwargs: Any,
) -> httpx.Response:
    app = build_admin_app(controller, token=token, open_reads=open_reads)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


@pytest.fixture
def controller(tmp_path: Path) -> Controller:
    return Controller(StateStore(tmp_path / "state.json"))


def test_weights_change_returns_the_new_state_and_persists(controller: Controller) -> None:
    response = call(controller, "PUT", "/v1/weights", json={"legacy": 90, "new": 10}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["weights"] == {"legacy": 90.0, "new": 10.0}
    assert response.json()["version"] == 1
    assert controller.store.load() == controller.current


def test_a_backend_left_out_of_the_weights_gets_zero(controller: Controller) -> None:
    response = call(controller, "PUT", "/v1/weights", json={"new": 100}, headers=AUTH)
    assert response.json()["weights"] == {"legacy": 0.0, "new": 100.0}


def test_changes_need_the_token(controller: Controller) -> None:
    response = call(controller, "PUT", "/v1/weights", json={"legacy": 0, "new": 100})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert controller.current.version == 0


def test_changes_need_the_token_even_with_open_reads(controller: Controller) -> None:
    response = call(controller, "POST", "/v1/hold", open_reads=True)
    assert response.status_code == 401
    assert not controller.current.holding


def test_wrong_token_is_401_and_never_echoed(
    controller: Controller, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = {"Authorization": "Bearer not-the-token-xyz"}
    response = call(controller, "POST", "/v1/hold", headers=wrong)
    assert response.status_code == 401
    assert response.json() == {"error": "the token is not valid"}
    assert "not-the-token-xyz" not in caplog.text
    assert TOKEN not in caplog.text


def test_other_auth_schemes_are_refused(controller: Controller) -> None:
    response = call(controller, "POST", "/v1/hold", headers={"Authorization": f"Basic {TOKEN}"})
    assert response.status_code == 401


def test_without_a_configured_token_changes_are_disabled(controller: Controller) -> None:
    response = call(controller, "POST", "/v1/hold", token=None, headers=AUTH)
    assert response.status_code == 403
    assert "no admin token is configured" in response.json()["error"]


def test_reads_need_the_token_unless_open(controller: Controller) -> None:
    assert call(controller, "GET", "/v1/state").status_code == 401
    assert call(controller, "GET", "/v1/state", headers=AUTH).status_code == 200
    assert call(controller, "GET", "/v1/state", open_reads=True).status_code == 200
    wrong = {"Authorization": "Bearer nope"}
    assert call(controller, "GET", "/v1/state", open_reads=True, headers=wrong).status_code == 401


def test_healthz_is_always_open(controller: Controller) -> None:
    assert call(controller, "GET", "/healthz").json() == {"ok": True}


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"legacy": 90, "new": 20}, 400, "weights", "sum to 100 (they sum to 110)"),
        ({"legacy": "90", "new": 10}, 400, "legacy", "expected a weight in percent"),
        ({"legacy": 110, "new": -10}, 400, "legacy", "0 to 100"),
        ({"legacy": True, "new": 0}, 400, "legacy", "expected a weight"),
        ({"legacy": 90, "green": 10}, 404, "green", "unknown backend 'green'"),
        ([90, 10], 400, "body", "must be a JSON object"),
    ],
)
def test_bad_weights_are_refused_naming_the_field(
    controller: Controller, body: Any, status: int, field: str, words: str
) -> None:
    response = call(controller, "PUT", "/v1/weights", json=body, headers=AUTH)
    assert response.status_code == status
    assert response.json()["field"] == field
    assert words in response.json()["error"]
    assert controller.current.version == 0


def test_body_that_is_not_json(controller: Controller) -> None:
    response = call(controller, "PUT", "/v1/weights", content=b"legacy=90", headers=AUTH)
    assert response.status_code == 400
    assert response.json() == {"error": "the request body is not JSON", "field": "body"}


def test_oversized_body_is_refused(controller: Controller) -> None:
    body = b'{"legacy": 100, "x": "' + b"a" * 70_000 + b'"}'
    response = call(controller, "PUT", "/v1/weights", content=body, headers=AUTH)
    assert response.status_code == 413


def test_write_owner(controller: Controller) -> None:
    response = call(controller, "PUT", "/v1/write-owner", json={"backend": "new"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["write_owner"] == "new"
    unknown = call(controller, "PUT", "/v1/write-owner", json={"backend": "neu"}, headers=AUTH)
    assert unknown.status_code == 404
    assert "unknown backend 'neu' (backends: legacy, new)" in unknown.json()["error"]
    missing = call(controller, "PUT", "/v1/write-owner", json={}, headers=AUTH)
    assert (missing.status_code, missing.json()["field"]) == (400, "backend")


def test_hold_and_release(controller: Controller) -> None:
    held = call(controller, "POST", "/v1/hold", headers=AUTH)
    assert held.json()["holding"] is True
    again = call(controller, "POST", "/v1/hold", headers=AUTH)
    assert again.status_code == 409  # the controller's refusal passes through
    assert again.json()["error"] == "writes are already held"
    released = call(controller, "POST", "/v1/release", headers=AUTH)
    assert released.json()["holding"] is False
    assert released.json()["version"] == 2


def test_mirror_share(controller: Controller) -> None:
    response = call(controller, "PUT", "/v1/mirror", json={"share": 0.05}, headers=AUTH)
    assert response.json()["mirror_share"] == 0.05
    bad = call(controller, "PUT", "/v1/mirror", json={"share": 5}, headers=AUTH)
    assert (bad.status_code, bad.json()["field"]) == (400, "share")


def test_drain_and_ready(controller: Controller) -> None:
    drained = call(controller, "POST", "/v1/instances/legacy/b/drain", headers=AUTH)
    assert drained.json()["drained"] == ["legacy/b"]
    ready = call(controller, "POST", "/v1/instances/legacy/b/ready", headers=AUTH)
    assert ready.json()["drained"] == []
    unknown = call(controller, "POST", "/v1/instances/legacy/z/drain", headers=AUTH)
    assert unknown.status_code == 404
    assert "no instance legacy/z" in unknown.json()["error"]


def test_stats_window(controller: Controller) -> None:
    controller.proxy_stats.request_finished(INSTANCES[0], 200, 0.01, 10, 20)
    response = call(controller, "GET", "/v1/stats?window=10", headers=AUTH)
    assert response.json()["window_s"] == 10
    assert response.json()["backends"]["legacy"]["requests"] == 1
    assert call(controller, "GET", "/v1/stats?window=all", headers=AUTH).json()["window_s"] is None
    bad = call(controller, "GET", "/v1/stats?window=600", headers=AUTH)
    assert (bad.status_code, bad.json()["field"]) == (400, "window")


def test_metrics_shadow_and_health(controller: Controller) -> None:
    metrics = call(controller, "GET", "/metrics", headers=AUTH)
    assert metrics.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(metrics.text)}
    assert {"changeover_proxy_requests", "changeover_proxy_weight_percent"} <= names
    assert call(controller, "GET", "/v1/shadow", headers=AUTH).json()["mismatches"] == 1
    assert call(controller, "GET", "/v1/health", headers=AUTH).json()["legacy/a"]["healthy"]


def test_a_failing_controller_answers_500_with_a_plain_message(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    broken = Controller(StateStore(tmp_path / "file" / "state.json"))  # cannot be saved
    response = call(broken, "POST", "/v1/hold", headers=AUTH)
    assert response.status_code == 500
    assert "routing state cannot be saved" in response.json()["error"]
    assert broken.current.version == 0


def test_served_by_uvicorn_on_a_loopback_port(controller: Controller) -> None:
    app = build_admin_app(controller, token=TOKEN, open_reads=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))

    async def go() -> tuple[int, dict[str, Any], int]:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(10):
                while not server.started:
                    await asyncio.sleep(0.01)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                denied = await client.put("/v1/weights", json={"legacy": 50, "new": 50})
                changed = await client.put(
                    "/v1/weights", json={"legacy": 50, "new": 50}, headers=AUTH
                )
                state = await client.get("/v1/state")
                return denied.status_code, changed.json(), state.json()["version"]
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)

    try:
        denied, changed, version = asyncio.run(go())
    finally:
        sock.close()
    assert denied == 401
    assert changed["weights"] == {"legacy": 50.0, "new": 50.0}
    assert version == 1
