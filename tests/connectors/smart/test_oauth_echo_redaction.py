"""An OAuth ``error_description`` repeating the request is kept with every credential replaced (SAL-36, SAL-38),
in whatever encoding the EHR repeats it: as it decoded it, or as it came on the wire (a form body's
percent-encoding, upper or lower case hex), or quoted inside a JSON text of its own (``\\/``, ``\\u002b``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest

from connectors.errors import InvalidClientError, InvalidGrantError, OAuthError
from connectors.smart import PublicClientAuth, SecretClientAuth, refresh_grant

TOKEN_URL = "https://ehr.example/oauth2/token"
#: Opaque tokens and secrets of real EHRs are often standard base64: ``+``, ``/`` and ``=`` are percent-encoded
#: in a form body.
REFRESH_TOKEN = "Rt+Ab/Cd==9f8e7d6c5b4a"
CLIENT_SECRET = "s3cr+t/Key=&tail:42"


def echoing(error: str, say: Callable[[httpx.Request], str]) -> httpx.Client:
    """A token endpoint refusing every request with ``error``, its ``error_description`` made from the request."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": error, "error_description": say(request)})

    return httpx.Client(transport=httpx.MockTransport(answer))


def refused(http: httpx.Client, secret: str | None = None) -> OAuthError:
    auth = SecretClientAuth("app", secret) if secret else PublicClientAuth("app")
    with pytest.raises(OAuthError) as info:
        refresh_grant(TOKEN_URL, http=http, client_auth=auth, refresh_token=REFRESH_TOKEN)
    return info.value


def kept(error: OAuthError) -> str:
    return f"{error} {error.error_description}"


def body(request: httpx.Request) -> str:
    return request.content.decode()


@pytest.mark.parametrize(
    "say",
    [
        pytest.param(lambda r: f"malformed request: {body(r)}", id="form body as it came"),
        pytest.param(lambda r: f"malformed request: {body(r).replace('%2F', '%2f').replace('%2B', '%2b')}", id="hex"),
        pytest.param(lambda r: f"refused {json.dumps({'refresh_token': REFRESH_TOKEN})}", id="json"),
        pytest.param(lambda r: "refused " + REFRESH_TOKEN.replace("/", "\\/").replace("+", "\\u002b"), id="json esc"),
        pytest.param(lambda r: f"unknown refresh token {REFRESH_TOKEN}", id="decoded"),
    ],
)
def test_a_refresh_token_the_ehr_repeats_in_any_encoding_is_redacted(say: Callable[[httpx.Request], str]) -> None:
    error = refused(echoing("invalid_grant", say))
    assert isinstance(error, InvalidGrantError)
    text = kept(error)
    assert "[REDACTED]" in text, text
    for form in (REFRESH_TOKEN, quote(REFRESH_TOKEN, safe=""), "Rt+Ab", "Rt%2BAb", "Rt%2bAb", "Ab\\/Cd", "Ab/Cd"):
        assert form not in text, (form, text)


def test_a_basic_secret_the_ehr_repeats_as_sent_inside_the_header_is_redacted() -> None:
    """The Basic credential decoded but not unquoted: ``app:s3cr%2Bt%2FKey...`` (RFC 6749 §2.3.1 encodes each part)."""

    def say(request: httpx.Request) -> str:
        user_pass = base64.b64decode(request.headers["authorization"].split(" ", 1)[1]).decode()
        return f"client authentication failed for {user_pass}"

    text = kept(refused(echoing("invalid_client", say), CLIENT_SECRET))
    assert "app:[REDACTED]" in text, text
    assert quote(CLIENT_SECRET, safe="") not in text and "s3cr" not in text, text


def test_the_ehrs_own_words_around_the_secret_are_kept() -> None:
    error = refused(echoing("invalid_client", lambda r: f"no such client; body was {body(r)}"), CLIENT_SECRET)
    assert isinstance(error, InvalidClientError)
    assert error.error_description == "no such client; body was grant_type=refresh_token&refresh_token=[REDACTED]"
