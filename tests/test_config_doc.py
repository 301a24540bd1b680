"""What README.md and docs/ promise about configuration and errors is what the code does.

Every variable the settings classes read has a row in the configuration tables (README, docs/PIPELINES.md for the
engine's, docs/AUTH_SERVICE.md for the auth service's), each documented default is the one the code applies, every
variable a table names is read somewhere, and docs/TROUBLESHOOTING.md's error table holds exactly the codes the
API answers, each with its HTTP status.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auth_service.api.errors import ERROR_CODES
from auth_service.core.config import Settings
from engine.settings import PipelineSettings
from engine.writeback import WritebackConfig
from pipelines.defs.writeback.resources import WritebackResource
from settings import DEFAULT_STATE_DIR, ENGINE_VARIABLES, AppSettings, load_app_settings

ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"`([A-Z][A-Z0-9_]{2,})`")
# Read by libraries, not by ehrsync's code (httpx reads the proxy variables).
_READ_BY_LIBRARIES = {"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"}
_SOURCES = ("connectors", "warehouse", "settings", "store", "engine", "auth_service", "pipelines", "ehrsync", "deploy")


def _section(doc: str, heading: str) -> str:
    text = (ROOT / doc).read_text(encoding="utf-8")
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def _rows(doc: str, heading: str) -> dict[str, tuple[int, list[str]]]:
    """Each variable a table row of the section names in its first cell -> (its place there, the row's cells)."""
    rows: dict[str, tuple[int, list[str]]] = {}
    for line in _section(doc, heading).splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        for place, name in enumerate(_NAME.findall(cells[0])):
            rows[name] = (place, cells)
    return rows


README = ("README.md", "## Configuration")
PIPELINES = ("docs/PIPELINES.md", "## Configuration (environment variables)")
AUTH_SERVICE = ("docs/AUTH_SERVICE.md", "## Running")
DEPLOY = ("docs/DEPLOY.md", "## Variables")


def test_every_setting_has_a_readme_row() -> None:
    assert sorted(set(AppSettings.model_fields) - set(_rows(*README))) == []


def test_every_engine_variable_has_a_pipelines_row() -> None:
    assert sorted(set(ENGINE_VARIABLES) - set(_rows(*PIPELINES))) == []


def test_every_auth_service_variable_has_a_row_in_its_page() -> None:
    own = set(Settings.model_fields) - set(AppSettings.model_fields)
    assert sorted(own - set(_rows(*AUTH_SERVICE))) == []


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _engine_defaults() -> dict[str, Any]:
    s = PipelineSettings.from_app(load_app_settings({}))
    lim = s.limits
    low = lim.bulk_low_speed
    assert low is not None
    getters: dict[str, Callable[[], Any]] = {
        "EHRSYNC_STATE_DIR": lambda: DEFAULT_STATE_DIR,
        "EHRSYNC_QUARANTINE_MAX_RATIO": lambda: s.quarantine_max_ratio,
        "EHRSYNC_SYNC_OVERLAP_SECONDS": lambda: s.overlap_seconds,
        "EHRSYNC_SYNC_BATCH_SIZE": lambda: s.sync_batch_size,
        "EHRSYNC_KEEPALIVE_IDLE_DAYS": lambda: s.keepalive_idle_days,
        "EHRSYNC_FRESHNESS_GRACE_MINUTES": lambda: s.freshness_grace_minutes,
        "EHRSYNC_LANDING_RETENTION_DAYS": lambda: s.landing_retention_days,
        "EHRSYNC_RUN_RETENTION_DAYS": lambda: s.run_retention.days,
        "EHRSYNC_RUN_RETENTION_CRON": lambda: s.run_retention.cron,
        "EHRSYNC_ANALYST_GENERATIONS": lambda: s.analyst.generations,
        "EHRSYNC_ANALYST_MIN_INTERVAL_SECONDS": lambda: s.analyst.min_interval_s,
        "EHRSYNC_ANALYST_LOCK_TIMEOUT_SECONDS": lambda: s.analyst.lock_timeout_s,
        "EHRSYNC_RETRY_BASE_SECONDS": lambda: s.retry_backoff.base.total_seconds(),
        "EHRSYNC_RETRY_CAP_SECONDS": lambda: s.retry_backoff.cap.total_seconds(),
        "EHRSYNC_MAX_RESOURCE_BYTES": lambda: lim.max_resource_bytes,
        "EHRSYNC_MAX_RESPONSE_BYTES": lambda: lim.max_response_bytes,
        "EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS": lambda: lim.lock_wait_s,
        "EHRSYNC_STEP_BUDGET_S": lambda: lim.step_budget_s,
        "EHRSYNC_REQUEST_DEADLINE_S": lambda: lim.request_deadline_s,
        "EHRSYNC_BULK_MAX_FILE_BYTES": lambda: lim.bulk_max_file_bytes,
        "EHRSYNC_BULK_MAX_FILES": lambda: lim.bulk_max_files,
        "EHRSYNC_MIN_FREE_DISK_BYTES": lambda: lim.min_free_disk_bytes,
        "EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S": lambda: low.bytes_per_s,
        "EHRSYNC_BULK_LOW_SPEED_WINDOW_S": lambda: low.window_s,
        "EHRSYNC_BULK_FILE_DEADLINE_S": lambda: lim.bulk_file_deadline_s,
        "EHRSYNC_DUCKDB_MEMORY_LIMIT": lambda: lim.duckdb_memory_limit,
        "EHRSYNC_BULK_MERGE_GROUP_BYTES": lambda: lim.bulk_merge_group_bytes,
    }
    return {name: get() for name, get in getters.items()}


def _auth_defaults() -> dict[str, Any]:
    own = set(Settings.model_fields) - set(AppSettings.model_fields)
    fields = {name: Settings.model_fields[name].default for name in sorted(own)}
    return {name: value for name, value in fields.items() if isinstance(value, (bool, int, float, str))}


def _documented_default(cells: list[str], place: int) -> str | None:
    values = re.findall(r"`([^`]*)`", cells[-2])
    return values[place] if place < len(values) else None


@pytest.mark.parametrize("table", [README, PIPELINES, AUTH_SERVICE], ids=lambda t: t[0])
def test_documented_defaults_are_the_codes(table: tuple[str, str]) -> None:
    code = {**_engine_defaults(), **_auth_defaults()}
    wrong = []
    for name, (place, cells) in _rows(*table).items():
        if name in code and _documented_default(cells, place) != _text(code[name]):
            wrong.append(f"{name}: documented {_documented_default(cells, place)!r}, code {_text(code[name])!r}")
    assert wrong == []


def test_every_documented_variable_is_read_somewhere() -> None:
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for package in _SOURCES
        for path in (ROOT / package).rglob("*")
        if path.suffix in (".py", ".yaml") and path.is_file()
    )
    documented = {name for table in (README, PIPELINES, AUTH_SERVICE, DEPLOY) for name in _rows(*table)}
    missing = sorted(n for n in documented - _READ_BY_LIBRARIES if not re.search(rf"\b{n}\b", source))
    assert missing == []


