"""Executing a search over generated data + overlay, one page at a time with keyset cursors.

Natural order is (patient, id), so a page only regenerates the patients it touches; ``_sort=_lastUpdated``
orders by (lastUpdated, id) and scans the whole candidate set once per page, keeping only keys in memory.
Keyset cursors keep paging stable while a writer changes data (BDX-33).
"""

from __future__ import annotations

from typing import Any

from sandbox.data.ids import SHARED_TYPES, parse_id
from sandbox.data.store import DataStore
from sandbox.errors import ResourceGone, ResourceNotFound
from sandbox.fhir.permission import Permission
from sandbox.fhir.query import SearchQuery, matches
from sandbox.fhir.responses import FhirFailure

Resource = dict[str, Any]
Cursor = list[Any]
ORPHANS = -1


def candidate_patients(store: DataStore, q: SearchQuery, perm: Permission) -> list[int] | None:
    """Patient indexes to scan, or None for shared (non-compartment) types."""
    if q.resource_type in SHARED_TYPES:
        return None
    own = None
    if perm.patient is not None:
        parsed = parse_id("Patient", perm.patient)
        own = parsed[1] if parsed else -1
    if q.resource_type == "Patient" and q.ids is not None:
        wanted = sorted({p[1] for i in q.ids if (p := parse_id("Patient", i)) and p[1] < store.patients})
    elif q.patients is not None:
        wanted = sorted({p for p in q.patients if p < store.patients})
        if own is not None and any(p != own for p in wanted):
            raise FhirFailure(403, "forbidden", "token is limited to another patient's compartment")
    else:
        # ORPHANS last: created resources that belong to no patient (a POSTed Binary).
        wanted = [*range(store.patients), ORPHANS]
    return wanted if own is None else [p for p in wanted if p == own]


def _group(store: DataStore, q: SearchQuery, perm: Permission, patients: list[int] | None, pos: int) -> list[Resource]:
    types = (q.resource_type,)
    if patients is None:
        items = store.shared_resources(types)
    elif patients[pos] == ORPHANS:
        items = store.orphan_resources(types)
    else:
        items = store.patient_resources(patients[pos], types)
    return [r for r in items if matches(q, r) and perm.allows(r)]


def natural_page(
    store: DataStore, q: SearchQuery, perm: Permission, cursor: Cursor | None
) -> tuple[list[Resource], Cursor | None]:
    patients = candidate_patients(store, q, perm)
    n_groups = 1 if patients is None else len(patients)
    pos, last_id = (int(cursor[0]), str(cursor[1])) if cursor else (0, "")
    page: list[tuple[int, Resource]] = []
    while pos < n_groups and len(page) <= q.count:
        group = sorted(_group(store, q, perm, patients, pos), key=lambda r: str(r["id"]))
        page.extend((pos, r) for r in group if not last_id or str(r["id"]) > last_id)
        pos, last_id = pos + 1, ""
    if len(page) <= q.count:
        return [r for _, r in page], None
    last_pos, last = page[q.count - 1]
    return [r for _, r in page[: q.count]], [last_pos, last["id"]]


def sorted_page(
    store: DataStore, q: SearchQuery, perm: Permission, cursor: Cursor | None
) -> tuple[list[Resource], Cursor | None]:
    patients = candidate_patients(store, q, perm)
    desc = (q.sort or "").startswith("-")
    keys: list[tuple[str, str, int]] = []
    for pos in range(1 if patients is None else len(patients)):
        for r in _group(store, q, perm, patients, pos):
            key = (str(r["meta"]["lastUpdated"]), str(r["id"]), pos)
            if cursor is None or ((key[:2] < tuple(cursor)) if desc else (key[:2] > tuple(cursor))):
                keys.append(key)
    keys.sort(reverse=desc)
    chosen = keys[: q.count]
    wanted: dict[int, set[str]] = {}
    for _, rid, pos in chosen:
        wanted.setdefault(pos, set()).add(rid)
    found: dict[str, Resource] = {}
    for pos, ids in wanted.items():
        found.update({r["id"]: r for r in _group(store, q, perm, patients, pos) if r["id"] in ids})
    page = [found[rid] for _, rid, _ in chosen if rid in found]
    more = len(keys) > q.count
    return page, ([chosen[-1][0], chosen[-1][1]] if more and chosen else None)


def previous_last(store: DataStore, q: SearchQuery, cursor: Cursor | None) -> list[Resource]:
    """The match a paging cursor was taken after (the previous page's last: both kinds of cursor end with its id),
    or none when there is no cursor or it is gone since (the ``search_overlap`` fault sends it again)."""
    if not cursor:
        return []
    try:
        return [store.read(q.resource_type, str(cursor[-1]))]
    except (ResourceGone, ResourceNotFound):
        return []
