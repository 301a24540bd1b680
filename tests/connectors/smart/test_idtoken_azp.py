"""An id_token for several audiences must name us as its authorized party (SAL-33; OpenID Connect Core 3.1.3.7
items 4-5): with more than one ``aud``, ``azp`` must be present and be our client_id; an ``azp`` that is present
must be our client_id whatever the audiences. Before, a multi-audience token with no ``azp`` was accepted, and
so was a single-audience one whose ``azp`` named another client. Against the sandbox over a real socket (the
``id_token`` fault), and with a scripted issuer for the single-audience case the sandbox does not send."""

from __future__ import annotations

import httpx
import pytest

from connectors.smart import IdTokenError, JwksCache, validate_id_token
from sandbox import SandboxServer
from tests.connectors.smart.test_smart_idtoken import Idp, check, make
from tests.sandbox.helpers import patient_login


@pytest.mark.parametrize("variant", ["multi_aud_no_azp", "multi_aud_foreign_azp"])
def test_sal33_a_multi_audience_id_token_without_our_azp_is_refused(ehr: SandboxServer, variant: str) -> None:
    ehr.admin.set_fault("id_token", error=variant)
    cid, answer = patient_login(ehr)
    with httpx.Client(timeout=30) as http, pytest.raises(IdTokenError, match="azp"):
        validate_id_token(answer["id_token"], issuer=ehr.fhir_base, client_id=cid, http=http, cache=JwksCache())


def test_sal33_the_sandbox_id_token_without_a_fault_still_verifies(ehr: SandboxServer) -> None:
    cid, answer = patient_login(ehr)
    with httpx.Client(timeout=30) as http:
        claims = validate_id_token(answer["id_token"], issuer=ehr.fhir_base, client_id=cid, http=http)
    assert claims["aud"] == cid and "azp" not in claims


@pytest.mark.parametrize(
    "claims",
    [{"aud": "app", "azp": "other"}, {"aud": ["app"], "azp": "other"}, {"aud": ["other", "app"], "azp": None}],
    ids=["single-aud-foreign-azp", "one-item-list-foreign-azp", "multi-aud-no-azp"],
)
def test_sal33_azp_must_be_ours_when_present_or_when_audiences_are_several(claims: dict[str, object]) -> None:
    with pytest.raises(IdTokenError, match="azp"):
        check(make(claims), Idp())


def test_sal33_our_azp_or_a_single_audience_without_one_is_accepted() -> None:
    assert check(make({"aud": ["app"]}), Idp())["aud"] == ["app"]
    assert check(make({"aud": "app", "azp": "app"}), Idp())["azp"] == "app"
    assert check(make({"aud": ["other", "app"], "azp": "app"}), Idp())["azp"] == "app"
