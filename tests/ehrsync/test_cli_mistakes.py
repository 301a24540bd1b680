"""An operator's mistakes at the ``ehrsync`` command line: each is one ``Error:`` line naming the problem and a
non-zero exit, before anything is deleted, written or started; never a traceback, never silent data loss."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ehrsync.demo_setup import DEMO_MARKER, ENV_FILE, GITIGNORE, DemoError, check_state_dir, demo_environment

_KEY = "t4JTv4brtHtzKipfTJdayl_rg659i4mCNwc8JnvbEhk="
_STORES = ("DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL", "EHRSYNC_HOME", "DAGSTER_HOME")


def _run(
    tmp_path: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command in a child process over a throwaway state folder; stopped by SIGTERM (which ``ehrsync ui``
    passes to every process it started) if it outlives ``timeout``."""
    child = {k: v for k, v in os.environ.items() if k not in _STORES}
    child["INTEGRATIONS_TOKEN_ENC_KEY"] = _KEY
    if args[:1] != ("ui",):  # ui takes its folder from --state, and refuses a variable naming another
        child["EHRSYNC_STATE_DIR"] = str(tmp_path / "state")
    child.update(env or {})
    cmd = [sys.executable, "-m", "ehrsync.cli", *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            err += f"\n(still running after {timeout} s)"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _one_line_failure(proc: subprocess.CompletedProcess[str], *names: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode not in (0, None), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and all(name in lines[0] for name in names), lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield int(busy.getsockname()[1])


# --- demo: it deletes its --state folder to start clean --------------------------------------------------------


def test_demo_refuses_to_delete_a_folder_that_is_not_its_state(tmp_path: Path) -> None:
    """A mistyped ``--state`` (``.``, a home folder, a production state folder) used to be deleted whole."""
    precious = tmp_path / "clinic-data"
    precious.mkdir()
    (precious / "export.csv").write_text("kept")
    proc = _run(tmp_path, "demo", "--state", str(precious), "--patients", "2", "--connect", "1")
    _one_line_failure(proc, str(precious), "not a demo state folder")
    assert (precious / "export.csv").read_text() == "kept" and sorted(p.name for p in precious.iterdir()) == [
        "export.csv"
    ]


def _ui_writes_its_env_file(tmp_path: Path, folder: Path, *written: str) -> None:
    """The real ``ehrsync ui --state folder``, stopped (SIGTERM) once it has written ``ehrsync.env`` (and each of
    ``written``) there."""
    child = {k: v for k, v in os.environ.items() if k not in _STORES}
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = int(free.getsockname()[1])
    cmd = [sys.executable, "-m", "ehrsync.cli", "ui", "--state", str(folder), "--port", str(port)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child) as proc:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if all((folder / name).exists() for name in (ENV_FILE, *written)):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert (folder / ENV_FILE).is_file(), out


def test_demo_refuses_to_delete_a_folder_an_older_ehrsync_ui_was_pointed_at(tmp_path: Path) -> None:
    """``ehrsync ui --state ~/Documents`` used to write ``ehrsync.env`` there (it now refuses the folder), and that
    file used to be what made ``ehrsync demo --state ~/Documents`` delete the folder, the person's documents with
    it."""
    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "letter.txt").write_text("kept")
    demo_environment(documents)  # what an older `ehrsync ui --state ~/Documents` wrote there
    proc = _run(tmp_path, "demo", "--state", str(documents), "--patients", "2", "--connect", "1")
    _one_line_failure(proc, str(documents), "was not created by `ehrsync demo`", DEMO_MARKER, "new or empty folder")
    assert (documents / "letter.txt").read_text() == "kept" and (documents / ENV_FILE).is_file()


def test_the_demo_may_start_in_a_new_folder_ehrsync_ui_was_run_over_first(tmp_path: Path) -> None:
    """``make ui`` before any demo says "run `make demo` first", having written its ehrsync.env, Dagster home and
    an app database migrated but with nothing in it into the new folder: that demo must not then refuse the folder
    (it held nothing of anyone's). A folder whose app database holds a row (a real one) is still refused."""
    state = tmp_path / "var" / "demo"
    _ui_writes_its_env_file(tmp_path, state, "app.db", "dagster_home")
    check_state_dir(state, deleting=True)
    with sqlite3.connect(state / "app.db") as con:
        con.execute("create table if not exists letters (id text primary key)")
        con.execute("insert into letters (id) values ('mine')")
    with pytest.raises(DemoError, match="not created by `ehrsync demo`"):
        check_state_dir(state, deleting=True)


_OLD_DEMO = {ENV_FILE: "# written by `ehrsync demo`\n", "keys/ehr_jwt.pem": "key", "app.db": "", "landing/x": ""}


@pytest.mark.parametrize(
    ("contents", "keep", "refused"),
    [
        ({}, False, False),  # a new or empty folder
        ({DEMO_MARKER: "", ENV_FILE: "", "app.db": "", "notes.txt": ""}, False, False),  # a demo's state folder
        (_OLD_DEMO, False, False),  # a demo's from before the marker
        ({**_OLD_DEMO, "warehouse.duckdb.wal": "", "dagster_home/x": "", "analyst/y": ""}, False, False),
        ({**_OLD_DEMO, "letter.txt": "mine"}, False, True),  # not only what a demo writes
        ({ENV_FILE: "", "app.db": "", "dagster_home/dagster.yaml": ""}, False, False),  # `ehrsync ui` over a new one
        ({ENV_FILE: "", "app.db": "not sqlite", "dagster_home/x": ""}, False, True),  # a database not known empty
        ({ENV_FILE: "", "dagster_home/dagster.yaml": ""}, False, True),  # its app database elsewhere: keep its home
        ({ENV_FILE: "", "app.db": "", "letter.txt": "mine"}, False, True),  # `ehrsync ui` over someone's folder
        ({"notes.txt": "mine"}, True, False),  # --keep deletes nothing
        ({"notes.txt": "mine"}, False, True),
        ({f"sub/{DEMO_MARKER}": "", "sub/ehrsync.env": ""}, False, True),  # the marker counts only at the top
    ],
)
def test_which_state_folder_the_demo_may_delete(
    tmp_path: Path, contents: dict[str, str], keep: bool, refused: bool
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    for name, text in contents.items():
        (state / name).parent.mkdir(parents=True, exist_ok=True)
        (state / name).write_text(text)
    if refused:
        with pytest.raises(DemoError, match=f"not created by `ehrsync demo` \\(it holds no {DEMO_MARKER}\\)"):
            check_state_dir(state, deleting=not keep)
    else:
        check_state_dir(state, deleting=not keep)


def test_demo_refuses_more_connections_than_patients(tmp_path: Path) -> None:
    """It used to connect every patient there was, announce ``--connect`` of them, and check the wrong count."""
    proc = _run(tmp_path, "demo", "--state", str(tmp_path / "demo"), "--patients", "2", "--connect", "3")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Error: --connect 3 is more than --patients 2" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "demo").exists()


# --- ui: it keeps its settings and vault key (ehrsync.env) in its --state folder ---------------------------------


def _files(folder: Path) -> dict[str, bytes | None]:
    """Everything under ``folder``: each file's bytes, each folder as None."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _make(folder: Path, contents: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


_UI_REFUSES = {  # folder contents; what the one-line refusal names
    "documents": ({"letter.txt": "mine", "photos/cat.jpg": "meow"}, "holds other files (letter.txt, photos)"),
    "a-project-checkout": (
        {".gitignore": "build/\n", "pyproject.toml": "", "src/app.py": "", "a": "", "b": ""},
        "holds other files (a, b, pyproject.toml and 1 more)",
    ),
    "an-older-ui-wrote-its-key-there": ({ENV_FILE: "KEY=old\n", "letter.txt": "mine"}, "(letter.txt)"),
    "a-state-folder-whose-settings-live-elsewhere": (
        {"landing/x.parquet": "", "warehouse.duckdb": ""},
        f"is not empty and holds no {ENV_FILE} or {DEMO_MARKER}",
    ),
    "the-folder-above-a-demo-state": ({f"demo/{DEMO_MARKER}": "", f"demo/{ENV_FILE}": ""}, "(demo)"),
}


@pytest.mark.parametrize(("contents", "names"), _UI_REFUSES.values(), ids=_UI_REFUSES.keys())
def test_ui_refuses_a_folder_that_is_not_new_empty_or_an_ehrsync_state(
    tmp_path: Path, contents: dict[str, str], names: str
) -> None:
    """``ehrsync ui --state DIR`` used to write ehrsync.env, the vault key, into whatever folder it was given: a home,
    a project checkout (where it could be committed), someone's documents. Now one line names the folder and why,
    and nothing is written or started."""
    folder = tmp_path / "given"
    _make(folder, contents)
    before = _files(folder)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = int(free.getsockname()[1])
    proc = _run(tmp_path, "ui", "--state", str(folder), "--port", str(port), timeout=60)
    _one_line_failure(proc, f"--state {folder} ", names, "not an ehrsync state folder", "pass a new or empty folder")
    assert _files(folder) == before and not (tmp_path / "state").exists()


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_ui_makes_a_new_or_empty_folder_its_state_ignored_by_git(tmp_path: Path, busy_port: int, kind: str) -> None:
    """A new or empty ``--state`` inside a git work tree (``make ui``'s var/demo lies in the checkout) is used: ui
    writes a ``.gitignore`` of ``*`` there first, so neither its ehrsync.env nor anything else it keeps there shows
    up in ``git status``, whatever the repository ignores. Before, the key file was untracked, one ``git add .``
    from a commit. The folder is then an ehrsync state folder: the next ``ehrsync ui`` over it gets past the folder
    check (to the busy port here) and keeps its key."""
    repo = tmp_path / "checkout"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    state = repo / "var" / "ui-state"
    if kind == "empty":
        state.mkdir(parents=True)
    _ui_writes_its_env_file(tmp_path, state, GITIGNORE, "dagster_home")
    assert oct((state / ENV_FILE).stat().st_mode)[-3:] == "600"
    assert "*" in (state / GITIGNORE).read_text().splitlines()
    status = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=all", "--ignored=no"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == "", status.stdout
    key = (state / ENV_FILE).read_text()
    again = _run(tmp_path, "ui", "--state", str(state), "--port", str(busy_port), timeout=60)
    _one_line_failure(again, f"cannot listen on 127.0.0.1:{busy_port}")
    assert (state / ENV_FILE).read_text() == key


_EARLIER_STATES = {  # an earlier ehrsync state folder; the same with something of someone else's in it
    "a-demo-state": (
        {DEMO_MARKER: "", ENV_FILE: "K=1\n", "app.db": "", "landing/x": "", "notes.txt": "the demo's folder"},
        {f"notes/{DEMO_MARKER}": "", ENV_FILE: "K=1\n", "app.db": ""},  # the marker counts only at the top
    ),
    "a-demo-state-from-before-the-marker": (_OLD_DEMO, {**_OLD_DEMO, "letter.txt": "mine"}),
    "a-ui-state-before-the-gitignore": (
        {ENV_FILE: "K=1\n", "app.db": "", "dagster_home/dagster.yaml": ""},
        {ENV_FILE: "K=1\n", "app.db": "", "dagster_home/dagster.yaml": "", "letter.txt": "mine"},
    ),
    "an-operator-state": (
        {ENV_FILE: "K=1\n", GITIGNORE: "*\n", "app.db-wal": "", "warehouse.duckdb": "", "attachments/a": ""},
        {GITIGNORE: "*\n", "app.db-wal": "", "warehouse.duckdb": "", "attachments/a": ""},  # its key elsewhere
    ),
}


@pytest.mark.parametrize(("earlier", "not_one"), _EARLIER_STATES.values(), ids=_EARLIER_STATES.keys())
def test_ui_reuses_an_earlier_state_folder_and_only_that(
    tmp_path: Path, busy_port: int, earlier: dict[str, str], not_one: dict[str, str]
) -> None:
    """A folder an earlier demo or ui made passes the folder check (and stops at the busy port, before anything
    is written); the same folder with something that is not ehrsync's in it, or without its ehrsync.env, does
    not."""
    for contents, accepted in ((earlier, True), (not_one, False)):
        folder = tmp_path / ("accepted" if accepted else "refused")
        _make(folder, contents)
        before = _files(folder)
        proc = _run(tmp_path, "ui", "--state", str(folder), "--port", str(busy_port), timeout=60)
        if accepted:
            _one_line_failure(proc, f"cannot listen on 127.0.0.1:{busy_port}")
        else:
            _one_line_failure(proc, f"--state {folder} ", "not an ehrsync state folder")
        assert _files(folder) == before


@pytest.mark.parametrize("variable", ["EHRSYNC_STATE_DIR", "EHRSYNC_HOME"])
def test_ui_refuses_a_state_variable_naming_another_folder_than_state(
    tmp_path: Path, busy_port: int, variable: str
) -> None:
    """Dagster's runs read EHRSYNC_STATE_DIR: with --state X and the variable naming Y, ui would keep its vault key
    in X and the runs' state in Y. It says so in one line, before writing anything."""
    given, named = tmp_path / "given", tmp_path / "named"
    proc = _run(tmp_path, "ui", "--state", str(given), "--port", str(busy_port), env={variable: str(named)})
    _one_line_failure(proc, f"--state {given}", f"{variable}={named}", "different folders")
    assert not given.exists() and not named.exists()


def test_ui_takes_its_folder_from_the_state_variable_when_state_is_not_given(tmp_path: Path, busy_port: int) -> None:
    """An operator who set EHRSYNC_STATE_DIR gets that folder checked (not var/demo under the current folder); the
    same folder given both ways is one folder."""
    named = tmp_path / "named"
    _make(named, {"letter.txt": "mine"})
    alone = _run(tmp_path, "ui", "--port", str(busy_port), env={"EHRSYNC_STATE_DIR": str(named)})
    _one_line_failure(alone, f"EHRSYNC_STATE_DIR={named} ", "not an ehrsync state folder")
    (named / "letter.txt").unlink()
    both = _run(
        tmp_path, "ui", "--state", str(named), "--port", str(busy_port), env={"EHRSYNC_STATE_DIR": f"{named}/."}
    )
    _one_line_failure(both, f"cannot listen on 127.0.0.1:{busy_port}")
    assert _files(named) == {}, "the busy port stops it before anything is written"


# --- a port that is taken, a URL that is not one ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["sandbox", "--port", "{port}"],
        ["ui", "--state", "{tmp}/ui", "--port", "{port}"],  # dagster dev used to log it and keep running
        ["demo", "--state", "{tmp}/demo", "--patients", "1", "--connect", "1", "--sandbox-port", "{port}"],
    ],
    ids=["sandbox", "ui", "demo-sandbox-port"],
)
def test_a_busy_port_is_one_line_naming_the_address(tmp_path: Path, busy_port: int, args: list[str]) -> None:
    proc = _run(tmp_path, *(a.format(port=busy_port, tmp=tmp_path) for a in args), timeout=60)
    _one_line_failure(proc, f"cannot listen on 127.0.0.1:{busy_port}")


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999", "garbage"])
def test_sandbox_mutate_with_a_malformed_url_names_it(tmp_path: Path, url: str) -> None:
    _one_line_failure(_run(tmp_path, "sandbox", "mutate", "--url", url, "--create", "1"), f"sandbox at {url}")


# --- auth seed and auth bootstrap: bad files and bad ids, named before any database work -------------------------

SEED_FILES = [
    ("not-utf8", b"\xff\xfe{", "is not UTF-8 text"),
    ("empty-list", b"[]", "holds no tenant"),
    (
        "same-id-twice",  # the second entry used to replace the first without a word
        json.dumps([{"id": "clinic-1", "name": "One"}, {"id": "clinic-1", "name": "Two"}]).encode(),
        "names tenant(s) clinic-1 more than once",
    ),
    (  # read whole before: a file of any size was held in memory (and parsed) first
        "over-16-MiB",
        b"[" + b" " * (16 * 1024 * 1024) + b"]",
        "is over the 16777216-byte limit",
    ),
]


@pytest.mark.parametrize(("content", "names"), [c[1:] for c in SEED_FILES], ids=[c[0] for c in SEED_FILES])
def test_a_bad_seed_file_is_one_line_naming_it(tmp_path: Path, content: bytes, names: str) -> None:
    seed = tmp_path / "seed.json"
    seed.write_bytes(content)
    proc = _run(tmp_path, "auth", "seed", str(seed))
    _one_line_failure(proc, f"configuration_error: tenant seed file {seed}", names)
    assert not (tmp_path / "state" / "app.db").exists()


@pytest.mark.parametrize(
    ("section", "switch", "value", "kind"),
    [
        ("smartFhir", "allowFinalNotes", "true", "a string"),
        ("ehrIntegrations", "allowFinalNotes", "yes", "a string"),
        ("ehrIntegrations", "enableWrite", 1, "a number"),
        ("smartFhir", "enableNoteCreate", None, "null"),
    ],
)
def test_a_seeded_switch_that_is_not_true_or_false_is_one_line_naming_it(
    tmp_path: Path, section: str, switch: str, value: object, kind: str
) -> None:
    """Before, ``allowFinalNotes`` was stored whatever it was (and the write-back read it as off), ``"yes"`` or ``1``
    were read as true, and ``null`` was refused in pydantic's words, without the value's type."""
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"id": "clinic-1", "name": "One", "practice_settings": {section: {switch: value}}}))
    proc = _run(tmp_path, "auth", "seed", str(seed))
    _one_line_failure(proc, f"practice_settings.{section}", f"{switch} must be true or false, got {kind}")
    assert not (tmp_path / "state" / "app.db").exists()


