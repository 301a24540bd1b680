"""An id_token's ``azp``, when present, must be our client_id whatever the audiences (SAL-33; OpenID Connect
Core 2 and 3.1.3.7). Several audiences without ``azp`` are accepted: Core 3.1.3.7 as amended by errata set 2
no longer asks for an ``azp`` there, and the token comes from our own authenticated code exchange. Against the
sandbox over a real socket (the ``id_token`` fault), and with a scripted issuer for the single-audience case the
sandbox does not send."""

from __future__ import annotations

import httpx
import pytest

from connectors.smart import IdTokenError, JwksCache, validate_id_token
from sandbox import SandboxServer
from tests.connectors.smart.test_smart_idtoken import Idp, check, make
from tests.sandbox.helpers import patient_login


def test_sal33_a_multi_audience_id_token_naming_another_azp_is_refused(ehr: SandboxServer) -> None:
    ehr.admin.set_fault("id_token", error="multi_aud_foreign_azp")
    cid, answer = patient_login(ehr)
    with httpx.Client(timeout=30) as http, pytest.raises(IdTokenError, match="azp"):
        validate_id_token(answer["id_token"], issuer=ehr.fhir_base, client_id=cid, http=http, cache=JwksCache())


def test_sal33_a_multi_audience_id_token_without_azp_is_accepted(ehr: SandboxServer) -> None:
    """An issuer listing our client and another in ``aud`` with no ``azp`` signs the user in: OpenID Connect Core
    errata set 2 dropped the "azp SHOULD be present" step. 5f865b4 refused it (``invalid_id_token``, tokens revoked)
    where it had been accepted."""
    ehr.admin.set_fault("id_token", error="multi_aud_no_azp")
    cid, answer = patient_login(ehr)
    with httpx.Client(timeout=30) as http:
        claims = validate_id_token(answer["id_token"], issuer=ehr.fhir_base, client_id=cid, http=http)
    assert cid in claims["aud"] and len(claims["aud"]) > 1 and "azp" not in claims


def test_sal33_the_sandbox_id_token_without_a_fault_still_verifies(ehr: SandboxServer) -> None:
    cid, answer = patient_login(ehr)
    with httpx.Client(timeout=30) as http:
        claims = validate_id_token(answer["id_token"], issuer=ehr.fhir_base, client_id=cid, http=http)
    assert claims["aud"] == cid and "azp" not in claims


@pytest.mark.parametrize(
    "claims",
    [{"aud": "app", "azp": "other"}, {"aud": ["app"], "azp": "other"}, {"aud": ["other", "app"], "azp": "other"}],
    ids=["single-aud-foreign-azp", "one-item-list-foreign-azp", "multi-aud-foreign-azp"],
)
def test_sal33_azp_must_be_ours_when_present(claims: dict[str, object]) -> None:
    with pytest.raises(IdTokenError, match="azp"):
        check(make(claims), Idp())


def test_sal33_our_azp_or_no_azp_is_accepted() -> None:
    assert check(make({"aud": ["app"]}), Idp())["aud"] == ["app"]
    assert check(make({"aud": ["other", "app"]}), Idp())["aud"] == ["other", "app"]
    assert check(make({"aud": "app", "azp": "app"}), Idp())["azp"] == "app"
    assert check(make({"aud": ["other", "app"], "azp": "app"}), Idp())["azp"] == "app"
