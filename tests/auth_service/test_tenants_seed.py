"""Tenant seed files, bootstrap of the first admin key, and write-scope gating by flags."""

from __future__ import annotations

import json

import pytest

from auth_service.bootstrap import bootstrap_admin, load_tenants_file
from auth_service.services.context import build_context
from auth_service.services.profiles import resolve_profile
from auth_service.services.tenants import resolve_api_key
from auth_service.tenants.settings import PracticeSettings, load_tenant_seed, write_scopes_allowed
from connectors.errors import ConfigurationError
from store.models import ProviderConfig

SEED = [
    {
        "id": "clinic-1",
        "name": "Clinic One",
        "practice_settings": {
            "smartFhir": {
                "enabled": True,
                "issuer": "https://ehr.example/fhir",
                "fhirBaseUrl": "https://ehr.example/fhir",
                "clientId": "app",
                "enableWrite": True,
                "enableNoteCreate": True,
            },
            "ehrIntegrations": {
                "enabledProviders": ["epic"],
                "providerConfigs": {
                    "epic": {
                        "fhirBaseUrl": "https://epic.example/api/FHIR/R4",
                        "clientId": "epic-app",
                        "clientSecret": "epic-secret-9",
                    }
                },
                "enableBulkExport": True,
                "hostAppExtra": {"kept": True},
            },
        },
    }
]


def test_seed_file_roundtrip_and_secret_sealed(make_settings, tmp_path) -> None:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED))
    settings = make_settings()
    assert load_tenants_file(path, settings) == ["clinic-1"]
    result = bootstrap_admin("clinic-1", "Clinic One", settings)
    assert "epic-secret-9" not in repr(result) and result.api_key not in repr(result)
    ctx = build_context(settings)
    try:
        with ctx.db.session() as s, s.begin():
            assert resolve_api_key(s, result.api_key) == "clinic-1"
            assert resolve_api_key(s, "ehs_wrong") is None
            row = s.query(ProviderConfig).one()
            assert "epic-secret-9" not in json.dumps(row.config)
            profile = resolve_profile(s, ctx.cipher, settings, "clinic-1", "epic")
            assert profile.auth_method == "client_secret_basic"
            assert profile.fhir_base == "https://epic.example/api/FHIR/R4"
            # SMART_ENABLE_WRITE is off: no write scope even though the tenant enabled writes
            assert not any(s_.endswith(".c") or s_.endswith(".write") for s_ in profile.scopes.split())
            smart = resolve_profile(s, ctx.cipher, settings, "clinic-1", "smart")
            assert smart.auth_method == "none" and smart.client_id == "app"
    finally:
        ctx.close()


