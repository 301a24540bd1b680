"""The REST searches that cover one resource type of a patient connection, and what the grant allows.

A vendor may fan a type out into several searches (Epic's Observation categories); the fan-out follows the scopes
the server granted, never the ones requested (SAL-21; vendors.md §2: an Epic API not on the app answers 403).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.connection_info import ConnectionInfo
from engine.errors import ConnectionNotSyncableError
from engine.search_recovery import format_instant

__all__ = ["grant_narrows", "plan_label", "scope_allows", "search_plans"]


def search_plans(
    conn: ConnectionInfo,
    resource_type: str,
    since: datetime | None,
    page_size: int,
    capabilities: dict[str, Any] | None = None,
    *,
    follow_grant: bool = True,
) -> list[dict[str, str]]:
    """The searches that together cover one type for the connection's patient (vendor fan-out included, over
    what the granted scopes cover unless ``follow_grant`` is false)."""
    if conn.patient_id is None:
        raise ConnectionNotSyncableError(f"connection {conn.id} has no patient: REST sync needs a patient context")
    provider = conn.provider
    granted = conn.scopes if follow_grant else None
    found = provider.search_plans(resource_type, conn.patient_id, config=conn.provider_config, granted=granted)
    plans = [dict(p) for p in found]
    # Without _lastUpdated support every run re-pulls the type; idempotent upserts keep that correct.
    use_mark = since is not None and provider.supports_last_updated(resource_type, capabilities)
    for plan in plans:
        plan.setdefault("_count", str(page_size))
        if use_mark and since is not None:
            plan["_lastUpdated"] = f"gt{format_instant(since)}"
    return plans


def scope_allows(conn: ConnectionInfo, resource_type: str) -> bool:
    """Some granted scope reads or searches the type (a granular one counts: it permits part of it)."""
    scopes = conn.scopes
    return scopes is None or scopes.allows(resource_type, "search") or scopes.allows(resource_type, "read")


def grant_narrows(conn: ConnectionInfo, resource_type: str) -> bool:
    """The granted scopes leave out some of the vendor's searches of the type (e.g. an Epic grant of lab
    Observations only): a listing of the type's ids would be partial."""
    narrowed = search_plans(conn, resource_type, None, 1)
    return len(narrowed) < len(search_plans(conn, resource_type, None, 1, follow_grant=False))


def plan_label(resource_type: str, plan: dict[str, str]) -> str:
    """The search for a person: the type and what tells this plan from the type's others (no patient id)."""
    named = [f"{k}={v}" for k, v in plan.items() if k not in ("patient", "subject", "_id", "_count", "_lastUpdated")]
    return f"{resource_type} ({', '.join(named)})" if named else resource_type