@pytest.mark.parametrize(
    ("tenant", "name", "names"),
    [
        ("clinic 1", "Clinic", "--tenant 'clinic 1' --name 'Clinic': id: String should match pattern"),
        ("", "Clinic", "id: String should have at least 1 character"),
        ("c" * 65, "Clinic", "id: String should have at most 64 characters"),
        ("klinik-ü", "Clinic", "id: String should match pattern"),
        ("clinic-1", "", "name: String should have at least 1 character"),
    ],
    ids=["space", "empty-id", "long-id", "unicode-id", "empty-name"],
)
def test_a_bad_tenant_id_or_name_at_bootstrap_is_one_line(tmp_path: Path, tenant: str, name: str, names: str) -> None:
    """It used to be pydantic's own text with its documentation URL and ``run with -v``."""
    proc = _run(tmp_path, "auth", "bootstrap", "--tenant", tenant, "--name", name)
    _one_line_failure(proc, "Error: configuration_error: ", names)
    assert "pydantic" not in proc.stderr and "api key" not in proc.stdout
    assert not (tmp_path / "state" / "app.db").exists()


# --- a key file that is not text --------------------------------------------------------------------------------

KEY_FILES = [
    ("sync-private", ["sync", "conn-1"], "EHR_JWT_PRIVATE_KEY", "is not a readable PEM file"),
    ("serve-private", ["auth", "serve", "--port", "0"], "EHR_JWT_PRIVATE_KEY", "is not a readable PEM file"),
    ("serve-previous", ["auth", "serve", "--port", "0"], "EHR_JWT_PREVIOUS_PUBLIC_KEYS", "is not a readable JSON"),
]


