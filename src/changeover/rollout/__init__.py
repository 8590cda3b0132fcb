"""The rollout controller: phases, gates, decisions and rollback (see controller.py)."""
