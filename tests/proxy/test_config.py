"""The proxy config file: a valid one, each invalid case with a located message, the token."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from changeover.errors import SecretError, UsageError
from changeover.proxy.config import ProxyConfigError, load_proxy_config, parse_proxy_config
from changeover.proxy.limits import GIB, KIB, Limits
from changeover.proxy.state import Instance

VALID = """\
listen: {host: 127.0.0.1, port: 18080}
admin:
  host: 0.0.0.0
  port: 19901
  token: "${ROUTER_TOKEN}"
backends:
  legacy:
    - {name: a, url: "http://127.0.0.1:9001"}
    - {name: b, url: "http://127.0.0.1:9002"}
  new:
    - {name: a, url: "http://localhost:9101/"}
weights: {legacy: 90, new: 10}
write_owner: legacy
writes: {methods: [POST, PUT], exclude: ["/api/search"], also: ["GET /logout"]}
ryw_window: 3s
session_cookie: sid
limits: {max_body_bytes: 1GiB, max_header_bytes: 32KiB, upstream_timeout: 30s}
hold: {max_hold: 2s, max_queue: 500}
mirror: {share: 5%, ignore_paths: [updated_at]}
health: {path: /health, interval: 1s, rise: 1, fall: 2}
"""


def write(tmp_path: Path, text: str, name: str = "proxy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(text: str) -> str:
    with pytest.raises(ProxyConfigError) as info:
        parse_proxy_config(text, "proxy.yaml")
    return str(info.value)


def test_valid_file_loads_with_every_section(tmp_path: Path) -> None:
    loaded = load_proxy_config(write(tmp_path, VALID))
    config = loaded.config
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 18080)
    assert config.instances()["new"] == [Instance("new", "a", "localhost", 9101)]
    assert config.ryw_window == timedelta(seconds=3)
    assert config.mirror.share == pytest.approx(0.05)
    limits = config.limits.to_limits()
    assert isinstance(limits, Limits)
    assert (limits.max_body_bytes, limits.max_header_bytes) == (GIB, 32 * KIB)
    assert limits.upstream_timeout == 30.0
    assert limits.max_concurrency == Limits().max_concurrency
    state = config.initial_state()
    assert state.weights == {"legacy": 90.0, "new": 10.0}
    assert (state.write_owner, state.mirror_share, state.version) == ("legacy", 0.05, 0)
    assert loaded.state_path == tmp_path / ".changeover" / "proxy-state.json"


def test_json_config_and_defaults(tmp_path: Path) -> None:
    data = {"backends": {"legacy": [{"name": "a", "url": "http://127.0.0.1:1"}]}}
    loaded = load_proxy_config(write(tmp_path, json.dumps(data), "proxy.json"))
    config = loaded.config
    assert (config.listen.port, config.admin.port, config.admin.host) == (8080, 9901, "127.0.0.1")
    assert config.initial_state().weights == {"legacy": 100.0}
    assert config.initial_state().write_owner == "legacy"
    assert config.writes.methods == ["POST", "PUT", "PATCH", "DELETE"]
    assert loaded.admin_token() is None


def test_token_is_resolved_only_when_asked(tmp_path: Path) -> None:
    loaded = load_proxy_config(write(tmp_path, VALID))  # ROUTER_TOKEN unset: loading works
    with pytest.raises(SecretError, match="ROUTER_TOKEN is not set"):
        loaded.admin_token(environ={})
    assert loaded.admin_token(environ={"ROUTER_TOKEN": "s3cret-token"}) == "s3cret-token"


def test_token_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file-token\n")
    text = VALID.replace('token: "${ROUTER_TOKEN}"', "token: {file: token}")
    assert load_proxy_config(write(tmp_path, text)).admin_token() == "from-file-token"


def test_literal_token_is_refused() -> None:
    message = problems(VALID.replace('"${ROUTER_TOKEN}"', "hunter2hunter2"))
    assert "proxy.yaml:5:" in message
    assert "admin.token: write a reference such as '${ROUTER_TOKEN}'" in message
    assert "hunter2" not in message


def test_admin_off_loopback_needs_a_token() -> None:
    message = problems(VALID.replace('  token: "${ROUTER_TOKEN}"\n', ""))
    assert "proxy.yaml:3:9: admin.host: the admin API on 0.0.0.0 (not loopback) needs a token" in (
        message
    )


def test_admin_on_loopback_may_go_without_token() -> None:
    text = VALID.replace("  host: 0.0.0.0\n", "").replace('  token: "${ROUTER_TOKEN}"\n', "")
    assert parse_proxy_config(text, "proxy.yaml").admin.token is None


def test_weights_must_sum_to_100() -> None:
    message = problems(VALID.replace("{legacy: 90, new: 10}", "{legacy: 90, new: 20}"))
    assert "proxy.yaml:12:1: weights: must sum to 100 (they sum to 110)" in message


def test_weight_for_an_unknown_backend() -> None:
    message = problems(VALID.replace("{legacy: 90, new: 10}", "{legacy: 90, neww: 10}"))
    assert "weights.neww: unknown backend 'neww' (did you mean 'new'?)" in message


def test_write_owner_must_be_a_backend() -> None:
    message = problems(VALID.replace("write_owner: legacy", "write_owner: legasy"))
    assert "proxy.yaml:13:14: write_owner: 'legasy' is not a backend (did you mean 'legacy'?)" in (
        message
    )


def test_instance_names_are_unique_within_a_backend() -> None:
    message = problems(VALID.replace("{name: b,", "{name: a,"))
    assert "backends.legacy[1].name: instance 'a' is repeated" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://127.0.0.1:9002", "https is not supported to upstreams"),
        ("http://127.0.0.1", "the port is missing"),
        ("http://127.0.0.1:9002/app", "without a path or query"),
        ("http://user:pw@127.0.0.1:9002", "a user or password does not belong"),
        ("tcp://127.0.0.1:9002", "expected http://host:port"),
        ("http://127.0.0.1:99999", "not a valid URL"),
    ],
)
def test_upstream_urls_are_http_host_port_only(url: str, expected: str) -> None:
    message = problems(VALID.replace("http://127.0.0.1:9002", url))
    assert "proxy.yaml:9:22: backends.legacy[1].url: " in message
    assert expected in message


def test_unknown_key_suggests_the_right_one() -> None:
    message = problems(VALID.replace("ryw_window:", "ryw_windw:"))
    assert "proxy.yaml:15:1: ryw_windw: unknown key 'ryw_windw' (did you mean 'ryw_window'?)" in (
        message
    )


def test_unknown_key_in_an_instance() -> None:
    message = problems(VALID.replace("{name: b, url:", "{name: b, ulr:"))
    assert "backends.legacy[1].ulr: unknown key 'ulr' (did you mean 'url'?)" in message


def test_bad_values_name_the_field() -> None:
    text = VALID.replace("interval: 1s", "interval: soon").replace("max_queue: 500", "max_queue: 0")
    message = problems(text)
    assert "health.interval: expected a duration" in message
    assert "hold.max_queue:" in message


def test_bad_size_names_the_field() -> None:
    message = problems(VALID.replace("32KiB", "lots"))
    assert "limits.max_header_bytes: expected a size like 65536, '64KiB' or '1GiB'" in message


def test_admin_port_cannot_be_the_listen_port() -> None:
    message = problems(VALID.replace("port: 19901", "port: 18080"))
    assert "admin.port: port 18080 is also the proxy's listen port" in message


def test_yaml_syntax_error_is_located() -> None:
    message = problems("backends: {legacy: [\n")
    assert message.startswith("proxy.yaml:")
    assert "not valid YAML" in message


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_proxy_config(tmp_path / "nope.yaml")


def test_not_a_mapping() -> None:
    assert "the config is a mapping" in problems("- a\n- b\n")


def test_bad_mirror_ignore_path_is_located() -> None:
    message = problems(VALID.replace("ignore_paths: [updated_at]", 'ignore_paths: ["items["]'))
    assert "proxy.yaml:19:" in message
    assert "mirror.ignore_paths[0]:" in message
