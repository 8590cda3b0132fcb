"""Advice after the cutover (``changeover advise`` and the plan's ``advise`` steps).

Reads, never changes: slow statements, tables read by sequential scans, unused indexes and a pool
size (``postgres``, ``pool``), the cache's TTLs and hit rate (``redis``) and an error-log summary
(``logs``). Each module is pure analysis over fetched rows plus one thin fetch; ``gather``
combines them for the plan's systems.
"""

from changeover.advise.gather import TOPICS, Advice, gather_advice, topic_detail

__all__ = ["TOPICS", "Advice", "gather_advice", "topic_detail"]
