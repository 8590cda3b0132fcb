"""What the load generator sends: a weighted mix of requests, from a file or an access log.

A mix file (YAML or JSON) is a list of ``{method, path, body, headers, weight}``; a JSON body
(mapping or list) is sent as compact JSON with ``Content-Type: application/json``, a text body
as UTF-8. ``{i}`` in a path or body becomes the request's number (unique writes); a header
value may be a ``${ENV}`` reference (a token), resolved when the mix is read. An access log
(common or combined format) gives its requests weighted by how often they appear — GET and HEAD
only unless asked, since a log has no request bodies to replay writes with. Which request goes
out as request i is fixed by a seeded sequence, so a run can be repeated exactly. Pure parsing:
no I/O beyond reading the file given.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from changeover.errors import UsageError
from changeover.secrets import has_reference, resolve

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # not written to --record: they change nothing
LOG_METHODS = frozenset({"GET", "HEAD"})
_TOKEN = re.compile(r"^[A-Z][A-Z0-9_-]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Framing is the generator's job: a mix that set these would desynchronise the connection.
_RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_ENTRY_KEYS = ("method", "path", "body", "headers", "weight")

# host ident user [time] "METHOD target HTTP/x" status size ["referer" "agent"]
_LOG_LINE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<request>(?:[^"\\]|\\.)*)" ')


@dataclass(frozen=True)
class Request:
    """One kind of request in the mix, with its wire bytes prepared once."""

    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    weight: float = 1.0

    @property
    def templated(self) -> bool:
        return "{i}" in self.path or b"{i}" in self.body

    @property
    def recorded(self) -> bool:
        """Written to --record: every request that may change something."""
        return self.method not in SAFE_METHODS

    def wire(self, host: str, number: int = 0) -> bytes:
        """The request as sent on a keep-alive HTTP/1.1 connection (``{i}`` → ``number``)."""
        path, body = self.path, self.body
        if self.templated:
            path = path.replace("{i}", str(number))
            body = body.replace(b"{i}", str(number).encode())
        lines = [f"{self.method} {path} HTTP/1.1"]
        if not any(name.lower() == "host" for name, _ in self.headers):
            lines.append(f"Host: {host}")
        lines += [f"{name}: {value}" for name, value in self.headers]
        if body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class Mix:
    """The requests and their weights, where they came from, and what the operator should know."""

    requests: tuple[Request, ...]
    source: str
    notes: tuple[str, ...] = field(default=())

    def sequence(self, seed: int, length: int | None = None) -> tuple[int, ...]:
        """Which request goes out as request i: ``sequence[i % len(sequence)]``.

        Each request gets its share of the slots by weight (largest remainder), then the slots
        are shuffled with ``seed``: the proportions are exact over every full cycle, and request
        i is the same whatever the number of processes.
        """
        counts = slot_counts([r.weight for r in self.requests], length or self.cycle)
        slots = [k for k, n in enumerate(counts) for _ in range(n)]
        random.Random(seed).shuffle(slots)
        return tuple(slots)

    @property
    def cycle(self) -> int:
        """Length of the sequence: long enough for every request of a large access log."""
        return max(8192, min(4 * len(self.requests), 1_000_000))

    def never_sent(self) -> int:
        """How many requests are too rare to get one slot in the sequence."""
        return slot_counts([r.weight for r in self.requests], self.cycle).count(0)


def slot_counts(weights: Sequence[float], length: int) -> list[int]:
    """``length`` slots shared in proportion to ``weights`` (largest remainder method)."""
    total = sum(weights)
    exact = [w / total * length for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda k: counts[k] - exact[k])
    for k in by_remainder[: length - sum(counts)]:
        counts[k] += 1
    return counts


def single(path: str, method: str = "GET") -> Mix:
    """The mix of a plain ``loadtest URL``: the URL's own path, GET."""
    return Mix((Request(method, path or "/"),), source=f"{method} {path or '/'}")


# --- mix files ---------------------------------------------------------------------------------


