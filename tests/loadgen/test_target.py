"""Targets: loopback only unless asked, http only, credentials never kept."""

from __future__ import annotations

import pytest

from changeover.errors import UsageError
from changeover.loadgen.target import TargetUnreachable, parse_target


def test_a_loopback_url_is_resolved_once() -> None:
    target = parse_target("http://localhost:8080/health?x=1")
    assert target.address in ("127.0.0.1", "::1")
    assert (target.port, target.host_header, target.path) == (8080, "localhost:8080", "/health?x=1")


def test_a_remote_address_is_refused_without_allow_remote() -> None:
    with pytest.raises(UsageError, match=r"not a loopback address.*--allow-remote"):
        parse_target("http://10.1.2.3:8080/")
    assert parse_target("http://10.1.2.3:8080/", allow_remote=True).address == "10.1.2.3"


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1/", "ftp://127.0.0.1/", "127.0.0.1:80", "http://"]
)
def test_only_plain_http_urls(url: str) -> None:
    with pytest.raises(UsageError):
        parse_target(url)


def test_an_unknown_name_is_unreachable_exit_3() -> None:
    with pytest.raises(TargetUnreachable, match="cannot resolve") as caught:
        parse_target("http://no-such-host.invalid/")
    assert caught.value.exit_code == 3


def test_credentials_in_the_url_are_dropped() -> None:
    target = parse_target("http://user:secret@127.0.0.1:81/x")
    assert "secret" not in target.url and "secret" not in target.host_header
