"""``ehrsync auth bootstrap`` of a tenant that exists, whose stored switch is neither true nor false (a row written
before seeds were checked, or edited by hand), as an operator runs it (a child process over a real SQLite file).

Before, the command read the stored settings back with pydantic's lax rules and rewrote them: a stored ``"yes"``
became ``true`` (the switch turned on for good, the write-back's held note then sent) and ``"maybe"`` or ``null``
stopped it with a ``ValidationError`` traceback, no key minted. Now the tenant's settings are kept byte for byte, the
key is minted, and each such switch is a warning naming the setting and the value's JSON type (never the value)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.ehrsync.test_cli_mistakes import _run


@pytest.mark.parametrize(
    ("value", "kind"), [("yes", "a string"), ("maybe", "a string"), (None, "null"), (1, "a number")]
)
def test_bootstrap_of_an_existing_tenant_keeps_its_settings_and_names_a_bad_switch(
    tmp_path: Path, value: object, kind: str
) -> None:
    assert _run(tmp_path, "auth", "bootstrap", "--tenant", "t1", "--name", "Clinic").returncode == 0
    stored = {
        "practice_settings": {
            "smartFhir": {"enabled": True, "enableWrite": value},
            "ehrIntegrations": {"enabledProviders": ["epic"], "allowFinalNotes": value},
            "hostAppField": {"kept": True},
        }
    }
    with sqlite3.connect(tmp_path / "state" / "app.db") as db:
        db.execute("UPDATE tenants SET settings = ? WHERE id = 't1'", (json.dumps(stored),))
    proc = _run(tmp_path, "auth", "bootstrap", "--tenant", "t1", "--name", "Clinic One")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "api key (shown once): ehs_" in proc.stdout
    for setting in ("smartFhir.enableWrite", "ehrIntegrations.allowFinalNotes"):
        assert f"practice_settings.{setting} must be true or false, got {kind}" in proc.stderr, proc.stderr
    if isinstance(value, str):
        assert value not in proc.stderr
    with sqlite3.connect(tmp_path / "state" / "app.db") as db:
        name, settings = db.execute("SELECT name, settings FROM tenants WHERE id = 't1'").fetchone()
    assert name == "Clinic One"
    assert json.loads(settings) == stored  # never rewritten: "yes" is not turned into true


def test_bootstrap_of_a_tenant_whose_stored_settings_are_not_json_names_it_and_keeps_the_row(tmp_path: Path) -> None:
    """A hand edit of an SQLite app database left the tenant's settings unparseable: before, the command stopped
    with ``Error: JSONDecodeError: Expecting property name ...`` (no tenant, no setting named, no key). Now the key is
    minted, the warning names the tenant's settings and the fix, and the row is left as it is for the seed to mend."""
    assert _run(tmp_path, "auth", "bootstrap", "--tenant", "t1", "--name", "Clinic").returncode == 0
    with sqlite3.connect(tmp_path / "state" / "app.db") as db:
        db.execute("UPDATE tenants SET settings = '{enableBulkExport: true' WHERE id = 't1'")
    proc = _run(tmp_path, "auth", "bootstrap", "--tenant", "t1", "--name", "Clinic One")
    assert proc.returncode == 0 and "JSONDecodeError" not in proc.stderr, proc.stderr
    assert "api key (shown once): ehs_" in proc.stdout
    assert "warning: tenant t1: settings are not JSON" in proc.stderr and "ehrsync auth seed" in proc.stderr
    with sqlite3.connect(tmp_path / "state" / "app.db") as db:
        name, settings = db.execute("SELECT name, settings FROM tenants WHERE id = 't1'").fetchone()
    assert (name, settings) == ("Clinic One", "{enableBulkExport: true")
