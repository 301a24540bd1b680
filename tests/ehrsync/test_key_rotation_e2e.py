"""Key rotation end to end (SAL-27..29): a patient authorized and synced under key A; ``ehrsync keys rotate``
run as an operator would (new key active, A as the old one); then a process holding only the new key refreshes
at the sandbox and syncs, and one holding only A can no longer read anything."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox import SandboxConfig, SandboxServer
from store import TokenCipher, TokenVault
from store.crypto import derive_kid
from store.errors import TokenUndecryptableError
from store.provider_configs import load_provider_config, save_provider_config
from tests.engine.helpers import connect_patient, make_environment, mutate
from tests.engine.job_runs import run_sync


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(patients=2)) as sb:
        yield sb


def test_rotated_keys_keep_syncing_and_the_old_key_can_go(tmp_path: Path, sandbox: SandboxServer) -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    with httpx.Client(timeout=30.0) as http:
        before = make_environment(tmp_path, http=http, cipher_key=old_key)
        conn = connect_patient(before, sandbox, http=http)
        assert run_sync(before, conn).status == "completed"

        rotated = _rotate(tmp_path, new_key, f"{derive_kid(old_key)}:{_b64(old_key)}")
        assert rotated.returncode == 0, rotated.stderr
        assert "re-encrypted" in rotated.stdout and "Traceback" not in rotated.stderr
        assert "placeholder" not in rotated.stderr  # a real old key: no reminder

        after = make_environment(tmp_path, http=http, cipher_key=new_key, tenant_id=before.tenant_id)
        info = after.env.vault.token_info(conn)
        assert info is not None and info.key_id == derive_kid(new_key)
        after.env.vault.force_refresh(conn)  # the refresh token decrypts under the new key; the sandbox accepts it
        mutate(http, sandbox, update=2)
        report = run_sync(after, conn)
        assert report.status == "completed", report.error
        assert sum(r.updated for r in report.types.values()) >= 1

        stale = TokenVault(after.env.db, TokenCipher(old_key))
        with pytest.raises(TokenUndecryptableError, match="unknown key id"):  # issue 10: a code of its own
            stale.token_source(conn).get_token()


def test_rotating_away_from_a_placeholder_key_reminds_to_remove_it_naming_its_key_id_only(tmp_path: Path) -> None:
    """The auth service warns of a placeholder old key at start-up; the pipelines and the CLI did not, so an
    operator rotating away from one (an old demo's all-zero key) was never told to remove it afterwards."""
    placeholder, new_key = bytes(32), os.urandom(32)
    world = make_environment(tmp_path, cipher_key=placeholder)
    with world.env.db.session() as session:
        config = {"fhir_base_url": "https://ehr.example/fhir", "client_id": "c", "client_secret": "s3cret"}
        save_provider_config(
            session, TokenCipher(placeholder), tenant_id=world.tenant_id, provider_id="smart", config=config
        )
        session.commit()
    rotated = _rotate(tmp_path, new_key, f"demo:{_b64(placeholder)}")
    assert rotated.returncode == 0 and rotated.stdout == "re-encrypted 1 value(s) with the active key\n", rotated
    reminders = [line for line in rotated.stderr.splitlines() if line.startswith("reminder: ")]
    assert len(reminders) == 1, rotated.stderr  # the log lines (migration, rotation) go to stderr too
    said = reminders[0]
    assert said.startswith("reminder: INTEGRATIONS_TOKEN_ENC_KEYS_OLD still lists a placeholder key"), said
    assert f"key id {derive_kid(placeholder)}" in said and "remove it once nothing is sealed under it" in said, said
    assert _b64(placeholder) not in rotated.stderr and "AAAAAAAA" not in rotated.stderr, rotated.stderr
    with world.env.db.session() as session:
        assert (
            load_provider_config(session, TokenCipher(new_key), world.tenant_id, "smart")["client_secret"] == "s3cret"
        )


def _rotate(tmp_path: Path, new_key: bytes, old_keys: str) -> subprocess.CompletedProcess[str]:
    """``ehrsync keys rotate`` as an operator runs it, over the app database in ``tmp_path``."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "INTEGRATIONS_TOKEN_ENC_KEY": _b64(new_key),
        "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": old_keys,
    }
    command = [sys.executable, "-m", "ehrsync.cli", "keys", "rotate"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
