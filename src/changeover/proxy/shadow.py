"""Shadow comparison: does the other backend answer a mirrored read the way the primary did?

`ShadowComparer.compare` is pure: statuses first; then JSON bodies structurally (key order
irrelevant, ignore paths for volatile fields), other bodies by SHA-256. `ShadowLog` counts the
outcomes and keeps a bounded sample of mismatches for the cutover report.

Ignore-path syntax (a small JSONPath subset), matched against the whole path of a value;
a matched value is skipped with everything under it:

    $.generated_at        the key generated_at of the top-level object ($ and the dot optional)
    items[*].updated_at   updated_at of every element of the array items
    items[0]              only the first element
    meta.*                every key of meta;  *_at  a glob on key names (fnmatch: * ? [..])
    **.etag               etag at any depth (** matches zero or more segments)
    $['odd.key']          a key containing dots or brackets, quoted with ' or "

Equality rules: numbers compare by value, so 1 equals 1.0 (a Go encoder and a Python one may
spell the same float differently) but true never equals 1; arrays compare element by element
in order, a length difference is reported once; a key present on one side only differs, also
when its value is null, unless ``null_equals_missing`` (for ``omitempty`` style encoders).
Headers are not compared (Date, Server and friends always differ). A truncated capture is
compared by status only and flagged.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

MAX_DECODED = 16 * 1024 * 1024  # a compressed body inflating beyond this is treated as truncated


class Response(Protocol):
    """A captured response (`changeover.proxy.http.Captured` fits)."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def body(self) -> bytes: ...
    @property
    def truncated(self) -> bool: ...


class RequestInfo(Protocol):
    """What the log keeps of a request (`changeover.proxy.http.RequestHead` fits)."""

    method: str
    path: str
    request_id: str


# -- ignore paths -----------------------------------------------------------------------------


class _AnyDepth:
    def __repr__(self) -> str:
        return "**"


ANY_DEPTH = _AnyDepth()
_ANY_INDEX = -1


@dataclass(frozen=True)
class _Key:
    glob: str

    def matches(self, segment: str | int) -> bool:
        return isinstance(segment, str) and fnmatch.fnmatchcase(segment, self.glob)


@dataclass(frozen=True)
class _Index:
    index: int  # _ANY_INDEX for [*]

    def matches(self, segment: str | int) -> bool:
        return isinstance(segment, int) and self.index in (_ANY_INDEX, segment)


_Segment = _Key | _Index | _AnyDepth

_TOKEN = re.compile(
    r"""\.?(?P<name>[^.\[\]'"]+)      # .name or a bare first name
      | \[(?P<index>\d+|\*)\]         # [3] or [*]
      | \['(?P<sq>[^']*)'\]           # ['odd.key']
      | \["(?P<dq>[^"]*)"\]           # ["odd.key"]
    """,
    re.VERBOSE,
)


def parse_path(text: str) -> tuple[_Segment, ...]:
    """Parse an ignore path; raises ValueError with the offending position."""
    rest = text.strip()
    if rest.startswith("$"):
        rest = rest[1:]
    segments: list[_Segment] = []
    position = 0
    while position < len(rest):
        match = _TOKEN.match(rest, position)
        if match is None or (
            match.group("name") is not None and rest[position] != "." and segments
        ):
            raise ValueError(
                f"cannot read the ignore path {text!r} at {rest[position:]!r}; "
                "expected .name, [N], [*], ['key'] or **"
            )
        if match.group("name") is not None:
            name = match.group("name")
            segments.append(ANY_DEPTH if name == "**" else _Key(name))
        elif match.group("index") is not None:
            index = match.group("index")
            segments.append(_Index(_ANY_INDEX if index == "*" else int(index)))
        else:
            quoted = match.group("sq") if match.group("sq") is not None else match.group("dq")
            segments.append(_Key(re.sub(r"([*?\[])", r"[\1]", quoted)))  # quoted = literal
        position = match.end()
    return tuple(segments)


_States = frozenset[tuple[int, int]]


