"""The canonical text of a value for verification: what PostgreSQL prints for it, pure, no I/O.

Both sides become the field PostgreSQL writes in ``COPY (SELECT …) TO STDOUT`` (text format,
COPY-escaped, ``\\N`` for NULL) under the session settings in ``SESSION_SETTINGS``. The SQLite
side is ``values.converter(column)`` (the exact text the copy loaded) followed by a normaliser;
the PostgreSQL side is used as printed, except jsonb. The comparison rules, by type:

    type                      canonical text (SQLite side → equal to PostgreSQL's output)
    NULL                      \\N on both sides; the empty string is a value, never NULL
    bigint/integer/smallint   decimal digits as loaded (identity)
    boolean                   t / f as loaded (identity)
    text/varchar(n)/json      the text, COPY-escaped as PostgreSQL escapes it: backslash, \\b,
                              \\f, \\n, \\r, \\t, \\v (json is kept verbatim: spacing and key
                              order count)
    bytea                     \\x + lowercase hex of the bytes (bytea_output 'hex'; identity)
    double precision          the shortest text that reads back to the same double (Ryu, as
                              PostgreSQL 12+ prints with extra_float_digits ≥ 1): fixed notation for
                              decimal exponents -4..14, else d.ddde±XX; -0, NaN, Infinity, -Infinity
    real                      the same for the float4 PostgreSQL stores (text rounded once, to
                              float4), fixed notation for exponents -4..5
    numeric                   unconstrained: the input's own scale (1.50 stays 1.50, 1E3 → 1000,
                              1.5e-3 → 0.0015); numeric(p,s): rounded half away from zero to s
                              places and padded to s; -0 → 0; NaN, Infinity, -Infinity as is
    date                      YYYY-MM-DD (identity)
    timestamptz               YYYY-MM-DD HH:MM:SS[.ffffff]+00 in UTC, trailing fraction zeros
                              trimmed (TimeZone 'UTC', DateStyle 'ISO, YMD')
    timestamp / time          the same without the zone (a time's zone is dropped, as PostgreSQL
                              does)
    uuid                      lowercase 8-4-4-4-12
    jsonb                     both sides parsed and re-dumped with sorted keys, the last of
                              duplicate keys kept, numbers compared by value (1.0 = 1, 1e2 = 100)

A value the converter refuses (``Unrepresentable``) has no canonical text: verify reports it as a
difference with the converter's reason. A type not listed is compared as loaded (identity).
"""

from __future__ import annotations

import json
import math
import re
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

from changeover.migrate.schema import PgColumn
from changeover.migrate.values import NULL, RawText, SqliteValue, Unrepresentable, converter

# Set on the verify connection before any COPY TO: the canonical texts assume exactly these.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}

Normaliser = Callable[[str], str]

_PG_ONLY_ESCAPES = str.maketrans({"\b": "\\b", "\f": "\\f", "\v": "\\v"})
_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
)
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}
_IDENTITY_TYPES = ("bigint", "integer", "smallint", "boolean", "date", "bytea")
_TEXT_TYPES = ("text", "varchar", "json")
_DBL_DIG, _FLT_DIG = 15, 6
_DBL_EXACT_INTEGERS, _FLT_EXACT_INTEGERS = 2.0**53, 2.0**24
_FLT_MAX = 3.4028234663852886e38
_FLT_OVERFLOW = 3.4028235677973366e38  # _FLT_MAX + half its step: rounds to Infinity
_FLT_TRUE_MIN = 1.401298464324817e-45  # the smallest positive float4 (denormal)
# numeric(p,s) goes up to 1000 digits; the default 28-digit context would refuse to round them.
_NUMERIC_CONTEXT = Context(prec=4000)


def base_type(column: PgColumn) -> str:
    return column.pg_type.split("(")[0].strip()


def sqlite_field(column: PgColumn) -> Callable[[SqliteValue], str]:
    """SQLite value → the field PostgreSQL prints for it; raises ``Unrepresentable``."""
    convert = converter(column)
    normalise = _sqlite_normaliser(column)
    if normalise is None:
        return convert

    def field(value: SqliteValue) -> str:
        text = convert(value)
        return text if text == NULL else normalise(text)

    base = base_type(column)
    if base in ("timestamptz", "timestamp") and column.source_format is None:
        return _stamp_fast_path(field, "+00" if base == "timestamptz" else "")
    if base in ("numeric", "double precision", "real"):
        return _memo(field)
    return field


