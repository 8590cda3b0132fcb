"""The error-log summary: error lines grouped by message with what varies masked, most frequent
first, secrets never kept; an unreadable file is a plain error."""

from __future__ import annotations

from pathlib import Path

import pytest

from changeover.advise.logs import summarize_lines, summarize_log
from changeover.errors import UsageError
from changeover.secrets import REDACTOR


def test_repeated_errors_group_into_one_message_with_a_count() -> None:
    lines = [
        "2026-12-01T02:00:01Z INFO request ok id=1\n",
        "2026-12-01T02:00:02Z ERROR timeout after 3000 ms talking to 10.0.0.7:5432\n",
        "2026-12-01T02:00:03Z ERROR timeout after 2950 ms talking to 10.0.0.8:5432\n",
        "2026-12-01T02:00:04Z ERROR user 'bob' not found\n",
        "2026-12-01T02:00:05Z ERROR timeout after 3100 ms talking to 10.0.0.7:5432\n",
        "Traceback (most recent call last):\n",
    ]
    summary = summarize_lines(lines, source="app.log")
    assert summary.lines == 6 and summary.error_lines == 5
    first = summary.top[0]
    assert first.count == 3
    assert first.message == "ERROR timeout after <n> ms talking to <n>.<n>.<n>.<n>:<n>"
    assert first.example.startswith("2026-12-01T02:00:02Z ERROR timeout after 3000 ms")
    assert {m.message for m in summary.top[1:]} == {
        "ERROR user <…> not found",
        "Traceback (most recent call last):",
    }


def test_secrets_are_masked_before_anything_is_kept() -> None:
    REDACTOR.register("registered-secret-value")
    lines = [
        "ERROR connect postgresql://app:pa55word@db/app failed\n",
        "ERROR auth failed password=hunter2 token: abc.def Bearer eyJhbGciOi\n",
        "ERROR leaked registered-secret-value\n",
    ]
    summary = summarize_lines(lines)
    text = repr(summary.to_json())
    for secret in ("pa55word", "hunter2", "abc.def", "eyJhbGciOi", "registered-secret-value"):
        assert secret not in text
    assert "postgresql://app:***@db/app" in text


def test_a_log_file_is_read_and_a_missing_one_is_a_plain_error(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"ERROR disk full\n\xff\xfe ERROR disk full\nok\n")
    summary = summarize_log(log)
    assert summary.error_lines == 2 and summary.lines == 3 and summary.source == str(log)

    with pytest.raises(UsageError, match="cannot read the log file"):
        summarize_log(tmp_path / "nope.log")
