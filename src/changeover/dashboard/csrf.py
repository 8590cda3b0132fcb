"""Requests from other web pages are refused: the Host check, the Origin check, the CSRF token.

A page elsewhere could make the operator's browser post to the dashboard, or rename itself to
127.0.0.1 through DNS (rebinding) to read it. So: on loopback only loopback names are accepted
in ``Host``; every POST must come from the dashboard's own origin (``Origin`` or, failing that,
``Sec-Fetch-Site``) and carry the per-page token (``X-CSRF-Token``) bound to its session cookie.
Each failure is a ``Refused`` with status 403 and a message that says what to do.
"""

from __future__ import annotations

from collections.abc import Mapping

from changeover.dashboard.auth import Refused, Session, Sessions
from changeover.proxy.config import is_loopback

HEADER = "x-csrf-token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def allowed_hosts(bind_host: str, port: int) -> frozenset[str] | None:
    """The ``Host`` values a loopback dashboard answers; None (any) when bound wider, where the
    viewer token, not the name, keeps readers out."""
    if not is_loopback(bind_host):
        return None
    shown = f"[{bind_host}]" if ":" in bind_host and not bind_host.startswith("[") else bind_host
    return frozenset(f"{name}:{port}" for name in {*LOOPBACK_NAMES, shown})


def check_host(headers: Mapping[str, str], allowed: frozenset[str] | None) -> None:
    if allowed is None:
        return
    host = headers.get("host", "").lower()
    if host not in allowed:
        raise Refused(
            403,
            f"this dashboard answers only on loopback names ({', '.join(sorted(allowed))}); "
            f"the request named {host or 'no host'!r}",
        )


def check_origin(headers: Mapping[str, str]) -> None:
    """The request comes from the dashboard's own page (or from no page at all, like curl)."""
    origin = headers.get("origin")
    host = headers.get("host", "")
    if origin is not None:
        if origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
            raise Refused(403, f"refused: the request came from another site ({origin})")
        return
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Refused(403, f"refused: the request came from another site (sec-fetch-site {site})")


def check_csrf(headers: Mapping[str, str], session: Session | None, sessions: Sessions) -> None:
    if not sessions.csrf_ok(session, headers.get(HEADER)):
        raise Refused(
            403,
            "refused: the page's security token is missing or out of date — reload the "
            "dashboard and try again",
        )
