"""Discovery leniency (SAL-02, SAL-04) against the sandbox: a smart-configuration that lacks a field ehrsync
needs is completed from the CapabilityStatement's oauth-uris extension, with a warning, not refused."""

from __future__ import annotations

import logging

import httpx
import pytest

from connectors.smart import discover
from sandbox import SandboxServer

SERVER_ROOT_SUFFIX = "/fhir"


@pytest.mark.parametrize(
    "dropped",
    [
        ["grant_types_supported"],
        ["capabilities"],
        ["token_endpoint"],
        ["authorization_endpoint"],
        ["token_endpoint", "authorization_endpoint", "grant_types_supported", "capabilities"],
    ],
)
def test_sal02_sal04_missing_field_falls_back_to_oauth_uris(
    sandbox: SandboxServer, dropped: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.admin.settings(drop_smart_fields=dropped)
    root = sandbox.fhir_base.removesuffix(SERVER_ROOT_SUFFIX)
    with httpx.Client(timeout=10) as http, caplog.at_level(logging.WARNING, logger="connectors.smart.discovery"):
        cfg = discover(sandbox.fhir_base, http=http)
    assert cfg.token_endpoint == root + "/oauth/token"
    assert cfg.require_user_launch() == root + "/oauth/authorize"
    assert cfg.revocation_endpoint == root + "/oauth/revoke"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("falling back to the CapabilityStatement" in m and dropped[0] in m for m in warned), warned
    if "grant_types_supported" in dropped:
        assert "authorization_code" in cfg.grant_types_supported
    # fields the well-known file still has are kept from it
    if "token_endpoint_auth_methods_supported" not in dropped:
        assert "private_key_jwt" in cfg.token_endpoint_auth_methods_supported


def test_sal02_complete_document_needs_no_metadata(sandbox: SandboxServer, caplog: pytest.LogCaptureFixture) -> None:
    with httpx.Client(timeout=10) as http, caplog.at_level(logging.WARNING, logger="connectors.smart.discovery"):
        cfg = discover(sandbox.fhir_base, http=http)
    assert not cfg.smart_v1 and "oauth-uris-fallback" not in cfg.raw
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
