"""Shell words for the runbook's by-hand commands, made from the plan's values left unresolved.

A plan value such as ``${PG_URL}``, ``${LEGACY_URL:-http://127.0.0.1:8000}`` or ``{file: path}``
becomes a double-quoted word that the operator's own shell expands (``"${PG_URL}"``,
``"$(cat /etc/app/pg_url)"``): the document says where a secret comes from and never holds its
value. A password written in a default or a literal URL is masked (``user:***@``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from changeover.plan.model import Plan
from changeover.plan.secretref import FileRef
from changeover.plan.systems import AppSystem, HttpSystem, PostgresSystem, RedisSystem
from changeover.secrets import mask_url

# The reference syntax of changeover.secrets — which is also the shell's own, so a reference
# copied verbatim into a double-quoted word expands the same way in bash.
_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
# A password right after a scheme's user name anywhere in a text (mask_url only checks the start).
_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s\"']*):[^@/\s\"']+@", re.IGNORECASE)

Kind = Literal["text", "ref", "file"]


def masked(text: str) -> str:
    """``text`` with every ``scheme://user:password@`` shown as ``scheme://user:***@``."""
    return _PASSWORD.sub(r"\1:***@", mask_url(text))


@dataclass(frozen=True)
class Word:
    """One shell word: literal text, ``${VAR}`` references and file reads, in order."""

    parts: tuple[tuple[Kind, str], ...] = ()

    @classmethod
    def of(cls, value: str | FileRef | Word, base: Path | None = None) -> Word:
        """A plan value as a word: references stay references; ``{file:}`` paths are absolute."""
        if isinstance(value, Word):
            return value
        if isinstance(value, FileRef):
            return cls((("file", str(_absolute(value.file, base))),))
        parts: list[tuple[Kind, str]] = []
        at = 0
        for match in _REF.finditer(value):
            if match.start() > at:
                parts.append(("text", value[at : match.start()]))
            parts.append(("ref", match.group(0)))
            at = match.end()
        if at < len(value):
            parts.append(("text", value[at:]))
        return cls(tuple(parts))

    def __add__(self, other: str | Word) -> Word:
        return Word(self.parts + Word.of(other).parts)

    @property
    def literal(self) -> bool:
        return all(kind == "text" for kind, _ in self.parts)

    def text(self) -> str:
        """The word as the plan writes it (references unexpanded), for prose and tables."""
        return masked("".join(_shown(kind, value) for kind, value in self.parts))

    def shell(self) -> str:
        """The word quoted for bash: single quotes when literal, else double quotes."""
        if self.literal:
            return quoted(masked("".join(value for _, value in self.parts)))
        out = []
        for kind, value in self.parts:
            if kind == "text":
                out.append(re.sub(r'([\\"$`])', r"\\\1", masked(value)))
            elif kind == "ref":
                out.append(_masked_ref(value))
            else:
                out.append(f"$(cat {shlex.quote(value)})")
        return '"' + "".join(out) + '"'


def _shown(kind: Kind, value: str) -> str:
    if kind == "file":
        return f"{{file: {value}}}"
    if kind == "ref":
        return _masked_ref(value)
    return value


def _masked_ref(ref: str) -> str:
    match = _REF.fullmatch(ref)
    if match is None or match.group("default") is None:
        return ref
    return f"${{{match.group('name')}:-{masked(match.group('default'))}}}"


def _absolute(path: str, base: Path | None) -> Path:
    file = Path(path).expanduser()
    return file if file.is_absolute() or base is None else base / file


def quoted(text: str) -> str:
    """``text`` as one shell word: as is when safe, in single quotes, or — when it holds single
    quotes and nothing the shell expands — in double quotes (``".backup 'a.db'"``)."""
    if "'" in text and not re.search(r'[\\"$`!]', text):
        return f'"{text}"'
    return shlex.quote(text)


def command(*tokens: str | Word | None) -> str:
    """A command line: plain strings are quoted as needed, words as ``Word.shell``; None skipped."""
    return " ".join(
        token.shell() if isinstance(token, Word) else quoted(token)
        for token in tokens
        if token is not None
    )


