"""Secret references resolve only at use, and resolved values are scrubbed everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from changeover.errors import SecretError
from changeover.plan.secretref import FileRef, SecretRef, resolve_ref
from changeover.secrets import REDACTOR, Redactor, mask_url, referenced_names, resolve


class _Holder(BaseModel):
    url: SecretRef


def test_resolves_env_reference_and_registers_value_for_redaction() -> None:
    value = resolve("postgresql://u:${PW}@h/db", environ={"PW": "s3cret-canary-1"})
    assert value == "postgresql://u:s3cret-canary-1@h/db"
    assert REDACTOR.scrub(f"error at {value}") == "error at postgresql://u:***@h/db"


def test_default_is_used_when_variable_is_unset() -> None:
    assert resolve("${NOPE_X:-http://127.0.0.1:8000}", environ={}) == "http://127.0.0.1:8000"


def test_missing_variable_names_variable_and_place_but_no_value() -> None:
    with pytest.raises(SecretError) as info:
        resolve("${PG_URL}", environ={}, what="systems.postgres.url")
    message = str(info.value)
    assert "PG_URL is not set" in message
    assert "systems.postgres.url" in message


def test_password_inside_resolved_url_is_redacted_on_its_own() -> None:
    resolve("${DB}", environ={"DB": "postgresql://app:hunter2-canary@db/x"})
    assert REDACTOR.scrub("auth failed with hunter2-canary") == "auth failed with ***"


def test_file_reference_is_read_at_use_and_redacted(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok-file-canary-9\n")
    value = resolve_ref(FileRef(file="token"), base=tmp_path)
    assert value == "tok-file-canary-9"
    assert "tok-file-canary-9" not in REDACTOR.scrub("x tok-file-canary-9 y")


def test_missing_secret_file_is_a_plain_error(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="cannot read secret file"):
        resolve_ref(FileRef(file="absent"), base=tmp_path, what="systems.redis.url")


def test_literal_password_in_plan_url_is_rejected() -> None:
    with pytest.raises(ValidationError, match="literal password"):
        _Holder(url="postgresql://app:hunter2@db/app")
    assert _Holder(url="${PG_URL}").url == "${PG_URL}"
    assert _Holder(url="postgresql://app@db/app").url == "postgresql://app@db/app"


def test_scrub_value_walks_nested_json() -> None:
    redactor = Redactor()
    redactor.register("abcd-secret")
    data = {"a": ["x abcd-secret", {"b": "abcd-secret"}], "n": 1}
    assert redactor.scrub_value(data) == {"a": ["x ***", {"b": "***"}], "n": 1}


def test_helpers_for_display() -> None:
    assert mask_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert referenced_names("${A}/${B:-x}") == ["A", "B"]


def test_ephemeral_values_are_scrubbed_but_only_the_newest_are_kept() -> None:
    from changeover.secrets import Redactor

    redactor = Redactor()
    redactor.register("long-lived-secret")
    for i in range(Redactor.EPHEMERAL_LIMIT + 10):
        redactor.register(f"cookie-value-{i:06d}", ephemeral=True)
    newest = f"cookie-value-{Redactor.EPHEMERAL_LIMIT + 9:06d}"
    assert redactor.scrub(f"a {newest} b") == "a *** b"
    assert redactor.scrub("cookie-value-000000") == "cookie-value-000000"  # forgotten
    assert redactor.scrub("long-lived-secret") == "***"
    assert len(redactor._ephemeral) == Redactor.EPHEMERAL_LIMIT
