"""What both sample apps do at start: common arguments, secrets, the ready line, the exit code.

The session secret and the admin token come from files (``--secret-file``, ``--admin-token-file``)
or the environment, never from the command line, and are registered with the redactor so no
message shows them. Exit codes of both apps: 0 stopped cleanly, 2 bad arguments or secret files,
3 the environment (port taken, database unreachable).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from changeover.demo.apps.session import MIN_SECRET_BYTES
from changeover.errors import ChangeoverError, UsageError
from changeover.secrets import REDACTOR

SECRET_ENV = "CHANGEOVER_DEMO_SESSION_SECRET"
ADMIN_TOKEN_ENV = "CHANGEOVER_DEMO_ADMIN_TOKEN"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument(
        "--secret-file",
        type=Path,
        help=f"file holding the session-cookie secret (else ${SECRET_ENV})",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        help=f"file holding the admin API's bearer token (else ${ADMIN_TOKEN_ENV}; none: no admin)",
    )


@dataclass(frozen=True)
class Basics:
    """What both apps read from their arguments, checked."""

    host: str
    port: int
    secret: bytes
    admin_token: bytes | None


def read_basics(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Basics:
    env = os.environ if environ is None else environ
    if not _is_loopback(args.host):
        raise UsageError(f"--host {args.host} is not a loopback address: the demo stays local")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port number")
    secret = _read_secret(args.secret_file, SECRET_ENV, "session secret", env)
    if secret is None:
        raise UsageError(f"no session secret: pass --secret-file FILE or set ${SECRET_ENV}")
    if len(secret) < MIN_SECRET_BYTES:
        raise UsageError(f"the session secret must be at least {MIN_SECRET_BYTES} bytes long")
    token = _read_secret(args.admin_token_file, ADMIN_TOKEN_ENV, "admin token", env)
    return Basics(args.host, args.port, secret, token)


def _read_secret(
    path: Path | None, env_name: str, what: str, environ: Mapping[str, str]
) -> bytes | None:
    if path is not None:
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the {what} from {path}: {exc.strerror}") from exc
        if not value:
            raise UsageError(f"the {what} file {path} is empty")
    else:
        value = environ.get(env_name, "").strip()
        if not value:
            return None
    REDACTOR.register(value)
    return value.encode()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_main(name: str, main: Callable[[], int]) -> None:
    """The error boundary of an app's ``__main__``: a plain message and the exit code."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {name} %(levelname)s %(message)s",
    )
    try:
        code = main()
    except ChangeoverError as exc:
        print(f"{name}: error: {REDACTOR.scrub(str(exc))}", file=sys.stderr, flush=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 0  # a Ctrl-C before the server took over its signals: nothing to finish
    sys.exit(code)


def announce(line: str) -> None:
    """The ready line the demo and the tests wait for, on stdout, flushed at once."""
    print(line, flush=True)
