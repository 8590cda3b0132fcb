"""Git probes on the plan's working copy: a release tag exists (at a branch head), branches merged.

The ``git`` binary is run with argv lists (``git -C <path> ...``), never a shell, with prompts
and pagers disabled. ``gather`` lists refs; ``interpret`` filters them with fnmatch globs and
decides, so the matching rules are tested without a repository.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from changeover.probes.base import (
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    SystemParams,
    Unreachable,
)

#: matching tags and unmerged branches listed in a result, at most
LIST_LIMIT = 20
#: unmerged branches whose commits are counted (one git call each)
COUNT_LIMIT = 100


def _ref_name(value: str) -> str:
    # A name starting with '-' would be read by git as an option.
    if not value or value.startswith("-") or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not a branch name")
    return value


class Git:
    """Runs ``git -C <path>`` and turns its failures into plain ``Unreachable`` reasons."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def run(self, *args: str, check: bool = True) -> tuple[int, str]:
        if not self.path.is_dir():
            raise Unreachable(f"git working copy not found: {self.path}")
        env = {
            **os.environ,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_PAGER": "cat",
            "LC_ALL": "C",  # git's messages in English, as matched below
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                "git",
                "-C",
                str(self.path),
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except FileNotFoundError:
            raise Unreachable("git is not installed or not on PATH") from None
        try:
            out, err = await proc.communicate()
        except BaseException:
            proc.kill()
            await asyncio.shield(proc.wait())
            raise
        code = proc.returncode or 0
        if check and code != 0:
            message = err.decode("utf-8", errors="replace").strip()
            if "not a git repository" in message:
                raise Unreachable(f"{self.path} is not a git repository")
            first = message.splitlines()[0] if message else f"exit status {code}"
            raise Unreachable(f"git {args[0]} failed in {self.path}: {first}")
        return code, out.decode("utf-8", errors="replace")

    async def commit_of(self, rev: str) -> str | None:
        """The commit a branch/tag/revision names, or None when it does not exist."""
        code, out = await self.run(
            "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False
        )
        return out.strip() if code == 0 and out.strip() else None


def _repo(ctx: ProbeContext, params: SystemParams, kinds: tuple[str, ...]) -> tuple[Git, str]:
    system = ctx.system(params.system, kinds)
    return Git(ctx.path(system.path)), str(system.main)


# --- git.tag ------------------------------------------------------------------------------------


class TagParams(SystemParams):
    pattern: str = Field(description="fnmatch glob the tag name must match, e.g. 'v*-rc*'.")
    at_head_of: str | None = Field(
        default=None,
        description="Branch whose head commit a matching tag must point at, e.g. 'release'.",
    )

    @field_validator("at_head_of")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        return None if value is None else _ref_name(value)


@dataclass(frozen=True)
class Tag:
    name: str
    commit: str
    date: str


@dataclass(frozen=True)
class TagRaw:
    tags: list[Tag]  # newest first
    branch_head: str | None = None  # commit of at_head_of, None when it does not exist


class GitTag(Probe[TagParams, TagRaw]):
    """A release tag matching the pattern exists, optionally at the head of a branch."""

    name = "git.tag"
    summary = "A tag matching pattern exists (at the head of a branch)"
    Params = TagParams
    system_kinds = ("git",)

    async def gather(self, params: TagParams, ctx: ProbeContext) -> TagRaw:
        git, _ = _repo(ctx, params, self.system_kinds)
        # %(*objectname) is the commit an annotated tag points at; empty for lightweight tags.
        _, out = await git.run(
            "for-each-ref",
            "--sort=-creatordate",
            "--format=%(refname:strip=2)%09%(objectname)%09%(*objectname)%09"
            "%(creatordate:iso-strict)",
            "refs/tags",
        )
        tags = []
        for line in out.splitlines():
            name, obj, peeled, date = (line.split("\t") + ["", "", ""])[:4]
            tags.append(Tag(name, peeled or obj, date))
        head = await git.commit_of(params.at_head_of) if params.at_head_of else None
        return TagRaw(tags, head)

    def interpret(self, params: TagParams, raw: TagRaw) -> CheckResult:
        matching = [t for t in raw.tags if fnmatchcase(t.name, params.pattern)]
        listed = [{"name": t.name, "commit": t.commit, "date": t.date} for t in matching]
        details: dict[str, Any] = {"matching_tags": listed[:LIST_LIMIT]}
        count = Measure("matching_tags", len(matching), expected=">= 1", ok=bool(matching))
        if not matching:
            return CheckResult.fail(f"no tag matches {params.pattern!r}", count, **details)
        newest = matching[0]
        if params.at_head_of is None:
            return CheckResult.passed(
                f"{len(matching)} tag(s) match {params.pattern!r}; newest {newest.name}",
                count,
                **details,
            )
        branch = params.at_head_of
        if raw.branch_head is None:
            return CheckResult.fail(f"branch {branch!r} does not exist", count, **details)
        details["branch_head"] = raw.branch_head
        at_head = [t for t in matching if t.commit == raw.branch_head]
        head = raw.branch_head[:10]
        measure = Measure(
            "tag_at_head",
            at_head[0].name if at_head else None,
            expected=f"a tag matching {params.pattern!r} at {branch} ({head})",
            ok=bool(at_head),
        )
        if at_head:
            return CheckResult.passed(
                f"tag {at_head[0].name} is at the head of {branch} ({head})",
                count,
                measure,
                **details,
            )
        return CheckResult.fail(
            f"no tag matching {params.pattern!r} points at the head of {branch} ({head}); "
            f"newest matching tag {newest.name} points at {newest.commit[:10]}",
            count,
            measure,
            **details,
        )


# --- git.merged ---------------------------------------------------------------------------------


class MergedParams(SystemParams):
    branches: list[str] | None = Field(
        default=None,
        description="Branches that must be merged into main (local 'feature/x' or remote "
        "'origin/feature/x'); default: every local and remote-tracking branch but main.",
    )
    ignore: list[str] = Field(
        default_factory=list,
        description="fnmatch globs of branches to leave out, e.g. 'dependabot/*'; a remote "
        "branch is matched with and without its remote name.",
    )

    @field_validator("branches")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_ref_name(v) for v in value]


