"""Convert one PostgreSQL value back to a SQLite value for reverse sync: pure, no I/O.

After the write handoff, rows changed in PostgreSQL are written back into the legacy SQLite file.
``to_sqlite(value, column)`` is a right inverse of the forward path: for every value PostgreSQL
can hold that the forward path can produce, ``values.converter(column)(to_sqlite(value, column))``
loads exactly that value again; anything else raises ``values.Unrepresentable(reason)``. Read rows
with ``SELECT {select_list(table)}`` so each value arrives in the form below. The rules:

    PostgreSQL type          read as             written to SQLite as
    NULL                     None                None (NULL)
    bigint/integer/smallint  int                 int
    double precision/real    float               float (±Infinity as REAL ±Inf); NaN as 'NaN'
                                                 text (SQLite stores a REAL NaN as NULL); a real
                                                 beyond float4's range after float8 parsing →
                                                 the exact float4 value
    numeric(p,s)             ::text              int when integral and within 64 bits; float when
                                                 repr(float) is the same decimal; else the text
    numeric                  ::text              int when the text has no '.' and fits 64 bits;
                                                 float when repr(float) is the same text (so
                                                 '6.20' keeps its scale as text); else the text;
                                                 both: 'NaN' as 'NaN', ±Infinity as REAL ±Inf
    boolean                  bool                1 / 0
    date/timestamp[tz]/time  to_json text        source_format epoch_s: int seconds, float when
                             (ISO 8601 whatever  fractional; epoch_ms: int milliseconds, float
                             the DateStyle)      when sub-millisecond; otherwise SQLite's
                                                 datetime() style: 'YYYY-MM-DD HH:MM:SS[.ffffff]'
                                                 in UTC without a zone, 'YYYY-MM-DD',
                                                 'HH:MM:SS[.ffffff]'. ±infinity, BC and years past
                                                 9999 are unrepresentable (the forward path cannot
                                                 produce them); so is a float epoch too far from
                                                 1970 to hold the microseconds
    json/jsonb               ::text              the text
    bytea                    bytes               bytes (a BLOB)
    text/varchar(n)/uuid     str (uuid ::text)   str

Different but equivalent forms: a SQLite original comes back in the canonical form of its column,
which the forward path maps to the same PostgreSQL value: 'true'/'t'/'yes' in a boolean column
as 1; '2024-01-01T10:00:00Z' or '2024-01-01T12:00:00+02:00' as '2024-01-01 10:00:00' (UTC);
'2024-01-01' in a timestamp column as '2024-01-01 00:00:00'; a REAL 1.0 or ' 5 ' text in an
integer column as 1 and 5; 'inf' text in a REAL column as REAL Inf. These are the deviations the
type audit names; the comparison that matters is the forward conversion, which is equal.

Not held by SQLite itself (the values above are right, the file changes them): REAL -0.0 is stored
as 0; in a column with INTEGER, REAL or NUMERIC affinity (e.g. a NUMERIC column), number-like text
is turned into a number, so a numeric beyond float precision loses digits there and text such as
'007' under a cast to text becomes 7. Only a TEXT/BLOB-affinity column keeps such text as given.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from changeover.migrate.schema import PgColumn, PgTable, quote
from changeover.migrate.values import Unrepresentable

SqliteOut = None | int | float | str | bytes

_TEXT_READ = ("json", "jsonb", "uuid", "numeric")
_TIME_TYPES = ("date", "timestamp", "timestamptz", "time")
_INT_TYPES = ("bigint", "integer", "smallint")
_INT64 = (-(2**63), 2**63 - 1)
_REAL_LIMIT = 3.4028234663852886e38  # the largest finite float4, as values.py checks it
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _base(column: PgColumn) -> str:
    return column.pg_type.split("(")[0].strip()


def select_list(table: PgTable) -> str:
    """The SELECT column list that reads a row of ``table`` in the forms ``to_sqlite`` takes."""
    parts = []
    for column in table.columns:
        name = quote(column.name)
        base = _base(column)
        if base in _TEXT_READ:
            # psycopg would load these as dict/UUID/Decimal: the text is the exact value.
            parts.append(f"{name}::text AS {name}")
        elif base in _TIME_TYPES:
            # to_json writes ISO 8601 whatever the session's DateStyle, and spells out
            # infinity, BC and years past 9999 instead of failing inside psycopg's loader.
            parts.append(f"to_json({name}) #>> '{{}}' AS {name}")
        else:
            parts.append(name)
    return ", ".join(parts)


def to_sqlite_row(row: Sequence[object], table: PgTable) -> tuple[SqliteOut, ...]:
    """``to_sqlite`` for every value of a row read with ``select_list(table)``."""
    return tuple(to_sqlite(value, column) for value, column in zip(row, table.columns, strict=True))


def to_sqlite(value: object, column: PgColumn) -> SqliteOut:
    """The SQLite value that loads back as ``value`` (rules: module docstring)."""
    if value is None:
        return None
    base = _base(column)
    if base in _INT_TYPES and type(value) is int:
        return value
    if base in ("double precision", "real") and isinstance(value, (int, float)):
        return _float(float(value), base)
    if base == "numeric" and isinstance(value, (str, Decimal, int, float)):
        return _numeric(value, scaled=column.pg_type != "numeric")
    if base == "boolean" and isinstance(value, bool):
        return int(value)
    if base in _TIME_TYPES:
        return _temporal(value, base, column.source_format)
    if base in ("json", "jsonb") and isinstance(value, str):
        return value
    if base == "bytea" and isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if base in ("text", "varchar") and isinstance(value, str):
        return value
    if base == "uuid" and isinstance(value, (str, uuid.UUID)):
        return str(value)
    # A wrong Python type is a reading bug (not select_list?), not a property of the data.
    raise TypeError(
        f"{column.name} ({column.pg_type}): unexpected {type(value).__name__}; "
        "read the row with select_list()"
    )


def _float(value: float, base: str) -> float | str:
    if math.isnan(value):
        return "NaN"  # SQLite stores a REAL NaN as NULL; the forward path reads 'NaN' text
    if base == "real" and _REAL_LIMIT < abs(value) < math.inf:
        # float4's extremes print as e.g. 3.4028235e+38, which as a float8 lies past float4's
        # range and the forward path would refuse; the exact float4 value is the same number.
        exact: float = struct.unpack("f", struct.pack("f", value))[0]
        return exact
    return value


def _numeric(value: str | Decimal | int | float, *, scaled: bool) -> int | float | str:
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _float(value, "double precision")
    text = str(value).strip()
    if text in ("Infinity", "-Infinity"):
        return float(text.lower())
    if text == "NaN":
        return "NaN"
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise Unrepresentable(f"{text!r} is not a numeric value") from None
    as_float = float(number)
    if scaled:
        # numeric(p,s) rounds every input to s decimals: only the number matters.
        if number == number.to_integral_value() and _INT64[0] <= number <= _INT64[1]:
            return int(number)
        if math.isfinite(as_float) and Decimal(repr(as_float)) == number:
            return as_float
        return text
    # Unconstrained numeric keeps the scale it was given ('6.20' is not shown as '6.2'):
    # only a form that prints back as the same text is used.
    if "." not in text and _INT64[0] <= number <= _INT64[1]:
        return int(number)
    if repr(as_float) == text:
        return as_float
    return text


def _temporal(value: object, base: str, source_format: str | None) -> int | float | str:
    if base == "time":
        moment_of_day = _time_of_day(value)
        if source_format in ("epoch_s", "epoch_ms"):
            # The forward path keeps the time of day of the epoch instant: 1970-01-01 it is.
            return _epoch(datetime.combine(date(1970, 1, 1), moment_of_day, UTC), source_format)
        return moment_of_day.isoformat()
    moment = _moment(value, base)
    if source_format in ("epoch_s", "epoch_ms"):
        return _epoch(moment, source_format)
    if base == "date":
        return moment.date().isoformat()
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    return text + (f".{moment.microsecond:06d}" if moment.microsecond else "")


def _time_of_day(value: object) -> time:
    if isinstance(value, time):
        return value.replace(tzinfo=None)
    if isinstance(value, str):
        try:
            return time.fromisoformat(value)
        except ValueError:
            # PostgreSQL allows 24:00:00; Python, SQLite's time() and the forward path do not.
            raise Unrepresentable(f"time {value!r} has no HH:MM:SS form below 24:00") from None
    raise TypeError(f"unexpected {type(value).__name__} for a time; read it with select_list()")


def _moment(value: object, base: str) -> datetime:
    """The instant as an aware UTC datetime (a date is its UTC midnight, a timestamp is UTC)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        return datetime.combine(value, time(), UTC)
    elif isinstance(value, str):
        parsed = _parse(value, base)
    else:
        raise TypeError(f"unexpected {type(value).__name__} for a {base}; use select_list()")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise Unrepresentable(f"{base} {value!r} is out of range in UTC") from None


