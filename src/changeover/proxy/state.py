"""The proxy's routing state: what the admin API changes and what the balancer reads.

Plain data, no I/O. The admin API replaces it atomically (``dataclasses.replace``) and the
persistence layer writes it to disk after every change, so a restarted proxy keeps its weights,
write owner and drained instances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Instance:
    """One upstream server of a backend."""

    backend: str
    name: str
    host: str
    port: int

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.name}"


@dataclass(frozen=True)
class RoutingState:
    """Weights in percent per backend (summing to 100), the write owner, and switches."""

    weights: dict[str, float]
    write_owner: str
    holding: bool = False  # writes are held (queued) until release
    mirror_share: float = 0.0  # share of GET requests also sent to the other backend, 0..1
    drained: frozenset[str] = field(default_factory=frozenset)  # Instance.key of drained ones
    version: int = 0  # incremented on every change

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "write_owner": self.write_owner,
            "holding": self.holding,
            "mirror_share": self.mirror_share,
            "drained": sorted(self.drained),
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoutingState:
        return cls(
            weights={str(k): float(v) for k, v in data["weights"].items()},
            write_owner=str(data["write_owner"]),
            holding=bool(data.get("holding", False)),
            mirror_share=float(data.get("mirror_share", 0.0)),
            drained=frozenset(str(x) for x in data.get("drained", ())),
            version=int(data.get("version", 0)),
        )