# SQLite's own datetime text (CURRENT_TIMESTAMP, datetime('now')), optionally ISO 'T' and 'Z'.
_SQLITE_STAMP = re.compile(rb"\d{4}-\d\d-\d\d[ T](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\dZ?")
_MEMO_LIMIT = 65536


def _stamp_fast_path(
    general: Callable[[SqliteValue], str], suffix: str
) -> Callable[[SqliteValue], str]:
    """The common stored form rewritten as text; the same answer as ``general`` (tested)."""
    valid_days: dict[bytes, bool] = {}

    def stamp(value: SqliteValue) -> str:
        if type(value) is RawText and _SQLITE_STAMP.fullmatch(value):
            day = value[:10]
            valid = valid_days.get(day)
            if valid is None:
                valid = _valid_day(day)
                if len(valid_days) < _MEMO_LIMIT:
                    valid_days[day] = valid
            if valid:
                return f"{day.decode()} {value[11:19].decode()}{suffix}"
        return general(value)

    return stamp


def _valid_day(day: bytes) -> bool:
    try:
        date.fromisoformat(day.decode())
    except ValueError:
        return False
    return True


def _memo(field: Callable[[SqliteValue], str]) -> Callable[[SqliteValue], str]:
    """Remember the canonical text of repeated values (amounts repeat; decimal work is slow).

    Keyed by class and value, so a TEXT and a BLOB with the same bytes never share an entry;
    zeros skip the memo (0.0 == -0.0, but a float prints them as 0 and -0).
    """
    cache: dict[tuple[type, SqliteValue], str] = {}

    def remembered(value: SqliteValue) -> str:
        if not value:
            return field(value)
        key = (value.__class__, value)
        text = cache.get(key)
        if text is None:
            text = field(value)
            if len(cache) < _MEMO_LIMIT:
                cache[key] = text
        return text

    return remembered


def pg_field(column: PgColumn) -> Normaliser | None:
    """PostgreSQL's printed field → canonical field; ``None`` when it is canonical as printed."""
    if base_type(column) != "jsonb":
        return None

    def field(text: str) -> str:
        return text if text == NULL else escape(canonical_json(unescape(text)))

    return field


def is_identity_on_pg(columns: tuple[PgColumn, ...]) -> bool:
    """True when PostgreSQL's raw COPY line is already canonical (no jsonb column)."""
    return all(pg_field(c) is None for c in columns)


def _sqlite_normaliser(column: PgColumn) -> Normaliser | None:
    base = base_type(column)
    if base in _IDENTITY_TYPES:
        return None
    if base in _TEXT_TYPES:
        return pg_escapes
    if base == "double precision":
        return lambda text: float8_text(_parse_float(text, "double precision"))
    if base == "real":
        return lambda text: float4_text(float4_from_text(text))
    if base == "numeric":
        return lambda text: numeric_text(text, column.pg_type)
    if base == "timestamptz":
        return timestamptz_text
    if base == "timestamp":
        return timestamp_text
    if base == "time":
        return time_text
    if base == "uuid":
        return lambda text: str(uuid.UUID(text))
    if base == "jsonb":
        return lambda text: escape(canonical_json(unescape(text)))
    return None


# --- COPY text escaping ------------------------------------------------------------------------


def pg_escapes(text: str) -> str:
    """``values.escape_copy`` output → PostgreSQL's (it also escapes backspace, form feed, VT)."""
    return text if text.isprintable() else text.translate(_PG_ONLY_ESCAPES)


def escape(text: str) -> str:
    """Escape a value exactly as PostgreSQL's COPY TO writes it."""
    return text.translate(_ESCAPES)


