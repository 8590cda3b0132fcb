"""Every conversion rule of ``migrate.values``: SQLite value → PostgreSQL COPY text, or refused."""

from __future__ import annotations

import pytest

from changeover.migrate.schema import PgColumn
from changeover.migrate.values import (
    NULL,
    RawText,
    Unrepresentable,
    converter,
    escape_copy,
    to_copy_text,
)


def col(pg_type: str, source_format: str | None = None) -> PgColumn:
    return PgColumn("c", pg_type, False, None, source_format=source_format)


@pytest.mark.parametrize(
    ("value", "pg_type", "expected"),
    [
        (None, "bigint", NULL),
        (None, "text", NULL),
        (42, "bigint", "42"),
        (-(2**63), "bigint", str(-(2**63))),
        (2**63 - 1, "bigint", str(2**63 - 1)),
        (RawText(b" 17 "), "bigint", "17"),
        (RawText(b"-5"), "integer", "-5"),
        (3.0, "bigint", "3"),
        (0.5, "double precision", "0.5"),
        (7, "double precision", "7"),
        (float("inf"), "double precision", "Infinity"),
        (float("-inf"), "double precision", "-Infinity"),
        (float("nan"), "double precision", "NaN"),
        (RawText(b"NaN"), "double precision", "NaN"),
        (RawText(b"1e3"), "double precision", "1e3"),
        (12, "numeric", "12"),
        (RawText(b"12.50"), "numeric(12,2)", "12.50"),
        (1.25, "numeric(12,2)", "1.25"),
        (float("inf"), "numeric", "Infinity"),
        (1, "boolean", "t"),
        (0, "boolean", "f"),
        (RawText(b"true"), "boolean", "t"),
        (RawText(b"FALSE"), "boolean", "f"),
        (RawText(b"t"), "boolean", "t"),
        (RawText(b"f"), "boolean", "f"),
        (RawText("café ☕ 🚀".encode()), "text", "café ☕ 🚀"),
        (RawText(b""), "text", ""),
        (RawText(b"a\\b\tc\nd\re"), "text", "a\\\\b\\tc\\nd\\re"),
        (5, "text", "5"),
        (0.1, "text", "0.1"),
        (b"\x00\x01\xff", "bytea", "\\\\x0001ff"),
        (b"", "bytea", "\\\\x"),
        (RawText(b"ab"), "bytea", "\\\\x6162"),
        (RawText(b'{"a": [1, 2]}'), "json", '{"a": [1, 2]}'),
        (RawText(b"2026-11-20"), "date", "2026-11-20"),
        (RawText(b"2026-11-20T10:00:00Z"), "timestamptz", "2026-11-20T10:00:00+00:00"),
        (RawText(b"2026-11-20 10:00:00"), "timestamptz", "2026-11-20T10:00:00+00:00"),
        (RawText(b"2026-11-20T12:00:00+02:00"), "timestamptz", "2026-11-20T10:00:00+00:00"),
        (RawText(b"2026-11-20T12:00:00+02:00"), "timestamp", "2026-11-20T10:00:00"),
        (RawText(b"10:30:00"), "time", "10:30:00"),
        (RawText("ünïcödé".encode()), "varchar(7)", "ünïcödé"),
        (
            RawText(b"123e4567-e89b-12d3-a456-426614174000"),
            "uuid",
            "123e4567-e89b-12d3-a456-426614174000",
        ),
        (float("inf"), "real", "Infinity"),
        (1.5, "real", "1.5"),
    ],
)
def test_converts_value_to_copy_text(value: object, pg_type: str, expected: str) -> None:
    assert to_copy_text(value, col(pg_type)) == expected  # type: ignore[arg-type]
    # the per-column fast path gives the same answer
    assert converter(col(pg_type))(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "pg_type", "source_format", "expected"),
    [
        (1_763_632_800, "timestamptz", "epoch_s", "2025-11-20T10:00:00+00:00"),
        (1_763_632_800.5, "timestamptz", "epoch_s", "2025-11-20T10:00:00.500000+00:00"),
        (1_763_632_800_123, "timestamptz", "epoch_ms", "2025-11-20T10:00:00.123000+00:00"),
        (RawText(b"1763632800"), "timestamptz", "epoch_s", "2025-11-20T10:00:00+00:00"),
        (1_763_632_800, "date", "epoch_s", "2025-11-20"),
        (1_763_632_800, "timestamp", "epoch_s", "2025-11-20T10:00:00"),
        (RawText(b"2026-11-20T10:00:00Z"), "timestamptz", "iso8601", "2026-11-20T10:00:00+00:00"),
        (0, "boolean", "bool_int", "f"),
    ],
)
def test_converts_dates_per_source_format(
    value: object, pg_type: str, source_format: str, expected: str
) -> None:
    assert to_copy_text(value, col(pg_type, source_format)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "pg_type", "reason"),
    [
        (RawText(b"ten"), "bigint", "text 'ten' in a bigint column"),
        (RawText(b"12abc"), "bigint", "text '12abc' in a bigint column"),
        (2**70, "bigint", "beyond 64 bits"),
        (float(2**70), "bigint", "beyond 64 bits"),
        (RawText(str(2**70).encode()), "bigint", "beyond 64 bits"),
        (2**31, "integer", "beyond 32 bits"),
        (0.5, "bigint", "REAL 0.5 in a bigint column"),
        (float("inf"), "bigint", "REAL Infinity"),
        (RawText(b"abc"), "double precision", "in a double precision column"),
        (RawText(b"abc"), "numeric", "in a numeric column"),
        (123456.0, "numeric(5,2)", "does not fit numeric(5,2)"),
        (2, "boolean", "is not a boolean"),
        (RawText(b"maybe"), "boolean", "is not a boolean"),
        (RawText(b"f\xfeo\x80"), "text", "not valid UTF-8"),
        (RawText(b"a\x00b"), "text", "NUL byte in text (PostgreSQL text cannot hold 0x00)"),
        ("a\x00b", "text", "NUL byte in text"),
        (b"\xde\xad", "text", "blob (2 bytes) in a text column"),
        (b"\x01", "bigint", "blob (1 bytes) in a bigint column"),
        (1_763_632_800, "timestamptz", "from epoch_s"),
        (RawText(b"yesterday"), "timestamptz", "not an ISO 8601 timestamptz"),
        (RawText(b"2026-13-01"), "date", "not an ISO 8601 date"),
        (RawText(b"{bad"), "json", "is not valid JSON"),
        (RawText(b"NaN"), "json", "is not valid JSON"),
        (10**20, "timestamptz", "out of range"),
        (RawText(b"25:00"), "time", "not an ISO 8601 time"),
        (RawText(b"abcdef"), "varchar(5)", "text of 6 characters is longer than varchar(5)"),
        (RawText(b"not-a-uuid"), "uuid", "is not a UUID"),
        (1e39, "real", "out of range for real"),
    ],
)
def test_refuses_unrepresentable_values_with_reason(
    value: object, pg_type: str, reason: str
) -> None:
    source_format = "epoch_s" if value == 10**20 else None
    with pytest.raises(Unrepresentable) as caught:
        to_copy_text(value, col(pg_type, source_format))  # type: ignore[arg-type]
    assert reason in caught.value.reason
    with pytest.raises(Unrepresentable) as fast:
        converter(col(pg_type, source_format))(value)  # type: ignore[arg-type]
    assert fast.value.reason == caught.value.reason


