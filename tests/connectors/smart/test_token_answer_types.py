"""Token answer fields of the wrong JSON type or spelling (SAL-15, SAL-21), against the sandbox over a real socket
(the ``token_answer`` fault): a code exchange answered 200 with the field as a real server may send it.

- ``scope`` a number, an object or a list holding a non-string: before, read as absent, i.e. "granted as asked"
  (RFC 6749 §5.1), a grant the server never stated; now the answer is unusable (``invalid_response``, naming
  ``scope``), its tokens handed back to revoke.
- ``need_patient_banner`` the text ``"false"``: before, dropped silently (the launch context lost it); SMART says
  a boolean, so the two spellings a server writes it in (``"true"``/``"false"``, any case) are read as the boolean.
- ``patient`` padded with spaces: before, kept as sent (every later search named a patient id with spaces); a
  FHIR id has no spaces, so the id it spells is taken; so is the id a reference of its own type names
  (``Patient/pat1``: it searched as ``patient=Patient/pat1`` before, which servers accept, so refusing it would
  break a sign-in that worked). One that is no FHIR id at all makes the answer unusable, naming ``patient``, never
  its value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from connectors.errors import OAuthError, UnusableTokenAnswerError
from connectors.smart import PublicClientAuth, TokenResponse, exchange_code, parse_token_response
from sandbox import SandboxServer
from tests.sandbox.helpers import REDIRECT, authorize, authorize_params, pkce, public_client, query_of

_SCOPE = "launch/patient offline_access patient/*.rs"


def _exchange(ehr: SandboxServer, variant: str) -> TokenResponse:
    """A patient sign-in whose token answer the sandbox sends as ``variant`` says."""
    cid = public_client(ehr)
    ehr.admin.preapprove(cid, "pat1")
    verifier, challenge = pkce()
    code = query_of(authorize(ehr, authorize_params(ehr, cid, _SCOPE, challenge)))["code"]
    ehr.admin.set_fault("token_answer", path="/oauth/token", error=variant)
    with httpx.Client(timeout=30) as http:
        return exchange_code(
            ehr.base_url + "/oauth/token",
            http=http,
            client_auth=PublicClientAuth(cid),
            code=code,
            redirect_uri=REDIRECT,
            code_verifier=verifier,
        )


@pytest.mark.parametrize("variant", ["scope_number", "scope_object", "scope_list_number"])
def test_sal21_a_scope_of_the_wrong_type_is_no_grant_as_asked(ehr: SandboxServer, variant: str) -> None:
    with pytest.raises(UnusableTokenAnswerError, match=r"'scope' .* not a space-separated string") as info:
        _exchange(ehr, variant)
    assert info.value.error == "invalid_response"
    assert dict(info.value.issued_tokens).keys() == {"access_token", "refresh_token"}  # to revoke (SAL-34)


def test_sal21_a_scope_list_of_strings_still_reads_and_a_blank_scope_is_still_as_asked() -> None:
    base = {"access_token": "AT", "token_type": "Bearer"}
    assert parse_token_response({**base, "scope": ["openid", "patient/*.rs"]}).scope == "openid patient/*.rs"
    assert parse_token_response({**base, "scope": " "}).scope is None


@pytest.mark.parametrize(
    ("variant", "problem"),
    [("access_token_empty", "lacks 'access_token'"), ("expires_in_zero", "'expires_in' must be positive")],
)
def test_sal15_an_empty_access_token_or_a_zero_lifetime_makes_the_answer_unusable(
    ehr: SandboxServer, variant: str, problem: str
) -> None:
    """An access token of no characters is no token, and one expiring as it is issued cannot be used: both answers
    are refused by name (``invalid_response``), never stored as a connection; their tokens are handed back to
    revoke."""
    with pytest.raises(UnusableTokenAnswerError, match=problem) as info:
        _exchange(ehr, variant)
    assert info.value.error == "invalid_response"
    assert "refresh_token" in dict(info.value.issued_tokens)


def test_sal15_need_patient_banner_as_text_is_the_boolean_it_spells(ehr: SandboxServer) -> None:
    token = _exchange(ehr, "banner_text")
    assert token.need_patient_banner is False
    assert token.launch_context()["need_patient_banner"] is False


@pytest.mark.parametrize(("sent", "read"), [(" TRUE ", True), ("False", False), ("yes", None), (1, None)])
def test_sal15_need_patient_banner_spellings(sent: object, read: bool | None) -> None:
    """Only the two spellings of a boolean are read; anything else is no answer (logged), never a refused grant."""
    token = parse_token_response({"access_token": "AT", "token_type": "Bearer", "need_patient_banner": sent})
    assert token.need_patient_banner is read


def test_sal15_a_padded_patient_id_is_the_id_it_spells(ehr: SandboxServer) -> None:
    token = _exchange(ehr, "patient_padded")
    assert token.patient == "pat1" and token.launch_context()["patient"] == "pat1"


def test_sal15_a_patient_sent_as_its_reference_is_the_id_it_names(ehr: SandboxServer) -> None:
    token = _exchange(ehr, "patient_reference")
    assert token.patient == "pat1" and token.launch_context()["patient"] == "pat1"


@pytest.mark.parametrize("value", ["a b", "x" * 65, "Encounter/1", "Patient/a b", "Patient/1/_history/2", "é1"])
def test_sal15_a_patient_that_is_no_fhir_id_makes_the_answer_unusable(value: str) -> None:
    with pytest.raises(OAuthError, match=r"'patient' is not a FHIR id") as info:
        parse_token_response({"access_token": "AT", "token_type": "Bearer", "patient": value})
    assert value not in str(info.value)


@pytest.mark.parametrize("value", ["a b", "x" * 65, "Patient/1", "é1"])
def test_sal15_an_encounter_that_is_no_fhir_id_is_refused_too(value: str) -> None:
    with pytest.raises(OAuthError, match=r"'encounter' is not a FHIR id"):
        parse_token_response({"access_token": "AT", "token_type": "Bearer", "encounter": value})


def test_sal15_an_encounter_sent_as_its_reference_is_the_id_it_names() -> None:
    token = parse_token_response({"access_token": "AT", "token_type": "Bearer", "encounter": "Encounter/e-1.2"})
    assert token.encounter == "e-1.2"


@pytest.mark.parametrize(
    ("server_offset_s", "anchor_offset_s"),
    [(-90, -90), (-300, -300), (90, 0), (-301, 0), (-400, 0), (None, 0)],
    ids=[
        "server-behind",
        "server-behind-5-min",
        "server-ahead",
        "server-just-over-5-min-off",
        "server-far-off",
        "no-date",
    ],
)
def test_sal17_expires_at_counts_from_the_servers_response_time(
    server_offset_s: int | None, anchor_offset_s: int
) -> None:
    """SAL-17: ``expires_at`` counts ``expires_in`` from the server's response time (its ``Date``) when that is
    behind our clock, so a token is never taken for living longer than the server gave it; a ``Date`` ahead of us,
    more than 5 min off, or absent leaves our clock as the anchor."""
    now = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
    date = None if server_offset_s is None else format_datetime(now + timedelta(seconds=server_offset_s), usegmt=True)
    answer = {"access_token": "a", "token_type": "Bearer", "expires_in": 300}
    token = parse_token_response(answer, date_header=date, clock=lambda: now)
    assert token.issued_at == now + timedelta(seconds=anchor_offset_s)
    assert token.expires_at == token.issued_at + timedelta(seconds=300)