def _parse(text: str, base: str) -> datetime:
    if text in ("infinity", "-infinity"):
        raise Unrepresentable(f"{base} {text} has no SQLite form the forward copy reads back")
    if text.endswith(" BC"):
        raise Unrepresentable(f"{base} {text!r} is before year 1 (BC); SQLite dates start at 0001")
    if not text[:4].isdigit() or text[4:5] != "-":
        raise Unrepresentable(f"{base} {text!r}: a year past 9999 does not fit SQLite dates")
    try:
        if base == "date":
            return datetime.combine(date.fromisoformat(text), time())
        return datetime.fromisoformat(text)
    except ValueError:
        raise Unrepresentable(f"{base} {text!r} is not an ISO 8601 value") from None


def _epoch(moment: datetime, source_format: str) -> int | float:
    micros = (moment - _EPOCH) // _MICROSECOND
    unit = 1_000_000 if source_format == "epoch_s" else 1_000
    if micros % unit == 0:
        return micros // unit
    number = micros / unit  # int / int is correctly rounded
    try:
        back = (
            _EPOCH + timedelta(seconds=number)
            if source_format == "epoch_s"
            else _EPOCH + timedelta(milliseconds=number)
        )
    except OverflowError:  # rounded up past 9999-12-31
        back = None
    if back != moment:
        raise Unrepresentable(
            f"{moment.isoformat()} as {source_format}: a float this far from 1970 cannot hold "
            "the microseconds"
        )
    return number