def load_mix(path: Path) -> Mix:
    """A YAML or JSON mix file; problems name the file, the line and the entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the mix file {path}: {exc}") from exc
    return parse_mix(text, str(path))


def parse_mix(text: str, filename: str) -> Mix:
    try:
        tree = YAML(typ="rt", pure=True).load(text)  # JSON is YAML: one loader, line numbers
    except YAMLError as exc:
        raise UsageError(f"{filename}: not valid YAML or JSON: {exc}") from exc
    if isinstance(tree, CommentedMap) and "requests" in tree:
        tree = tree["requests"]
    if not isinstance(tree, CommentedSeq) or not tree:
        raise UsageError(
            f"{filename}: expected a list of requests, each with method, path and weight "
            "(and optionally body and headers)"
        )
    requests = []
    for number, item in enumerate(tree):
        line = tree.lc.item(number)[0] + 1
        where = f"{filename}:{line}: request {number + 1}"
        requests.append(_entry(item, where))
    return Mix(tuple(requests), source=f"{filename} ({len(requests)} requests)")


def _entry(item: Any, where: str) -> Request:
    if not isinstance(item, dict):
        raise UsageError(f"{where}: expected a mapping with method, path, weight")
    unknown = [str(k) for k in item if k not in _ENTRY_KEYS]
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(_ENTRY_KEYS)})")
    method = str(item.get("method", "GET")).upper()
    if not _TOKEN.match(method):
        raise UsageError(f"{where}: {method!r} is not an HTTP method")
    path = item.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise UsageError(f"{where}: path must be a string starting with '/', got {path!r}")
    if any(c in path for c in " \r\n\t"):
        raise UsageError(f"{where}: the path {path!r} contains a space or line break; encode it")
    weight = item.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise UsageError(f"{where}: weight must be a positive number, got {weight!r}")
    headers = _headers(item.get("headers") or {}, where)
    body, content_type = _body(item.get("body"), where)
    if content_type and not any(name.lower() == "content-type" for name, _ in headers):
        headers += (("Content-Type", content_type),)
    return Request(method, path, body, headers, float(weight))


def _headers(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: headers must be a mapping of name: value")
    headers = []
    for name, value in raw.items():
        name, value = str(name), str(value)
        if has_reference(value):
            value = resolve(value, what=f"{where}: header {name}")
        if not _HEADER_NAME.match(name) or any(c in value for c in "\r\n"):
            raise UsageError(f"{where}: invalid header {name!r} (or a line break in its value)")
        if name.lower() in _RESERVED_HEADERS:
            raise UsageError(
                f"{where}: the generator sets {name} itself (keep-alive framing); remove it"
            )
        headers.append((name, value))
    return tuple(headers)


def _body(raw: Any, where: str) -> tuple[bytes, str | None]:
    if raw is None:
        return b"", None
    if isinstance(raw, str):
        return raw.encode("utf-8"), "text/plain; charset=utf-8"
    try:
        text = json.dumps(_plain(raw), separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: the body is neither text nor JSON data: {exc}") from exc
    return text.encode("utf-8"), "application/json"


def _plain(value: Any) -> Any:
    """ruamel's round-trip containers as plain dicts and lists (for json.dumps)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --- access logs -------------------------------------------------------------------------------


def load_access_log(path: Path, methods: Iterable[str] = LOG_METHODS) -> Mix:
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            return parse_access_log(lines, str(path), methods)
    except OSError as exc:
        raise UsageError(f"cannot read the access log {path}: {exc}") from exc


def parse_access_log(
    lines: Iterable[str], filename: str, methods: Iterable[str] = LOG_METHODS
) -> Mix:
    """The requests of a common/combined log, weighted by how often each appears."""
    wanted = frozenset(m.upper() for m in methods)
    seen: Counter[tuple[str, str]] = Counter()
    skipped: Counter[str] = Counter()
    unreadable = 0
    for line in lines:
        if not line.strip():
            continue
        parsed = _log_request(line)
        if parsed is None:
            unreadable += 1
        elif parsed[0] in wanted:
            seen[parsed] += 1
        else:
            skipped[parsed[0]] += 1
    read = sum(seen.values())
    if not read:
        raise UsageError(
            f"{filename}: no {'/'.join(sorted(wanted))} requests found "
            f"({unreadable} lines not in common/combined log format, "
            f"{sum(skipped.values())} with other methods)"
        )
    requests = tuple(
        Request(method, target, weight=float(n))
        for (method, target), n in sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    notes = [
        f"only {', '.join(sorted(wanted))} requests are replayed (a log holds no request "
        "bodies, so writes cannot be replayed faithfully)"
    ]
    if skipped:
        listed = ", ".join(f"{m} {n}" for m, n in skipped.most_common())
        notes.append(f"skipped {sum(skipped.values())} requests with other methods ({listed})")
    if unreadable:
        notes.append(f"skipped {unreadable} lines not in common/combined log format")
    source = f"{filename} ({read} requests, {len(requests)} distinct)"
    rare = Mix(requests, source).never_sent()
    if rare:
        notes.append(f"{rare} requests seen too rarely to get one slot in the mix are not sent")
    return Mix(requests, source=source, notes=tuple(notes))


def _log_request(line: str) -> tuple[str, str] | None:
    match = _LOG_LINE.match(line)
    if match is None:
        return None
    parts = match.group("request").split(" ")
    if len(parts) not in (2, 3) or not _TOKEN.match(parts[0]):
        return None  # "-", a TLS handshake sent to a plain port, garbage
    target = parts[1]
    if "://" in target:  # absolute form, as proxies log it
        split = urlsplit(target)
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    if not target.startswith("/"):
        return None
    return parts[0], target


def describe(mix: Mix, limit: int = 5) -> Sequence[str]:
    """The heaviest requests of a mix with their share, for the summary."""
    total = sum(r.weight for r in mix.requests)
    heaviest = sorted(mix.requests, key=lambda r: -r.weight)[:limit]
    lines = [f"{r.weight / total:6.1%}  {r.method} {r.path}" for r in heaviest]
    if len(mix.requests) > limit:
        lines.append(f"… and {len(mix.requests) - limit} more")
    return lines