def test_every_writeback_setting_has_a_row_with_the_codes_default() -> None:
    """Every field of the ``writeback`` resource (and so of ``WritebackConfig``) has a row in docs/WRITEBACK.md's
    settings table, with the default the engine applies: ``lookup_wait_s`` and two others were settings no operator
    could find or set."""
    rows: dict[str, str | None] = {}
    for line in _section("docs/WRITEBACK.md", "### Settings (the `writeback` resource)").splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            names, values = re.findall(r"`([a-z_]+)`", cells[0]), re.findall(r"`([^`]*)`", cells[1])
            rows.update((name, values[i] if i < len(values) else None) for i, name in enumerate(names))
    defaults = {name: _text(getattr(WritebackConfig(), name)) for name in WritebackResource.model_fields}
    assert set(WritebackResource.model_fields) == {f.name for f in dataclasses.fields(WritebackConfig)}
    assert rows == defaults


# Read by the test fixtures only (README, "Tests"), not a setting of ehrsync's.
_TEST_VARIABLES = {"EHRSYNC_TEST_DATABASE_URL"}


def test_every_ehrsync_variable_the_docs_name_has_a_configuration_row() -> None:
    """A variable named in prose (``EHRSYNC_BULK_DEADLINE_S`` once was: the job deadline is no setting) is one an
    operator can set: a row of a configuration table, so the tests above check its default and that it is read."""
    rows = {name for table in (README, PIPELINES, AUTH_SERVICE, DEPLOY) for name in _rows(*table)}
    named: dict[str, set[str]] = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for name in re.findall(r"\bEHRSYNC_[A-Z0-9_]+\b", path.read_text(encoding="utf-8")):
            named.setdefault(name, set()).add(path.name)
    assert {n: sorted(docs) for n, docs in named.items() if n not in rows | _TEST_VARIABLES} == {}


def test_troubleshooting_lists_exactly_the_api_codes_with_their_status() -> None:
    documented: dict[str, int] = {}
    text = (ROOT / "docs" / "TROUBLESHOOTING.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        row = re.match(r"\| ((?:`[a-z_]+`(?: / )?)+) \| (\d{3}) \|", line)
        if row:
            documented.update(dict.fromkeys(re.findall(r"`([a-z_]+)`", row.group(1)), int(row.group(2))))
    assert documented == ERROR_CODES
