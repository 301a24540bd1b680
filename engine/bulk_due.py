"""Due Bulk runs the tenant's switch refuses (``engine.bulk_switch``), taken out of the scheduler's plan.

Such a run would fail ``bulk_not_enabled`` before any request: nothing sent, a failed run in the Dagster UI and a
failure alert, again at every retry of its backoff (up to every 6 h), for a tenant who turned Bulk export off on
purpose. The scheduler requests none and counts them (its tick names the count and the setting, no tenant or
patient). Turned on again, a connection is asked for at the next tick by its usual rules (its slot, or the retry of
its failure streak); an export it kicked off before keeps its job and files and is resumed by that run.
A switch stored neither true nor false (``tenant_setting_invalid``) is a misconfiguration, not a choice: its run
is still requested, so it fails naming the setting where failures are watched (the run list, alerts), at the
backoff's pace, until someone fixes the row. The database failing that read asks for every due run as if the
switches were on (warned, naming the error): this check only spares runs, each run reads its switch itself and
fails by name, and the tick's other connections are not held back by it. Manual runs (the Dagster UI,
``ehrsync sync``) are not planned here: they fail by name.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.exc import SQLAlchemyError

from connectors.errors import ConfigurationError
from engine.bulk_switch import BULK_SWITCH_PATH, bulk_refusals
from engine.errors import BulkExportNotEnabledError
from engine.planning import DueRun
from engine.scheduling import DueReason
from store import AppDatabase
from store.database import database_error_text

__all__ = ["BULK_OFF", "bulk_off_note", "bulk_tenants", "drop_bulk_refused", "read_bulk_refusals"]

#: The tally's key (and the runs' refusal code) for due Bulk connections whose tenant's switch is off.
BULK_OFF = BulkExportNotEnabledError.code


def bulk_tenants(due: list[DueRun]) -> dict[str, str | None]:
    """The due Bulk connections' tenants (connection id -> tenant id): what ``bulk_refusals`` reads."""
    return {d.connection.id: d.connection.tenant_id or None for d in due if d.connection.is_bulk}


def read_bulk_refusals(db: AppDatabase, due: list[DueRun]) -> tuple[dict[str, ConfigurationError], str | None]:
    """``bulk_refusals`` of ``due``'s Bulk connections; the database failing the read: none, and the warning that
    names the error (no statement, no parameters), so that the tick neither fails nor skips a run for it."""
    try:
        return bulk_refusals(db, bulk_tenants(due)), None
    except SQLAlchemyError as exc:
        return {}, (
            f"scheduled syncs: the due Bulk connections' {BULK_SWITCH_PATH} could not be read"
            f" ({database_error_text(exc)}): requested as if on, each run checks its switch itself"
        )


def drop_bulk_refused(
    due: list[DueRun], refusals: Mapping[str, ConfigurationError], tally: dict[DueReason | str, int]
) -> tuple[list[DueRun], int]:
    """``due`` without the runs refused ``bulk_not_enabled`` (counted as ``BULK_OFF`` in ``tally``), and how many
    of those kept are refused ``tenant_setting_invalid`` (requested anyway: see the module's docstring)."""
    kept: list[DueRun] = []
    invalid = 0
    for run in due:
        refusal = refusals.get(run.connection.id)
        if isinstance(refusal, BulkExportNotEnabledError):
            tally[BULK_OFF] = tally.get(BULK_OFF, 0) + 1
            continue
        invalid += refusal is not None
        kept.append(run)
    return kept, invalid


def bulk_off_note(tally: Mapping[str, int]) -> str:
    """Why the tally's ``BULK_OFF`` connections were not requested ("" when none), as the tick's log and skip
    reason say it."""
    count = tally.get(BULK_OFF, 0)
    if not count:
        return ""
    return (
        f" ({count} due Bulk connection(s) not requested: their tenant's {BULK_SWITCH_PATH} is off; they are requested"
        " again once it is true)"
    )
