"""Shadow comparison of two captured answers, the ignore-path syntax, and the mismatch log."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from changeover.proxy.http import Captured, RequestHead
from changeover.proxy.shadow import ShadowComparer, ShadowLog, parse_path

JSON = (("Content-Type", "application/json; charset=utf-8"),)


def answer(
    body: Any, status: int = 200, *, headers: Any = JSON, truncated: bool = False
) -> Captured:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Captured(status, tuple(headers), raw, truncated)


def compare(a: Any, b: Any, *ignore: str, **options: Any) -> list[str]:
    comparison = ShadowComparer(ignore, **options).compare(answer(a), answer(b))
    assert comparison.match == (not comparison.differences)
    return comparison.differences


def head(path: str = "/items", request_id: str = "r1") -> RequestHead:
    return RequestHead("GET", path, path, "1.1", [], ("127.0.0.1", 5000), request_id)


def test_equal_documents_with_keys_in_another_order_match() -> None:
    assert (
        compare({"a": 1, "b": [1, 2], "c": {"x": None}}, {"c": {"x": None}, "b": [1, 2], "a": 1})
        == []
    )


def test_nested_difference_names_its_path_and_both_values() -> None:
    differences = compare({"a": {"b": [{"c": 1}, {"c": 2}]}}, {"a": {"b": [{"c": 1}, {"c": 3}]}})
    assert differences == ["$.a.b[1].c: primary 2, shadow 3"]


def test_key_on_one_side_only_is_a_difference() -> None:
    assert compare({"a": 1, "b": 2}, {"a": 1}) == ["$.b: only in primary (2)"]
    assert compare({"a": 1}, {"a": 1, "z": "new"}) == ['$.z: only in shadow ("new")']


def test_null_and_missing_differ_unless_configured() -> None:
    assert compare({"a": 1, "b": None}, {"a": 1}) == ["$.b: only in primary (null)"]
    assert compare({"a": 1, "b": None}, {"a": 1}, null_equals_missing=True) == []
    assert compare({"a": 1, "b": 0}, {"a": 1}, null_equals_missing=True) != []


def test_arrays_of_different_lengths_report_the_length_and_common_elements() -> None:
    differences = compare({"items": [1, 2, 3]}, {"items": [1, 5]})
    assert differences == ["$.items: length primary 3, shadow 2", "$.items[1]: primary 2, shadow 5"]


def test_array_order_matters() -> None:
    assert compare([1, 2], [2, 1]) == ["$[0]: primary 1, shadow 2", "$[1]: primary 2, shadow 1"]


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (0, -0.0, True),
        (1.5, 1.5, True),
        (1, 2, False),
        (True, 1, False),
        (False, 0, False),
        ("1", 1, False),
        (None, 0, False),
        (None, False, False),
        ([], {}, False),
        ("", None, False),
        (2**60, 2**60, True),
        (2**60 + 1, float(2**60), False),
    ],
)
def test_scalar_equality_rules(a: Any, b: Any, equal: bool) -> None:
    assert (compare({"v": a}, {"v": b}) == []) is equal


def test_type_change_is_reported_with_both_values() -> None:
    assert compare({"v": "1"}, {"v": 1}) == ['$.v: primary "1", shadow 1']


@pytest.mark.parametrize(
    ("ignore", "a", "b"),
    [
        ("$.generated_at", {"generated_at": 1, "x": 1}, {"generated_at": 2, "x": 1}),
        ("generated_at", {"generated_at": 1}, {"generated_at": 2}),
        ("$.generated_at", {"x": 1}, {"x": 1, "generated_at": 2}),
        (
            "items[*].updated_at",
            {"items": [{"id": 1, "updated_at": "a"}, {"id": 2, "updated_at": "b"}]},
            {"items": [{"id": 1, "updated_at": "c"}, {"id": 2}]},
        ),
        ("**.etag", {"a": {"b": [{"etag": 1}]}, "etag": 5}, {"a": {"b": [{"etag": 2}]}, "etag": 6}),
        ("meta.*", {"meta": {"x": 1, "y": 2}}, {"meta": {"x": 3, "z": 4}}),
        ("*_at", {"created_at": 1, "seen_at": 2}, {"created_at": 3, "seen_at": 4}),
        ("$['odd.key']", {"odd.key": 1}, {"odd.key": 2}),
        ('$["a[0]"]', {"a[0]": 1}, {"a[0]": 2}),
        ("items[0]", {"items": [1, 2]}, {"items": [9, 2]}),
        ("headers", {"headers": {"Date": "x"}}, {"headers": {"Date": "y"}}),
        ("$", {"a": 1}, {"b": 2}),
    ],
)
def test_ignore_paths_hide_volatile_fields(ignore: str, a: Any, b: Any) -> None:
    assert compare(a, b) != [], "the documents differ without the ignore path"
    assert compare(a, b, ignore) == []


def test_ignore_paths_hide_only_what_they_name() -> None:
    assert compare({"items": [1, 2]}, {"items": [1, 3]}, "items[0]") == [
        "$.items[1]: primary 2, shadow 3"
    ]
    assert compare({"a": {"t": 1}, "t": 1}, {"a": {"t": 2}, "t": 2}, "$.t") == [
        "$.a.t: primary 1, shadow 2"
    ]
    assert compare({"meta": {"x": 1}}, {"meta": {"x": 1}, "other": 1}, "meta.*") == [
        "$.other: only in shadow (1)"
    ]
    # A quoted key is literal, not a glob.
    assert compare({"ab": 1}, {"ab": 2}, "$['a*']") == ["$.ab: primary 1, shadow 2"]


@pytest.mark.parametrize("bad", ["items[x]", "a..b", "items[*]updated_at", "a[", "$['unclosed"])
def test_malformed_ignore_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot read the ignore path"):
        parse_path(bad)


def test_status_difference_is_reported_alone() -> None:
    comparison = ShadowComparer().compare(answer({"a": 1}), answer({"error": "x"}, 500))
    assert not comparison.match
    assert comparison.differences == ["status: primary 200, shadow 500"]


def test_truncated_bodies_are_compared_by_status_only_and_flagged() -> None:
    comparer = ShadowComparer()
    same = comparer.compare(answer({"a": 1}, truncated=True), answer({"a": 2}))
    assert same.match and same.truncated and same.compared_as == "status"
    other = comparer.compare(answer({"a": 1}, truncated=True), answer({"a": 1}, 404))
    assert not other.match


def test_non_json_bodies_compare_by_digest() -> None:
    html = (("Content-Type", "text/html"),)
    comparer = ShadowComparer()
    same = comparer.compare(answer(b"<p>hi</p>", headers=html), answer(b"<p>hi</p>", headers=html))
    assert same.match and same.compared_as == "bytes"
    other = comparer.compare(answer(b"<p>hi</p>", headers=html), answer(b"<p>ho</p>", headers=html))
    assert not other.match
    assert other.differences[0].startswith("body: sha256 primary ")
    assert "(9 bytes)" in other.differences[0]


def test_json_against_non_json_is_a_mismatch() -> None:
    comparison = ShadowComparer().compare(
        answer({"a": 1}), answer(b"<html>oops</html>", headers=(("Content-Type", "text/html"),))
    )
    assert not comparison.match
    assert comparison.differences[0].startswith("body: the shadow answer is not JSON")


def test_gzip_body_is_compared_after_decoding() -> None:
    plain = answer({"a": 1, "b": 2})
    zipped = Captured(
        200,
        (*JSON, ("Content-Encoding", "gzip")),
        gzip.compress(json.dumps({"b": 2, "a": 1}).encode()),
        False,
    )
    assert ShadowComparer().compare(plain, zipped).match


def test_empty_json_bodies_are_equal() -> None:
    assert ShadowComparer().compare(answer(b"", 204), answer(b"", 204)).match


def test_differences_are_capped_with_a_note() -> None:
    a = {f"k{i:02}": i for i in range(30)}
    b = {f"k{i:02}": i + 1 for i in range(30)}
    differences = compare(a, b, max_differences=5)
    assert len(differences) == 6
    assert differences[0] == "$.k00: primary 0, shadow 1"
    assert differences[-1] == "… more differences not listed"


def test_long_values_are_abbreviated() -> None:
    differences = compare({"t": "x" * 500}, {"t": "y" * 500})
    assert len(differences[0]) < 200 and "…" in differences[0]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_any_document_matches_its_own_round_trip(document: Any) -> None:
    assert compare(document, json.loads(json.dumps(document))) == []


@given(st.dictionaries(st.text(max_size=4), json_values, min_size=1, max_size=4), st.data())
def test_changing_any_top_level_value_is_noticed(document: dict[str, Any], data: Any) -> None:
    key = data.draw(st.sampled_from(sorted(document)))
    changed = dict(document)
    changed[key] = {"changed": [document[key]]}
    assert compare(document, changed) != []


def test_log_counts_and_samples_the_latest_mismatches() -> None:
    log = ShadowLog(ShadowComparer(["$.at"]), max_samples=3, clock=lambda: 42.0)
    log.mirrored(
        head(request_id="same"), answer({"a": 1, "at": 1}), answer({"a": 1, "at": 2}), None
    )
    for i in range(5):
        log.mirrored(head(f"/p{i}", f"r{i}"), answer({"a": 1}), answer({"a": i + 10}), None)
    log.mirrored(head(request_id="err"), answer({"a": 1}), None, "shadow backend refused")
    report = log.to_json()
    assert (report["compared"], report["matched"], report["mismatched"], report["errors"]) == (
        6,
        1,
        5,
        1,
    )
    samples = report["mismatch_samples"]
    assert [s["request_id"] for s in samples] == ["r2", "r3", "r4"]
    assert samples[0] == {
        "method": "GET",
        "path": "/p2",
        "request_id": "r2",
        "at": 42.0,
        "differences": ["$.a: primary 1, shadow 12"],
    }
    assert report["error_samples"][0]["differences"] == ["shadow backend refused"]


def test_log_never_raises_on_a_broken_capture() -> None:
    log = ShadowLog()
    broken = Captured(200, None, b"{}", False)  # type: ignore[arg-type]
    log.mirrored(head(), broken, answer({}), None)
    assert log.errors == 1
    assert log.error_samples[0].differences[0].startswith("compare failed:")
