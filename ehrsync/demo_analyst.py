"""The demo's analyst steps: refresh the analyst views with the real ``analyst_views`` job, then show where the
data is, which tables an analyst finds, and one question answered in SQL against the published snapshot."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ehrsync.demo_report import say

if TYPE_CHECKING:
    from ehrsync.run_analyst import AnalystViewsResult
    from engine.settings import PipelineSettings

__all__ = ["EXAMPLE_QUERY", "analyst_summary", "python_query_command", "refresh_analyst_views"]

# Latest creatinine per patient: one row per connection and patient (a person synced through two connections
# stays two rows, each traceable to its source); a time sent as a period with only its end counts (docs/ANALYSTS.md).
EXAMPLE_QUERY = """SELECT patient_id, value_quantity AS creatinine, unit,
  COALESCE(effective, effective_end) AS effective, connection_id
FROM observation
WHERE code = '2160-0' AND value_quantity IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY connection_id, patient_id ORDER BY COALESCE(effective, effective_end) DESC) = 1
ORDER BY patient_id, connection_id"""


def refresh_analyst_views(settings: PipelineSettings) -> AnalystViewsResult:
    """Run ``analyst_views`` in-process (as ``ehrsync sync`` does; the sensor does it for scheduled runs)."""
    from ehrsync.demo_setup import DemoError
    from ehrsync.run_analyst import run_analyst_views_now

    result = run_analyst_views_now(settings=settings, console_log_level="ERROR")
    if not result.success or result.current is None:
        raise DemoError(f"analyst views not refreshed: {result.error}: see `make ui`")
    passed = sum(result.checks.values())
    checks = f"patient reference checks passed: {passed}/{len(result.checks)}"
    say(f"   {len(result.tables)} views refreshed and published; {checks}")
    return result


def _wrapped(items: list[str], width: int) -> list[str]:
    """Comma-separated items in lines of at most ``width`` characters, never splitting an item."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + len(item) + 2 <= width:
            lines[-1] += f", {item}"
        else:
            lines.append(item)
    return lines


def python_query_command(snapshot: Path | str, sql: str = "SELECT count(*) FROM observation") -> str:
    """A shell command that asks the snapshot ``sql`` with this Python's duckdb (the duckdb CLI is not installed)."""
    code = f"import duckdb; duckdb.connect({str(snapshot)!r}, read_only=True).sql({sql!r}).show()"
    quoted = f'"{code}"' if not set(code) & set('"$`\\!') else shlex.quote(code)
    return f"{shlex.quote(sys.executable)} -c {quoted}"


def _rows(table: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    line = "   " + "  ".join(f"{{:<{w}}}" for w in widths)
    say(line.format(*header))
    for row in table:
        say(line.format(*row))


def analyst_summary(warehouse_url: str, result: AnalystViewsResult) -> None:
    """Where the warehouse and the snapshot are, the tables with their rows, and the example query's answer."""
    import duckdb

    say(f"\n   warehouse         {warehouse_url}")
    say("                     the syncs write it; analysts do not open it")
    say(f"   analyst snapshot  {result.current}")
    say("                     read-only, replaced after each sync; a Parquet file per table beside it")
    tables = [f"{name} ({meta.get('dagster/row_count', 0)})" for name, meta in sorted(result.tables.items())]
    say("   tables (rows):")
    for line in _wrapped(tables, width=100):
        say(f"     {line}")
    say("\n   Example, latest creatinine per patient, asked of the snapshot:")
    for line in EXAMPLE_QUERY.splitlines():
        say(f"     {line}")
    with duckdb.connect(str(result.current), read_only=True) as con:
        cursor = con.execute(EXAMPLE_QUERY)
        header = [d[0] for d in cursor.description or []]
        answer = [["" if v is None else str(v) for v in row] for row in cursor.fetchall()]
    say("")
    if answer:
        _rows(answer, header)
    else:
        say("   (no creatinine results among these patients)")
    say("\n   Ask it your own SQL from Python (the duckdb CLI is not installed; see docs/ANALYSTS.md):")
    say(f"     {python_query_command(str(result.current))}")
