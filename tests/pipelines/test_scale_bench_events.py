"""The scale benchmark reports how many asset events a batch member logs and what the batch adds per event, so a
change to the events or to their storage shows in ``make bench`` (issue 14: the event log is most of a member's
cost). Pure arithmetic over given measurements: no timing is asserted."""

from __future__ import annotations

from typing import Any

import pytest

from bench.scale_bench import _summary, table


def _measured(cpu_per_connection: float, connections: int, **extra: Any) -> dict[str, Any]:
    return {
        "connections": connections,
        "cpu_s": cpu_per_connection * connections,
        "cpu_s_per_connection": cpu_per_connection,
        "wall_s_per_connection": cpu_per_connection,
        "requests_per_connection": 11.0,
        **extra,
    }


def test_the_batch_overhead_is_spread_over_the_asset_events_members_logged() -> None:
    events = {"materializations": 3000, "check_evaluations": 3000}  # 100 members x 15 types x (2 + 2)
    batch = _measured(1.1, 100, asset_events=events)
    result = _summary(
        100, 50, _measured(0.5, 100), _measured(0.25, 100), batch, _measured(5.0, 20), [_measured(3.25, 1)]
    )
    fixed = 2 * (3.25 - 0.25) / 100  # two runs of 50, each paying a run's own cost once
    assert result["batch_overhead_cpu_s_per_connection"] == pytest.approx(1.1 - fixed - 0.25, abs=1e-4)
    assert result["batch_asset_events_per_connection"] == 60
    assert result["batch_overhead_cpu_ms_per_asset_event"] == pytest.approx(1000 * (1.1 - fixed - 0.25) / 60, 0.01)
    assert "60.0 asset events per member" in table([result])


def test_no_asset_events_reports_no_cost_per_event() -> None:
    result = _summary(2, 2, _measured(0.5, 2), _measured(0.25, 2), _measured(1.0, 2), _measured(5.0, 1), [])
    assert result["batch_asset_events_per_connection"] == 0
    assert result["batch_overhead_cpu_ms_per_asset_event"] is None