def json_word(value: Any, base: Path | None = None) -> Word:
    """A JSON body as one word; references and ``{file:}`` values inside it stay expandable."""
    import json

    files: list[str] = []

    def placeholders(item: Any) -> Any:
        if isinstance(item, FileRef) or (
            isinstance(item, dict) and set(item) == {"file"} and isinstance(item["file"], str)
        ):
            files.append(item.file if isinstance(item, FileRef) else item["file"])
            return f"\ue000{len(files) - 1}\ue001"  # private-use marks: kept as is by dumps
        if isinstance(item, dict):
            return {k: placeholders(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [placeholders(v) for v in item]
        return item

    text = json.dumps(placeholders(value), separators=(",", ":"), ensure_ascii=False)
    word = Word()
    for index, piece in enumerate(re.split(r"\ue000(\d+)\ue001", text)):
        if index % 2:
            word = word + Word.of(FileRef(file=files[int(piece)]), base)
        elif piece:
            word = word + piece
    return word


class PlanWords:
    """The plan's systems as words: base URLs, headers and paths, for commands and prose."""

    def __init__(self, plan: Plan, base: Path | None) -> None:
        self.plan = plan
        self.base = base

    def word(self, value: str | FileRef | Word) -> Word:
        return Word.of(value, self.base)

    def path(self, value: str) -> str:
        """A file path from the plan, made absolute against the plan's directory."""
        return str(_absolute(value, self.base))

    def sqlite_source(self) -> str | None:
        """The migration's SQLite file (``sqlite:///p``, ``sqlite:p`` or a path), absolute."""
        if self.plan.migrate is None:
            return None
        source = self.plan.migrate.source
        return self.path(masked(source.removeprefix("sqlite:").removeprefix("//")))

    def targets(
        self, system: str | None, instance: str | None = None, url: str | FileRef | None = None
    ) -> Iterator[tuple[str, Word]]:
        """(label, base URL) of an HTTP target; every instance of an app that has no url."""
        if url is not None:
            yield "url", self.word(url)
            return
        found = self.plan.systems.get(system or "")
        if found is None:
            return
        instances = getattr(found, "instances", [])
        if instance is not None:
            for candidate in instances:
                if candidate.name == instance:
                    yield f"{system} {instance}", self.word(candidate.url)
            return
        system_url = getattr(found, "url", None)
        if system_url is not None:
            yield str(system), self.word(system_url)
            return
        for candidate in instances:
            yield f"{system} {candidate.name}", self.word(candidate.url)

    def server_url(self, kind: Literal["postgres", "redis"], named: str | None = None) -> Word:
        """The URL of the ``named`` PostgreSQL/Redis system, else of the plan's first one
        (the migration's target first, for PostgreSQL); ``${PG_URL}``/``${REDIS_URL}`` if none."""
        wanted = PostgresSystem if kind == "postgres" else RedisSystem
        if named is None and kind == "postgres" and self.plan.migrate is not None:
            named = self.plan.migrate.target
        candidates = [self.plan.systems.get(named or ""), *self.plan.systems.values()]
        for system in candidates:
            if isinstance(system, PostgresSystem | RedisSystem) and isinstance(system, wanted):
                return self.word(system.url)
        return Word.of("${PG_URL}" if kind == "postgres" else "${REDIS_URL}")

    def headers(self, system: str | None) -> dict[str, Word]:
        found = self.plan.systems.get(system or "")
        return {k: self.word(v) for k, v in (getattr(found, "headers", None) or {}).items()}

    def tls_options(self, system: str | None) -> list[str]:
        """curl's TLS options for an app/http system (no verification, or its CA bundle)."""
        found = self.plan.systems.get(system or "")
        if not isinstance(found, AppSystem | HttpSystem):
            return []
        if not found.verify_tls:
            return ["-k"]
        if found.ca_file:
            return ["--cacert", self.path(found.ca_file)]
        return []


def url_with_path(base: Word, path: str) -> Word:
    """``base`` + ``path`` as the probes join them (one slash between; "/" adds nothing)."""
    if path in ("", "/"):
        return base
    kind, last = base.parts[-1] if base.parts else ("text", "")
    if kind == "text" and last.endswith("/"):
        return Word(base.parts[:-1] + (("text", last.rstrip("/")),)) + "/" + path.lstrip("/")
    return base + ("/" + path.lstrip("/"))
