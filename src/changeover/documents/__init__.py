"""Documents generated from the plan, for people: the runbook (``changeover runbook``).

Pure functions from a validated ``Plan`` to text; nothing is resolved, read or run, so a
document can be made on any machine and never holds a secret's value.
"""

from changeover.documents.runbook import runbook_markdown

__all__ = ["runbook_markdown"]
