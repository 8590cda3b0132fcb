"""changeover: run a production cutover as an executable runbook."""

__version__ = "0.1.0"
