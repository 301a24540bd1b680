"""``ehrsync -v`` shows httpx's per-request lines, without their queries (logs never hold search values such as
``patient=`` or a signed URL's signature)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from ehrsync.cli import QuerylessRequestLines, _configure_logging


@pytest.fixture
def verbose() -> Iterator[None]:
    httpx_logger = logging.getLogger("httpx")
    level = httpx_logger.level
    _configure_logging(verbose=True)
    yield
    httpx_logger.filters = [f for f in httpx_logger.filters if not isinstance(f, QuerylessRequestLines)]
    httpx_logger.setLevel(level)


def test_request_lines_keep_host_and_path_but_not_the_query(verbose: None, caplog: pytest.LogCaptureFixture) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"resourceType": "Bundle"}))
    with caplog.at_level(logging.INFO, logger="httpx"), httpx.Client(transport=transport) as http:
        http.get("https://ehr.example/fhir/Observation", params={"patient": "p-123", "_count": "50"})
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines == ['HTTP Request: GET https://ehr.example/fhir/Observation "HTTP/1.1 200 OK"']


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
