"""The named systems a plan talks to, one model per kind (``systems:`` in the plan).

A system is referred to by name from probes, actions and gates (``system: postgres``). When a
system's ``kind`` is omitted and its name is a kind (``postgres:``, ``redis:``), the name is the
kind. Every field that may hold a credential is a ``SecretRef``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from changeover.plan.secretref import SecretRef


class _System(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str | None = None


class PostgresSystem(_System):
    """A PostgreSQL server (the primary; replicas are seen through ``pg_stat_replication``)."""

    kind: Literal["postgres"] = "postgres"
    url: SecretRef = Field(description="libpq URL, e.g. '${PG_URL}'.")


class RedisSystem(_System):
    kind: Literal["redis"] = "redis"
    url: SecretRef = Field(description="redis:// or rediss:// URL, or unix:///path.sock.")


class Deploy(BaseModel):
    """How the rollout controller starts an instance (one of command, process, systemd)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    command: list[str] | None = Field(
        default=None, description="argv run to completion (a deploy script); never a shell string"
    )
    process: list[str] | None = Field(
        default=None,
        description="argv started as a local background process in its own session, its output "
        "appended to `log`",
    )
    systemd: str | None = Field(default=None, description="systemd unit name")
    log: str | None = Field(default=None, description="startup log file of the instance")
    ready_pattern: str | None = Field(default=None, description="regex of the startup log line")


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    url: SecretRef
    deploy: Deploy | None = None


class AppSystem(_System):
    """An HTTP application (legacy or new), reachable at ``url`` and/or per instance."""

    kind: Literal["app"] = "app"
    url: SecretRef | None = None
    health: str = "/healthz"
    instances: list[Instance] = Field(default_factory=list)
    headers: dict[str, SecretRef] = Field(default_factory=dict)
    ca_file: str | None = Field(default=None, description="CA bundle for TLS verification")
    verify_tls: bool = True

    @model_validator(mode="after")
    def _has_an_address(self) -> AppSystem:
        if self.url is None and not self.instances:
            raise ValueError("an app needs a url or at least one instance")
        return self


class HttpSystem(_System):
    """Any HTTP endpoint (an API, a load balancer, a log store)."""

    kind: Literal["http"] = "http"
    url: SecretRef
    headers: dict[str, SecretRef] = Field(default_factory=dict)
    ca_file: str | None = None
    verify_tls: bool = True


class PrometheusSystem(_System):
    kind: Literal["prometheus"] = "prometheus"
    url: SecretRef
    headers: dict[str, SecretRef] = Field(default_factory=dict)


class LokiSystem(_System):
    kind: Literal["loki"] = "loki"
    url: SecretRef
    headers: dict[str, SecretRef] = Field(default_factory=dict)


class ElasticsearchSystem(_System):
    kind: Literal["elasticsearch"] = "elasticsearch"
    url: SecretRef
    headers: dict[str, SecretRef] = Field(default_factory=dict)


class GitSystem(_System):
    kind: Literal["git"] = "git"
    path: str = Field(default=".", description="working copy (relative to the plan)")
    main: str = "main"


class RouterSystem(_System):
    """The load balancer changeover drives (traffic issue): built-in proxy, HAProxy or nginx."""

    kind: Literal["router"] = "router"
    type: Literal["builtin", "haproxy", "nginx"] = "builtin"
    admin: SecretRef | None = Field(default=None, description="admin API URL or socket")
    token: SecretRef | None = None
    config: str | None = Field(default=None, description="config file (nginx/HAProxy)")


System = Annotated[
    PostgresSystem
    | RedisSystem
    | AppSystem
    | HttpSystem
    | PrometheusSystem
    | LokiSystem
    | ElasticsearchSystem
    | GitSystem
    | RouterSystem,
    Field(discriminator="kind"),
]

KINDS = (
    "postgres",
    "redis",
    "app",
    "http",
    "prometheus",
    "loki",
    "elasticsearch",
    "git",
    "router",
)


def infer_kinds(systems: Any) -> Any:
    """``postgres: {url: ...}`` means kind postgres: fill a missing kind from a name that is one."""
    if not isinstance(systems, dict):
        return systems
    out: dict[Any, Any] = {}
    for name, body in systems.items():
        if isinstance(body, dict) and "kind" not in body and name in KINDS:
            body = {"kind": name, **body}
        out[name] = body
    return out
