"""A URL urllib cannot split (``http://[``) or whose port is no number in 1-65535 became a stored config, a tenant or
a service start that later failed with a bare ValueError (a 500, a traceback). Each place a URL enters the auth
service now refuses it naming the field: the admin API with a 422, a seed file and a setting with one line, an EHR
launch's ``iss`` with a 400."""

from __future__ import annotations

import httpx
import pytest

from auth_service.core.config import load_settings
from auth_service.services.tenants import get_practice_settings
from auth_service.tenants.settings import tenant_seed
from connectors.errors import ConfigurationError
from store.models import Tenant
from tests.auth_service.conftest import NoNetwork
from tests.auth_service.keyutil import enc_key
from tests.auth_service.practice import ISSUER, SMART
from tests.auth_service.test_admin_api import auth

BAD = ["http://[", "http://[::1/fhir", "https://h:99999/fhir", "https://h:abc/fhir", "https://h:-1/fhir"]
#: Refused by the vendor schemas already, but not by ``smart``'s own check: a host with a space, a control character.
ODD = ["https://h ost/fhir", "https://h/fh\x01ir"]
PROVIDERS = "/api/integrations/admin/providers"


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("field", ["fhirBaseUrl", "jwksUrl"])
def test_a_vendor_config_with_a_malformed_url_is_a_422_naming_it(make_app, field: str, bad: str) -> None:
    h = make_app()
    key = h.bootstrap("t1")
    body = {"fhirBaseUrl": "https://epic.example/api/FHIR/R4", "clientId": "epic-app", field: bad}
    r = h.client.put(f"{PROVIDERS}/epic", headers=auth(key), json=body)
    assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text[:300]
    assert [f["field"] for f in r.json()["fields"]] == [field]


@pytest.mark.parametrize("bad", BAD + ODD)
def test_a_smart_config_with_a_malformed_issuer_is_a_422_naming_it(make_app, bad: str) -> None:
    h = make_app()
    key = h.bootstrap("t1", SMART)
    r = h.client.put(f"{PROVIDERS}/smart", headers=auth(key), json={"client_id": "app", "issuer": bad})
    assert r.status_code == 422 and [f["field"] for f in r.json()["fields"]] == ["issuer"]


@pytest.mark.parametrize("bad", BAD)
def test_a_seed_whose_smart_fhir_url_is_malformed_is_refused_naming_it(bad: str) -> None:
    practice = {"smartFhir": {**SMART["smartFhir"], "fhirBaseUrl": bad}}
    with pytest.raises(ConfigurationError, match=r"practice_settings\.smartFhir\.fhirBaseUrl: .*valid port"):
        tenant_seed({"id": "t1", "name": "T", "practice_settings": practice}, "seed")


def test_settings_stored_before_the_rule_still_load() -> None:
    """Every tenant's settings are read on a shared launch: one stored before the rule must not fail them all."""
    practice = {"smartFhir": {**SMART["smartFhir"], "fhirBaseUrl": "https://h:99999/fhir"}}
    tenant = Tenant(id="old", name="Old", settings={"practice_settings": practice})
    assert get_practice_settings(tenant).smart_fhir.fhir_base_url == "https://h:99999/fhir"


@pytest.mark.parametrize("name", ["SMART_ISSUER_ALLOWLIST", "APP_BASE_URL", "DAGSTER_GRAPHQL_URL"])
@pytest.mark.parametrize("bad", BAD)
def test_a_malformed_url_setting_stops_the_start_naming_it(name: str, bad: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{name}: .*it (has|is)"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), **{name: bad})


@pytest.mark.parametrize("iss", BAD + ODD + ["https:///fhir"])
def test_sal06_an_ehr_launch_with_a_malformed_iss_is_a_400_and_calls_nothing(make_app, iss: str) -> None:
    transport = NoNetwork()
    h = make_app(http=httpx.Client(transport=transport), SMART_ISSUER_ALLOWLIST=ISSUER)
    h.bootstrap("t1", SMART)
    for path in ("/api/integrations/smart/launch", "/api/integrations/smart/launch/t1"):
        r = h.client.get(path, params={"iss": iss, "launch": "opaque-launch"})
        assert r.status_code == 400, (path, r.status_code, r.text[:300])
    assert not transport.calls
