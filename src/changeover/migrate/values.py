"""Convert one SQLite value to PostgreSQL COPY text for its planned column: pure, no I/O.

``to_copy_text(value, column)`` returns the field exactly as ``COPY … FROM STDIN`` (text format)
reads it, already escaped, or raises ``Unrepresentable(reason)``; nothing is altered silently.
Values are read with ``text_factory = RawText`` so TEXT (``RawText``) and BLOB (``bytes``) stay
distinct and invalid UTF-8 stays visible. The normalisation contract, by target type:

    NULL                      \\N (refused in a NOT NULL column: SQLite allows it in text keys)
    bigint/integer/smallint   integers in range; integral REALs; text of digits ([+-]digits)
    double precision/real     integers and REALs (±Inf → Infinity/-Infinity); text that is a number
                              or NaN/Infinity; repr() of the float, which round-trips exactly
    numeric[(p,s)]            integers, finite REALs (repr), number text, NaN/±Infinity (p,s: the
                              value must fit p-s integer digits; rounding to s is PostgreSQL's)
    boolean                   0/1, 'true'/'false', 't'/'f', 'yes'/'no', '1'/'0' (any case) → t/f
    date/timestamp[tz]/time   per ``source_format``: epoch_s (int/real seconds), epoch_ms (integer
                              ms), iso8601/text/None (ISO 8601 text; no zone means UTC). Numbers
                              without a format are refused: seconds or milliseconds is a choice.
                              timestamptz is written in UTC (+00:00), timestamp as UTC wall time,
                              date as the UTC calendar day
    json/jsonb                text that parses as strict JSON (no NaN/Infinity), kept verbatim
    bytea                     blobs as \\x hex; text as its raw bytes; numbers as their text
    text/varchar(n)/uuid/…    valid UTF-8 text without NUL; integers as digits; REALs by repr();
                              varchar(n) at most n characters, uuid must parse, real within float4
Everywhere: invalid UTF-8 text, a NUL byte in text and a blob in a non-bytea column are refused.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from changeover.migrate.schema import PgColumn

NULL = "\\N"

_INT_RANGES = {
    "bigint": (-(2**63), 2**63 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "smallint": (-(2**15), 2**15 - 1),
}
_FLOAT_TYPES = ("double precision", "real")
_TIME_TYPES = ("date", "timestamp", "timestamptz", "time")
_INTEGER_TEXT = re.compile(r"[+-]?\d+")
_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_SPECIAL_FLOATS = {
    "nan": "NaN",
    "infinity": "Infinity",
    "+infinity": "Infinity",
    "inf": "Infinity",
    "+inf": "Infinity",
    "-infinity": "-Infinity",
    "-inf": "-Infinity",
}
_TRUE = {"1", "t", "true", "yes", "y", "on"}
_FALSE = {"0", "f", "false", "no", "n", "off"}
_REAL_LIMIT = 3.4028234663852886e38  # the largest finite float4
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})

SqliteValue = None | int | float | bytes | str


class RawText(bytes):
    """A SQLite TEXT value as stored (undecoded); plain ``bytes`` is a BLOB."""


class Unrepresentable(ValueError):
    """The value cannot be loaded into its column as planned; ``reason`` says why, plainly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def escape_copy(text: str) -> str:
    """Escape a field for COPY text format (backslash, tab, newline, carriage return)."""
    return text.translate(_COPY_ESCAPES)


def to_copy_text(value: SqliteValue, column: PgColumn) -> str:
    """The escaped COPY text field for ``value`` in ``column`` (contract: module docstring)."""
    if value is None:
        if column.notnull:
            # SQLite lets a non-integer primary key hold NULL; PostgreSQL never does.
            raise Unrepresentable(f"NULL in NOT NULL column (a {column.pg_type} key part?)")
        return NULL
    return escape_copy(convert(value, column))


Converter = Callable[[SqliteValue], str]


