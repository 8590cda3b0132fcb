"""The proxy's config file (``changeover proxy serve --config FILE``): YAML or JSON, validated.

The model validates on construction (pydantic, unknown keys refused) and cross-checks what one
field says about another (weights sum to 100, the write owner is a backend, an admin port off
loopback has a token). ``load_proxy_config`` reports every problem with file:line:column, reusing
the plan loader's YAML walk. The admin token stays a reference until ``admin_token()`` is called.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from changeover.errors import PlanIssue, UsageError
from changeover.plan.load import PlainConverter, finish_issues, render_path, walk
from changeover.plan.model import pydantic_message, suggest
from changeover.plan.secretref import FileRef, SecretRef, resolve_ref
from changeover.proxy.limits import Limits
from changeover.proxy.shadow import parse_path
from changeover.proxy.state import Instance, RoutingState
from changeover.secrets import has_reference, mask_url
from changeover.units import Duration, Ratio

Loc = tuple[str | int, ...]
DEFAULT_STATE_FILE = ".changeover/proxy-state.json"
_NAME = r"^[a-z0-9][a-z0-9_-]*$"
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 1024**2}
_SIZE_UNITS |= {"gb": 10**9, "gib": 1024**3}


def _parse_size(value: Any) -> Any:
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"expected a size like 65536, '64KiB' or '1GiB', got {value!r}")
        return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    return value


ByteSize = Annotated[int, BeforeValidator(_parse_size), Field(gt=0)]
Port = Annotated[int, Field(ge=0, le=65535)]  # 0: any free port (tests, demo)
Name = Annotated[str, Field(pattern=_NAME, max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Model):
    """Where the proxy takes client traffic."""

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 for all)")
    port: Port = Field(8080, description="TCP port for client traffic")


class Admin(_Model):
    """The admin API: its own port, loopback by default."""

    host: str = Field("127.0.0.1", description="address of the admin API")
    port: Port = Field(9901, description="TCP port of the admin API")
    token: SecretRef | None = Field(
        None,
        description="bearer token for changes, as '${ROUTER_TOKEN}' or {file: path}; "
        "required when the admin API is not on loopback",
    )


class Upstream(_Model):
    """One instance of a backend."""

    name: Name = Field(description="instance name, unique within its backend")
    url: str = Field(description="http://host:port of the instance")

    @property
    def host(self) -> str:
        return str(urlsplit(self.url).hostname)

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 80)


class Writes(_Model):
    """Which requests are writes (pinned to the write owner); see ``balance.WriteRules``."""

    methods: list[str] = Field(
        default_factory=lambda: ["POST", "PUT", "PATCH", "DELETE"],
        description="HTTP methods that write",
    )
    include: list[str] = Field(
        default_factory=list, description="only these paths (globs or re:regex); empty: all"
    )
    exclude: list[str] = Field(default_factory=list, description="paths that never write")
    also: list[str] = Field(
        default_factory=list, description="extra writes: 'GET /logout' or '/api/mutate/*'"
    )


class LimitsConfig(_Model):
    """Bounds of the data path (``changeover.proxy.limits.Limits``); sizes accept '64KiB'."""

    max_header_bytes: ByteSize = Limits.max_header_bytes
    max_body_bytes: ByteSize = Limits.max_body_bytes
    max_concurrency: int = Field(Limits.max_concurrency, gt=0)
    keepalive_timeout: Duration = timedelta(seconds=Limits.keepalive_timeout)
    header_timeout: Duration = timedelta(seconds=Limits.header_timeout)
    upstream_connect_timeout: Duration = timedelta(seconds=Limits.upstream_connect_timeout)
    upstream_timeout: Duration = timedelta(seconds=Limits.upstream_timeout)
    max_pipeline: int = Field(Limits.max_pipeline, gt=0)
    max_idle_per_instance: int = Field(Limits.max_idle_per_instance, gt=0)
    upstream_idle_timeout: Duration = timedelta(seconds=Limits.upstream_idle_timeout)
    max_retries: int = Field(Limits.max_retries, ge=0)
    body_buffer_bytes: ByteSize = Limits.body_buffer_bytes
    mirror_capture_bytes: ByteSize = Limits.mirror_capture_bytes
    max_mirror_tasks: int = Field(Limits.max_mirror_tasks, gt=0)
    mirror_timeout: Duration = timedelta(seconds=Limits.mirror_timeout)

    def to_limits(self) -> Limits:
        values: dict[str, Any] = {}
        for item in fields(Limits):
            value = getattr(self, item.name)
            values[item.name] = value.total_seconds() if isinstance(value, timedelta) else value
        return Limits(**values)


class Hold(_Model):
    """The write hold of the data handoff."""

    max_hold: Duration = Field(timedelta(seconds=5), description="longest a write waits")
    max_queue: int = Field(10_000, gt=0, description="held writes beyond this get 503")


class Mirror(_Model):
    """Shadow comparison: a share of GET requests also sent to the other backend."""

    share: Ratio = Field(0.0, description="share of GET requests mirrored: 0..1 or '5%'")
    ignore_paths: list[str] = Field(
        default_factory=list, description="JSON fields not compared (volatile: ids, timestamps)"
    )


class Health(_Model):
    """Active health checks of every instance."""

    path: str = Field("/healthz", description="path requested on each instance")
    interval: Duration = Field(timedelta(seconds=2), description="time between checks")
    timeout: Duration = Field(timedelta(seconds=1), description="a slower answer fails")
    rise: int = Field(2, ge=1, description="good checks in a row to come back")
    fall: int = Field(3, ge=1, description="failed checks in a row to go down")


class ConfigInvalid(Exception):
    """Cross-field problems, each with its location (not a ValueError: pydantic lets it through)."""

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{render_path(loc)}: {msg}" for loc, msg in problems))


class ProxyConfig(_Model):
    """The whole config file."""

    listen: Listen = Field(default_factory=Listen)
    admin: Admin = Field(default_factory=Admin)
    backends: dict[Name, list[Upstream]] = Field(
        description="backends by name (legacy, new), each a list of instances"
    )
    weights: dict[str, float] | None = Field(
        None, description="initial weights in percent, summing to 100 (default: all to legacy)"
    )
    write_owner: str | None = Field(None, description="backend that gets writes (default: legacy)")
    writes: Writes = Field(default_factory=Writes)
    ryw_window: Duration = Field(
        timedelta(seconds=2), description="reads after a write go to the write owner this long"
    )
    session_cookie: str = Field(
        "co_session", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="session cookie name"
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    hold: Hold = Field(default_factory=Hold)
    mirror: Mirror = Field(default_factory=Mirror)
    health: Health = Field(default_factory=Health)
    state_file: str = Field(
        DEFAULT_STATE_FILE, description="routing state kept across restarts (relative: to config)"
    )

    @model_validator(mode="after")
    def _cross_check(self) -> ProxyConfig:
        problems = list(_problems(self))
        if problems:
            raise ConfigInvalid(problems)
        return self

    @property
    def default_backend(self) -> str:
        return "legacy" if "legacy" in self.backends else next(iter(self.backends))

    def instances(self) -> dict[str, list[Instance]]:
        return {
            backend: [Instance(backend, u.name, u.host, u.port) for u in upstreams]
            for backend, upstreams in self.backends.items()
        }

    def initial_state(self) -> RoutingState:
        """The routing state a proxy starts with when no state file exists yet."""
        weights = {name: 0.0 for name in self.backends}
        if self.weights is None:
            weights[self.default_backend] = 100.0
        else:
            weights.update(self.weights)
        return RoutingState(
            weights=weights,
            write_owner=self.write_owner or self.default_backend,
            mirror_share=self.mirror.share,
        )


def _problems(config: ProxyConfig) -> Iterator[tuple[Loc, str]]:
    if not config.backends:
        yield ("backends",), "needs at least one backend (legacy, new)"
    for backend, upstreams in config.backends.items():
        if not upstreams:
            yield ("backends", backend), "needs at least one instance {name, url}"
        seen: set[str] = set()
        for i, upstream in enumerate(upstreams):
            if upstream.name in seen:
                yield ("backends", backend, i, "name"), f"instance {upstream.name!r} is repeated"
            seen.add(upstream.name)
            problem = _url_problem(upstream.url)
            if problem:
                yield ("backends", backend, i, "url"), problem
    names = list(config.backends)
    if config.weights is not None:
        for backend, weight in config.weights.items():
            if backend not in config.backends:
                hint = suggest(backend, names) or f" (backends: {', '.join(names)})"
                yield ("weights", backend), f"unknown backend {backend!r}{hint}"
            elif not 0 <= weight <= 100:
                yield ("weights", backend), f"a weight is 0 to 100 percent (got {weight:g})"
        total = sum(config.weights.values())
        if abs(total - 100) > 1e-6:
            yield ("weights",), f"must sum to 100 (they sum to {total:g})"
    if config.write_owner is not None and config.write_owner not in config.backends:
        hint = suggest(config.write_owner, names) or f" (backends: {', '.join(names)})"
        yield ("write_owner",), f"{config.write_owner!r} is not a backend{hint}"
    token = config.admin.token
    if isinstance(token, str) and not has_reference(token):
        yield (
            ("admin", "token"),
            "write a reference such as '${ROUTER_TOKEN}' or {file: path}, not the token itself",
        )
    if token is None and not is_loopback(config.admin.host):
        yield (
            ("admin", "host"),
            f"the admin API on {config.admin.host} (not loopback) needs a token: "
            "add admin.token: '${ROUTER_TOKEN}'",
        )
    listen, admin = config.listen, config.admin
    if listen.port == admin.port != 0 and (
        listen.host == admin.host or "0.0.0.0" in (listen.host, admin.host)
    ):
        yield ("admin", "port"), f"port {admin.port} is also the proxy's listen port"
    if not config.health.path.startswith("/"):
        yield ("health", "path"), f"a path starts with '/' (got {config.health.path!r})"
    for name, value in (("ryw_window", config.ryw_window), ("hold.max_hold", config.hold.max_hold)):
        if value.total_seconds() < 0 or (name == "hold.max_hold" and not value.total_seconds()):
            yield tuple(name.split(".")), "must be a positive duration"
    for i, text in enumerate(config.mirror.ignore_paths):
        try:
            parse_path(text)
        except ValueError as exc:
            yield ("mirror", "ignore_paths", i), str(exc)
    if not 0 <= config.mirror.share <= 1:
        yield ("mirror", "share"), f"a share is 0 to 1 (or 0% to 100%), got {config.mirror.share:g}"


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc}): expected http://host:port"
    if parts.scheme == "https":
        return "https is not supported to upstreams: use http://host:port (TLS ends at the proxy)"
    if parts.scheme != "http" or not parts.hostname:
        return f"expected http://host:port (got {mask_url(url)!r})"
    if parts.username is not None or parts.password is not None:
        return "a user or password does not belong in an upstream URL: use http://host:port"
    if port is None:
        return f"the port is missing: write http://{parts.hostname}:PORT"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"only http://host:port, without a path or query (got {mask_url(url)!r})"
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- loading ---------------------------------------------------------------------------------


class ProxyConfigError(UsageError):
    """The proxy config file does not validate; every issue with file:line:col."""

    def __init__(self, issues: list[PlanIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


@dataclass(frozen=True)
class LoadedProxyConfig:
    """A validated config and where it came from (relative paths are relative to its folder)."""

    config: ProxyConfig
    path: Path
    base_dir: Path

    @property
    def state_path(self) -> Path:
        file = Path(self.config.state_file)
        return file if file.is_absolute() else self.base_dir / file

    def admin_token(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The admin token's value, resolved now (``SecretError`` if it cannot be)."""
        token = self.config.admin.token
        if token is None:
            return None
        value = resolve_ref(token, base=self.base_dir, environ=environ, what="admin.token")
        if not value:
            raise UsageError("admin.token: the token is empty; set a long random value")
        return value


