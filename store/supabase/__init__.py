"""The SQL that prepares a Supabase project for lorapod: migrations and their rollbacks, shipped with the package.

``migrations/003_lorapod_ratings.sql`` adds the blind human ratings (needs 002).
``migrations/002_lorapod_schema.sql`` creates lorapod's tables in the schema ``lorapod`` (beside the web
app's in ``public``), with row-level security, read-only views for the web app and the ``model-artifacts``
bucket, and moves there the tables an earlier ``001_lorapod.sql`` made in ``public``. ``rollback/…`` remove
only what lorapod made. Apply them in the SQL editor or with psql (docs/supabase.md); ``lorapod sync
--print-sql migration`` prints the current ones (002, then 003) as one script.
"""

from __future__ import annotations

from importlib import resources

MIGRATIONS = ("001_lorapod", "002_lorapod_schema", "003_lorapod_ratings")
# What a database needs today, in order (002 supersedes 001 and moves its tables); rollbacks run in reverse.
CURRENT = ("002_lorapod_schema", "003_lorapod_ratings")
SCHEMA = "lorapod"  # where lorapod's tables live in the Supabase database
MARKER = "lorapod"  # how every comment lorapod writes on its objects begins


def migration_sql(name: str | None = None) -> str:
    """The text of one migration script; by default every current one, in order, as one script."""
    names = CURRENT if name is None else (name,)
    return "\n".join(_read("migrations", n) for n in names)


def rollback_sql(name: str | None = None) -> str:
    """The text of one migration's rollback script; by default every current one's, newest first."""
    names = tuple(reversed(CURRENT)) if name is None else (name,)
    return "\n".join(_read("rollback", n) for n in names)


def _read(folder: str, name: str) -> str:
    if name not in MIGRATIONS:
        raise ValueError(f"no Supabase migration {name!r} (have: {', '.join(MIGRATIONS)})")
    return resources.files(__name__).joinpath(folder, f"{name}.sql").read_text(encoding="utf-8")
