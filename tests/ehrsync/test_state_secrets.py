"""The state folder's secrets (``ehrsync.env`` with the vault key, the demo's signing key): private from the first
byte, and always pointing at the folder they lie in."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ehrsync.demo_setup import ENV_FILE, DemoError, _signing_key, check_ui_state_dir, demo_environment


@pytest.fixture
def no_chmod(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An open umask and every later chmod disabled: what a file is created with is what stays, so a secret
    written first and made private after (readable by others in between) shows as world-readable."""
    monkeypatch.setattr(Path, "chmod", lambda self, mode, **kw: None)
    monkeypatch.setattr(os, "chmod", lambda *a, **kw: None)
    monkeypatch.setattr(os, "fchmod", lambda *a, **kw: None)
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_vault_key_file_is_created_private(tmp_path: Path, no_chmod: None) -> None:
    demo_environment(tmp_path / "state")
    assert _mode(tmp_path / "state" / ENV_FILE) == 0o600


def test_the_signing_key_is_created_private(tmp_path: Path, no_chmod: None) -> None:
    assert _mode(_signing_key(tmp_path / "state")) == 0o600


def test_an_older_loose_key_file_is_made_private_and_keeps_its_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = demo_environment(state)["INTEGRATIONS_TOKEN_ENC_KEY"]
    (state / ENV_FILE).chmod(0o644)
    assert demo_environment(state)["INTEGRATIONS_TOKEN_ENC_KEY"] == key
    assert _mode(state / ENV_FILE) == 0o600


def test_a_moved_state_folder_points_its_runs_at_where_it_is_now(tmp_path: Path) -> None:
    """ehrsync.env records EHRSYNC_STATE_DIR; a folder moved (or restored from a backup elsewhere) must not send
    Dagster's runs back to the old place while its key comes from the new one."""
    old, new = tmp_path / "old", tmp_path / "new"
    key = demo_environment(old)["INTEGRATIONS_TOKEN_ENC_KEY"]
    old.rename(new)
    values = demo_environment(new)
    assert values["EHRSYNC_STATE_DIR"] == str(new)
    assert values["INTEGRATIONS_TOKEN_ENC_KEY"] == key
    assert f"EHRSYNC_STATE_DIR={new}\n" in (new / ENV_FILE).read_text()


_FAIL_MID_WRITE = """
import resource, signal, sys
from pathlib import Path
from ehrsync.demo_setup import demo_environment
state = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (40, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    demo_environment(state)
except OSError as exc:
    print(f"write failed: {exc.errno}")
"""


def test_a_write_failing_midway_keeps_the_existing_key_file_whole(tmp_path: Path) -> None:
    """A real failure mid-write (the process may write no more than 40 bytes to a file: a full disk, a quota):
    ehrsync.env, the only copy of the vault key, must stay whole. Truncating it in place, then failing, lost the key
    and every token sealed under it; the new text goes to a private file beside it that replaces it only once whole."""
    state = tmp_path / "state"
    demo_environment(state)
    before = (state / ENV_FILE).read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", _FAIL_MID_WRITE, str(state)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and "write failed" in done.stdout, (done.stdout, done.stderr)
    assert (state / ENV_FILE).read_bytes() == before
    assert sorted(p.name for p in state.iterdir()) == [ENV_FILE]  # no half-written file left beside it
    assert _mode(state / ENV_FILE) == 0o600


def test_a_key_write_left_unfinished_by_a_kill_does_not_make_the_state_folder_foreign(tmp_path: Path) -> None:
    """A process killed mid-write leaves its private temporary file beside ehrsync.env; the folder is still the
    ehrsync state folder it was (``ui`` reuses it), and a foreign file beside them still is not."""
    state = tmp_path / "state"
    demo_environment(state)
    (state / f".{ENV_FILE}.k2j4x9.tmp").write_text("K=")
    assert check_ui_state_dir(state) is False
    (state / "letter.txt").write_text("mine")
    with pytest.raises(DemoError, match=r"holds other files \(letter\.txt\)"):
        check_ui_state_dir(state)
