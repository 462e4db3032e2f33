"""The store's exceptions; every message is written for the user.

::

    StoreError
    ├── SettingsError          a setting, or a config file, that cannot be read or is invalid
    ├── LedgerError            the ledger cannot be opened, migrated or written
    ├── JobNotFound            no job matches an id or id prefix
    │   └── AmbiguousJobId     a prefix matches more than one job
    ├── IllegalTransition      a status change the status machine forbids
    ├── ReportError            a client report that cannot be written (store.report)
    ├── CostError              an estimate that cannot be made (unknown GPU, no model size)
    │   └── CalibrationError   a bench report that cannot calibrate the cost model (store.throughput)
    └── SyncError              a sync with the Supabase database that cannot be done (store.sync)
        ├── SyncUnavailable    the database cannot be reached: offline, local work goes on
        ├── SyncSchemaMissing  the database lacks lorapod's schema or tables (apply the migration)
        └── SyncSchemaConflict a table of another app stands where lorapod's should
"""

from __future__ import annotations

from engine import LorapodError


class StoreError(LorapodError):
    """Base class of the store's errors."""


class SettingsError(StoreError):
    """A setting or config file that cannot be read or does not validate."""


class LedgerError(StoreError):
    """The ledger cannot be opened, migrated or written."""


class JobNotFound(StoreError, LookupError):
    """No job matches the given id or prefix."""


class AmbiguousJobId(JobNotFound):
    """An id prefix that matches more than one job."""


class IllegalTransition(StoreError):
    """A status change the status machine forbids (a terminal job never changes again)."""


class CostError(StoreError, ValueError):
    """An estimate that cannot be made (unknown GPU, no model size)."""


class CalibrationError(CostError):
    """A bench report that cannot calibrate the cost model (not a report, a CPU or toy run, another GPU)."""


class SyncError(StoreError):
    """A sync with the shared Postgres that cannot be done; the message says why (never a credential)."""


class SyncUnavailable(SyncError):
    """The shared Postgres cannot be reached (offline, wrong host): local work goes on, sync catches up later."""


class SyncSchemaMissing(SyncError):
    """The shared Postgres lacks lorapod's schema or tables: store/supabase/migrations has the SQL to apply."""


class SyncSchemaConflict(SyncError):
    """A table in lorapod's schema that lorapod did not make (no marker, no sync_xid): nothing is written into it."""