@pytest.mark.parametrize("pg_type", ["text", "bigint", "boolean", "timestamptz", "bytea"])
def test_null_in_not_null_column_is_refused(pg_type: str) -> None:
    column = PgColumn("k", pg_type, True, None)
    with pytest.raises(Unrepresentable, match="NULL in NOT NULL column"):
        converter(column)(None)
    assert converter(col(pg_type))(None) == NULL


def test_text_fast_path_escapes_like_the_general_path() -> None:
    column = col("text")
    for raw in (b"plain", b"tab\there", b"back\\slash", b"line\nbreak\r", "☕".encode()):
        assert converter(column)(RawText(raw)) == to_copy_text(RawText(raw), column)


def test_nul_byte_and_invalid_utf8_are_never_altered_into_text() -> None:
    for raw in (b"a\x00b", b"\xff\xfe", b"ok\xc3"):
        with pytest.raises(Unrepresentable):
            to_copy_text(RawText(raw), col("text"))
    # As bytea the same bytes load exactly.
    assert to_copy_text(RawText(b"a\x00b"), col("bytea")) == "\\\\x610062"


def test_escape_copy_leaves_plain_text_and_escapes_control_characters() -> None:
    assert escape_copy("plain text, ☕") == "plain text, ☕"
    assert escape_copy("\\N") == "\\\\N"  # a literal backslash-N is not NULL
    assert escape_copy("\t\n\r") == "\\t\\n\\r"