def load_proxy_config(path: Path | str) -> LoadedProxyConfig:
    """Read and validate the proxy's config file (YAML or JSON)."""
    file = Path(path)
    shown = str(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"proxy config {shown} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"proxy config {shown} is a directory, not a file") from None
    except UnicodeDecodeError:
        raise UsageError(f"proxy config {shown} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"proxy config {shown} cannot be read: {exc.strerror or exc}") from exc
    config = parse_proxy_config(text, shown)
    absolute = file.absolute()
    return LoadedProxyConfig(config, absolute, absolute.parent)


def parse_proxy_config(text: str, filename: str) -> ProxyConfig:
    try:
        tree = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = f"not valid YAML: {exc.problem or exc.context}"
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise ProxyConfigError([PlanIssue(filename, line, col, "", message)]) from None
    except YAMLError as exc:
        raise ProxyConfigError(
            [PlanIssue(filename, None, None, "", f"not valid YAML: {exc}")]
        ) from None
    if not isinstance(tree, CommentedMap):
        message = "the config is a mapping (listen, admin, backends, ...)"
        raise ProxyConfigError([PlanIssue(filename, 1, 1, "", message)])
    converter = PlainConverter(filename)
    data = converter.convert(tree, (0, 0))
    if converter.issues:
        raise ProxyConfigError(finish_issues(converter.issues))
    try:
        return ProxyConfig.model_validate(data)
    except ValidationError as exc:
        issues = _validation_issues(exc.errors(include_url=False), tree, filename)
    except ConfigInvalid as exc:
        issues = [_located(tree, loc, message, filename) for loc, message in exc.problems]
    raise ProxyConfigError(finish_issues(issues))


def _located(tree: CommentedMap, loc: Loc, message: str, filename: str) -> PlanIssue:
    spot = walk(tree, loc, missing=True)
    line, col = spot.anchor
    return PlanIssue(filename, line + 1, col + 1, render_path(spot.path), message)


def _validation_issues(errors: list[Any], tree: CommentedMap, filename: str) -> list[PlanIssue]:
    issues: list[PlanIssue] = []
    unions: set[str] = set()
    for err in errors:
        spot = walk(tree, err["loc"], missing=err["type"] == "missing")
        where = render_path(spot.path)
        if spot.sites:  # one alternative of a union (the token: a string or {file: ...})
            if where in unions:
                continue
            unions.add(where)
            message = "expected a reference such as '${ROUTER_TOKEN}' or {file: path}"
        elif err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            allowed = _allowed_keys(err["loc"][:-1])
            hint = suggest(key, allowed) or (
                f" (known keys: {', '.join(allowed)})" if allowed else ""
            )
            line, col = spot.key_pos or spot.anchor
            issues.append(
                PlanIssue(filename, line + 1, col + 1, where, f"unknown key {key!r}{hint}")
            )
            continue
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = pydantic_message(err)
        line, col = spot.anchor
        issues.append(PlanIssue(filename, line + 1, col + 1, where, message))
    return issues


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys of the model at ``loc`` (for did-you-mean), following the config's nesting."""
    model: Any = ProxyConfig
    for seg in loc:
        if model in ("backends", "instances"):  # a backend's name, then an instance's index
            model = "instances" if model == "backends" else Upstream
        elif model is ProxyConfig and seg == "backends":
            model = "backends"
        elif isinstance(seg, str) and _is_model(model) and seg in model.model_fields:
            model = model.model_fields[seg].annotation
        else:
            return []
    return list(model.model_fields) if _is_model(model) else []


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


__all__ = [
    "DEFAULT_STATE_FILE",
    "Admin",
    "ConfigInvalid",
    "FileRef",
    "Health",
    "Hold",
    "LimitsConfig",
    "Listen",
    "LoadedProxyConfig",
    "Mirror",
    "ProxyConfig",
    "ProxyConfigError",
    "Upstream",
    "Writes",
    "is_loopback",
    "load_proxy_config",
    "parse_proxy_config",
]
