"""Reading a plan file: YAML → plain data → ``Plan``, or every problem with file:line:column.

ruamel's round-trip loader keeps the position of every key and value. pydantic and
``Plan._check_references`` report problems as paths (``stages[0].sections[2].steps[3].check``);
this module walks each path back to its YAML position, merges the alternatives of a union into
one message, and raises ``PlanError`` with all issues at once. Nothing is resolved here:
``${ENV}`` stays a reference until a probe or action needs the value.
"""

from __future__ import annotations

import hashlib
import re
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, CommentedSet, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from changeover.errors import PlanError, PlanIssue, UsageError
from changeover.plan.model import (
    KINDS,
    Loc,
    Plan,
    PlanInvalid,
    ProbeCall,
    pydantic_message,
    suggest,
)
from changeover.probes.base import REGISTRY
from changeover.secrets import mask_url

#: More issues than this are summarised in one line: the first ones are what to fix first.
MAX_ISSUES = 50

_YAML_TAGS = "tag:yaml.org,2002:"

Position = tuple[int, int]  # 0-based line and column, as ruamel gives them


@dataclass(frozen=True)
class LoadedPlan:
    """A validated plan and where it came from (relative paths in it are relative to base_dir)."""

    plan: Plan
    path: Path
    base_dir: Path
    text_sha256: str  # of the file's bytes: identifies the exact plan a journal was run with


def load_plan(path: Path | str) -> LoadedPlan:
    """Read and validate a plan file; ``UsageError`` if unreadable, ``PlanError`` if invalid."""
    file = Path(path)
    shown = str(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"plan file {shown} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"plan file {shown} is a directory, not a file") from None
    except PermissionError:
        raise UsageError(f"plan file {shown} cannot be read (permission denied)") from None
    except OSError as exc:
        raise UsageError(f"plan file {shown} cannot be read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
        raise PlanError(
            [
                PlanIssue(
                    shown,
                    line,
                    column,
                    "",
                    f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8",
                )
            ]
        ) from None
    plan = parse_plan_text(text, shown)
    absolute = file.absolute()
    return LoadedPlan(plan, absolute, absolute.parent, hashlib.sha256(data).hexdigest())


def parse_plan_text(text: str, filename: str) -> Plan:
    """Validate plan text; ``filename`` is only used to name positions in the errors."""
    tree = _parse_yaml(text, filename)
    converter = PlainConverter(filename)
    data = converter.convert(tree, (0, 0))
    if converter.issues:
        raise PlanError(finish_issues(converter.issues))
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        issues = _pydantic_issues(exc.errors(include_url=False), tree, filename)
    except PlanInvalid as exc:
        issues = _reference_issues(exc.problems, tree, filename)
    raise PlanError(finish_issues(issues))


# --- YAML ------------------------------------------------------------------------------------


def _parse_yaml(text: str, filename: str) -> CommentedMap:
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except DuplicateKeyError as exc:
        issues = _duplicate_keys(text, filename) or [_yaml_issue(exc, filename)]
        raise PlanError(finish_issues(issues)) from None
    except MarkedYAMLError as exc:
        raise PlanError([_yaml_issue(exc, filename)]) from None
    except ReaderError as exc:
        line, column = _line_col(text, exc.position)
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1])
        message = f"character U+{char:04X} is not allowed in YAML ({exc.reason})"
        raise PlanError([PlanIssue(filename, line, column, "", message)]) from None
    except YAMLError as exc:
        raise PlanError([PlanIssue(filename, None, None, "", f"not valid YAML: {exc}")]) from None
    except RecursionError:
        message = "the YAML is nested too deeply to be a plan"
        raise PlanError([PlanIssue(filename, None, None, "", message)]) from None
    if tree is None:
        message = "the plan is empty; start from `changeover init` or the README's example"
        raise PlanError([PlanIssue(filename, None, None, "", message)])
    if not isinstance(tree, CommentedMap):
        found = "a list" if isinstance(tree, CommentedSeq) else f"the value {_shown(tree)}"
        message = f"a plan is a mapping (version, name, cutover_at, stages, ...); found {found}"
        raise PlanError([PlanIssue(filename, 1, 1, "", message)])
    return tree


