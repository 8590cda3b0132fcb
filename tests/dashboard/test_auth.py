"""Dashboard tokens, sessions and the bind rule (no server): where tokens come from, what they
grant, what is refused and how the refusal reads."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from changeover.dashboard.auth import (
    OPERATOR_ENV,
    VIEWER_ENV,
    Role,
    Sessions,
    Tokens,
    check_bind,
    load_tokens,
)
from changeover.dashboard.csrf import allowed_hosts
from changeover.errors import UsageError
from changeover.secrets import REDACTOR

OPERATOR = "operator-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"


def test_without_a_token_one_is_generated_once_readable_only_by_its_owner(tmp_path: Path) -> None:
    first = load_tokens(token_file=None, viewer_token_file=None, state_dir=tmp_path, environ={})
    path = tmp_path / "dashboard-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.operator) >= 32 and first.viewer is None
    again = load_tokens(token_file=None, viewer_token_file=None, state_dir=tmp_path, environ={})
    assert again.operator == first.operator  # a restarted dashboard keeps the same token
    assert REDACTOR.scrub(f"token {first.operator}") == "token ***"


def test_tokens_come_from_files_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "op").write_text(OPERATOR + "\n")
    (tmp_path / "view").write_text(VIEWER + "\n")
    from_files = load_tokens(
        token_file=tmp_path / "op",
        viewer_token_file=tmp_path / "view",
        state_dir=tmp_path,
        environ={},
    )
    assert (from_files.operator, from_files.viewer) == (OPERATOR, VIEWER)
    from_env = load_tokens(
        token_file=None,
        viewer_token_file=None,
        state_dir=tmp_path,
        environ={OPERATOR_ENV: OPERATOR, VIEWER_ENV: VIEWER},
    )
    assert (from_env.operator, from_env.viewer) == (OPERATOR, VIEWER)
    assert not (tmp_path / "dashboard-token").exists()


def test_a_short_token_or_a_viewer_token_equal_to_the_operator_token_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(UsageError, match="needs at least 16"):
        load_tokens(
            token_file=None, viewer_token_file=None, state_dir=tmp_path, environ={OPERATOR_ENV: "x"}
        )
    with pytest.raises(UsageError, match="anyone who can read could act"):
        load_tokens(
            token_file=None,
            viewer_token_file=None,
            state_dir=tmp_path,
            environ={OPERATOR_ENV: OPERATOR, VIEWER_ENV: OPERATOR},
        )
    with pytest.raises(UsageError, match="cannot read secret file"):
        load_tokens(
            token_file=tmp_path / "missing", viewer_token_file=None, state_dir=tmp_path, environ={}
        )


def test_each_token_grants_its_role_and_nothing_else() -> None:
    tokens = Tokens(OPERATOR, VIEWER)
    assert tokens.role_of(OPERATOR) is Role.OPERATOR
    assert tokens.role_of(VIEWER) is Role.VIEWER
    assert tokens.role_of(OPERATOR[:-1]) is Role.NONE
    assert tokens.role_of("") is Role.NONE and tokens.role_of(None) is Role.NONE
    assert Tokens(OPERATOR).role_of(VIEWER) is Role.NONE


def test_beyond_loopback_the_dashboard_needs_a_viewer_token() -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, Tokens(OPERATOR))
    with pytest.raises(UsageError, match=r"refusing to listen on 0\.0\.0\.0.*viewer token"):
        check_bind("0.0.0.0", Tokens(OPERATOR))
    check_bind("0.0.0.0", Tokens(OPERATOR, VIEWER))


def test_a_session_cookie_cannot_be_forged_or_promoted() -> None:
    sessions = Sessions()
    session, cookie = sessions.new(Role.NONE)
    assert sessions.read(cookie) == session
    session_id, _, mac = cookie.split(".")
    assert sessions.read(f"{session_id}.1.{mac}") is None  # anonymous → viewer: refused
    assert sessions.read(f"{session_id}.2.{mac}") is None  # there is no operator session
    assert sessions.read("garbage") is None and sessions.read(None) is None
    assert Sessions().read(cookie) is None  # another process's key (a restart)
    assert sessions.csrf_ok(session, sessions.csrf(session))
    other, _ = sessions.new(Role.NONE)
    assert not sessions.csrf_ok(other, sessions.csrf(session))


def test_loopback_dashboards_answer_only_to_loopback_names() -> None:
    assert allowed_hosts("127.0.0.1", 8765) == {
        "127.0.0.1:8765",
        "localhost:8765",
        "[::1]:8765",
    }
    assert "[::1]:9" in (allowed_hosts("::1", 9) or set())
    assert allowed_hosts("0.0.0.0", 8765) is None
