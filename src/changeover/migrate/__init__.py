"""SQLite → PostgreSQL migration: introspection (``sqlite``), DDL mapping (``schema``), type audit.

Each dialect has its own module stating its normalisation contract; the mapping and the audit's
suggestions are pure functions over the plain dataclasses that ``sqlite.introspect`` returns.
"""
