"""The pure parts of the routers: weight maths, parsing HAProxy's and nginx's output, rendering."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from changeover.errors import ChangeoverError
from changeover.plan.systems import RouterSystem
from changeover.probes.base import ProbeContext
from changeover.traffic import RouterError, Server, open_router, server_weights
from changeover.traffic.haproxy import parse_address, parse_show_stat, parse_status
from changeover.traffic.nginx import (
    RenderSettings,
    UpstreamState,
    count_log_line,
    nginx_message,
    parse_include,
    render_upstream,
)
from changeover.traffic.router import RouterStats, normalise_percent, shares

TWO_LEGACY_ONE_NEW = {"legacy": ["legacy-1", "legacy-2"], "new": ["new-1"]}


def test_router_errors_are_changeover_errors() -> None:
    assert issubclass(RouterError, ChangeoverError)


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (10, {"legacy-1": 252, "legacy-2": 252, "new-1": 56}),  # exactly 10 %
        (50, {"legacy-1": 128, "legacy-2": 128, "new-1": 256}),
        (100, {"legacy-1": 0, "legacy-2": 0, "new-1": 256}),
        (0, {"legacy-1": 256, "legacy-2": 256, "new-1": 0}),
    ],
)
def test_server_weights_split_a_backend_share_across_its_servers(
    new: float, expected: dict[str, int]
) -> None:
    weights = server_weights({"legacy": 100 - new, "new": new}, TWO_LEGACY_ONE_NEW)
    assert weights == expected
    assert shares(weights, TWO_LEGACY_ONE_NEW)["new"] == pytest.approx(new)


def test_server_weights_stay_within_haproxy_limits_and_close_to_the_shares() -> None:
    layouts = [
        {"legacy": ["l1"], "new": ["n1"]},
        TWO_LEGACY_ONE_NEW,
        {"legacy": ["l1", "l2", "l3"], "new": ["n1", "n2"]},
        {"legacy": [f"l{i}" for i in range(7)], "new": ["n1"]},
    ]
    for layout, new in itertools.product(layouts, [0, 0.1, 1, 2.5, 10, 33.3, 50, 99, 99.9, 100]):
        weights = server_weights({"legacy": 100 - new, "new": new}, layout)
        assert all(0 <= w <= 256 for w in weights.values())
        assert shares(weights, layout)["new"] == pytest.approx(new, abs=0.4), (layout, new)
        for backend, share in (("legacy", 100 - new), ("new", new)):
            on_backend = [weights[name] for name in layout[backend]]
            assert (sum(on_backend) > 0) == (share > 0)  # only 0 % means no traffic
            assert max(on_backend) - min(on_backend) <= 1  # split evenly across servers


def test_server_weights_refuse_a_share_for_a_backend_without_servers() -> None:
    with pytest.raises(RouterError, match="new should get 10 % but has no server in service"):
        server_weights({"legacy": 90, "new": 10}, {"legacy": ["l1"], "new": []})


def test_normalise_percent_checks_names_range_and_sum() -> None:
    assert normalise_percent({"new": 100}, ["legacy", "new"]) == {"legacy": 0.0, "new": 100.0}
    with pytest.raises(RouterError, match="unknown backend green: the router knows legacy, new"):
        normalise_percent({"green": 100}, ["legacy", "new"])
    with pytest.raises(RouterError, match="between 0 and 100"):
        normalise_percent({"legacy": 110, "new": -10}, ["legacy", "new"])
    with pytest.raises(RouterError, match="must add up to 100 %, got 90"):
        normalise_percent({"legacy": 80, "new": 10}, ["legacy", "new"])
    with pytest.raises(RouterError, match="between 0 and 100"):
        normalise_percent({"legacy": float("nan"), "new": 10}, ["legacy", "new"])


SHOW_STAT = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,weight,hrsp_1xx,hrsp_2xx,hrsp_3xx,\
hrsp_4xx,hrsp_5xx
web,FRONTEND,,,0,0,9985,10,OPEN,,0,10,0,0,0
app,legacy-1,0,0,2,3,,120,UP,252,0,100,0,15,5
app,legacy-2,0,0,0,1,,80,DRAIN,252,0,80,0,0,0
app,new-1,0,0,0,1,,7,MAINT (via app/x),56,0,7,0,0,0
app,BACKEND,0,0,2,3,999,207,UP,560,0,187,0,15,5
other,s1,0,0,0,0,,1,UP,1,0,1,0,0,0
"""


def test_parse_show_stat_reads_columns_by_name() -> None:
    rows = parse_show_stat(SHOW_STAT, "app")
    assert set(rows) == {"legacy-1", "legacy-2", "new-1"}
    first = rows["legacy-1"]
    assert (first.status, first.weight, first.current_sessions, first.requests) == (
        "UP",
        252,
        2,
        120,
    )
    assert first.responses == {"1xx": 0, "2xx": 100, "3xx": 0, "4xx": 15, "5xx": 5}
    assert rows["legacy-2"].status == "DRAIN"
    assert rows["new-1"].status == "MAINT"


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("UP", "UP"),
        ("no check", "UP"),
        ("UP 1/3", "UP"),
        ("DOWN", "DOWN"),
        ("DOWN 1/2", "DOWN"),
        ("DRAIN", "DRAIN"),
        ("NOLB", "DRAIN"),
        ("MAINT", "MAINT"),
        ("MAINT (resolution)", "MAINT"),
        ("", "DOWN"),
    ],
)
def test_parse_status_maps_haproxy_states(text: str, status: str) -> None:
    assert parse_status(text) == status