def unescape(field: str) -> str:
    """The value of an escaped COPY field (not ``\\N``: callers test for NULL first)."""
    if "\\" not in field:
        return field
    out: list[str] = []
    pos = 0
    while True:
        found = field.find("\\", pos)
        if found < 0 or found + 1 >= len(field):
            out.append(field[pos:])
            return "".join(out)
        out.append(field[pos:found])
        char = field[found + 1]
        out.append(_UNESCAPES.get(char, char))
        pos = found + 2


def display(field: str | None, limit: int = 200) -> str | None:
    """A readable value for a report: ``None`` for NULL, long values shortened."""
    if field is None or field == NULL:
        return None
    text = unescape(field)
    if len(text) > limit:
        return f"{text[: limit - 1]}… ({len(text):,} characters)"
    return text


# --- floats ------------------------------------------------------------------------------------


def _parse_float(text: str, pg_type: str) -> float:
    special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(text)
    if special is not None:
        return special
    value = float(text)
    if math.isinf(value) or (value == 0.0 and any(c in "123456789" for c in _mantissa(text))):
        raise Unrepresentable(f"{text} is out of range for {pg_type}")
    return value


def _mantissa(text: str) -> str:
    return text.lower().partition("e")[0]


def float8_text(value: float) -> str:
    """PostgreSQL's ``float8out`` with extra_float_digits ≥ 1 (shortest exact, Ryu)."""
    shortest = repr(value)
    if abs(value) >= _DBL_EXACT_INTEGERS and math.isfinite(value) and _on_bound(value, shortest):
        shortest = _longer(value, shortest, float, math.nextafter)
    return _shortest_text(value, shortest, _DBL_DIG)


def float4_text(value: float) -> str:
    """PostgreSQL's ``float4out`` with extra_float_digits ≥ 1 for a float4-exact ``value``."""
    if not math.isfinite(value) or value == 0.0:
        return _shortest_text(value, repr(value), _FLT_DIG)
    shortest = _longer(value, "", _round_float4, _float4_toward)
    return _shortest_text(value, shortest, _FLT_DIG)


def _on_bound(
    value: float, text: str, toward: Callable[[float, float], float] = math.nextafter
) -> bool:
    """Is ``text`` exactly halfway to a neighbouring float? (Only possible for large integers.)

    Python's repr accepts such a halfway text when round-half-even reads it back as ``value``;
    PostgreSQL's Ryu never takes a bound, so it prints more digits there.
    """
    candidate = Decimal(text)
    if candidate != candidate.to_integral_value():
        return False
    doubled = 2 * int(candidate)
    exact = int(value)
    up, down = toward(value, math.inf), toward(value, -math.inf)
    # Beyond the largest finite value the next step is as wide as the last one.
    up_exact = int(up) if math.isfinite(up) else 2 * exact - int(down)
    down_exact = int(down) if math.isfinite(down) else 2 * exact - int(up)
    return doubled in (exact + up_exact, exact + down_exact)


def _longer(
    value: float,
    shortest: str,
    read: Callable[[float], float],
    toward: Callable[[float, float], float],
) -> str:
    """The shortest correctly rounded digits that read back as ``value`` and are not a bound."""
    start = len(shortest.lstrip("-").partition("e")[0].replace(".", "").strip("0")) + 1
    for digits in range(max(start, 1), 18):
        text = f"{value:.{digits - 1}e}"
        if read(float(text)) != value:
            continue
        large = abs(value) >= (_DBL_EXACT_INTEGERS if read is float else _FLT_EXACT_INTEGERS)
        if not (large and _on_bound(value, text, toward)):
            return text
    return repr(value)


def _shortest_text(value: float, shortest: str, fixed_below: int) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0.0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if shortest.startswith("-") else ""
    mantissa, _, exp_text = shortest.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    leading = len(all_digits) - len(all_digits.lstrip("0"))
    digits = all_digits.strip("0") or "0"
    exponent = len(whole) - 1 - leading + (int(exp_text) if exp_text else 0)
    if -4 <= exponent < fixed_below:
        if exponent >= 0:
            head = digits[: exponent + 1].ljust(exponent + 1, "0")
            tail = digits[exponent + 1 :]
            return f"{sign}{head}.{tail}" if tail else f"{sign}{head}"
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
    tail = f".{digits[1:]}" if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{tail}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def _round_float4(value: float) -> float:
    """``value`` rounded to float4 (to nearest, ties to even); Infinity beyond the range."""
    try:
        result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        # struct refuses anything above the largest float4, even what rounds down to it.
        return math.copysign(_FLT_MAX if abs(value) < _FLT_OVERFLOW else math.inf, value)
    return result


