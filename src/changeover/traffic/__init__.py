"""Traffic routing: the ``Router`` protocol and its load balancers (HAProxy, nginx, built-in).

``open_router`` builds the router a plan's ``systems`` entry of kind ``router`` names.
"""

from changeover.traffic.router import (
    InstanceStats,
    Router,
    RouterError,
    RouterStats,
    Server,
    WeightMismatch,
    Weights,
    open_router,
    server_weights,
)

__all__ = [
    "InstanceStats",
    "Router",
    "RouterError",
    "RouterStats",
    "Server",
    "WeightMismatch",
    "Weights",
    "open_router",
    "server_weights",
]
