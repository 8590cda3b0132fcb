"""Where the load goes: the URL checked, resolved once, and refused off loopback unless asked.

The generator sends real traffic at the full rate, so a typo must not point it at production:
only loopback addresses are accepted without ``allow_remote``. The name is resolved here, once,
so connections do not each wait for DNS while their requests' clocks run.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from changeover.errors import ChangeoverError, UsageError


class TargetUnreachable(ChangeoverError):
    """The target cannot be resolved or does not accept connections (exit 3); nothing was sent."""


@dataclass(frozen=True)
class Target:
    url: str
    address: str  # the resolved IP the connections go to
    port: int
    host_header: str  # as written in the URL (name and port)
    path: str  # path and query: what a plain ``loadtest URL`` requests


def parse_target(url: str, *, allow_remote: bool = False) -> Target:
    parts = urlsplit(url)
    if parts.scheme == "https":
        raise UsageError(
            f"{url}: https is not supported; point the load at the plain-HTTP listener "
            "(e.g. the proxy's or the app's loopback port)"
        )
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"{url!r} is not an http:// URL with a host, e.g. http://127.0.0.1:8080/")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise UsageError(f"{url}: {exc}") from exc
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetUnreachable(
            f"cannot resolve {host!r}: {exc.strerror}; nothing was sent"
        ) from exc
    addresses = [str(info[4][0]) for info in infos]
    remote = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if remote and not allow_remote:
        raise UsageError(
            f"refusing to load {host} ({remote[0]}): it is not a loopback address. This tool "
            "sends real traffic at the full rate; add --allow-remote if that is what you mean"
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = parts.netloc.rsplit("@", 1)[-1]  # never send credentials written in the URL
    shown = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return Target(shown, addresses[0], port, netloc, path)
