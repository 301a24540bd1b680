"""Vendor plugins as tables: base URLs, scopes, search plans, write profiles (vendors.md §8, DWB-70)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.errors import ConfigurationError, WriteNotSupportedError
from connectors.fhir import SYNCED_RESOURCE_TYPES
from connectors.providers import (
    BulkSupport,
    Persona,
    ProviderPlugin,
    RefreshPolicy,
    ScopeStyle,
    WriteProfile,
    all_providers,
    get_provider,
)

TENANT = "ec2458f2-1e24-41c8-b71b-0e701af7583d"
CONFIGS = {
    "epic": {"fhirBaseUrl": "https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4/", "clientId": "c"},
    "cerner": {"fhirBaseUrl": "https://fhir-ehr.cerner.com", "clientId": "c", "tenantId": TENANT},
    "ecw": {"fhirBaseUrl": "https://fhir4.eclinicalworks.com", "clientId": "c", "practiceCode": "ABCD12"},
    "pcc": {"fhirBaseUrl": "https://connect.pointclickcare.com", "clientId": "c", "pccTenantId": "t-99"},
    "athena": {"clientId": "c", "practiceId": "195900"},
    "generic": {"fhirBaseUrl": "http://127.0.0.1:8080/fhir", "clientId": "c"},
}


def test_registry_lists_the_six_providers() -> None:
    assert sorted(p.id for p in all_providers()) == ["athena", "cerner", "ecw", "epic", "generic", "pcc"]
    with pytest.raises(ConfigurationError, match="known: athena"):
        get_provider("meditech")


@pytest.mark.parametrize(
    ("provider_id", "expected"),
    [
        ("epic", "https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4"),
        ("cerner", f"https://fhir-ehr.cerner.com/r4/{TENANT}"),
        ("ecw", "https://fhir4.eclinicalworks.com/fhir/r4/ABCD12"),
        ("pcc", "https://connect.pointclickcare.com/fhir/R4/t-99"),
        ("athena", "https://api.preview.platform.athenahealth.com/fhir/r4"),
        ("generic", "http://127.0.0.1:8080/fhir"),
    ],
)
def test_build_fhir_base_url(provider_id: str, expected: str) -> None:
    provider = get_provider(provider_id)
    assert provider.build_fhir_base_url(CONFIGS[provider_id]) == expected
    assert provider.build_fhir_base_url(provider.parse_config(CONFIGS[provider_id])) == expected


def test_cerner_base_does_not_double_r4() -> None:
    cfg = {**CONFIGS["cerner"], "fhirBaseUrl": "https://fhir-ehr.cerner.com/r4/"}
    assert get_provider("cerner").build_fhir_base_url(cfg) == f"https://fhir-ehr.cerner.com/r4/{TENANT}"


@pytest.mark.parametrize(
    ("provider_id", "change", "field"),
    [
        ("epic", {"fhirBaseUrl": "http://ehr.example.org/fhir"}, "fhirBaseUrl"),
        ("epic", {"fhirBaseUrl": "not a url"}, "fhirBaseUrl"),
        ("epic", {"clientId": ""}, "clientId"),
        ("epic", {"unknown": "x"}, "unknown"),
        ("cerner", {"tenantId": "not-a-guid"}, "tenantId"),
        ("ecw", {"practiceCode": "a/b"}, "practiceCode"),
        ("pcc", {"pccTenantId": "../x"}, "pccTenantId"),
        ("pcc", {"appType": "robot"}, "appType"),
        ("athena", {"practiceId": "abc"}, "practiceId"),
        ("generic", {"privateKey": "-----BEGIN PRIVATE KEY-----\nnope"}, "privateKey"),
        ("generic", {"jwksUrl": "http://keys.example.org/jwks"}, "jwksUrl"),
    ],
)
def test_config_validation_names_the_bad_field(provider_id: str, change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field) as info:
        get_provider(provider_id).parse_config({**CONFIGS[provider_id], **change})
    assert "nope" not in str(info.value)  # secret values are never echoed


def test_private_key_requires_kid_and_is_kept_secret() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    provider = get_provider("epic")
    with pytest.raises(ConfigurationError, match="kid"):
        provider.parse_config({**CONFIGS["epic"], "privateKey": pem})
    cfg = provider.parse_config({**CONFIGS["epic"], "privateKey": pem, "kid": "k1", "clientSecret": "s3cr3t"})
    assert "s3cr3t" not in repr(cfg) and "PRIVATE KEY" not in repr(cfg)
    assert cfg.private_key is not None and cfg.private_key.get_secret_value() == pem.strip()


@pytest.mark.parametrize("provider", all_providers(), ids=lambda p: p.id)
def test_every_provider_declares_section_8(provider: ProviderPlugin) -> None:
    """vendors.md §8: each module declares every item; every config field has a UI hint."""
    assert provider.display_name and provider.base_url_template and provider.auth_methods
    assert isinstance(provider.refresh_policy, RefreshPolicy)
    assert isinstance(provider.scope_style, ScopeStyle)
    assert isinstance(provider.bulk, BulkSupport)
    assert isinstance(provider.write_profile, WriteProfile)
    assert isinstance(provider.docs_checked_on, dt.date)
    assert (
        provider.rate_limit is not None and provider.rate_limit.make_limiter().capacity == provider.rate_limit.capacity
    )
    aliases = {f.alias or name for name, f in provider.config_model.model_fields.items()}
    assert aliases <= set(provider.field_hints)
    secret_fields = {name for name, hint in provider.field_hints.items() if hint.secret}
    assert secret_fields == {"clientSecret", "privateKey"}


@pytest.mark.parametrize(
    ("provider_id", "style", "refresh", "bulk", "ttl"),
    [
        ("epic", ScopeStyle.V2, RefreshPolicy.ROTATE, BulkSupport.GROUP, 3600),
        ("cerner", ScopeStyle.V1, RefreshPolicy.REUSE_ORIGINAL, BulkSupport.GROUP, 570),
        ("ecw", ScopeStyle.V1, RefreshPolicy.ROTATE, BulkSupport.PATIENT, 3600),
        ("pcc", ScopeStyle.V1, RefreshPolicy.ROTATE, BulkSupport.PATIENT, None),
        ("athena", ScopeStyle.V1, RefreshPolicy.ROTATE, BulkSupport.GROUP, None),
        ("generic", ScopeStyle.V2, RefreshPolicy.ROTATE, BulkSupport.NONE, None),
    ],
)
def test_vendor_facts(
    provider_id: str, style: ScopeStyle, refresh: RefreshPolicy, bulk: BulkSupport, ttl: int | None
) -> None:
    provider = get_provider(provider_id)
    assert (provider.scope_style, provider.refresh_policy, provider.bulk, provider.token_ttl_hint) == (
        style,
        refresh,
        bulk,
        ttl,
    )


def test_only_oracle_health_bulk_lacks_elements_and_patient() -> None:
    """Oracle's Bulk docs: the experimental ``_elements`` and ``patient`` parameters are not supported (BDX-15
    membership then reads whole Patients and re-exports the group)."""
    assert {p.id for p in all_providers() if not p.bulk_member_params} == {"cerner"}


def test_ecw_rate_limit_is_240_per_minute_shared_with_token_calls() -> None:
    limit = get_provider("ecw").rate_limit
    assert limit is not None
    assert (limit.capacity, limit.window_s, limit.scope, limit.shares_token_endpoint) == (
        240,
        60.0,
        "practice-base",
        True,
    )
    assert limit.across_processes  # eCW counts every caller: kept in the app database (store.SharedRateBudget)


def test_ecw_signs_rs384_only() -> None:
    assert {alg for m in get_provider("ecw").auth_methods for alg in m.signing_algs} == {"RS384"}


# --- scopes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", all_providers(), ids=lambda p: p.id)
def test_default_read_scopes_cover_every_synced_type(provider: ProviderPlugin) -> None:
    scopes = provider.default_scopes()
    suffix = ".read" if provider.scope_style is ScopeStyle.V1 else ".rs"
    assert [s for s in scopes if s.startswith("patient/")] == [f"patient/{t}{suffix}" for t in SYNCED_RESOURCE_TYPES]
    assert scopes[-4:] == ["launch/patient", "openid", "fhirUser", "offline_access"]
    assert not any("*" in s for s in scopes)
    assert not any(s.endswith((".write", ".c")) for s in scopes)


@pytest.mark.parametrize(
    ("provider_id", "flags", "expected_writes"),
    [
        ("epic", (True, True, True), ["patient/Patient.c", "patient/DocumentReference.c"]),
        ("epic", (False, True, True), []),
        ("epic", (True, False, True), ["patient/DocumentReference.c"]),
        ("cerner", (True, True, False), ["patient/Patient.write"]),
        ("cerner", (True, False, True), ["patient/DocumentReference.write"]),
        ("ecw", (True, True, True), []),
        ("pcc", (True, True, True), []),
        ("athena", (True, True, True), []),
        ("generic", (True, True, True), ["patient/Patient.c", "patient/DocumentReference.c"]),
    ],
)
def test_write_scopes_need_enable_write_and_the_feature_flag(
    provider_id: str, flags: tuple[bool, bool, bool], expected_writes: list[str]
) -> None:
    enable_write, patient_create, note_create = flags
    scopes = get_provider(provider_id).default_scopes(enable_write, patient_create, note_create)
    assert [s for s in scopes if s.endswith((".write", ".c"))] == expected_writes


@pytest.mark.parametrize(
    ("config", "persona"),
    [
        ({}, "user"),
        ({"appType": "provider"}, "user"),
        ({"appType": "patient"}, "patient"),
        ({"appType": "bulk"}, "system"),
    ],
)
def test_pointclickcare_launch_persona_follows_the_registered_app_type(config: dict[str, str], persona: str) -> None:
    """vendors.md §5: a provider-facing app (the default) reads as its user, a bulk app as the system; only a
    patient-facing app asks patient/ scopes (provider apps were given patient-style scopes)."""
    pcc = get_provider("pcc")
    assert pcc.launch_persona(config) == persona
    scopes = pcc.default_scopes(persona=pcc.launch_persona(config))
    assert scopes[0] == f"{persona}/Patient.read" and not any(
        s.startswith(("patient/", "user/", "system/")) and not s.startswith(f"{persona}/") for s in scopes
    )
    assert ("launch/patient" in scopes) == (persona == "patient") and ("launch" in scopes) == (persona == "user")


def test_other_vendors_launch_as_the_patient_by_default() -> None:
    assert {p.id: p.launch_persona({}) for p in all_providers() if p.id != "pcc"} == dict.fromkeys(
        ("epic", "cerner", "ecw", "athena", "generic"), "patient"
    )


def test_system_scopes_for_backend_services() -> None:
    scopes = get_provider("cerner").default_scopes(persona="system")
    assert scopes[0] == "system/Patient.read" and "openid" not in scopes and "launch/patient" not in scopes


# --- search plans -------------------------------------------------------------------------------------


def test_epic_observation_fans_out_per_category() -> None:
    plans = get_provider("epic").search_plans("Observation", "p1")
    assert plans == [
        {"patient": "p1", "category": "laboratory"},
        {"patient": "p1", "category": "vital-signs"},
        {"patient": "p1", "category": "social-history"},
    ]
    assert get_provider("epic").search_plans("Condition", "p1") == [{"patient": "p1"}]
    with pytest.raises(ValueError, match="patient"):
        get_provider("epic").search_plans("Observation", None)


def test_athena_adds_ah_practice_to_every_search() -> None:
    athena = get_provider("athena")
    assert athena.search_plans("Patient", "p1", config=CONFIGS["athena"]) == [
        {"_id": "p1", "ah-practice": "Organization/a-1.Practice-195900"}
    ]
    assert athena.search_plans("Encounter", None, config=CONFIGS["athena"]) == [
        {"ah-practice": "Organization/a-1.Practice-195900"}
    ]
    with pytest.raises(ConfigurationError, match="ah-practice"):
        athena.search_plans("Patient", "p1")


def test_generic_single_plan_and_reference_types() -> None:
    generic = get_provider("generic")
    assert generic.search_plans("Patient", "p1") == [{"_id": "p1"}]
    assert generic.search_plans("MedicationRequest", "p1") == [{"patient": "p1"}]
    assert generic.search_plans("Practitioner", "p1") == []  # fetched by reference
    with pytest.raises(ValueError, match="not a resource type ehrsync syncs"):
        generic.search_plans("Flag", "p1")


def test_supports_last_updated_static_and_from_capabilities() -> None:
    assert get_provider("cerner").supports_last_updated("Observation")
    # Oracle Health: only the types vendors.md §3 names; without a CapabilityStatement any other is re-pulled whole
    assert not get_provider("cerner").supports_last_updated("Patient")
    assert not get_provider("epic").supports_last_updated("Observation")
    caps = {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": "Observation", "searchParam": [{"name": "_lastUpdated", "type": "date"}]},
                    {"type": "Condition", "searchParam": [{"name": "patient", "type": "reference"}]},
                ],
            }
        ],
    }
    epic = get_provider("epic")
    assert epic.supports_last_updated("Observation", caps)
    assert not epic.supports_last_updated("Condition", caps)
    common = {"rest": [{"mode": "server", "searchParam": [{"name": "_lastUpdated"}], "resource": []}]}
    assert epic.supports_last_updated("Condition", common)


# --- write profiles (DWB-70) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider_id", "persona", "doc_status", "mime", "encounter", "reason"),
    [
        ("epic", "user", "preliminary", "text/plain", True, None),
        ("epic", "user", "final", "text/plain", True, None),
        ("epic", "user", "preliminary", "text/html", True, "mime_type_unsupported"),
        ("epic", "user", "preliminary", "text/plain", False, "encounter_required"),
        ("cerner", "user", "preliminary", "text/plain; charset=utf-8", True, "draft_status_unsupported"),
        ("cerner", "user", "final", "text/plain; charset=utf-8", False, None),
        ("cerner", "user", "final", "application/pdf", False, None),  # sent with a charset (wire_content_type)
        ("cerner", "user", "final", "image/png", False, "mime_type_unsupported"),
        ("cerner", "user", "amended", "text/plain; charset=utf-8", False, "doc_status_unsupported"),
        ("cerner", "system", "amended", "text/plain; charset=utf-8", False, None),
        ("ecw", "user", "final", "text/plain", True, "vendor_disabled"),
        ("pcc", "user", "final", "text/plain", True, "vendor_disabled"),
        ("athena", "user", "final", "text/plain", True, "vendor_disabled"),
        ("generic", "patient", "preliminary", "text/plain", False, None),
    ],
)
def test_dwb70_write_profiles(
    provider_id: str, persona: Persona, doc_status: str, mime: str, encounter: bool, reason: str | None
) -> None:
    profile = get_provider(provider_id).write_profile
    check = lambda: profile.check(  # noqa: E731
        persona=persona,
        doc_status=doc_status,
        mime_type=mime,
        size=100,
        has_encounter=encounter,
    )
    if reason is None:
        check()
    else:
        with pytest.raises(WriteNotSupportedError) as info:
            check()
        assert info.value.reason == reason


@pytest.mark.parametrize(
    ("persona", "author", "token_user", "refused"),
    [
        ("user", "dr-no", "Practitioner/dr-who", True),
        ("user", "dr-no", None, True),
        ("user", "dr-who", "https://ehr.example/r4/t/Practitioner/dr-who", False),
        ("user", None, "Practitioner/dr-who", False),  # no author: Oracle files it as the token's user
        ("system", "dr-no", None, False),  # system tokens name any Practitioner
    ],
)
def test_dwb16_oracle_author_must_be_the_signed_in_provider(
    persona: Persona, author: str | None, token_user: str | None, refused: bool
) -> None:
    """DWB-16 / draft-note §7: under provider tokens Oracle Health takes only the logged-in user as author."""
    cerner = get_provider("cerner").write_profile
    check = lambda: cerner.check(  # noqa: E731
        persona=persona,
        doc_status="final",
        mime_type="text/plain; charset=utf-8",
        size=10,
        has_encounter=False,
        author_id=author,
        token_user=token_user,
    )
    if not refused:
        check()
        return
    with pytest.raises(WriteNotSupportedError) as info:
        check()
    assert info.value.reason == "author_not_signed_in_user" and f"Practitioner/{author}" in str(info.value)


@pytest.mark.parametrize(
    ("token_user", "refused"),
    [
        ("Practitioner/dr-who/_history/2", False),  # a versioned fhirUser names the same Practitioner
        ("https://ehr.example/r4/t/Practitioner/dr-who/_history/2", False),
        ("https://ehr.example/r4/t/Practitioner/dr-who/", False),
        ("https://other.example/r4/t/Practitioner/dr-who", True),  # another server's dr-who is someone else
        ("https://ehr.example/r4/t2/Practitioner/dr-who", True),
        ("https://ehr.example/r4/t/Patient/dr-who", True),
    ],
)
def test_dwb16_oracle_author_is_compared_with_the_signed_in_user_on_this_server(token_user: str, refused: bool) -> None:
    """DWB-16: the signed-in user is the fhirUser's Practitioner on the connection's FHIR server: a version
    (``/_history/2``) does not make it another user (it was refused), a Practitioner of the same id on another
    server is not the author (it was taken for them)."""
    cerner = get_provider("cerner").write_profile
    check = lambda: cerner.check(  # noqa: E731
        persona="user",
        doc_status="final",
        mime_type="text/plain; charset=utf-8",
        size=10,
        has_encounter=False,
        author_id="dr-who",
        token_user=token_user,
        fhir_base="https://ehr.example/r4/t/",
    )
    if not refused:
        check()
        return
    with pytest.raises(WriteNotSupportedError) as info:
        check()
    assert info.value.reason == "author_not_signed_in_user" and token_user in str(info.value)


def test_dwb70_profile_declarations() -> None:
    epic, cerner = get_provider("epic").write_profile, get_provider("cerner").write_profile
    assert epic.conditional_create is False and epic.mime_types == frozenset({"text/plain"})
    assert cerner.allowed_doc_status("user") == frozenset({"final"})
    assert cerner.author_rule.startswith("Practitioner only") and cerner.period_end_required and cerner.inline_only
    assert cerner.wire_content_type("application/pdf") == "application/pdf; charset=utf-8"
    assert cerner.wire_content_type("text/plain; charset=utf-8") == "text/plain; charset=utf-8"
    assert epic.wire_content_type("application/pdf") == "application/pdf"  # no charset rule: as the note has it
    assert get_provider("generic").write_profile.conditional_create is None  # from the CapabilityStatement
    for vendor in ("ecw", "pcc", "athena"):
        assert not get_provider(vendor).write_profile.supported
    with pytest.raises(WriteNotSupportedError) as info:
        epic.check(persona="user", doc_status="final", mime_type="text/plain", size=10_000_000, has_encounter=True)
    assert info.value.reason == "too_large"


def test_bdx26_28_last_updated_params_with_overlap_and_paired_prefixes() -> None:
    mark = dt.datetime(2026, 11, 25, 10, 0, 30, 123456, tzinfo=dt.UTC)
    cerner = get_provider("cerner")
    assert cerner.last_updated_params(mark) == [("_lastUpdated", "gt2026-11-25T09:55:30Z")]
    until = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert cerner.last_updated_params(mark, until, comparator="ge", overlap=dt.timedelta(0)) == [
        ("_lastUpdated", "ge2026-11-25T10:00:30Z"),
        ("_lastUpdated", "lt2026-11-25T10:00:00Z"),
    ]
    with pytest.raises(ValueError, match="timezone"):
        cerner.last_updated_params(dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="comparator"):
        cerner.last_updated_params(mark, comparator="eq")


def test_tenant_smart_server_resolves_to_the_generic_plugin() -> None:
    """``smart`` (a tenant's own SMART server, practice_settings.smartFhir) syncs with no vendor quirks."""
    from connectors.providers import TENANT_SMART_PROVIDER_ID, get_provider

    assert get_provider(TENANT_SMART_PROVIDER_ID).id == "generic"
    assert all(p.id != TENANT_SMART_PROVIDER_ID for p in all_providers())


@pytest.mark.parametrize(
    ("persona", "doc_status", "said"),
    [
        (
            "user",
            "preliminary",
            "docStatus 'preliminary' is not accepted for user tokens by this EHR, which takes 'final': it cannot hold "
            "a draft; submit the note again as `final` once a clinician approved it (`clinicianApproved`), with the "
            "tenant's `allowFinalNotes` on",
        ),
        ("user", "amended", "docStatus 'amended' is not accepted for user tokens by this EHR, which takes 'final'"),
        (
            "patient",
            "final",
            "this EHR files no note under patient tokens: write through a connection whose token is system or user",
        ),
    ],
)
def test_dwb70_a_refused_doc_status_says_what_the_ehr_takes(persona: Persona, doc_status: str, said: str) -> None:
    """Oracle Health's profile: a block reason names the statuses the EHR takes under the token and, for a draft, the
    only way such an EHR files it (before, it named only the refused status)."""
    with pytest.raises(WriteNotSupportedError) as info:
        get_provider("cerner").write_profile.check(
            persona=persona, doc_status=doc_status, mime_type="text/plain; charset=utf-8", size=1, has_encounter=True
        )
    assert info.value.message == said
