"""The REST marks a connection's new grant makes stale: types it lets the sync see more of than the grant before.

A mark stands for every search of its type up to that time. Under a grant that covered only part of a type (a
SMART v2 granular scope such as ``patient/Condition.rs?category=problem-list-item``, which the server applies to the
search itself; SAL-21) the mark moved on over the part shown, so when a patient's new authorization takes the
connection over with a grant that covers more of the type (``auth_service.services.reauthorization``), an
incremental search from that mark would never fetch the rest that is older than it: silent loss. Those types forget
their mark (and a waiting landing's: ``cursors.forget_marks``) and are searched whole by the next run. A type
the old grant covered whole (or any type, when its scopes were unknown: the sync then follows no grant) keeps its mark.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.smart import ScopeSet, parse_scopes
from engine.cursors import REST_STREAM, forget_marks
from engine.models import SyncCursor

__all__ = ["forget_widened_marks", "widens"]


def _coverage(scopes: ScopeSet, resource_type: str) -> set[tuple[tuple[str, str], ...]]:
    """The filter sets under which the grant lets the type be read or searched (``()``: the whole type)."""
    return set(scopes.filters_for(resource_type, "search") + scopes.filters_for(resource_type, "read"))


def widens(old_scopes: str | None, new_scopes: str | None, resource_type: str) -> bool:
    """Whether ``new_scopes`` let the sync see some of the type that ``old_scopes`` did not (``None``: unknown, which
    the sync reads as everything)."""
    if not old_scopes:
        return False
    old = _coverage(parse_scopes(old_scopes), resource_type)
    if () in old:
        return False
    if not new_scopes:
        return True
    return bool(_coverage(parse_scopes(new_scopes), resource_type) - old)


def forget_widened_marks(
    session: Session, connection_id: str, old_scopes: str | None, new_scopes: str | None
) -> list[str]:
    """In the caller's transaction, forget the REST marks of the types the new grant widens; returns those types."""
    rows = session.scalars(
        select(SyncCursor)
        .where(SyncCursor.connection_id == connection_id, SyncCursor.stream == REST_STREAM)
        .with_for_update()
    ).all()
    forgotten = []
    for row in rows:
        if (row.high_water_mark or row.pending_mark) and widens(old_scopes, new_scopes, row.resource_type):
            forget_marks(row)
            forgotten.append(row.resource_type)
    return sorted(forgotten)
