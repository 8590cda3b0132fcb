"""The demo's traffic step: the built-in proxy shifts two stand-in apps 10 → 50 → 100 %.

The proxy runs in this process (the real ``ProxyServer``, admin API included) and is driven
through the same ``BuiltinRouter`` that ``changeover route`` uses; after each change a counted
batch of requests shows the share that really reached the new app, with the proxy's own p95.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from changeover.demo.standin import port_of, start_stand_in
from changeover.loadgen.client import send
from changeover.proxy.app import ProxyServer
from changeover.proxy.config import load_proxy_config
from changeover.traffic.builtin import BuiltinRouter

STEPS = (10, 50, 100)
REQUESTS_PER_STEP = 2_000


async def start_proxy(workdir: Path, legacy_port: int, new_port: int) -> tuple[ProxyServer, str]:
    """The built-in proxy in this process in front of two loopback apps; (proxy, admin token)."""
    config = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0},
        "backends": {
            "legacy": [{"name": "legacy", "url": f"http://127.0.0.1:{legacy_port}"}],
            "new": [{"name": "new", "url": f"http://127.0.0.1:{new_port}"}],
        },
        "state_file": "proxy-state.json",
    }
    path = workdir / "proxy.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    token = secrets.token_urlsafe(24)
    proxy = ProxyServer(load_proxy_config(path), token=token)
    await proxy.start()
    return proxy, token


async def shift_traffic(workdir: Path) -> list[dict[str, Any]]:
    """Shift the stand-ins' traffic through the proxy; one result row per step."""
    legacy = await start_stand_in("legacy")
    new = await start_stand_in("new")
    proxy, token = await start_proxy(workdir, port_of(legacy), port_of(new))
    router = BuiltinRouter(f"http://127.0.0.1:{proxy.admin_port}", token)
    rows: list[dict[str, Any]] = []
    try:
        url = f"http://127.0.0.1:{proxy.port}"
        for share in STEPS:
            observed = await router.set_weights({"legacy": 100 - share, "new": share})
            answers = await send(url, REQUESTS_PER_STEP, concurrency=8)
            to_new = sum(1 for a in answers if a.instance == "new")
            window = proxy.proxy_stats.window(10, backend="new")
            p95 = window.latency_s.get("p95")
            rows.append(
                {
                    "weight_new": share,
                    "router_reads_back": observed["new"],
                    "requests": len(answers),
                    "measured_new": round(100 * to_new / len(answers), 1),
                    "errors": sum(1 for a in answers if a.status != 200),
                    "proxy_p95_ms": None if p95 is None else round(p95 * 1000, 2),
                }
            )
    finally:
        await router.close()
        await proxy.close(grace=1.0)
        for server in (legacy, new):
            server.close()
            await server.wait_closed()
    return rows
