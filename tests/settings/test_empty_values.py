"""An engine variable set to an empty (or blank) value reads as unset, its default, for every family of setting:
whole numbers, byte counts, positive numbers, limits that 0 turns off, the quarantine ratio, DuckDB's memory size,
the cron schedule and the lists. ``FOO=`` in a compose file (or a ``${FOO}`` the host leaves unset) means "not
set" to an operator, as it already did for the locations (``EHRSYNC_STATE_DIR=``), the byte limits, the budgets and
the lock wait; the whole-number settings, the ratio, DuckDB's settings and the cron refused it instead, stopping
the start over a value nobody set."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import PipelineConfigurationError
from engine.settings import PipelineSettings
from settings.app import ENGINE_VARIABLES

# one variable of each family the engine reads (the module docstring), then every variable
_FAMILIES = {
    "whole number": "EHRSYNC_RETRY_BASE_SECONDS",
    "byte count": "EHRSYNC_MAX_RESPONSE_BYTES",
    "positive number": "EHRSYNC_STEP_BUDGET_S",
    "0 turns it off": "EHRSYNC_BULK_FILE_DEADLINE_S",
    "ratio": "EHRSYNC_QUARANTINE_MAX_RATIO",
    "DuckDB size": "EHRSYNC_DUCKDB_MEMORY_LIMIT",
    "DuckDB threads (unset: from the cores)": "EHRSYNC_DUCKDB_THREADS",
    "cron": "EHRSYNC_RUN_RETENTION_CRON",
    "list": "EHRSYNC_FETCH_ALLOWED_HOSTS",
    "JSON": "EHRSYNC_SYNC_WINDOWS",
}


@pytest.mark.parametrize("blank", ["", "   "])
@pytest.mark.parametrize("name", ENGINE_VARIABLES)
def test_a_blank_engine_variable_reads_as_unset(tmp_path: Path, name: str, blank: str) -> None:
    state = {"EHRSYNC_STATE_DIR": str(tmp_path)}
    assert PipelineSettings.from_env({**state, name: blank}) == PipelineSettings.from_env(state)


@pytest.mark.parametrize(("family", "name"), sorted(_FAMILIES.items()))
def test_a_blank_variable_in_the_process_environment_reads_as_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family: str, name: str
) -> None:
    """The path a deployment takes: the settings read the process's environment (a compose file's ``FOO=``)."""
    for variable in ENGINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("EHRSYNC_STATE_DIR", str(tmp_path))
    unset = PipelineSettings.from_env()
    monkeypatch.setenv(name, "")
    assert PipelineSettings.from_env() == unset, family


def test_a_value_that_is_set_is_still_checked(tmp_path: Path) -> None:
    """Blank is unset; anything else keeps its rule (a value of spaces and text is no blank)."""
    for name, bad in (("EHRSYNC_RETRY_BASE_SECONDS", " x "), ("EHRSYNC_DUCKDB_THREADS", "0")):
        with pytest.raises(PipelineConfigurationError, match=f"^{name}="):
            PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), name: bad})


def test_the_readme_and_the_pipelines_doc_state_the_rule_alike() -> None:
    """README's configuration section and docs/PIPELINES.md state the one rule in the same words: README said "an
    empty value" where PIPELINES.md (and the code) say "an empty or blank value"."""
    root = Path(__file__).resolve().parents[2]
    rule = "set to an empty or blank value (`FOO=` in a compose file, or a `${FOO}` the host leaves unset) is unset"
    for doc in ("README.md", "docs/PIPELINES.md"):
        assert rule in " ".join((root / doc).read_text(encoding="utf-8").split()), doc