def test_write_scopes_need_all_three_flags(make_settings) -> None:
    settings = make_settings(SMART_ENABLE_WRITE="true")
    ctx = build_context(settings)
    try:
        from auth_service.services.tenants import upsert_tenant
        from auth_service.tenants.settings import TenantSeed

        with ctx.db.session() as s, s.begin():
            upsert_tenant(s, TenantSeed.model_validate(SEED[0]), ctx.cipher)
            epic = resolve_profile(s, ctx.cipher, settings, "clinic-1", "epic")
            assert "patient/DocumentReference.c" in epic.scopes.split() and epic.note_write_allowed
            smart = resolve_profile(s, ctx.cipher, settings, "clinic-1", "smart")
            assert "patient/DocumentReference.c" in smart.scopes.split()
    finally:
        ctx.close()
    practice = PracticeSettings.model_validate({"smartFhir": {"enableWrite": True, "enableNoteCreate": True}})
    assert write_scopes_allowed(True, practice, "enableNoteCreate")
    assert not write_scopes_allowed(False, practice, "enableNoteCreate")
    assert not write_scopes_allowed(True, practice, "enablePatientCreate")
    assert not write_scopes_allowed(True, PracticeSettings(), "enableNoteCreate")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"id": "bad id!", "name": "x"}', "entry 0: id"),
        ('{"id": "a", "name": "x", "practice_settings": {"smartFhir": {"fhirBaseUrl": "ftp://x"}}}', "fhirBaseUrl"),
        ('[{"id": "a", "name": "x"}, {"name": "no id"}]', "entry 1: id"),
        (
            '{"id": "a", "name": "x", "practice_settings": {"smartFhir": {"allowFinalNotes": "true"}}}',
            "smartFhir: Value error, allowFinalNotes must be true or false, got a string",
        ),
        (
            '{"id": "a", "name": "x", "practice_settings": {"ehrIntegrations": {"enableBulkExport": 1}}}',
            "enableBulkExport must be true or false, got a number",
        ),
    ],
)
def test_bad_seed_files_name_the_problem(tmp_path, content: str, needle: str) -> None:
    path = tmp_path / "seed.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=needle):
        load_tenant_seed(path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_tenant_seed(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("provider", "config", "needle"),
    [
        ("epic", {"fhirBaseUrl": "ftp://epic.example/fhir", "clientId": "a"}, "providerConfigs.epic.fhirBaseUrl"),
        ("epic", {"fhirBaseUrl": "https://epic.example/api/FHIR/R4"}, "providerConfigs.epic.clientId"),
        ("pcc", {"fhirBaseUrl": "https://pcc.example/fhir", "clientId": "a", "pccTenantId": "t1", "kid": "svc"},
         "PointClickCare"),
        ("nosuchvendor", {"clientId": "a"}, "providerConfigs.nosuchvendor: unknown provider"),
    ],
)  # fmt: skip
def test_a_seeded_provider_config_is_checked_as_the_admin_api_checks_one(
    make_settings, tmp_path, provider: str, config: dict, needle: str
) -> None:
    """A seed's ``providerConfigs`` entry meets the vendor's schema and its declared client auth methods, named by
    tenant and field before anything is stored; before, a bad one surfaced at the first launch or sync."""
    seed = json.loads(json.dumps(SEED))
    seed[0]["practice_settings"]["ehrIntegrations"]["providerConfigs"] = {provider: config}
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    settings = make_settings()
    with pytest.raises(ConfigurationError, match=needle) as info:
        load_tenants_file(path, settings)
    assert "tenant 'clinic-1'" in str(info.value)
    ctx = build_context(settings)
    try:
        with ctx.db.session() as s:
            assert s.query(ProviderConfig).count() == 0  # nothing stored
    finally:
        ctx.close()


def test_a_seed_rewrites_a_stored_switch_equal_in_python_only(make_settings, tmp_path) -> None:
    """A row holding ``"allowFinalNotes": 1`` (edited by hand: the write-back holds final notes on it) seeded again
    with ``true``: before, SQLAlchemy compared the two settings, found them equal (``1 == True``) and wrote nothing,
    so the operator's fix never reached the row."""
    from sqlalchemy.orm.attributes import flag_modified

    from store.models import Tenant

    seed = {"id": "clinic-1", "name": "One", "practice_settings": {"smartFhir": {"allowFinalNotes": True}}}
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    settings = make_settings()
    assert load_tenants_file(path, settings) == ["clinic-1"]
    ctx = build_context(settings)
    try:
        with ctx.db.session() as s, s.begin():
            tenant = s.get(Tenant, "clinic-1")
            tenant.settings["practice_settings"]["smartFhir"]["allowFinalNotes"] = 1  # the hand edit
            flag_modified(tenant, "settings")
        assert load_tenants_file(path, settings) == ["clinic-1"]
        with ctx.db.session() as s:
            stored = s.get(Tenant, "clinic-1").settings["practice_settings"]["smartFhir"]["allowFinalNotes"]
        assert stored is True, stored
    finally:
        ctx.close()


def test_a_seed_replaces_stored_settings_that_are_not_json(make_settings, tmp_path) -> None:
    """docs/TROUBLESHOOTING.md's fix for ``tenant_setting_invalid`` ("stored settings are not JSON", a hand edit of an
    SQLite app database) is ``ehrsync auth seed FILE``: before, the seed loaded the old row to replace it and failed
    with a bare ``JSONDecodeError``, so the documented fix could not be applied; now it writes the seed's settings."""
    from sqlalchemy import text

    from store.models import Tenant

    seed = {"id": "clinic-1", "name": "One", "practice_settings": {"ehrIntegrations": {"enableBulkExport": True}}}
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    settings = make_settings()
    assert load_tenants_file(path, settings) == ["clinic-1"]
    ctx = build_context(settings)
    try:
        with ctx.db.engine.begin() as conn:  # the hand edit
            conn.execute(text("UPDATE tenants SET settings = '{enableBulkExport: true' WHERE id = 'clinic-1'"))
        assert load_tenants_file(path, settings) == ["clinic-1"]
        with ctx.db.session() as s:
            stored = s.get(Tenant, "clinic-1").settings["practice_settings"]["ehrIntegrations"]["enableBulkExport"]
        assert stored is True, stored
    finally:
        ctx.close()


@pytest.mark.parametrize(
    ("stored", "said"),
    [
        ("[]", "settings must be an object, got an array"),
        ("false", "settings must be an object, got a boolean"),
        ("0", "settings must be an object, got a number"),
        ("[1]", "settings must be an object, got an array"),
        ('{"practice_settings": false}', "practice_settings must be an object, got a boolean"),
    ],
)
def test_settings_that_are_no_object_are_one_problem_named_alike_by_bootstrap_and_sign_in(
    make_settings, tmp_path, stored: str, said: str
) -> None:
    """A hand edit left JSON that is no object: ``ehrsync auth bootstrap`` lists it as the tenant's problem, and the
    epic sign-in (``resolve_profile``) is refused in the same words. Before, the sign-in read a falsy one as ``{}``
    and a truthy one as no provider: ``provider 'epic' is disabled for this tenant``, as if an admin had said so."""
    from sqlalchemy import text

    from connectors.errors import TenantSettingInvalidError

    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED))
    settings = make_settings()
    assert load_tenants_file(path, settings) == ["clinic-1"]
    ctx = build_context(settings)
    try:
        with ctx.db.engine.begin() as conn:  # the hand edit
            conn.execute(text("UPDATE tenants SET settings = :s WHERE id = 'clinic-1'"), {"s": stored})
        assert bootstrap_admin("clinic-1", "Clinic One", settings).setting_problems == (said,)
        with ctx.db.session() as s, pytest.raises(TenantSettingInvalidError) as refused:
            resolve_profile(s, ctx.cipher, settings, "clinic-1", "epic")
        assert refused.value.message == f"the tenant's {said}; fix the setting (ehrsync auth seed)"
    finally:
        ctx.close()
