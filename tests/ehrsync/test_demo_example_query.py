"""The demo's printed example query answers what it says: the latest creatinine per connection and patient."""

from __future__ import annotations

import duckdb

from ehrsync.demo_analyst import EXAMPLE_QUERY


def test_the_latest_creatinine_counts_a_time_sent_as_a_period_end() -> None:
    """A newer result whose time came as an ``effectivePeriod`` with only its end (``effective`` NULL,
    ``effective_end`` set; docs/ANALYSTS.md) is the latest, not ranked after every dated one."""
    db = duckdb.connect()
    db.execute(
        "CREATE TABLE observation (patient_id TEXT, value_quantity DOUBLE, unit TEXT, effective TIMESTAMPTZ,"
        " effective_end TIMESTAMPTZ, connection_id TEXT, code TEXT)"
    )
    db.execute(
        "INSERT INTO observation VALUES ('p1', 1.1, 'mg/dL', '2024-01-01 00:00:00+00', NULL, 'c1', '2160-0'),"
        " ('p1', 2.2, 'mg/dL', NULL, '2025-06-01 00:00:00+00', 'c1', '2160-0'),"
        " ('p1', 9.9, 'mg/dL', '2026-01-01 00:00:00+00', NULL, 'c1', '718-7')"
    )
    rows = db.sql(EXAMPLE_QUERY).fetchall()
    assert [(r[0], r[1], r[4]) for r in rows] == [("p1", 2.2, "c1")]
    assert rows[0][3] is not None
