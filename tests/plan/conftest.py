"""A probe of the tests' own, registered for one test module at a time: the registry stays clean."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import Field, model_validator

from changeover.probes.base import REGISTRY, CheckResult, Probe, SystemParams
from changeover.units import Ratio


@pytest.fixture(scope="module")
def echo_probe() -> Iterator[type[Probe[Any, Any]]]:
    """``test.echo``: a postgres system, min/max version, ``status: int | [int]``, a ratio."""

    class EchoParams(SystemParams):
        min_version: int = Field(default=15, description="Lowest acceptable major version.")
        status: int | list[int] = Field(default=200, description="Accepted status codes.")
        min_ratio: Ratio = Field(default=0.8, description="A ratio such as 80%.")
        max_version: int | None = Field(default=None, description="Highest acceptable version.")

        @model_validator(mode="after")
        def _ordered(self) -> EchoParams:
            if self.max_version is not None and self.max_version < self.min_version:
                raise ValueError("max_version must not be below min_version")
            return self

    class Echo(Probe[EchoParams, None]):
        """Answers with its parameters; exists only while a test needs it."""

        name = "test.echo"
        summary = "echo the parameters (tests only)"
        Params = EchoParams
        system_kinds = ("postgres",)

        def interpret(self, params: EchoParams, raw: None) -> CheckResult:
            return CheckResult.passed(f"min_version={params.min_version}")

    yield Echo
    REGISTRY.pop("test.echo", None)