class _IgnoreMatcher:
    """The ignore paths run as a small NFA while walking the document (states: path, position)."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.patterns = tuple(parse_path(p) for p in paths)
        self.start = self._closure({(i, 0) for i in range(len(self.patterns))})

    def _closure(self, states: set[tuple[int, int]]) -> _States:
        todo = list(states)
        while todo:
            i, p = todo.pop()
            pattern = self.patterns[i]
            if p < len(pattern) and pattern[p] is ANY_DEPTH and (i, p + 1) not in states:
                states.add((i, p + 1))
                todo.append((i, p + 1))
        return frozenset(states)

    def step(self, states: _States, segment: str | int) -> _States:
        following: set[tuple[int, int]] = set()
        for i, p in states:
            pattern = self.patterns[i]
            if p >= len(pattern):
                continue
            part = pattern[p]
            if isinstance(part, _AnyDepth):
                following.add((i, p))  # ** swallows this segment and may swallow more
            elif part.matches(segment):
                following.add((i, p + 1))
        return self._closure(following)

    def ignored(self, states: _States) -> bool:
        return any(p == len(self.patterns[i]) for i, p in states)


# -- comparison -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    match: bool
    differences: list[str] = field(default_factory=list)  # first N, each "path: a vs b"
    truncated: bool = False  # a body was cut off: only the statuses were compared
    compared_as: str = "json"  # "json", "bytes", "status"


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def format_path(segments: Iterable[str | int]) -> str:
    text = "$"
    for segment in segments:
        if isinstance(segment, int):
            text += f"[{segment}]"
        elif _IDENTIFIER.fullmatch(segment):
            text += f".{segment}"
        else:
            text += "[" + json.dumps(segment, ensure_ascii=False) + "]"
    return text


def abbreviate(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _TooMany(Exception):
    pass


class ShadowComparer:
    """Compares a primary and a shadow response under fixed ignore rules."""

    def __init__(
        self,
        ignore: Iterable[str] = (),
        *,
        max_differences: int = 10,
        null_equals_missing: bool = False,
    ) -> None:
        self.ignore = tuple(ignore)
        self._matcher = _IgnoreMatcher(self.ignore)
        self.max_differences = max_differences
        self.null_equals_missing = null_equals_missing

    def compare(self, primary: Response, shadow: Response) -> Comparison:
        if primary.status != shadow.status:
            return Comparison(
                False,
                [f"status: primary {primary.status}, shadow {shadow.status}"],
                False,
                "status",
            )
        if primary.truncated or shadow.truncated:
            return Comparison(True, [], True, "status")
        body_a, cut_a = _decoded(primary)
        body_b, cut_b = _decoded(shadow)
        if cut_a or cut_b:
            return Comparison(True, [], True, "status")
        if _is_json(primary) or _is_json(shadow):
            doc_a, error_a = _parse(body_a)
            doc_b, error_b = _parse(body_b)
            if error_a is None and error_b is None:
                differences = self.diff(doc_a, doc_b)
                return Comparison(not differences, differences, False, "json")
            if (error_a is None) != (error_b is None):
                which = "shadow" if error_a is None else "primary"
                return Comparison(
                    False, [f"body: the {which} answer is not JSON ({error_a or error_b})"]
                )
        digest_a = hashlib.sha256(body_a).hexdigest()
        digest_b = hashlib.sha256(body_b).hexdigest()
        if digest_a == digest_b:
            return Comparison(True, [], False, "bytes")
        return Comparison(
            False,
            [
                f"body: sha256 primary {digest_a[:12]}… ({len(body_a)} bytes), "
                f"shadow {digest_b[:12]}… ({len(body_b)} bytes)"
            ],
            False,
            "bytes",
        )

    def diff(self, primary: Any, shadow: Any) -> list[str]:
        """Paths where two JSON documents differ (at most ``max_differences``, then a note)."""
        found: list[str] = []
        try:
            self._diff(primary, shadow, [], self._matcher.start, found)
        except _TooMany:
            found.append("… more differences not listed")
        return found

    def _add(self, found: list[str], text: str) -> None:
        if len(found) >= self.max_differences:
            raise _TooMany
        found.append(text)

    def _diff(
        self, a: Any, b: Any, path: list[str | int], states: _States, found: list[str]
    ) -> None:
        if self._matcher.ignored(states):
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(a.keys() | b.keys()):
                child = self._matcher.step(states, key)
                if self._matcher.ignored(child):
                    continue
                if key not in b:
                    if not (self.null_equals_missing and a[key] is None):
                        where = format_path([*path, key])
                        self._add(found, f"{where}: only in primary ({abbreviate(a[key])})")
                elif key not in a:
                    if not (self.null_equals_missing and b[key] is None):
                        where = format_path([*path, key])
                        self._add(found, f"{where}: only in shadow ({abbreviate(b[key])})")
                else:
                    self._diff(a[key], b[key], [*path, key], child, found)
            return
        if isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                self._add(found, f"{format_path(path)}: length primary {len(a)}, shadow {len(b)}")
            for index in range(min(len(a), len(b))):
                child = self._matcher.step(states, index)
                self._diff(a[index], b[index], [*path, index], child, found)
            return
        if _is_number(a) and _is_number(b):
            if a == b:
                return
        elif type(a) is type(b) and a == b:
            return
        self._add(found, f"{format_path(path)}: primary {abbreviate(a)}, shadow {abbreviate(b)}")


def _header(response: Response, name: str) -> str:
    for key, value in response.headers:
        if key.lower() == name:
            return value
    return ""


def _is_json(response: Response) -> bool:
    media = _header(response, "content-type").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _decoded(response: Response) -> tuple[bytes, bool]:
    """The body without gzip/deflate content coding; (body, cut) — cut when it inflates too far.

    An unknown coding, or a body that fails to inflate, is returned as is and compared as bytes.
    """
    coding = _header(response, "content-encoding").strip().lower()
    if coding in ("gzip", "x-gzip", "deflate"):
        windows = (16 + zlib.MAX_WBITS,) if coding != "deflate" else (zlib.MAX_WBITS, -15)
        for wbits in windows:
            try:
                inflater = zlib.decompressobj(wbits)
                body = inflater.decompress(response.body, MAX_DECODED)
            except zlib.error:
                continue
            return body, bool(inflater.unconsumed_tail)
    return response.body, False


def _parse(body: bytes) -> tuple[Any, str | None]:
    if not body.strip():
        return None, None  # two empty bodies are equal JSON-wise (e.g. 204)
    try:
        return json.loads(body), None
    except (ValueError, RecursionError) as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:80]}"


# -- the log ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowSample:
    method: str
    path: str
    request_id: str
    at: float  # wall-clock seconds
    differences: list[str]  # or [error] for an error sample

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "request_id": self.request_id,
            "at": self.at,
            "differences": list(self.differences),
        }


class ShadowLog:
    """Counts of shadow comparisons and bounded samples of mismatches and errors.

    ``mirrored`` has the core Observer's signature, so the lead can hand it the captured pair
    directly; like every observer method it never raises.
    """

    def __init__(
        self,
        comparer: ShadowComparer | None = None,
        *,
        max_samples: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.comparer = comparer or ShadowComparer()
        self.clock = clock
        self.compared = 0
        self.matched = 0
        self.mismatched = 0
        self.truncated = 0
        self.errors = 0
        self.mismatches: deque[ShadowSample] = deque(maxlen=max_samples)
        self.error_samples: deque[ShadowSample] = deque(maxlen=max_samples)

    def record(self, request: RequestInfo, comparison: Comparison) -> None:
        self.compared += 1
        if comparison.truncated:
            self.truncated += 1
        if comparison.match:
            self.matched += 1
            return
        self.mismatched += 1
        self.mismatches.append(
            ShadowSample(
                request.method,
                request.path,
                request.request_id,
                self.clock(),
                list(comparison.differences),
            )
        )

    def record_error(self, request: RequestInfo, error: str) -> None:
        self.errors += 1
        self.error_samples.append(
            ShadowSample(request.method, request.path, request.request_id, self.clock(), [error])
        )

    def mirrored(
        self,
        head: RequestInfo,
        primary: Response,
        shadow: Response | None,
        error: str | None,
    ) -> None:
        try:
            if shadow is None or error is not None:
                self.record_error(head, error or "the shadow backend gave no answer")
            else:
                self.record(head, self.comparer.compare(primary, shadow))
        except Exception as exc:  # an observer must never break the data path
            self.errors += 1
            self.error_samples.append(
                ShadowSample(
                    head.method,
                    head.path,
                    head.request_id,
                    self.clock(),
                    [f"compare failed: {exc}"],
                )
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "matched": self.matched,
            "mismatched": self.mismatched,
            "truncated": self.truncated,
            "errors": self.errors,
            "ignore": list(self.comparer.ignore),
            "mismatch_samples": [s.to_json() for s in self.mismatches],
            "error_samples": [s.to_json() for s in self.error_samples],
        }
