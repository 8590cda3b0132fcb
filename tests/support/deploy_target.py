"""A deploy command for the controller's tests: start a small HTTP server detached, then exit.

    python deploy_target.py PORT DIRECTORY LOG

Serves DIRECTORY (the test puts a ``healthz`` file there) on 127.0.0.1:PORT in its own session,
writes its pid to DIRECTORY/pid and appends "listening on PORT" to LOG once the port answers,
then exits 0 — like a deploy script that starts a service and returns.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    port, directory, log = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    (directory / "pid").write_text(str(server.pid))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                with log.open("a") as fp:
                    fp.write(f"INFO listening on {port}\n")
                return 0
        time.sleep(0.05)
    return 1


if __name__ == "__main__":
    sys.exit(main())