@dataclass(frozen=True)
class Branch:
    name: str  # as shown: 'feature/x' or 'origin/feature/x'
    remote: str | None  # 'origin' for a remote-tracking branch
    merged: bool
    ahead: int = 0  # commits not in main (-1: not counted)


@dataclass(frozen=True)
class MergedRaw:
    main: str
    main_commit: str | None
    branches: list[Branch]
    missing: list[str] = field(default_factory=list)  # named in the plan, not in the repo


class GitMerged(Probe[MergedParams, MergedRaw]):
    """Every feature branch is merged into main, so nothing is left behind by the release."""

    name = "git.merged"
    summary = "Branches are merged into main"
    Params = MergedParams
    system_kinds = ("git",)

    async def gather(self, params: MergedParams, ctx: ProbeContext) -> MergedRaw:
        git, main = _repo(ctx, params, self.system_kinds)
        main_commit = await git.commit_of(main)
        if main_commit is None:
            return MergedRaw(main, None, [])
        fmt = "--format=%(refname)%09%(symref)"
        _, every = await git.run("for-each-ref", fmt, "refs/heads", "refs/remotes")
        _, merged_out = await git.run(
            "for-each-ref", f"--merged={main_commit}", fmt, "refs/heads", "refs/remotes"
        )
        merged = {line.split("\t")[0] for line in merged_out.splitlines()}
        refs: dict[str, tuple[str, str | None]] = {}  # full ref → (shown name, remote)
        for line in every.splitlines():
            ref, symref = (line.split("\t") + [""])[:2]
            if symref:
                continue  # origin/HEAD and the like point at another branch
            if ref.startswith("refs/heads/"):
                refs[ref] = (ref.removeprefix("refs/heads/"), None)
            elif ref.startswith("refs/remotes/"):
                shown = ref.removeprefix("refs/remotes/")
                remote, _, _ = shown.partition("/")
                refs[ref] = (shown, remote)
        missing: list[str] = []
        if params.branches is None:
            chosen = [
                ref
                for ref, (shown, remote) in refs.items()
                if (shown if remote is None else shown.partition("/")[2]) not in (main, "HEAD")
            ]
        else:
            chosen = []
            for name in params.branches:
                for ref in (f"refs/heads/{name}", f"refs/remotes/{name}"):
                    if ref in refs:
                        chosen.append(ref)
                        break
                else:
                    missing.append(name)
        branches = []
        counted = 0
        for ref in chosen:
            name, on_remote = refs[ref]
            is_merged = ref in merged
            ahead = -1  # not counted: a repository with hundreds of stale branches
            if not is_merged and counted < COUNT_LIMIT:
                counted += 1
                _, count = await git.run("rev-list", "--count", ref, f"^{main_commit}")
                ahead = int(count.strip() or 0)
            branches.append(Branch(name, on_remote, is_merged, ahead))
        return MergedRaw(main, main_commit, branches, missing)

    def interpret(self, params: MergedParams, raw: MergedRaw) -> CheckResult:
        if raw.main_commit is None:
            return CheckResult.fail(f"main branch {raw.main!r} does not exist")

        def ignored(branch: Branch) -> bool:
            names = [branch.name]
            if branch.remote is not None:
                names.append(branch.name.partition("/")[2])
            return any(fnmatchcase(n, glob) for n in names for glob in params.ignore)

        checked = [b for b in raw.branches if not ignored(b)]
        unmerged = [b for b in checked if not b.merged]
        details: dict[str, Any] = {
            "main": raw.main,
            "main_commit": raw.main_commit,
            "checked": len(checked),
            "unmerged": [{"branch": b.name, "commits_not_in_main": b.ahead} for b in unmerged][
                :LIST_LIMIT
            ],
        }
        if raw.missing:
            details["missing"] = list(raw.missing)
        evidence = [
            Measure("unmerged_branches", len(unmerged), expected="= 0", ok=not unmerged),
            Measure("merged_branches", len(checked) - len(unmerged)),
        ]
        problems = []
        if unmerged:
            shown = ", ".join(_with_count(b) for b in unmerged[:LIST_LIMIT])
            more = f" and {len(unmerged) - LIST_LIMIT} more" if len(unmerged) > LIST_LIMIT else ""
            problems.append(f"{len(unmerged)} branch(es) not merged into {raw.main}: {shown}{more}")
        if raw.missing:
            evidence.append(Measure("missing_branches", len(raw.missing), expected="= 0", ok=False))
            problems.append(
                f"branch(es) not found, so cannot confirm they are merged: {', '.join(raw.missing)}"
            )
        return CheckResult.judge(
            evidence,
            passed=f"all {len(checked)} branch(es) are merged into {raw.main}",
            failed="; ".join(problems) or None,
            details=details,
        )


def _with_count(branch: Branch) -> str:
    if branch.ahead < 0:
        return branch.name
    return f"{branch.name} ({branch.ahead} commit{'s' if branch.ahead != 1 else ''})"
