"""A blank secret (``INTEGRATIONS_TOKEN_ENC_KEY=`` in a compose file, a ``${KEY}`` the host leaves unset) is never
taken as a key: it reads as unset in every process that reads it, with the same one-line error (or, for the demo's
state folder, the same new key) as when it is unset. Before, the auth service and its ``ehrsync auth`` commands said
"is empty" where an unset key said "Field required", the Dagster resources bound the blank key by name as if one were
set, and a demo state file with a blank key line kept it (its auth service refused to start)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auth_service.core.config import load_settings
from connectors.errors import ConfigurationError
from ehrsync.demo_setup import ENV_FILE, demo_environment
from engine.settings import PipelineSettings
from pipelines.defs._shared.environment import sync_environment
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
    default_resources,
)
from settings import load_app_settings
from tests.auth_service.keyutil import enc_key

KEY = "INTEGRATIONS_TOKEN_ENC_KEY"
BLANKS = ["", "   ", "\n"]
SECRETS = ["INTEGRATIONS_TOKEN_ENC_KEY", "INTEGRATIONS_TOKEN_ENC_KEYS_OLD", "EHR_JWT_PRIVATE_KEY"]


def _auth_error(monkeypatch: pytest.MonkeyPatch, value: str | None) -> str:
    if value is None:
        monkeypatch.delenv(KEY, raising=False)
    else:
        monkeypatch.setenv(KEY, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    return str(caught.value)


@pytest.mark.parametrize("blank", BLANKS)
def test_the_auth_service_reads_a_blank_key_as_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, blank: str
) -> None:
    monkeypatch.setenv("EHRSYNC_STATE_DIR", str(tmp_path))
    unset = _auth_error(monkeypatch, None)
    assert unset.startswith(f"invalid auth service configuration: {KEY}: Field required: generate one with `python")
    assert _auth_error(monkeypatch, blank) == unset
    monkeypatch.delenv(KEY)
    with pytest.raises(ConfigurationError) as caught:  # as the demo passes it: an override
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=blank)
    assert str(caught.value) == unset


@pytest.mark.parametrize("name", [*SECRETS, "EHR_JWT_PREVIOUS_PUBLIC_KEYS"])
def test_the_auth_service_starts_with_its_other_secrets_blank(tmp_path: Path, name: str) -> None:
    """A blank old-keys list, signing key or previous public keys is none (before: "neither PEM text nor a path",
    "is not valid JSON")."""
    if name == KEY:
        return
    settings = load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHRSYNC_STATE_DIR=str(tmp_path), **{name: " "})
    assert getattr(settings, name) is None


@pytest.mark.parametrize("blank", BLANKS)
def test_the_pipelines_read_a_blank_key_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, blank: str) -> None:
    """The Dagster code location reads the process environment: a blank key is not bound (``EnvVar``) as a set one,
    and the step that opens the vault stops with the unset key's line."""
    monkeypatch.setenv("EHRSYNC_STATE_DIR", str(tmp_path))
    for name in SECRETS:
        monkeypatch.setenv(name, blank)
    assert load_app_settings().vault_key_variables == ()
    assert (
        load_app_settings({"EHRSYNC_STATE_DIR": str(tmp_path), **dict.fromkeys(SECRETS, blank)}).vault_key_variables
        == ()
    )
    resources = default_resources(PipelineSettings.from_env())
    app_db = resources["app_db"]
    assert isinstance(app_db, AppDatabaseResource)
    assert (app_db.token_enc_key, app_db.token_enc_keys_old, app_db.jwt_private_key) == (None, None, None)
    db = AppDatabaseResource(url=f"sqlite:///{tmp_path / 'app.db'}")
    landing, warehouse = resources["landing"], resources["warehouse"]
    assert isinstance(landing, LandingZoneResource) and isinstance(warehouse, WarehouseResource)
    with (
        pytest.raises(ConfigurationError) as blank_key,
        sync_environment(db, landing, warehouse, EhrHttpResource(), SyncPolicyResource()),
    ):
        pass
    monkeypatch.delenv(KEY)
    with (
        pytest.raises(ConfigurationError) as unset_key,
        sync_environment(db, landing, warehouse, EhrHttpResource(), SyncPolicyResource()),
    ):
        pass
    assert str(blank_key.value) == str(unset_key.value) and str(unset_key.value).startswith(f"{KEY} is not set")


def _cli(tmp_path: Path, args: list[str], value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != KEY}
    env.update(EHRSYNC_STATE_DIR=str(tmp_path / "state"), DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}")
    if value is not None:
        env[KEY] = value
    proc = subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and KEY in lines[0], proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["sync", "conn-1"],
        ["keys", "rotate"],
        ["auth", "bootstrap", "--tenant", "t1", "--name", "T"],
        ["auth", "serve", "--port", "0"],
    ],
    ids=["sync", "keys-rotate", "auth-bootstrap", "auth-serve"],
)
def test_every_command_reading_the_key_says_the_same_line_for_blank_and_unset(tmp_path: Path, args: list[str]) -> None:
    unset = _cli(tmp_path, args, None)
    assert _cli(tmp_path, args, "") == unset
    assert _cli(tmp_path, args, "  ") == unset
    assert not (tmp_path / "app.db").exists()


def test_a_demo_state_file_with_a_blank_key_gets_a_new_key_as_one_without(tmp_path: Path) -> None:
    """``ehrsync demo`` and ``ehrsync ui`` read ``<state>/ehrsync.env``: a key line left blank is no key (nothing can
    be sealed under it), so a key is made and written, as for a file without the line."""
    state = tmp_path / "state"
    state.mkdir()
    (state / ENV_FILE).write_text(f"{KEY}=\nEHRSYNC_SYNC_OVERLAP_SECONDS=5\n")
    values = demo_environment(state)
    assert len(base64.b64decode(values[KEY], validate=True)) == 32
    assert values["EHRSYNC_SYNC_OVERLAP_SECONDS"] == "5"
    assert demo_environment(state)[KEY] == values[KEY]  # written: the next start keeps it
