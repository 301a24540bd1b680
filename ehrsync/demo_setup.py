"""What ``ehrsync demo`` sets up before it syncs: its settings file, its signing key, the auth service, and the
headless patient consent. The demo's composition root; ``ehrsync.demo`` runs the steps."""

from __future__ import annotations

import base64
import contextlib
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from ehrsync.private_files import write_private
from settings import AppSettings

__all__ = [
    "BACKEND_CLIENT",
    "DEMO_MARKER",
    "DEMO_TENANT",
    "ENV_FILE",
    "GITIGNORE",
    "PATIENT_CLIENT",
    "DemoError",
    "auth_service",
    "authorize_patient",
    "check_state_dir",
    "check_ui_state_dir",
    "demo_environment",
    "is_demo_state",
    "mark_demo_state",
    "new_state_folder",
    "practice_settings",
    "refuse_external_stores",
]

DEMO_TENANT = "demo-clinic"
PATIENT_CLIENT = "ehrsync-demo"
BACKEND_CLIENT = "ehrsync-demo-bulk"
ENV_FILE = "ehrsync.env"
#: Written by ``ehrsync demo`` alone, into a state folder it creates: what makes a non-empty folder one the demo
#: may delete. Not ``ehrsync.env``: ``ehrsync ui`` writes that into a new or empty folder too.
DEMO_MARKER = ".ehrsync-demo"
#: Written (``*``) into a state folder ehrsync creates or finds empty, as Python's venv does: nothing in it (the vault
#: key in ehrsync.env, tokens, PHI) is committed from any git work tree it lies in, whatever that tree ignores.
GITIGNORE = ".gitignore"
#: What ehrsync keeps at the top of a state folder (``app.db*``, ``warehouse.duckdb*`` too). A demo's from before the
#: marker is still the demo's when it holds the demo's signing key and nothing else.
_STATE_NAMES = frozenset(
    {ENV_FILE, DEMO_MARKER, GITIGNORE, "keys", "landing", "attachments", "dagster_home", "analyst"}
)
_STATE_PREFIXES = ("app.db", "warehouse.duckdb", f".{ENV_FILE}.")  # the last: a key write a kill interrupted
#: What ``ehrsync ui`` leaves in a new folder (``make ui`` before any demo, whose note says to run the demo first):
#: its ehrsync.env, Dagster's home, and an app database the code location opened but nobody migrated.
_UI_ONLY_NAMES = frozenset({ENV_FILE, GITIGNORE, "dagster_home", "app.db"})
# Locations come from the state folder; an env file written by an older demo may still name them.
_LOCATION_KEYS = ("DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL")
_STATE_VARIABLES = ("EHRSYNC_STATE_DIR", "EHRSYNC_HOME")  # the first set wins, as in settings.AppSettings
DEFAULT_UI_STATE = Path("var/demo")


class DemoError(RuntimeError):
    """A demo step failed; the message says which and why."""


