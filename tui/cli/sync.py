"""``lorapod sync``: push the ledger to the Supabase project's Postgres and pull what others wrote there."""

from __future__ import annotations

import sys

import click

from store.errors import SyncError
from store.settings import load_settings
from tui.cli.output import emit_json, print_table


@click.command()
@click.option("--push", "direction", flag_value="push", help="Only send local changes.")
@click.option("--pull", "direction", flag_value="pull", help="Only take what others wrote.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True, help="Rows per transaction."
)
@click.option(
    "--print-sql",
    type=click.Choice(["migration", "rollback"]),
    help="Print the SQL that prepares a Supabase project for lorapod (or removes it) and exit.",
)
def sync(direction: str | None, as_json: bool, batch_size: int, print_sql: str | None) -> None:
    """Sync the ledger with SUPABASE_DB_URL: push local changes, then pull remote ones.

    Safe to interrupt: the next run goes on from where this one stopped. With no network it says so and
    exits 1; nothing local depends on it.
    """
    if print_sql is not None:
        from store.supabase import migration_sql, rollback_sql

        click.echo(migration_sql() if print_sql == "migration" else rollback_sql(), nl=False)
        return
    settings = load_settings()
    if settings.supabase_db_url is None:
        raise SyncError(
            "no SUPABASE_DB_URL: set it to the project's Postgres URL (Supabase dashboard → Connect), e.g. "
            "postgresql://postgres.REF:PASSWORD@aws-0-REGION.pooler.supabase.com:6543/postgres"
        )
    from store.sync import sync as run_sync
    from tui.cli.common import open_ledger

    def progress(table: str, step: str, rows: int) -> None:
        click.echo(f"{table}: {step}ed {rows:,} rows", err=True)

    report = run_sync(
        open_ledger(settings),
        settings.supabase_db_url.get_secret_value(),
        push=direction != "pull",
        pull=direction != "push",
        owner=settings.supabase_user_id,
        batch_size=batch_size,
        on_progress=progress,
    )
    if as_json:
        emit_json(report.to_dict())
        return
    rows = [
        (name, f"{c.sent:,}", f"{c.changed_remote:,}", f"{c.received:,}", f"{c.changed_local:,}")
        for name, c in report.tables.items()
    ]
    done = " and ".join(step for step, flag in (("pushed", report.pushed), ("pulled", report.pulled)) if flag)
    print_table(
        ["table", "sent", "changed there", "received", "changed here"],
        rows,
        title=f"{done} with {report.remote} in {report.seconds:.1f} s",
        justify={name: "right" for name in ("sent", "changed there", "received", "changed here")},
    )
    sys.exit(0)
