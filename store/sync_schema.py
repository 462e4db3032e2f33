"""Whether a Supabase database holds lorapod's tables, and if not, which of three things is the matter.

    check_remote_schema(connection, where)   raises SyncSchemaMissing or SyncSchemaConflict

lorapod's tables live in the schema ``lorapod``; the web app's, some with the same names, in ``public``. A
table is lorapod's when its comment carries lorapod's marker and it has ``sync_xid``. So a database may lack
the schema (apply the migration), still hold lorapod 001's tables in ``public`` (apply the migration: it
moves them), or hold a foreign table where lorapod's should be (nothing lorapod will write into).
"""

from __future__ import annotations

import sqlalchemy as sa

from store.errors import SyncSchemaConflict, SyncSchemaMissing
from store.supabase import MARKER, SCHEMA

REMOTE_TABLES = (
    "training_jobs", "job_attempts", "model_artifacts", "training_metrics_history", "job_events", "ratings",
)  # fmt: skip
MIGRATION_HINT = (
    'apply the migration: `lorapod sync --print-sql migration | psql "$SUPABASE_DB_URL"`, or paste it '
    "into the SQL editor (docs/supabase.md)"
)

_TABLES = sa.text(
    """
    SELECT n.nspname AS schema, c.relname AS name,
           coalesce(obj_description(c.oid, 'pg_class'), '') LIKE :marker AS marked,
           EXISTS (SELECT 1 FROM pg_attribute a
                   WHERE a.attrelid = c.oid AND a.attname = 'sync_xid' AND NOT a.attisdropped) AS stamped
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname IN (:schema, 'public') AND c.relname = ANY(:names) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    """
)


def check_remote_schema(connection: sa.Connection, where: str) -> None:
    """Raise unless all of lorapod's tables are in its schema; ``where`` is host:port/database."""
    has_schema = connection.execute(sa.text("SELECT to_regnamespace(:s) IS NOT NULL"), {"s": SCHEMA}).scalar()
    rows = connection.execute(
        _TABLES, {"marker": f"{MARKER}%", "schema": SCHEMA, "names": list(REMOTE_TABLES)}
    ).mappings()
    found = {(row["schema"], row["name"]): (bool(row["marked"]), bool(row["stamped"])) for row in rows}
    foreign = [
        f"{SCHEMA}.{name}"
        for name in REMOTE_TABLES
        if (SCHEMA, name) in found and found[(SCHEMA, name)] != (True, True)
    ]
    if foreign:
        raise SyncSchemaConflict(
            f"the Supabase database at {where} has {', '.join(foreign)}, but not lorapod's: a table of another "
            "app has that name (no lorapod marker, or no sync_xid column). lorapod writes nothing into it; "
            "rename it, then apply the migration (docs/supabase.md, 'Conflicts')"
        )
    missing = [name for name in REMOTE_TABLES if (SCHEMA, name) not in found]
    if not missing:
        return
    legacy = [name for name in REMOTE_TABLES if found.get(("public", name), (False, False))[0]]
    others = [f"public.{name}" for name in REMOTE_TABLES if ("public", name) in found and name not in legacy]
    if legacy:
        what = (
            f"lorapod's tables are still in public (lorapod 001: {', '.join(legacy)}); the newest migration "
            "moves them, rows included"
        )
    elif not has_schema:
        what = f"there is no schema {SCHEMA}, where lorapod's tables live"
    else:
        what = f"schema {SCHEMA} lacks {', '.join(f'{SCHEMA}.{name}' for name in missing)}"
    aside = (
        f" ({', '.join(others)} there belong to another app, the web app most likely, and stay as they are)"
        if others
        else ""
    )
    raise SyncSchemaMissing(f"the Supabase database at {where}: {what}{aside}. To sync, {MIGRATION_HINT}")