def converter(column: PgColumn) -> Converter:
    """``to_copy_text`` for one column, with the common case of its type on a fast path.

    The bulk copy calls this once per column and the result once per value; anything off the
    fast path goes through ``to_copy_text``, so both give the same answer for every value.
    """
    base = column.pg_type.split("(")[0].strip()

    def general(value: SqliteValue) -> str:
        return to_copy_text(value, column)

    if base in _INT_RANGES:
        low, high = _INT_RANGES[base]

        def integer(value: SqliteValue) -> str:
            if type(value) is int and low <= value <= high:
                return str(value)
            return general(value)

        return integer
    if base == "text":

        def text(value: SqliteValue) -> str:
            if type(value) is RawText:
                try:
                    decoded = value.decode("utf-8")
                except UnicodeDecodeError:
                    return general(value)
                if "\x00" in decoded:
                    return general(value)
                if "\\" in decoded or "\t" in decoded or "\n" in decoded or "\r" in decoded:
                    return decoded.translate(_COPY_ESCAPES)
                return decoded
            return general(value)

        return text
    if base == "double precision":

        def double(value: SqliteValue) -> str:
            if type(value) is float and math.isfinite(value):
                return repr(value)
            return general(value)

        return double
    if base == "bytea":

        def blob(value: SqliteValue) -> str:
            if type(value) is bytes:
                return "\\\\x" + value.hex()
            return general(value)

        return blob
    if base == "boolean":

        def boolean(value: SqliteValue) -> str:
            if type(value) is int and value in (0, 1):
                return "t" if value else "f"
            return general(value)

        return boolean
    if base == "numeric" and column.pg_type == "numeric":

        def number(value: SqliteValue) -> str:
            if type(value) is int:
                return str(value)
            return general(value)

        return number
    return general


def convert(value: int | float | bytes | str, column: PgColumn) -> str:
    """The unescaped PostgreSQL input text for a non-NULL ``value``; raises ``Unrepresentable``."""
    base = column.pg_type.split("(")[0].strip()
    if base == "bytea":
        return _to_bytea(value)
    if isinstance(value, bytes) and not isinstance(value, RawText):
        raise Unrepresentable(f"blob ({len(value)} bytes) in a {column.pg_type} column")
    if isinstance(value, bytes):
        value = decode_text(value)
    elif isinstance(value, str):
        _check_text(value)
    if base in _INT_RANGES:
        return _to_integer(value, base)
    if base in _FLOAT_TYPES:
        text = _to_float(value)
        if base == "real" and _REAL_LIMIT < abs(float(text)) < math.inf:
            raise Unrepresentable(f"{text} is out of range for real (float4); use double precision")
        return text
    if base == "numeric":
        return _to_numeric(value, column.pg_type)
    if base == "boolean":
        return _to_boolean(value)
    if base in _TIME_TYPES:
        return _to_time(value, base, column.source_format)
    if base in ("json", "jsonb"):
        return _to_json(value)
    text = _float_text(value) if isinstance(value, float) else str(value)
    if base == "varchar":
        limit = int(column.pg_type.split("(")[1].rstrip(")"))
        if len(text) > limit:
            raise Unrepresentable(f"text of {len(text)} characters is longer than {column.pg_type}")
    elif base == "uuid":
        try:
            uuid.UUID(text)
        except ValueError:
            raise Unrepresentable(f"{_preview(text)} is not a UUID") from None
    return text