def check_state_dir(state_dir: Path, *, deleting: bool = False) -> None:
    """``--state`` must be (or become) a folder: named before anything else is checked or deleted. One the demo
    will delete (``deleting``) must be empty or one the demo created (``is_demo_state``): a mistyped ``--state``
    naming someone's folder (``.``, a home, a production state folder, one ``ehrsync ui`` was pointed at) is
    refused, never wiped."""
    if state_dir.exists() and not state_dir.is_dir():
        raise DemoError(f"--state {state_dir} is a file, not a folder")
    parent = next((p for p in state_dir.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DemoError(f"--state {state_dir} lies under {parent}, which is a file")
    if deleting and state_dir.is_dir() and any(state_dir.iterdir()) and not is_demo_state(state_dir):
        raise DemoError(
            f"--state {state_dir} is not empty and was not created by `ehrsync demo` (it holds no {DEMO_MARKER}), "
            "so it is not a demo state folder: the demo deletes its state folder to start clean and will not "
            "delete this one; name a new or empty folder (the default is var/demo), or delete this one yourself "
            "if it is an earlier demo's state"
        )


def is_demo_state(state_dir: Path) -> bool:
    """A folder ``ehrsync demo`` created: it holds ``DEMO_MARKER``, or (a demo's from before the marker) the
    demo's signing key, its ``ehrsync.env``, and nothing a demo does not write. Or one only ``ehrsync ui`` ran over:
    its ``ehrsync.env``, Dagster's home and an app database without a single table (nothing of anyone's)."""
    if (state_dir / DEMO_MARKER).is_file():
        return True
    names = {p.name for p in state_dir.iterdir()}
    if {ENV_FILE, "app.db"} <= names <= _UI_ONLY_NAMES and _no_tables(state_dir / "app.db"):
        return True
    if not (state_dir / ENV_FILE).is_file() or not (state_dir / "keys" / "ehr_jwt.pem").is_file():
        return False
    return not _foreign_names(state_dir)


def _foreign_names(state_dir: Path) -> list[str]:
    """The names at the top of ``state_dir`` that ehrsync does not keep in a state folder, sorted."""
    return sorted(
        p.name for p in state_dir.iterdir() if p.name not in _STATE_NAMES and not p.name.startswith(_STATE_PREFIXES)
    )


def check_ui_state_dir(state_dir: Path, named_by: str = "--state") -> bool:
    """``ehrsync ui`` writes ``ehrsync.env`` (the vault key) into its state folder, so ``--state`` must be new,
    empty, or already an ehrsync state folder: the demo's (``DEMO_MARKER``), or one holding ``ehrsync.env`` and
    nothing ehrsync does not keep there. Any other folder (a home, a project checkout, someone's documents, a
    state folder whose settings live elsewhere) is refused before anything is written, naming the folder as
    ``named_by`` (the flag or variable that chose it) did. True: new or empty."""
    check_state_dir(state_dir)
    if not state_dir.exists() or not any(state_dir.iterdir()):
        return True
    if (state_dir / DEMO_MARKER).is_file():
        return False
    foreign = _foreign_names(state_dir)
    if (state_dir / ENV_FILE).is_file() and not foreign:
        return False
    listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    why = f"holds other files ({listed})" if foreign else f"is not empty and holds no {ENV_FILE} or {DEMO_MARKER}"
    raise DemoError(
        f"{_chosen(named_by, state_dir)} {why}, so it is not an ehrsync state folder: `ehrsync ui` keeps its "
        f"settings and vault key ({ENV_FILE}) in its state folder and will not write them there; pass a new or "
        "empty folder (the default is var/demo) or one an earlier `ehrsync demo` or `ehrsync ui` made"
    )


def new_state_folder(state_dir: Path) -> None:
    """Create the (new or empty) state folder with a ``.gitignore`` that ignores everything in it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / GITIGNORE).write_text("# written by ehrsync: this state folder holds a vault key and PHI\n*\n")


def _no_tables(database: Path) -> bool:
    """An SQLite file (opened read-only) that holds no row but its migration revision: never migrated, or migrated
    by ``ehrsync ui`` and never used, so it holds no connection or token."""
    if not database.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as con:
            tables = [row[0] for row in con.execute("select name from sqlite_master where type = 'table'")]
            return not any(
                con.execute(f'select 1 from "{name}" limit 1').fetchone()
                for name in tables
                if name != "alembic_version"
            )
    except sqlite3.Error:  # not an SQLite file, or unreadable: not known to be empty
        return False


def mark_demo_state(state_dir: Path) -> None:
    """Create the (new or empty) state folder as the demo's own: a later ``ehrsync demo`` may delete it."""
    new_state_folder(state_dir)
    (state_dir / DEMO_MARKER).write_text(
        "Created by `ehrsync demo`, which deletes this whole folder to start clean when it runs over it again"
        " (unless --keep).\n"
    )


def refuse_external_stores(app: AppSettings) -> None:
    """The demo starts clean by deleting its state folder, so it keeps the app database and the warehouse in it
    (SQLite and DuckDB) and refuses, in one line, an environment that names other ones rather than ignore them."""
    named = [name for name in ("DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL") if getattr(app, name).strip()]
    if named:
        raise DemoError(
            f"ehrsync demo keeps its app database and warehouse under --state and does not use {', '.join(named)}: "
            "unset it to run the demo (`ehrsync sync` and `ehrsync ui` use it)"
        )


def ui_state_dir(given: Path | None, environ: Mapping[str, str]) -> tuple[Path, str]:
    """``ehrsync ui``'s state folder and what named it: ``--state``, else the variable ``EHRSYNC_STATE_DIR`` (else
    ``EHRSYNC_HOME``) when set, else ``var/demo``. Dagster's runs read the variable, so a ``--state`` naming
    another folder is refused rather than splitting the key file from the state it unlocks."""
    variable = next((name for name in _STATE_VARIABLES if environ.get(name, "").strip()), None)
    if variable is None:
        return (given, "--state") if given is not None else (DEFAULT_UI_STATE, "--state")
    named = Path(environ[variable].strip())
    if given is not None and given.resolve() != named.resolve():
        raise DemoError(
            f"--state {given} and {variable}={named} name different folders: pass one of them "
            f"(unset {variable}, or give --state the same folder)"
        )
    return (given, "--state") if given is not None else (named, variable)


def _chosen(named_by: str, folder: Path) -> str:
    """How the user named the folder: ``--state X`` or ``EHRSYNC_STATE_DIR=X``."""
    return f"{named_by} {folder}" if named_by.startswith("-") else f"{named_by}={folder}"


def demo_environment(state_dir: Path) -> dict[str, str]:
    """Settings the demo and ``make ui`` share, kept in ``<state>/ehrsync.env`` (mode 600; holds the vault key).

    The app database and warehouse are not written: both derive from ``EHRSYNC_STATE_DIR``, which is always the
    folder the file lies in (a state folder moved elsewhere must not point its runs back at the old place)."""
    env_path = state_dir / ENV_FILE
    values: dict[str, str] = {}
    if env_path.exists():
        for line in env_path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#") and key.strip() not in (*_LOCATION_KEYS, *_STATE_VARIABLES):
                values[key.strip()] = value.strip()
    if not values.get("INTEGRATIONS_TOKEN_ENC_KEY", "").strip():  # a blank key is none: nothing is sealed under it
        values["INTEGRATIONS_TOKEN_ENC_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    values["EHRSYNC_STATE_DIR"] = str(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    header = "# written by `ehrsync demo` or `ehrsync ui`; read by both. Holds the vault key: keep it private.\n"
    text = header + "".join(f"{k}={v}\n" for k, v in sorted(values.items()))
    write_private(env_path, text.encode())  # whole or not at all: a failed write keeps the old key
    return values


def _signing_key(state_dir: Path) -> Path:
    """An RSA key for private_key_jwt (RS384), generated once per demo state."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = state_dir / "keys" / "ehr_jwt.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private(
            path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
    return path


@contextmanager
def auth_service(
    state_dir: Path, env: Mapping[str, str], fhir_base: str, *, port: int = 0
) -> Iterator[tuple[str, Any]]:
    """The auth service on ``127.0.0.1:port`` (0: a free port) over the demo's state; yields its URL and context."""
    from auth_service.app import create_app
    from auth_service.core.config import load_settings
    from ehrsync.services import serve_in_thread

    def factory(base_url: str) -> Any:
        settings = load_settings(
            INTEGRATIONS_TOKEN_ENC_KEY=env["INTEGRATIONS_TOKEN_ENC_KEY"],
            EHRSYNC_STATE_DIR=env["EHRSYNC_STATE_DIR"],
            APP_BASE_URL=base_url,
            SMART_ISSUER_ALLOWLIST=fhir_base,
            EHR_JWT_PRIVATE_KEY=str(_signing_key(state_dir)),
            EHR_JWT_KEY_ID="demo-key-1",
        )
        return create_app(settings)

    with serve_in_thread(factory, port=port) as running:
        yield running.base_url, running.app.state.ctx


def practice_settings(fhir_base: str) -> dict[str, Any]:
    """The demo tenant's practice settings: SMART patient launch plus Bulk export over the sandbox."""
    return {
        "smartFhir": {"enabled": True, "issuer": fhir_base, "fhirBaseUrl": fhir_base, "clientId": PATIENT_CLIENT},
        "ehrIntegrations": {
            "enabledProviders": ["generic"],
            "providerConfigs": {
                "generic": {"fhirBaseUrl": fhir_base, "clientId": BACKEND_CLIENT, "kid": "demo-key-1"},
            },
            "enableBulkExport": True,
        },
    }


def authorize_patient(app_url: str, sandbox_admin: Any, patient_id: str) -> None:
    """What a patient's browser does, headless: the sandbox pre-approves this patient instead of a consent click."""
    sandbox_admin.preapprove(PATIENT_CLIENT, patient_id)
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        start = browser.get(
            f"{app_url}/api/integrations/smart/login", params={"tenant": DEMO_TENANT, "provider": "smart"}
        )
        if start.status_code != 302:
            raise DemoError(f"login did not redirect to the EHR: HTTP {start.status_code} {start.text[:200]}")
        consent = browser.get(start.headers["location"])
        if consent.status_code not in (302, 303):
            raise DemoError(f"the sandbox did not approve: HTTP {consent.status_code}")
        callback = consent.headers["location"]
        if "error" in parse_qs(urlsplit(callback).query):
            raise DemoError(f"authorization refused: {parse_qs(urlsplit(callback).query)['error'][0]}")
        done = browser.get(callback)
        if done.status_code != 303:
            raise DemoError(f"callback failed: HTTP {done.status_code} {done.text[:200]}")
