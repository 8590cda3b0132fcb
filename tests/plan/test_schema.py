"""The plan's JSON Schema: a valid draft 2020-12 schema that accepts what the loader accepts."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from changeover.actions import ACTIONS
from changeover.errors import PlanError
from changeover.plan.default import default_plan_text
from changeover.plan.load import parse_plan_text
from changeover.plan.schema import DRAFT, plan_json_schema
from changeover.probes.base import REGISTRY

pytestmark = pytest.mark.usefixtures("echo_probe")

VALID: dict[str, Any] = {
    "version": 1,
    "name": "Test cutover",
    "cutover_at": "2026-12-01T02:00:00Z",
    "contacts": [{"role": "dba", "title": "Database administrator"}],
    "systems": {
        "postgres": {"url": "${PG_URL}"},
        "cache": {"kind": "redis", "url": {"file": "/run/secrets/redis_url"}},
        "new": {"kind": "app", "instances": [{"name": "go-1", "url": "http://127.0.0.1:8101"}]},
    },
    "stages": [
        {
            "id": "pre",
            "title": "Pre-deployment",
            "window": {"opens": "-72h", "due": "-24h"},
            "phase": {"weight": 10, "deploy": ["go-1"], "bake": {"min": "30m", "max": "1h"}},
            "sections": [
                {
                    "title": "Database",
                    "steps": [
                        {
                            "id": "pg-ready",
                            "title": "PostgreSQL ready",
                            "check": {"test.echo": {"system": "postgres", "min_ratio": "80%"}},
                        },
                        {
                            "id": "both",
                            "title": "Both reachable",
                            "check": [
                                {"test.echo": {"system": "postgres", "status": [200, 204]}},
                                {"redis.ping": {"system": "cache", "max_latency": "100ms"}},
                            ],
                        },
                        {"id": "deploy", "title": "Deploy", "action": {"deploy": None}},
                        {
                            "id": "errors",
                            "title": "Error rate",
                            "gate": {"metric": "error_rate", "of": "new", "below": "1%"},
                        },
                        {"id": "signoff", "title": "Sign-off", "manual": {"role": "dba"}},
                    ],
                }
            ],
        }
    ],
}


@pytest.fixture(scope="module")
def schema(echo_probe: Any) -> dict[str, Any]:
    return plan_json_schema()


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema)


def with_change(path: list[str | int], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    node: Any = document
    for part in path[:-1]:
        node = node[part]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return document


FIRST_STEP: list[str | int] = ["stages", 0, "sections", 0, "steps", 0]
DELETE = object()


def test_schema_is_a_valid_draft_2020_12_schema_with_a_title(schema: dict[str, Any]) -> None:
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "changeover plan"
    assert "stages" in schema["description"]
    assert set(schema["required"]) == {"name", "cutover_at", "stages"}


def test_valid_plan_passes_the_schema_and_the_loader(validator: Draft202012Validator) -> None:
    assert list(validator.iter_errors(VALID)) == []
    parse_plan_text(json.dumps(VALID), "plan.json")  # JSON is YAML: the loader agrees


def test_typo_in_a_probe_name_fails_the_schema(validator: Draft202012Validator) -> None:
    document = with_change([*FIRST_STEP, "check"], {"test.ecko": {"system": "postgres"}})
    errors = list(validator.iter_errors(document))
    assert errors
    assert all(list(e.absolute_path)[:7] == [*FIRST_STEP, "check"] for e in errors)


def test_every_registered_probe_is_a_check_with_its_parameters(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    alternatives = {
        name: body
        for option in defs["ProbeCall"]["oneOf"]
        for name, body in option["properties"].items()
    }
    assert set(alternatives) == set(REGISTRY)
    assert all(o["additionalProperties"] is False for o in defs["ProbeCall"]["oneOf"])
    echo = alternatives["test.echo"]
    assert echo["description"] == "echo the parameters (tests only)"
    params = defs[echo["$ref"].rsplit("/", 1)[1]]
    assert params["required"] == ["system"]
    assert params["properties"]["min_version"]["description"] == "Lowest acceptable major version."


def test_parameters_may_be_omitted_only_when_none_is_required(
    validator: Draft202012Validator,
) -> None:
    # tcp has no required parameter; redis.ping needs its system.
    assert validator.is_valid(with_change([*FIRST_STEP, "check"], {"tcp": None}))
    assert not validator.is_valid(with_change([*FIRST_STEP, "check"], {"redis.ping": None}))


@pytest.mark.parametrize(
    ("params", "accepted"),
    [
        ({"system": "postgres", "min_version": 15}, True),
        ({"system": "postgres", "min_version": "fifteen"}, False),
        ({"system": "postgres", "min_versoin": 15}, False),
        ({"min_version": 15}, False),
        ({"system": "postgres", "min_ratio": "80%"}, True),
        ({"system": "postgres", "min_ratio": 0.8}, True),
        ({"system": "postgres", "min_ratio": "most"}, False),
        (None, False),  # system is required
    ],
)
def test_probe_parameters_are_checked_by_the_schema(
    validator: Draft202012Validator, params: Any, accepted: bool
) -> None:
    document = with_change([*FIRST_STEP, "check"], {"test.echo": params})
    assert validator.is_valid(document) is accepted


def test_actions_are_names_from_the_action_list(
    schema: dict[str, Any], validator: Draft202012Validator
) -> None:
    names = {
        name for option in schema["$defs"]["ActionCall"]["oneOf"] for name in option["properties"]
    }
    assert names == set(ACTIONS)
    step: list[str | int] = ["stages", 0, "sections", 0, "steps", 2, "action"]
    assert validator.is_valid(with_change(step, {"route": {"weight": 10}}))
    assert not validator.is_valid(with_change(step, {"deplyo": {}}))
    assert not validator.is_valid(with_change(step, {"deploy": {}, "route": {}}))


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("30m", True), ("500ms", True), ("-24h", True), (90, True), ("30 minutes", False)],
)
def test_durations_are_written_like_30m(
    validator: Draft202012Validator, value: Any, accepted: bool
) -> None:
    document = with_change(["stages", 0, "phase", "bake", "min"], value)
    assert validator.is_valid(document) is accepted


def test_system_named_after_its_kind_may_omit_kind(validator: Draft202012Validator) -> None:
    assert validator.is_valid(with_change(["systems", "redis"], {"url": "${REDIS_URL}"}))
    assert not validator.is_valid(with_change(["systems", "cache2"], {"url": "${REDIS_URL}"}))
    assert validator.is_valid(
        with_change(["systems", "postgres"], {"kind": "redis", "url": "${REDIS_URL}"})
    )
    assert not validator.is_valid(
        with_change(["systems", "cache"], {"kind": "rediss", "url": "${REDIS_URL}"})
    )
    assert not validator.is_valid(with_change(["systems", "Bad Name"], {"kind": "git"}))


@pytest.mark.parametrize(
    ("change", "value"),
    [
        (["tittle"], "x"),
        (["cutover_at"], DELETE),
        ([*FIRST_STEP, "manual"], {"role": "dba"}),  # two kinds
        (["stages", 0, "sections", 0, "steps", 4, "manual"], DELETE),  # no kind
        (["stages", 0, "id"], "Pre Deploy"),
        (["stages", 0, "sections", 0, "steps", 3, "gate", "below"], [1]),
        (["systems", "postgres", "url"], 5432),
    ],
)
def test_schema_and_loader_both_reject(
    validator: Draft202012Validator, change: list[str | int], value: Any
) -> None:
    document = with_change(change, value)
    assert not validator.is_valid(document)
    with pytest.raises(PlanError):
        parse_plan_text(json.dumps(document), "plan.json")


def test_packaged_default_plan_passes_the_schema(validator: Draft202012Validator) -> None:
    # What an editor sees: YAML timestamps as strings.
    data = YAML(typ="safe").load(default_plan_text())
    document = json.loads(json.dumps(data, default=lambda value: value.isoformat()))
    assert [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)] == []