def _float4_toward(value: float, target: float) -> float:
    return _float4_neighbour(value, 1 if target > value else -1)


def _float4_neighbour(value: float, step: int) -> float:
    """The next float4 toward +Infinity (``step`` 1) or -Infinity (``step`` -1)."""
    if value == 0.0:
        return step * _FLT_TRUE_MIN
    (bits,) = struct.unpack("<I", struct.pack("<f", value))
    bits += step if value > 0 else -step
    result: float = struct.unpack("<f", struct.pack("<I", bits))[0]
    return result


def float4_from_text(text: str) -> float:
    """The float4 PostgreSQL stores for ``text``: the decimal rounded once (as strtof does).

    Rounding to double first and then to float4 could land one step off; the exact decimal
    decides between the neighbours.
    """
    value = _parse_float(text, "real")
    if not math.isfinite(value):
        return value
    candidate = _round_float4(value)
    if math.isinf(candidate):
        raise Unrepresentable(f"{text} is out of range for real (float4)")
    exact = Decimal(text)
    options = {candidate, _float4_neighbour(candidate, 1), _float4_neighbour(candidate, -1)}
    finite = [o for o in options if math.isfinite(o)]

    def distance(option: float) -> tuple[Decimal, int]:
        (bits,) = struct.unpack("<I", struct.pack("<f", option))
        return abs(Decimal(option) - exact), bits & 1  # ties go to the even mantissa

    best = min(finite, key=distance)
    if best == 0.0 and exact != 0:
        raise Unrepresentable(f"{text} is out of range for real (float4)")
    return best


# --- numeric -----------------------------------------------------------------------------------


def numeric_text(text: str, pg_type: str) -> str:
    """PostgreSQL's ``numeric_out`` for input ``text`` stored in ``pg_type``."""
    if text in ("NaN", "Infinity", "-Infinity"):
        return text
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise Unrepresentable(f"{text!r} is not a number") from None
    spec = pg_type.partition("(")[2].rstrip(")")
    if spec:
        scale = int(spec.partition(",")[2] or 0)
        number = number.quantize(
            Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP, context=_NUMERIC_CONTEXT
        )
    result = format(number, "f")
    return result[1:] if number.is_zero() and result.startswith("-") else result


# --- date and time -----------------------------------------------------------------------------


def _fraction(microsecond: int) -> str:
    return f".{microsecond:06d}".rstrip("0") if microsecond else ""


def _clock(moment: datetime | time) -> str:
    return (
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}{_fraction(moment.microsecond)}"
    )


def timestamptz_text(text: str) -> str:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} {_clock(moment)}+00"


def timestamp_text(text: str) -> str:
    moment = datetime.fromisoformat(text)
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} {_clock(moment)}"


def time_text(text: str) -> str:
    return _clock(time.fromisoformat(text))


# --- json --------------------------------------------------------------------------------------


class _Number(str):
    """A JSON number already in canonical text (dumped as is, unquoted)."""


def _number(text: str) -> _Number:
    value = Decimal(text).normalize(_NUMERIC_CONTEXT)
    result = format(value, "f")
    return _Number("0" if value.is_zero() else result)


def canonical_json(text: str) -> str:
    """jsonb's value of ``text`` as one text: sorted keys, last duplicate wins, numbers by value."""
    try:
        parsed = json.loads(text, parse_float=_number, parse_int=_number)
    except ValueError:
        raise Unrepresentable(f"{text[:40]!r} is not valid JSON") from None
    return _dump(parsed)


def _dump(value: Any) -> str:
    if isinstance(value, _Number):
        return str.__str__(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        items = (f"{_dump(k)}: {_dump(value[k])}" for k in sorted(value))
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_dump(v) for v in value) + "]"
    return json.dumps(value)
