"""The SQL that prepares a Supabase project for lorapod: migrations and their rollbacks, shipped with the package.

``migrations/002_lorapod_schema.sql`` creates lorapod's tables in the schema ``lorapod`` (beside the web
app's in ``public``), with row-level security, read-only views for the web app and the ``model-artifacts``
bucket, and moves there the tables an earlier ``001_lorapod.sql`` made in ``public``. ``rollback/…`` remove
only what lorapod made. Apply them in the SQL editor or with psql (docs/supabase.md); ``lorapod sync
--print-sql migration`` prints the newest.
"""

from __future__ import annotations

from importlib import resources

MIGRATIONS = ("001_lorapod", "002_lorapod_schema")
SCHEMA = "lorapod"  # where lorapod's tables live in the Supabase database
MARKER = "lorapod"  # how every comment lorapod writes on its objects begins


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
