"""Run the built-in proxy as its own process (`changeover proxy serve`) for tests and benchmarks.

``write_config`` writes a proxy config for real backend processes on free loopback ports;
``run_proxy`` starts the proxy, waits for its ready line, reads its admin token and stops it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.backends import BackendProcess, free_port


@dataclass
class RunningProxy:
    url: str
    admin: str
    token: str
    proc: subprocess.Popen[bytes]
    config: Path

    def admin_call(self, method: str, path: str, body: object | None = None) -> dict[str, object]:
        response = httpx.request(
            method,
            f"{self.admin}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        data: dict[str, object] = response.json()
        return data

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def write_config(
    directory: Path, backends: dict[str, list[BackendProcess]], **extra: object
) -> Path:
    config = {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "backends": {
            name: [{"name": b.name, "url": f"http://127.0.0.1:{b.port}"} for b in procs]
            for name, procs in backends.items()
        },
        "health": {"interval": "200ms", "timeout": "500ms"},
        **extra,
    }
    path = directory / "proxy.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


@contextmanager
def run_proxy(config: Path) -> Iterator[RunningProxy]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "changeover.cli", "proxy", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if "listening" not in line:
            proc.kill()
            raise AssertionError(f"proxy did not start: {line!r} {proc.stderr.read()!r}")  # type: ignore[union-attr]
        data = json.loads(config.read_text())
        token = (config.parent / ".changeover" / "proxy-admin-token").read_text().strip()
        yield RunningProxy(
            f"http://127.0.0.1:{data['listen']['port']}",
            f"http://127.0.0.1:{data['admin']['port']}",
            token,
            proc,
            config,
        )
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
