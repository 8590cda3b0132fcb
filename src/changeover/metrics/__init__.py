"""Metric sources for the rollout controller (the contract is in base.py).

proxy (the built-in proxy's /metrics), prometheus (PromQL), postgres, redis, process (psutil),
sync (the migration's sync lag); ``registry.Metrics`` routes reads to them, bounded in time.
"""