def decode_text(raw: bytes) -> str:
    """Decode SQLite TEXT bytes; invalid UTF-8 and NUL bytes are unrepresentable in PostgreSQL."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unrepresentable(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    _check_text(text)
    return text


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise Unrepresentable("NUL byte in text (PostgreSQL text cannot hold 0x00)")


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _to_bytea(value: int | float | bytes | str) -> str:
    if isinstance(value, float):
        raw = _float_text(value).encode()
    elif isinstance(value, int):
        raw = str(value).encode()
    elif isinstance(value, str):
        raw = value.encode()
    else:
        raw = bytes(value)
    return "\\x" + raw.hex()


def _to_integer(value: int | float | str, base: str) -> str:
    low, high = _INT_RANGES[base]
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise Unrepresentable(f"REAL {_float_text(value)} in a {base} column")
        number = int(value)
    elif isinstance(value, int):
        number = value
    else:
        stripped = value.strip()
        if not _INTEGER_TEXT.fullmatch(stripped):
            raise Unrepresentable(f"text {_preview(value)} in a {base} column")
        number = int(stripped)
    if not low <= number <= high:
        bits = {"bigint": 64, "integer": 32, "smallint": 16}[base]
        raise Unrepresentable(f"integer {number} beyond {bits} bits ({base})")
    return str(number)


def _to_float(value: int | float | str) -> str:
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, int):
        return str(value)
    stripped = value.strip()
    special = _SPECIAL_FLOATS.get(stripped.lower())
    if special:
        return special
    if not _NUMBER_TEXT.fullmatch(stripped):
        raise Unrepresentable(f"text {_preview(value)} in a double precision column")
    return stripped


def _to_numeric(value: int | float | str, pg_type: str) -> str:
    if isinstance(value, (int, float)):
        text = _float_text(value) if isinstance(value, float) else str(value)
    else:
        text = value.strip()
        special = _SPECIAL_FLOATS.get(text.lower())
        if special:
            text = special
        elif not _NUMBER_TEXT.fullmatch(text):
            raise Unrepresentable(f"text {_preview(value)} in a {pg_type} column")
    precision = re.fullmatch(r"numeric\((\d+)(?:,\s*(\d+))?\)", pg_type)
    if precision and text not in ("NaN", "Infinity", "-Infinity"):
        digits, scale = int(precision.group(1)), int(precision.group(2) or 0)
        try:
            rounded = Decimal(text).quantize(Decimal(1).scaleb(-scale))
        except InvalidOperation:
            raise Unrepresentable(f"{text} does not fit {pg_type}") from None
        if rounded.adjusted() + 1 > digits - scale:
            raise Unrepresentable(f"{text} does not fit {pg_type}")
    elif precision:
        raise Unrepresentable(f"{text} does not fit {pg_type} (only unconstrained numeric)")
    return text


def _to_boolean(value: int | float | str) -> str:
    text = str(value).strip().lower() if not isinstance(value, float) else repr(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        text = str(int(value))
    if text in _TRUE:
        return "t"
    if text in _FALSE:
        return "f"
    raise Unrepresentable(f"{_preview(value)} is not a boolean (0/1, true/false, t/f, yes/no)")


def _to_time(value: int | float | str, base: str, source_format: str | None) -> str:
    if source_format in ("epoch_s", "epoch_ms"):
        moment = _from_epoch(value, source_format)
    elif isinstance(value, (int, float)):
        raise Unrepresentable(
            f"number {_preview(value)} in a {base} column: say which epoch it is with a cast "
            f"('{base} from epoch_s' or '{base} from epoch_ms')"
        )
    elif base == "time":
        try:
            return time.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise Unrepresentable(f"text {_preview(value)} is not an ISO 8601 time") from None
    else:
        moment = _from_iso(value, base)
    if base == "date":
        return moment.date().isoformat()
    if base == "timestamp":
        return moment.replace(tzinfo=None).isoformat()
    if base == "time":
        return moment.time().isoformat()
    return moment.isoformat()


def _from_epoch(value: int | float | str, source_format: str) -> datetime:
    number: int | float
    if isinstance(value, str):
        stripped = value.strip()
        if not _NUMBER_TEXT.fullmatch(stripped):
            raise Unrepresentable(f"text {_preview(value)} is not a number ({source_format})")
        number = int(stripped) if _INTEGER_TEXT.fullmatch(stripped) else float(stripped)
    else:
        number = value
    try:
        if source_format == "epoch_ms":
            if isinstance(number, float):
                return _EPOCH + timedelta(milliseconds=number)
            seconds, millis = divmod(number, 1000)
            return _EPOCH + timedelta(seconds=seconds, milliseconds=millis)
        return _EPOCH + timedelta(seconds=number)
    except (OverflowError, ValueError):
        raise Unrepresentable(f"{number} is out of range as {source_format}") from None


def _from_iso(text: str, base: str) -> datetime:
    try:
        stripped = text.strip()
        if len(stripped) == 10:
            parsed = datetime.combine(date.fromisoformat(stripped), time())
        else:
            parsed = datetime.fromisoformat(stripped)
    except ValueError:
        raise Unrepresentable(f"text {_preview(text)} is not an ISO 8601 {base}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise Unrepresentable(f"text {_preview(text)} is out of range") from None


def _to_json(value: int | float | str) -> str:
    text = value if isinstance(value, str) else str(value)
    if isinstance(value, float):
        text = _float_text(value)

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    try:
        json.loads(text, parse_constant=refuse)
    except ValueError:
        raise Unrepresentable(f"{_preview(text)} is not valid JSON") from None
    except RecursionError:
        raise Unrepresentable(f"{_preview(text)} is JSON nested too deeply to check") from None
    return text


def _preview(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
