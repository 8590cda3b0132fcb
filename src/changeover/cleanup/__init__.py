"""After the cutover: the verified archive of journal, reports and logs; SQLite backups proven by
restoring; the legacy app's write access revoked; its decommission schedule as a calendar file.

``archive`` and ``sqlite`` are the library (usable without a plan); ``actions`` adapts them to
the plan's cleanup steps; ``calendar`` writes RFC 5545.
"""
