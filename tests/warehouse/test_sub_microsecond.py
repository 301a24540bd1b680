"""BDX-24 for copies whose ``lastUpdated`` differ only below a microsecond (7 to 9 fraction digits).

Both databases keep ``lastUpdated`` to the microsecond, so such copies have the same ``last_updated`` and the
merge orders them as it orders any two copies of equal ``lastUpdated``: a smaller numeric versionId never
replaces, then the copy the server answered later stays, whichever lands first. Servers cannot make two versions
of one resource within a microsecond, so the copy answered later is the newer one; the extra digits stay in the
stored JSON. (A pin of the decided behaviour, docs/ARCHITECTURE.md, on DuckDB and PostgreSQL.)
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, Warehouse

NEWER, OLDER = "2026-03-01T10:00:00.1234568Z", "2026-03-01T10:00:00.1234567Z"
EARLY, LATE = datetime(2026, 3, 1, 11, tzinfo=UTC), datetime(2026, 3, 1, 12, tzinfo=UTC)


def _stored(wh: Warehouse) -> tuple[datetime, str]:
    rows = list(wh.iter_rows("SELECT last_updated, CAST(resource AS VARCHAR) AS doc FROM fhir_resources"))
    assert len(rows) == 1
    return rows[0]["last_updated"], rows[0]["doc"]


@pytest.mark.parametrize("newer_first", [True, False])
def test_copies_equal_to_the_microsecond_keep_the_one_the_server_answered_later(
    wh: Warehouse, zone: LandingZone, newer_first: bool
) -> None:
    newer = [resource("a", NEWER, "v-b", status="final")]
    older = [resource("a", OLDER, "v-a", status="preliminary")]
    files = [(newer, LATE), (older, EARLY)]
    for n, (items, answered) in enumerate(files if newer_first else files[::-1]):
        stats = wh.upsert(land(zone, items, run_id=f"r{n}", transaction_time=answered))
    assert stats.updated == (0 if newer_first else 1)
    last_updated, doc = _stored(wh)
    assert last_updated == datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert NEWER in doc and '"final"' in doc
