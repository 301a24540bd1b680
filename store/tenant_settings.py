"""Tenants' stored ``settings`` as they are, read as text and parsed row by row.

A row whose settings do not parse as JSON (a hand edit of an SQLite app database) would make the ORM's JSON column
raise a bare ``JSONDecodeError`` for whoever loads it: every tenant of a query, and a message naming neither the
tenant nor the setting. Read here, such a row is ``NOT_JSON`` for that tenant alone, for the caller to name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from store.models import Tenant

__all__ = ["NOT_JSON", "stored_settings"]

#: A tenant row whose ``settings`` do not parse as JSON: neither on nor off, for the caller to name.
NOT_JSON = object()


def stored_settings(session: Session, tenant_ids: Iterable[str]) -> dict[str, object]:
    """Each tenant's ``settings`` (those with a row; SQL or JSON null: ``{}``), or ``NOT_JSON``; one query. JSON that
    is no object is returned as it is, for ``read_switch`` to name (``settings must be an object``): read as ``{}``, a
    falsy one (``[]``, ``false``, ``0``) turned every switch off, a note blocked and an owed Provenance cleared as if
    the tenant had said no, where a truthy one (``[1]``, ``true``) was named."""
    wanted = sorted(set(tenant_ids))
    if not wanted:
        return {}
    rows = session.execute(select(Tenant.id, cast(Tenant.settings, Text)).where(Tenant.id.in_(wanted))).all()
    stored: dict[str, object] = {}
    for tid, text in rows:
        try:
            parsed = json.loads(text) if text is not None else None
            stored[str(tid)] = {} if parsed is None else parsed
        except ValueError:
            stored[str(tid)] = NOT_JSON
    return stored