def _yaml_issue(exc: MarkedYAMLError, filename: str) -> PlanIssue:
    mark = exc.problem_mark or exc.context_mark
    message = f"YAML syntax: {exc.problem or exc.context}"
    if exc.context and exc.problem and exc.context_mark is not None:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    if mark is None:
        return PlanIssue(filename, None, None, "", message)
    return PlanIssue(filename, mark.line + 1, mark.column + 1, "", message)


def _duplicate_keys(text: str, filename: str) -> list[PlanIssue]:
    """Every duplicated key, found on the node graph (the loader stops at the first one)."""
    try:
        root = YAML(typ="rt").compose(text)
    except YAMLError:
        return []
    issues: list[PlanIssue] = []
    seen: set[int] = set()
    stack: list[Node] = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[tuple[str, str], Node] = {}
            for key, value in node.value:
                stack.append(value)
                if not isinstance(key, ScalarNode) or key.tag == f"{_YAML_TAGS}merge":
                    continue
                ident = (str(key.tag), str(key.value))
                if ident in first:
                    line = first[ident].start_mark.line + 1
                    message = f"duplicate key {key.value!r} (first defined at line {line})"
                    mark = key.start_mark
                    issues.append(PlanIssue(filename, mark.line + 1, mark.column + 1, "", message))
                else:
                    first[ident] = key
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    return issues


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


