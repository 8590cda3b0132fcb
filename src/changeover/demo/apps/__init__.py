"""The demo's sample apps: a legacy app (sync, SQLite) and a new app (async, PostgreSQL, Redis)."""