@pytest.mark.parametrize(("args", "variable", "names"), [c[1:] for c in KEY_FILES], ids=[c[0] for c in KEY_FILES])
def test_a_binary_key_file_names_its_variable(tmp_path: Path, args: list[str], variable: str, names: str) -> None:
    """It used to be the codec's own words (``'ascii' codec can't decode byte 0xff``), naming nothing."""
    key = tmp_path / "key-file"
    key.write_bytes(b"\xff\xfe\x00 a DER file, or a file saved as UTF-16")
    proc = _run(tmp_path, *args, env={variable: str(key), "EHR_JWT_KEY_ID": "k1"})
    _one_line_failure(proc, f"{variable}: {key} {names}")


def test_a_signing_key_path_under_home_is_read_as_the_pipelines_read_it(tmp_path: Path) -> None:
    """``EHR_JWT_PRIVATE_KEY=~/...`` (an env file is not shell-expanded): the sync's signing-key check used to
    refuse the path the pipelines' own key reader (``store.provider_configs``) expands and accepts."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "ehr_jwt.pem").write_bytes(pem)
    env = {"HOME": str(tmp_path), "EHR_JWT_PRIVATE_KEY": "~/ehr_jwt.pem", "EHR_JWT_KEY_ID": "k1"}
    assert _run(tmp_path, "db", "migrate", env=env).returncode == 0
    _one_line_failure(_run(tmp_path, "sync", "conn-1", env=env), "connection_not_found", "conn-1")
