"""``ehrsync -v`` shows httpx's per-request lines, without their queries (logs never hold search values such as
``patient=`` or a signed URL's signature)."""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connectors.transport import ehr_client
from connectors.transport.request_lines import QuerylessRequestLines
from ehrsync.cli import _configure_logging
from sandbox import SandboxServer
from tests.connectors.scripted import scripted_server, send
from tests.ehrsync.cli_runs import DROPPED
from tests.engine.helpers import SyncWorld, connect_patient, sandbox_patients

_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def verbose() -> Iterator[None]:
    """``-v``'s logging, and afterwards every logger as it was: the levels, root's handlers, httpx's filters."""
    loggers = [logging.getLogger(name) for name in (None, "httpx", "httpcore", "alembic")]
    levels, handlers = [lg.level for lg in loggers], list(logging.getLogger().handlers)
    _configure_logging(verbose=True)
    yield
    httpx_logger = logging.getLogger("httpx")
    httpx_logger.filters = [f for f in httpx_logger.filters if not isinstance(f, QuerylessRequestLines)]
    logging.getLogger().handlers = handlers
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


def test_request_lines_keep_host_and_path_but_not_the_query(verbose: None, caplog: pytest.LogCaptureFixture) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"resourceType": "Bundle"}))
    with caplog.at_level(logging.INFO, logger="httpx"), httpx.Client(transport=transport) as http:
        http.get("https://ehr.example/fhir/Observation", params={"patient": "p-123", "_count": "50"})
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines == ['HTTP Request: GET https://ehr.example/fhir/Observation "HTTP/1.1 200 OK"']


def test_verbose_after_a_quiet_command_in_one_process_shows_request_lines(
    verbose: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A command without ``-v`` quiets httpx; a later ``-v`` command in the same process (tests run several, as
    ``tests/store/test_migration_upgrade.py`` does ``db migrate``) showed no request lines and no DEBUG all the same:
    the quiet levels stayed (this emptied ``test_verbose_logs_hold_no_answer_headers``'s logs in CI's mixed runs)."""
    _configure_logging(verbose=False)
    _configure_logging(verbose=True)
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with httpx.Client(transport=transport) as http:  # the levels -v set decide what caplog receives
        http.get("https://ehr.example/fhir/metadata")
    logging.getLogger("ehrsync.cli").debug("a debug line")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("httpx", 'HTTP Request: GET https://ehr.example/fhir/metadata "HTTP/1.1 200 OK"'),
        ("ehrsync.cli", "a debug line"),
    ]


def test_configuring_twice_adds_one_filter(verbose: None) -> None:
    _configure_logging(verbose=True)
    assert sum(isinstance(f, QuerylessRequestLines) for f in logging.getLogger("httpx").filters) == 1


def test_a_url_already_turned_into_text_loses_its_query_too(verbose: None, caplog: pytest.LogCaptureFixture) -> None:
    """The auth service's redacting record factory (``install_redaction``, process-wide once installed) turns every
    argument into text before logger filters run: the query goes all the same (this failed in CI's random order)."""
    with caplog.at_level(logging.INFO, logger="httpx"):
        url = "https://ehr.example/fhir/Observation?patient=p-123"
        logging.getLogger("httpx").info('HTTP Request: %s %s "%s %d %s"', "GET", url, "HTTP/1.1", 200, "OK")
    assert [r.getMessage() for r in caplog.records if r.name == "httpx"] == [
        'HTTP Request: GET https://ehr.example/fhir/Observation "HTTP/1.1 200 OK"'
    ]


_TWICE_IN_ONE_PROCESS = """
import logging, sys
from ehrsync.cli import main
for cid in sys.argv[1:]:
    main(["-v", "purge", cid, "--disconnect", "--yes"], standalone_mode=False)
    print(f"=== ran {cid}: {len(logging.getLogger().handlers)} root handler(s)", file=sys.stderr, flush=True)
"""


def _request_lines(stderr: str) -> list[str]:
    """httpx's per-request lines without their timestamps."""
    return [line.split(" INFO ", 1)[1] for line in stderr.splitlines() if " INFO httpx: HTTP Request: " in line]


def test_cli_logs_each_ehr_request_once_also_when_run_twice_in_one_process(
    tmp_path: Path, ehr: SandboxServer, world: SyncWorld
) -> None:
    """``ehrsync -v`` showed every request to the EHR twice: the EHR layers send through a second httpx client
    (``connectors.transport.client``) and both clients logged it. Two commands in one process (as tests run them)
    add no handler either: the second command's requests are logged once too."""
    assert world.env.http is not None
    cids = [connect_patient(world, ehr, http=world.env.http) for _ in range(2)]
    secrets = [world.env.vault.get_access_token(cid) for cid in cids]
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env["EHRSYNC_STATE_DIR"] = str(tmp_path / "state")
    env["INTEGRATIONS_TOKEN_ENC_KEY"] = base64.b64encode(world.cipher_key).decode()
    proc = subprocess.run(
        [sys.executable, "-c", _TWICE_IN_ONE_PROCESS, *cids],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=_ROOT,
    )

    assert proc.returncode == 0, proc.stderr
    marks = re.findall(r"^=== ran (\w+): (\d+) root handler", proc.stderr, flags=re.MULTILINE)
    assert [cid for cid, _ in marks] == cids and marks[0][1] == marks[1][1] == "1", proc.stderr
    base = ehr.base_url.rstrip("/")
    sent = [  # discovery, then the refresh and the access token revoked (SAL-34): each line once
        f'httpx: HTTP Request: GET {base}/fhir/.well-known/smart-configuration "HTTP/1.1 200 OK"',
        f'httpx: HTTP Request: POST {base}/oauth/revoke "HTTP/1.1 200 OK"',
        f'httpx: HTTP Request: POST {base}/oauth/revoke "HTTP/1.1 200 OK"',
    ]
    assert [_request_lines(run) for run in proc.stderr.split("=== ran ")[:2]] == [sent, sent], proc.stderr
    patient = sandbox_patients(world.env.http, ehr)[0]
    assert not any(secret in proc.stderr for secret in secrets) and patient not in proc.stderr


def test_verbose_logs_hold_no_answer_headers(verbose: None, caplog: pytest.LogCaptureFixture) -> None:
    """httpcore's DEBUG trace prints every answer's headers: a redirect's signed ``Location``, a ``Set-Cookie``.
    ``-v`` shows the request lines (without queries), not that trace."""
    signed = "X-Amz-Signature=SIGNATURE-abc123"
    with scripted_server() as (url, script):
        script.actions.append(send(302, b"", {"Location": f"{url}/file?{signed}", "Set-Cookie": "session=COOKIE-xyz"}))
        with caplog.at_level(logging.DEBUG), ehr_client() as http:
            assert http.get(f"{url}/Binary/b1").status_code == 302
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f'HTTP Request: GET {url}/Binary/b1 "HTTP/1.1 302 Found"' in logged
    assert "SIGNATURE" not in logged and "COOKIE" not in logged, logged
