"""lorapod's local state: settings, the SQLite job ledger and its migrations, costs and budget.

Nothing outside this package writes SQL. Errors derive from ``store.errors.StoreError``.
"""

from store.errors import (
    AmbiguousJobId,
    CostError,
    IllegalTransition,
    JobNotFound,
    LedgerError,
    SettingsError,
    StoreError,
)

__all__ = [
    "AmbiguousJobId",
    "CostError",
    "IllegalTransition",
    "JobNotFound",
    "LedgerError",
    "SettingsError",
    "StoreError",
]