class PlainConverter:
    """ruamel's node tree → plain dict/list/str/int/float/bool/None/datetime for pydantic.

    Refuses what a plan cannot mean: custom tags (``!env``), sets, lists or mappings as keys,
    and an alias that contains itself.
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.issues: list[PlanIssue] = []
        self._open: set[int] = set()  # collections being converted: an alias cycle revisits one

    def convert(self, node: Any, pos: Position) -> Any:
        if isinstance(node, CommentedMap | CommentedSeq):
            return self._collection(node, pos)
        if isinstance(node, TaggedScalar):
            tag = str(node.tag.value)
            if tag == f"{_YAML_TAGS}str":
                return str(node.value)
            return self._refuse(pos, f"YAML tag {tag} is not supported; write the plain value")
        if isinstance(node, CommentedSet):
            return self._refuse(pos, "a set (!!set) is not supported; use a list")
        if isinstance(node, datetime):  # ruamel's TimeStamp keeps its own extra state
            return datetime(
                node.year,
                node.month,
                node.day,
                node.hour,
                node.minute,
                node.second,
                node.microsecond,
                tzinfo=node.tzinfo,
            )
        if isinstance(node, date):
            return date(node.year, node.month, node.day)
        # ScalarBoolean is an int subclass: test it before int.
        if isinstance(node, bool) or type(node).__name__ == "ScalarBoolean":
            return bool(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, str):
            return str(node)
        return node

    def _collection(self, node: CommentedMap | CommentedSeq, pos: Position) -> Any:
        tag = getattr(node.tag, "value", None)
        if tag is not None and not str(tag).startswith(_YAML_TAGS):
            return self._refuse(pos, f"YAML tag {tag} is not supported; write the plain value")
        if id(node) in self._open:
            return self._refuse(pos, "this alias refers to a node that contains it")
        self._open.add(id(node))
        try:
            if isinstance(node, CommentedSeq):
                return [self.convert(item, _item_pos(node, i)) for i, item in enumerate(node)]
            out: dict[Any, Any] = {}
            for key, value in node.items():
                if isinstance(key, tuple | CommentedMap):
                    self._refuse(_key_pos(node, key), "a key must be a plain value")
                    continue
                out[self.convert(key, _key_pos(node, key))] = self.convert(
                    value, _value_pos(node, key)
                )
            return out
        finally:
            self._open.discard(id(node))

    def _refuse(self, pos: Position, message: str) -> None:
        self.issues.append(PlanIssue(self.filename, pos[0] + 1, pos[1] + 1, "", message))


# --- positions in the YAML tree ----------------------------------------------------------------


def _node_pos(node: Any, fallback: Position) -> Position:
    if isinstance(node, CommentedMap | CommentedSeq) and node.lc.line is not None:
        return int(node.lc.line), int(node.lc.col)
    return fallback


def _key_pos(mapping: CommentedMap, key: Any) -> Position:
    try:
        line, col = mapping.lc.key(key)
    except (KeyError, TypeError):  # a key merged in with <<: has no position of its own here
        return _node_pos(mapping, (0, 0))
    return int(line), int(col)


def _value_pos(mapping: CommentedMap, key: Any) -> Position:
    try:
        line, col = mapping.lc.value(key)
    except (KeyError, TypeError):
        return _node_pos(mapping, (0, 0))
    return _node_pos(mapping[key], (int(line), int(col)))


def _item_pos(seq: CommentedSeq, index: int) -> Position:
    try:
        line, col = seq.lc.item(index)
    except (KeyError, TypeError):
        return _node_pos(seq, (0, 0))
    return _node_pos(seq[index], (int(line), int(col)))


@dataclass
class _Spot:
    """Where a validation ``loc`` lands in the YAML tree."""

    path: list[str | int] = field(default_factory=list)  # the loc without union tags
    sites: list[tuple[Loc, str]] = field(default_factory=list)  # (raw loc prefix, union tag)
    node: Any = None
    value_pos: Position = (0, 0)
    key_pos: Position | None = None  # set when the node is the value of a mapping key
    names_key: bool = False  # the problem is the last key itself (unknown key, unknown probe)

    @property
    def anchor(self) -> Position:
        """A collection (or an empty value) is best shown at the key that introduces it."""
        if self.key_pos is not None and (
            self.node is None or isinstance(self.node, CommentedMap | CommentedSeq)
        ):
            return self.key_pos
        return self.value_pos


def walk(tree: CommentedMap, loc: Loc, *, missing: bool = False) -> _Spot:
    """Follow ``loc`` through the tree; segments that are not in it are union tags (skipped).

    pydantic adds a segment per union member (``ProbeCall``, ``list[ProbeCall]``, the ``kind``
    of a system, ``str``/``FileRef``); a missing key is the last segment of a ``missing`` error.
    ``probe``/``action``/``params`` are the names a ``{name: params}`` call is rewritten to.
    """
    spot = _Spot(node=tree)
    for i, seg in enumerate(loc):
        node = spot.node
        last = i == len(loc) - 1
        if seg == "[key]":  # pydantic's marker for an error in a mapping key
            spot.node = None
            spot.names_key = True
            continue
        if isinstance(node, CommentedMap) and seg in node:
            spot.path.append(seg)
            spot.key_pos = _key_pos(node, seg)
            spot.value_pos = _value_pos(node, seg)
            spot.node = node[seg]
        elif isinstance(node, CommentedSeq) and isinstance(seg, int) and 0 <= seg < len(node):
            spot.path.append(seg)
            spot.key_pos = None
            spot.value_pos = _item_pos(node, seg)
            spot.node = node[seg]
        elif _is_call(spot.path) and isinstance(node, CommentedMap) and len(node) == 1:
            ((name, params),) = node.items()
            if seg == "params":
                spot.path.append(name)
                spot.key_pos = _key_pos(node, name)
                spot.value_pos = _value_pos(node, name)
                spot.node = params
            elif seg in ("probe", "action"):
                spot.path.append(name)
                spot.key_pos = _key_pos(node, name)
                spot.names_key = True
            else:
                spot.sites.append((loc[:i], str(seg)))
        elif last and missing:
            spot.path.append(seg)
        else:
            spot.sites.append((loc[:i], str(seg)))
    return spot


def _is_call(path: list[str | int]) -> bool:
    """The path ends at a ``{name: params}`` mapping: a check (or one in a list) or an action."""
    if path and path[-1] in ("check", "action"):
        return True
    return len(path) >= 2 and isinstance(path[-1], int) and path[-2] == "check"


def render_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", str(part)):
            out += f".{part}" if out else str(part)
        else:  # probe names contain dots: keep them one segment
            out += f"[{str(part)!r}]"
    return out


def _issue(spot: _Spot, position: Position, message: str, filename: str) -> PlanIssue:
    path = spot.path
    if spot.names_key and len(path) >= 1 and _is_call(path[:-1]):
        path = path[:-1]  # "…check: unknown probe 'x'": the message names the key
    return PlanIssue(filename, position[0] + 1, position[1] + 1, render_path(path), message)


# --- pydantic errors → issues -------------------------------------------------------------------


def _pydantic_issues(errors: list[Any], tree: CommentedMap, filename: str) -> list[PlanIssue]:
    located = [(err, walk(tree, err["loc"], missing=err["type"] == "missing")) for err in errors]
    choices = _union_choices(located, tree)
    issues: list[PlanIssue] = []
    mismatched: set[Loc] = set()
    for err, spot in located:
        for site, tag in spot.sites:
            chosen = choices[site]
            if not chosen:  # the input fits no member: one message for the whole union
                if site not in mismatched:
                    mismatched.add(site)
                    issues.append(_mismatch_issue(tree, site, located, filename))
                break
            if tag not in chosen:
                break
        else:
            issues.append(_error_issue(err, spot, filename))
    return issues


def _union_choices(located: list[tuple[Any, _Spot]], tree: CommentedMap) -> dict[Loc, set[str]]:
    """For each union in the errors: the members whose errors to show (by the input's shape)."""
    tags: dict[Loc, set[str]] = {}
    for _, spot in located:
        for site, tag in spot.sites:
            tags.setdefault(site, set()).add(tag)
    choices: dict[Loc, set[str]] = {}
    for site, members in tags.items():
        shape = _shape(walk(tree, site).node)
        fitting = {t for t in members if _tag_shape(t) in (shape, "any")}
        if not fitting and shape in ("str", "number", "bool"):
            fitting = {t for t in members if _tag_shape(t) == "scalar"}
        choices[site] = fitting
    return choices


def _shape(node: Any) -> str:
    if isinstance(node, CommentedMap):
        return "mapping"
    if isinstance(node, CommentedSeq):
        return "list"
    if node is None:
        return "none"
    if isinstance(node, bool) or type(node).__name__ == "ScalarBoolean":
        return "bool"
    if isinstance(node, int | float):
        return "number"
    if isinstance(node, str):
        return "str"
    return "scalar"


def _tag_shape(tag: str) -> str:
    """The input shape a pydantic union member tag accepts (model names accept mappings)."""
    name = tag.split("[", 1)[0]
    if name in ("list", "tuple", "set", "frozenset"):
        return "list"
    if name == "dict":
        return "mapping"
    if name in ("str", "constrained-str"):
        return "str"
    if name in ("int", "float", "constrained-int", "constrained-float"):
        return "number"
    if name == "bool":
        return "bool"
    if name == "none":
        return "none"
    if name in ("literal", "datetime", "date", "timedelta", "enum"):
        return "scalar"
    if name in ("any", "function-plain"):
        return "any"
    return "mapping"


_SHAPE_WORDS = {
    "list": "a list",
    "mapping": "a mapping",
    "str": "a string",
    "number": "a number",
    "bool": "true or false",
    "none": "nothing",
    "scalar": "a single value",
    "any": "a value",
}

# A field whose alternatives deserve better words than "a mapping or a list".
_EXPECTED_AT = {
    "check": "a check {probe.name: {parameters}} or a list of them",
    "gate": "a gate {metric: ..., below: ...} or a list of them",
}


def _mismatch_issue(
    tree: CommentedMap, site: Loc, located: list[tuple[Any, _Spot]], filename: str
) -> PlanIssue:
    spot = walk(tree, site)
    members: list[str] = []
    for _, other in located:
        for other_site, tag in other.sites:
            if other_site == site:
                word = _SHAPE_WORDS[_tag_shape(tag)]
                if word not in members:
                    members.append(word)
    last = spot.path[-1] if spot.path else None
    expected = _EXPECTED_AT.get(str(last)) or " or ".join(members)
    message = f"expected {expected} (got {_describe(spot.node)})"
    return _issue(spot, spot.anchor, message, filename)


def _describe(node: Any) -> str:
    if isinstance(node, CommentedMap):
        return "a mapping"
    if isinstance(node, CommentedSeq):
        return "a list"
    return "nothing" if node is None else _shown(node)


def _shown(value: Any) -> str:
    text = repr(mask_url(value) if isinstance(value, str) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _error_issue(err: Any, spot: _Spot, filename: str) -> PlanIssue:
    kind = err["type"]
    if isinstance(err.get("input"), str):
        # A literal password is refused, and must not be shown while refusing it.
        err = {**err, "input": mask_url(err["input"])}
    if kind == "extra_forbidden":
        key = spot.path[-1] if spot.path else err["loc"][-1]
        allowed = _allowed_keys(err["loc"])
        return _issue(spot, spot.key_pos or spot.anchor, _unknown_key(key, allowed), filename)
    if kind == "missing":
        return _issue(spot, spot.anchor, "required key is missing", filename)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _kind_issue(err, spot, filename)
    position = (spot.key_pos or spot.anchor) if spot.names_key else spot.anchor
    return _issue(spot, position, pydantic_message(err), filename)


def _unknown_key(key: Any, allowed: list[str]) -> str:
    hint = suggest(str(key), allowed)
    if not hint and allowed:
        hint = f" (known keys: {', '.join(allowed)})"
    return f"unknown key {str(key)!r}{hint}"


def _kind_issue(err: Any, spot: _Spot, filename: str) -> PlanIssue:
    """A system whose ``kind`` is missing or unknown (the discriminated union of systems)."""
    ctx = err.get("ctx") or {}
    discriminator = str(ctx.get("discriminator", "kind")).strip("'")
    expected = str(ctx.get("expected_tags") or ", ".join(KINDS)).replace("'", "")
    node = spot.node
    if err["type"] == "union_tag_not_found" or not isinstance(node, CommentedMap):
        if len(spot.path) == 2 and spot.path[0] == "systems":
            message = (
                f"system {spot.path[1]!r} needs a {discriminator} ({expected}), "
                f"or a name that is a {discriminator}"
            )
        else:
            message = f"needs a {discriminator} ({expected})"
        return _issue(spot, spot.anchor, message, filename)
    tag = str(ctx.get("tag"))
    hint = suggest(tag, expected.split(", "))
    value = _Spot(
        path=[*spot.path, discriminator],
        node=node.get(discriminator),
        value_pos=_value_pos(node, discriminator) if discriminator in node else spot.anchor,
    )
    message = f"unknown {discriminator} {tag!r}{hint} (expected one of {expected})"
    return _issue(value, value.value_pos, message, filename)


def _reference_issues(
    problems: list[tuple[Loc, str]], tree: CommentedMap, filename: str
) -> list[PlanIssue]:
    """Issues for the problems of ``Plan._check_references``.

    Probe parameter errors arrive there already phrased, one per union member and without
    "missing" context; they are validated again here so that they get the same treatment as
    every other pydantic error (one message per union, the parent's position for a missing key).
    """
    issues: list[PlanIssue] = []
    revalidated: dict[Loc, bool] = {}  # call → whether its parameters gave the issues
    for loc, message in problems:
        call = _probe_call(loc)
        if call is not None:
            if call not in revalidated:
                again = _probe_param_issues(call, tree, filename)
                issues.extend(again)
                revalidated[call] = bool(again)
            if revalidated[call]:
                continue
        spot = walk(tree, loc)
        if spot.path and _is_call(spot.path[:-1]) and spot.path[-1] == loc[-1]:
            spot.names_key = True  # an unknown probe or action: the key is the name
        position = (spot.key_pos or spot.anchor) if spot.names_key else spot.anchor
        issues.append(_issue(spot, position, message, filename))
    return issues


def _probe_call(loc: Loc) -> Loc | None:
    """``loc``'s prefix up to a probe name when the problem lies in that probe's parameters."""
    for j in range(1, len(loc)):
        if _is_call(list(loc[:j])) and loc[j] in REGISTRY and loc[j - 1] != "action":
            return loc[: j + 1]
    return None


def _probe_param_issues(call: Loc, tree: CommentedMap, filename: str) -> list[PlanIssue]:
    spot = walk(tree, call)
    params = PlainConverter(filename).convert(spot.node, spot.value_pos) or {}
    try:
        REGISTRY[str(call[-1])].Params.model_validate(params)
    except ValidationError as exc:
        errors = [{**err, "loc": call + tuple(err["loc"])} for err in exc.errors()]
        return _pydantic_issues(errors, tree, filename)
    return []


# --- keys a model allows, for did-you-mean -----------------------------------------------------


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys allowed in the mapping that holds ``loc[-1]``, following the model's types."""
    candidates: list[Any] = [Plan]
    for seg in loc[:-1]:
        members = [m for c in candidates for m in _members(c)]
        following: list[Any] = []
        for member in members:
            origin = typing.get_origin(member)
            if _is_model(member):
                if seg in member.model_fields:
                    following.append(member.model_fields[str(seg)].annotation)
                elif member is ProbeCall and seg in REGISTRY:
                    following.append(REGISTRY[str(seg)].Params)
            elif origin is list and isinstance(seg, int):
                following.append(typing.get_args(member)[0])
            elif origin is dict:
                following.append(typing.get_args(member)[1])
        if following:
            candidates = following
        else:  # a union tag: keep the member it names, if any
            named = [m for m in members if _tag_names(str(seg), m)]
            candidates = named or members
    names: list[str] = []
    for member in (m for c in candidates for m in _members(c)):
        if _is_model(member):
            names.extend(n for n in member.model_fields if n not in names)
    return names


def _members(annotation: Any) -> Iterator[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _members(typing.get_args(annotation)[0])
    elif origin is typing.Union or origin is types.UnionType:
        for arg in typing.get_args(annotation):
            yield from _members(arg)
    elif annotation is not type(None):
        yield annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _tag_names(tag: str, member: Any) -> bool:
    if tag.startswith("list["):
        return typing.get_origin(member) is list
    if not _is_model(member):
        return False
    kind = member.model_fields.get("kind")
    return bool(
        re.search(rf"\b{re.escape(member.__name__)}\b", tag)
        or (kind is not None and kind.default == tag)
    )


# --- the final list ---------------------------------------------------------------------------


def finish_issues(issues: list[PlanIssue]) -> list[PlanIssue]:
    """Sorted by position, without repeats, capped at MAX_ISSUES."""
    unique = list(dict.fromkeys(issues))
    unique.sort(key=lambda i: (i.line or 0, i.column or 0, i.path))
    if len(unique) <= MAX_ISSUES:
        return unique
    shown = unique[: MAX_ISSUES - 1]
    rest = len(unique) - len(shown)
    filename = unique[0].file
    return [*shown, PlanIssue(filename, None, None, "", f"{rest} more problems not shown")]


__all__ = ["MAX_ISSUES", "LoadedPlan", "load_plan", "parse_plan_text"]
