"""The git.tag and git.merged probes against real repositories built with the git binary."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from changeover.plan.systems import GitSystem, RedisSystem
from changeover.probes.base import CheckResult, ProbeContext, ProbeParams, Status, run_probe
from changeover.probes.git import (
    Branch,
    GitMerged,
    GitTag,
    MergedParams,
    MergedRaw,
    Tag,
    TagParams,
    TagRaw,
)
from support.binaries import require_binary


class Repo:
    """A throwaway repository driven through the git binary, isolated from the user's config."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.env = {
            **os.environ,
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Test",
            "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "Test",
            "GIT_COMMITTER_EMAIL": "test@example.invalid",
        }
        self.commits = 0

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.path), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout.strip()

    def commit(self, message: str | None = None) -> str:
        self.commits += 1
        (self.path / "file.txt").write_text(f"change {self.commits}\n")
        self.git("add", "file.txt")
        # Distinct dates so that creatordate orders tags as they were made.
        date = f"2026-01-01T00:{self.commits:02d}:00Z"
        self.env["GIT_COMMITTER_DATE"] = self.env["GIT_AUTHOR_DATE"] = date
        self.git("commit", "-q", "-m", message or f"commit {self.commits}")
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    require_binary("git", "git")
    path = tmp_path / "app"
    path.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    repo = Repo(path, home)
    repo.git("init", "-q", "-b", "main")
    repo.commit()
    return repo


def check(name: str, params: ProbeParams, repo: Repo) -> CheckResult:
    ctx = ProbeContext({"app": GitSystem(path="app")}, base_dir=repo.path.parent)
    return asyncio.run(run_probe(name, params, ctx))


# --- git.tag ----------------------------------------------------------------------------------


def test_tag_passes_when_a_matching_tag_exists_listing_newest_first(repo: Repo) -> None:
    repo.git("tag", "v1.0-rc1")
    repo.commit()
    repo.git("tag", "-a", "-m", "second", "v1.0-rc2")
    repo.git("tag", "v1.0")
    result = check("git.tag", TagParams(system="app", pattern="v*-rc*"), repo)
    assert result.status is Status.PASS, result.reason
    assert [t["name"] for t in result.details["matching_tags"]] == ["v1.0-rc2", "v1.0-rc1"]


def test_tag_fails_when_no_tag_matches(repo: Repo) -> None:
    repo.git("tag", "v0.9")
    result = check("git.tag", TagParams(system="app", pattern="v*-rc*"), repo)
    assert result.status is Status.FAIL
    assert result.reason == "no tag matches 'v*-rc*'"


def test_tag_at_head_of_branch_passes_for_annotated_tag_on_that_head(repo: Repo) -> None:
    repo.git("checkout", "-q", "-b", "release")
    head = repo.commit()
    repo.git("tag", "-a", "-m", "rc", "v2.0-rc1")
    repo.git("checkout", "-q", "main")
    repo.commit()
    result = check("git.tag", TagParams(system="app", pattern="v2*", at_head_of="release"), repo)
    assert result.status is Status.PASS, result.reason
    assert result.reason == f"tag v2.0-rc1 is at the head of release ({head[:10]})"


def test_tag_at_head_of_branch_fails_when_branch_moved_past_the_tag(repo: Repo) -> None:
    repo.git("checkout", "-q", "-b", "release")
    repo.git("tag", "v2.0-rc1")
    head = repo.commit("fix after the tag")
    result = check("git.tag", TagParams(system="app", pattern="v2*", at_head_of="release"), repo)
    assert result.status is Status.FAIL
    assert result.reason.startswith(
        f"no tag matching 'v2*' points at the head of release ({head[:10]})"
    )


def test_tag_at_head_of_missing_branch_fails(repo: Repo) -> None:
    repo.git("tag", "v2.0")
    result = check("git.tag", TagParams(system="app", pattern="v2*", at_head_of="release"), repo)
    assert result.status is Status.FAIL
    assert result.reason == "branch 'release' does not exist"


def test_fails_plainly_when_path_is_not_a_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_binary("git", "git")
    (tmp_path / "app").mkdir()
    # Stop git from finding a repository in a directory above tmp_path.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    ctx = ProbeContext({"app": GitSystem(path="app")}, base_dir=tmp_path)
    result = asyncio.run(run_probe("git.tag", TagParams(system="app", pattern="v*"), ctx))
    assert result.status is Status.FAIL
    assert result.reason == f"{tmp_path / 'app'} is not a git repository"


def test_fails_plainly_when_path_does_not_exist(tmp_path: Path) -> None:
    ctx = ProbeContext({"app": GitSystem(path="gone")}, base_dir=tmp_path)
    result = asyncio.run(run_probe("git.tag", TagParams(system="app", pattern="v*"), ctx))
    assert result.status is Status.FAIL
    assert result.reason == f"git working copy not found: {tmp_path / 'gone'}"


