"""An existing DuckDB warehouse file is a valid ``WAREHOUSE_URL`` (every run after the first opens one).

Regression: the start-up check took the file itself for "a file the warehouse lies under", so every Dagster
run after the first one failed to load the code location.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import PipelineConfigurationError
from engine.settings import check_warehouse_url


def test_an_existing_warehouse_file_is_accepted(tmp_path: Path) -> None:
    existing = tmp_path / "warehouse.duckdb"
    existing.write_bytes(b"")
    assert check_warehouse_url(str(existing)) == str(existing)
    assert check_warehouse_url(f"duckdb:///{existing}") == str(existing)


def test_a_path_under_a_file_is_still_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(PipelineConfigurationError, match="which is a file"):
        check_warehouse_url(str(blocker / "warehouse.duckdb"))