@pytest.mark.parametrize(
    ("admin", "expected"),
    [
        ("/run/haproxy/admin.sock", ("unix", "/run/haproxy/admin.sock")),
        ("unix@/run/admin.sock", ("unix", "/run/admin.sock")),
        ("unix:///run/admin.sock", ("unix", "/run/admin.sock")),
        ("ipv4@127.0.0.1:9999", ("tcp", "127.0.0.1:9999")),
        ("tcp://127.0.0.1:9999", ("tcp", "127.0.0.1:9999")),
        ("127.0.0.1:9999", ("tcp", "127.0.0.1:9999")),
    ],
)
def test_parse_address_accepts_haproxy_socket_forms(admin: str, expected: tuple[str, str]) -> None:
    assert parse_address(admin) == expected


def test_parse_address_rejects_a_port_that_is_not_a_number() -> None:
    with pytest.raises(RouterError, match="expected a socket path or host:port"):
        parse_address("ipv4@127.0.0.1:admin")


SERVERS = [
    Server("legacy", "legacy-1", "127.0.0.1", 8001),
    Server("legacy", "legacy-2", "127.0.0.1", 8002),
    Server("new", "new-1", "127.0.0.1", 8101),
]


def test_render_and_parse_the_nginx_include_round_trip() -> None:
    state = UpstreamState(
        version=3,
        percent={"legacy": 90.0, "new": 10.0},
        weights={"legacy-1": 0, "legacy-2": 252, "new-1": 28},
        drained=frozenset({"legacy-1"}),
    )
    settings = RenderSettings(access_log=Path("/var/log/co.log"), status_listen="127.0.0.1:9902")
    text = render_upstream(state, SERVERS, settings)
    assert "hash $cookie_co_session consistent;" in text
    assert "server 127.0.0.1:8001 down;  # legacy/legacy-1 drained" in text
    assert "server 127.0.0.1:8002 weight=252;  # legacy/legacy-2" in text
    assert "access_log /var/log/co.log changeover_upstream;" in text
    assert "listen 127.0.0.1:9902;" in text
    parsed, lines = parse_include(text)
    assert parsed == state
    assert lines == {"127.0.0.1:8001": None, "127.0.0.1:8002": 252, "127.0.0.1:8101": 28}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1795698814.589 200 127.0.0.1:8101", ("127.0.0.1:8101", "2xx")),
        ("1795698814.589 502 127.0.0.1:8101, 127.0.0.1:8102", ("127.0.0.1:8102", "5xx")),
        ("1795698814.589 404 127.0.0.1:8101 : 127.0.0.1:8002", ("127.0.0.1:8002", "4xx")),
        ("1795698814.589 200 -", None),  # answered by nginx itself (status server)
        ("garbage", None),
    ],
)
def test_count_log_line_takes_the_last_upstream_tried(
    line: str, expected: tuple[str, str] | None
) -> None:
    assert count_log_line(line) == expected


def test_nginx_message_keeps_the_emerg_line() -> None:
    stderr = (
        b'nginx: [emerg] unknown directive "bogus" in /etc/nginx/co.conf:7\n'
        b"nginx: configuration file /etc/nginx/nginx.conf test failed\n"
    )
    assert nginx_message(stderr) == '[emerg] unknown directive "bogus" in /etc/nginx/co.conf:7'


def test_router_stats_totals_per_backend() -> None:
    from changeover.traffic import InstanceStats

    stats = RouterStats(
        (
            InstanceStats("legacy", "l1", "UP", 1, 0, 10, {"2xx": 9, "5xx": 1}),
            InstanceStats("legacy", "l2", "UP", 1, 0, 5, {"2xx": 5}),
            InstanceStats("new", "n1", "UP", 1, 0, 2, {"2xx": 2}),
        )
    )
    assert stats.requests("legacy") == 15
    assert stats.responses("legacy") == {"1xx": 0, "2xx": 14, "3xx": 0, "4xx": 0, "5xx": 1}


def test_open_router_names_what_the_plan_lacks() -> None:
    with pytest.raises(RouterError, match=r"systems\.lb: an HAProxy router needs 'admin'"):
        open_router(RouterSystem(type="haproxy"), SERVERS, ProbeContext(), name="lb")
    with pytest.raises(RouterError, match="an nginx router needs 'config'"):
        open_router(RouterSystem(type="nginx"), SERVERS, ProbeContext())
    with pytest.raises(RouterError, match=r"built-in proxy router needs 'admin'"):
        open_router(RouterSystem(type="builtin"), SERVERS, ProbeContext())


def test_open_router_resolves_the_admin_reference_only_at_use() -> None:
    system = RouterSystem(type="haproxy", admin="${NO_SUCH_ADMIN_SOCKET}")
    with pytest.raises(ChangeoverError, match="NO_SUCH_ADMIN_SOCKET"):
        open_router(system, SERVERS, ProbeContext(environ={}))
