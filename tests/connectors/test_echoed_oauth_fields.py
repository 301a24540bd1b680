"""A token endpoint's error body that repeats the request outside ``error_description`` (the sandbox's ``echo`` fault,
``oauth_error``/``oauth_uri``/``oauth_list``: the echo as the ``error`` code itself, in the query of ``error_uri``, or
as the one item of an ``error_description`` that is a JSON array), against the sandbox over a real socket.

Before, only a string ``error_description`` was redacted: the ``error`` and ``error_uri`` were kept as sent and a
non-string description as its ``str()``, so the refresh token and the client secret the echo holds reached the
error's message, which the callback page, 409 answers, the audit and the logs show. Now ``error`` is kept only when
RFC 6749 shaped (``[\\x20-\\x21\\x23-\\x5B\\x5D-\\x7E]``, at most 64 characters) and holding no credential of the
request, else ``malformed_error`` (still a refusal); ``error_uri`` likewise (no spaces, at most 512 characters), else
dropped; a description that is not a string is dropped."""

from __future__ import annotations

import base64
import secrets

import httpx
import pytest

from connectors.errors import OAuthError, is_refusal
from connectors.smart.client_auth import SecretClientAuth
from connectors.smart.token import refresh_grant
from sandbox import SandboxServer

TOKEN_PATH = "/oauth/token"


def _refused(ehr: SandboxServer, shape: str, error: str = "invalid_grant") -> tuple[OAuthError, list[str]]:
    secret, refresh_token = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    ehr.admin.set_fault("echo", path=TOKEN_PATH, body_status=400, echo_as=shape, error=error)
    auth = SecretClientAuth("echo-client", secret)
    with httpx.Client() as http, pytest.raises(OAuthError) as info:
        refresh_grant(f"{ehr.base_url}{TOKEN_PATH}", http=http, client_auth=auth, refresh_token=refresh_token)
    basic = auth.authorization_header().removeprefix("Basic ")
    assert secret in base64.b64decode(basic).decode()
    return info.value, [secret, refresh_token, basic]


def _kept(error: OAuthError) -> list[str]:
    return [str(error), error.error, error.error_description or "", error.error_uri or "", repr(error.args)]


@pytest.mark.parametrize("shape", ["oauth_error", "oauth_uri", "oauth_list"])
def test_no_credential_the_ehr_repeats_in_another_field_of_its_error_is_kept(ehr: SandboxServer, shape: str) -> None:
    """SAL-38: not in the error's message, code, description or URI; the refusal stays a refusal."""
    error, sent = _refused(ehr, shape)
    for kept in _kept(error):
        for value in sent:
            assert value[:12] not in kept, (shape, kept)
    assert is_refusal(error)  # still the EHR refusing the grant: the connection needs a new authorization
    assert error.error == ("malformed_error" if shape == "oauth_error" else "invalid_grant")
    assert error.error_uri is None and error.status == 400


def test_a_well_formed_error_and_uri_are_kept(ehr: SandboxServer) -> None:
    """The usual body (the echo in a string ``error_description``, redacted there) keeps its code as sent."""
    error, sent = _refused(ehr, "oauth", error="invalid_grant")
    assert error.error == "invalid_grant" and "[REDACTED]" in (error.error_description or "")
    assert not any(value[:12] in kept for kept in _kept(error) for value in sent)
