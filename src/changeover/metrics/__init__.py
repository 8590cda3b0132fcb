"""Metric sources for the rollout controller (see base.py)."""