def test_refuses_a_system_that_is_not_a_git_working_copy(tmp_path: Path) -> None:
    ctx = ProbeContext({"app": RedisSystem(url="redis://127.0.0.1:1")}, base_dir=tmp_path)
    result = asyncio.run(run_probe("git.tag", TagParams(system="app", pattern="v*"), ctx))
    assert result.status is Status.ERROR
    assert result.reason == "system 'app' is a redis, expected git"


def test_tag_interpret_matches_case_sensitively() -> None:
    raw = TagRaw([Tag("V1.0-RC1", "a" * 40, "2026-01-01T00:00:00Z")])
    result = GitTag().interpret(TagParams(system="app", pattern="v*-rc*"), raw)
    assert result.status is Status.FAIL


def test_rejects_branch_names_git_would_read_as_options() -> None:
    with pytest.raises(ValidationError, match="is not a branch name"):
        TagParams(system="app", pattern="v*", at_head_of="--output=/tmp/x")
    with pytest.raises(ValidationError, match="is not a branch name"):
        MergedParams(system="app", branches=["-D"])


# --- git.merged -------------------------------------------------------------------------------


def test_merged_passes_when_every_branch_is_merged(repo: Repo) -> None:
    repo.git("checkout", "-q", "-b", "feature/login")
    repo.commit()
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", "merge login", "feature/login")
    result = check("git.merged", MergedParams(system="app"), repo)
    assert result.status is Status.PASS, result.reason
    assert result.reason == "all 1 branch(es) are merged into main"


def test_merged_fails_listing_unmerged_branches_with_commit_counts(repo: Repo) -> None:
    repo.git("checkout", "-q", "-b", "feature/payments")
    repo.commit()
    repo.commit()
    repo.git("checkout", "-q", "main")
    repo.git("branch", "feature/done")  # at main: merged
    result = check("git.merged", MergedParams(system="app"), repo)
    assert result.status is Status.FAIL
    assert result.reason == "1 branch(es) not merged into main: feature/payments (2 commits)"
    assert result.details["unmerged"] == [{"branch": "feature/payments", "commits_not_in_main": 2}]


def test_merged_ignores_branches_matching_globs_local_and_remote(
    repo: Repo, tmp_path: Path
) -> None:
    repo.git("checkout", "-q", "-b", "dependabot/pip/x")
    repo.commit()
    repo.git("checkout", "-q", "main")
    # A remote whose branches arrive as refs/remotes/origin/*: a clone of this repository.
    clone = Repo(tmp_path / "clone", tmp_path / "home")
    subprocess.run(
        ["git", "clone", "-q", str(repo.path), str(clone.path)], env=repo.env, check=True
    )
    ctx = ProbeContext({"app": GitSystem(path="clone")}, base_dir=tmp_path)

    def run(params: MergedParams) -> CheckResult:
        return asyncio.run(run_probe("git.merged", params, ctx))

    result = run(MergedParams(system="app"))
    assert result.status is Status.FAIL
    assert "origin/dependabot/pip/x (1 commit)" in result.reason
    assert run(MergedParams(system="app", ignore=["dependabot/*"])).status is Status.PASS


def test_merged_checks_only_the_named_branches(repo: Repo) -> None:
    repo.git("checkout", "-q", "-b", "wip")
    repo.commit()
    repo.git("checkout", "-q", "main")
    repo.git("branch", "release-prep")
    result = check("git.merged", MergedParams(system="app", branches=["release-prep"]), repo)
    assert result.status is Status.PASS, result.reason


def test_merged_fails_when_a_named_branch_does_not_exist(repo: Repo) -> None:
    result = check("git.merged", MergedParams(system="app", branches=["hotfix"]), repo)
    assert result.status is Status.FAIL
    assert "not found, so cannot confirm they are merged: hotfix" in result.reason


def test_merged_fails_when_main_does_not_exist(repo: Repo) -> None:
    repo.git("branch", "-m", "main", "trunk")
    result = check("git.merged", MergedParams(system="app"), repo)
    assert result.status is Status.FAIL
    assert result.reason == "main branch 'main' does not exist"


def test_merged_interpret_caps_the_listed_branches() -> None:
    branches = [Branch(f"b{i}", None, False, 1) for i in range(25)]
    raw = MergedRaw("main", "c" * 40, branches)
    result = GitMerged().interpret(MergedParams(system="app"), raw)
    assert result.reason.endswith("b19 (1 commit) and 5 more")
    assert len(result.details["unmerged"]) == 20
