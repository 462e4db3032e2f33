"""The SQL that prepares a Supabase project for lorapod: migrations and their rollbacks, shipped with the package.

``migrations/001_lorapod.sql`` creates the tables, row-level security and the ``model-artifacts`` bucket;
``rollback/001_lorapod.sql`` removes them. Apply them in the SQL editor or with psql (docs/supabase.md);
``lorapod sync --print-sql migration`` prints the newest.
"""

from __future__ import annotations

from importlib import resources

MIGRATIONS = ("001_lorapod",)


def migration_sql(name: str = MIGRATIONS[-1]) -> str:
    """The text of one migration script."""
    return _read("migrations", name)


def rollback_sql(name: str = MIGRATIONS[-1]) -> str:
    """The text of one migration's rollback script."""
    return _read("rollback", name)


def _read(folder: str, name: str) -> str:
    if name not in MIGRATIONS:
        raise ValueError(f"no Supabase migration {name!r} (have: {', '.join(MIGRATIONS)})")
    return resources.files(__name__).joinpath(folder, f"{name}.sql").read_text(encoding="utf-8")
