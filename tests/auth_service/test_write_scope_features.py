"""Least privilege: a configured scope list asks write access only where a write feature that is on uses it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from auth_service.services import write_scopes
from auth_service.services.profiles import resolve_profile
from auth_service.services.write_scopes import least_privilege_scopes
from tests.auth_service.conftest import AppHandle

EPIC = {"fhirBaseUrl": "https://ehr.example/fhir", "clientId": "epic-app", "clientSecret": "epic-secret-9"}


def _profile_scopes(make_app: Callable[..., AppHandle], scopes: str, **flags: bool) -> list[str]:
    h = make_app(SMART_ENABLE_WRITE="true")
    integrations = {"enabledProviders": ["epic"], "providerConfigs": {"epic": {**EPIC, "scopes": scopes.split()}}}
    h.bootstrap("t1", {"ehrIntegrations": {**integrations, "enableWrite": True, **flags}})
    ctx = h.app.state.ctx
    with ctx.db.session() as session:
        return resolve_profile(session, ctx.cipher, ctx.settings, "t1", "epic").scopes.split()


def test_sal_note_write_on_patient_create_off_asks_no_patient_write(make_app: Callable[..., AppHandle]) -> None:
    """With note write-back on and patient creation off, a configured ``user/Patient.c`` (and v1
    ``patient/Patient.write``) went out in the authorize request: the write filter ran only with both features off."""
    configured = "openid user/Patient.rs user/Patient.c patient/Patient.write patient/DocumentReference.c"
    scopes = _profile_scopes(make_app, configured, enableNoteCreate=True)
    assert "user/Patient.c" not in scopes and "patient/Patient.write" not in scopes, scopes
    assert {"openid", "user/Patient.rs", "patient/DocumentReference.c"} <= set(scopes), scopes


def test_sal_patient_create_on_note_off_asks_no_document_write(make_app: Callable[..., AppHandle]) -> None:
    configured = "user/Patient.c user/DocumentReference.c user/Binary.c user/DocumentReference.rs"
    scopes = _profile_scopes(make_app, configured, enablePatientCreate=True)
    assert scopes == ["user/Patient.c", "user/DocumentReference.rs"], scopes


@pytest.mark.parametrize(
    ("scope", "note", "patient", "expected"),
    [
        # v2: read letters stay, a needed create stays, update/delete never (ehrsync only creates)
        ("patient/Patient.cruds", True, False, "patient/Patient.rs"),
        ("patient/Patient.cruds", False, True, "patient/Patient.crs"),
        ("patient/DocumentReference.cud", True, False, "patient/DocumentReference.c"),
        ("patient/Observation.cu", True, True, ""),
        (
            "patient/DocumentReference.c?category=clinical-note",
            True,
            False,
            "patient/DocumentReference.c?category=clinical-note",
        ),
        ("patient/DocumentReference.c?category=clinical-note", False, True, ""),
        ("patient/Binary.c", True, False, "patient/Binary.c"),
        ("user/Provenance.c", True, False, "user/Provenance.c"),  # DWB-82: a written note's Provenance
        ("user/Provenance.c", False, True, ""),
        # v1: .write where a feature creates the type, .* keeps its read part elsewhere
        ("patient/Patient.write", True, False, ""),
        ("patient/Patient.write", False, True, "patient/Patient.write"),
        ("patient/Patient.*", True, False, "patient/Patient.read"),
        ("patient/Observation.read", False, False, "patient/Observation.read"),
        # wildcards: the read part plus a write scope per needed type, never write on every type
        (
            "patient/*.*",
            True,
            False,
            "patient/*.read patient/Binary.write patient/DocumentReference.write patient/Provenance.write",
        ),
        ("patient/*.*", False, False, "patient/*.read"),
        ("user/*.cruds", False, True, "user/*.rs user/Patient.c"),
        ("user/*.write", False, False, ""),
        # a filtered wildcard: its filter goes only onto a type it can filter (Binary, Provenance, Patient have no
        # category: no create scope for them, neither a nonsense filtered one nor a wider unfiltered one)
        (
            "patient/*.cruds?category=clinical-note",
            True,
            True,
            "patient/*.rs?category=clinical-note patient/DocumentReference.c?category=clinical-note",
        ),
        ("patient/*.cruds?category=clinical-note", False, True, "patient/*.rs?category=clinical-note"),
        ("user/*.c?_tag=ai", False, True, "user/Patient.c?_tag=ai"),  # a parameter every type has
        (
            "user/*.cs?patient=p1&category=x",
            True,
            False,
            "user/*.s?patient=p1&category=x user/DocumentReference.c?patient=p1&category=x",
        ),
        ("user/*.c?gender=male", True, True, "user/Patient.c?gender=male"),
        # unparsed but write-looking: dropped
        ("patient/Patient.write?x=1", True, True, ""),
        ("launch/patient", False, False, "launch/patient"),
    ],
)
def test_sal18_sal20_least_privilege_scopes_per_spelling(scope: str, note: bool, patient: bool, expected: str) -> None:
    """SAL-18 (v2 `.cruds`, `?filter`) and SAL-20 (v1 `.write`, `.*`) spellings alike are narrowed per feature."""
    kept, changed = least_privilege_scopes(scope, note=note, patient=patient)
    assert kept == expected
    assert changed == ([] if expected == scope else [scope])


@pytest.mark.parametrize(
    "scope",
    [
        "athena/service/Athenanet.MDP.*",
        "https://vendor.example/scopes/notes.write",
        "vendor/api.create",
        "smart/orchestrate_launch",
        "custom_vendor_scope",
    ],
)
@pytest.mark.parametrize(("note", "patient"), [(False, False), (True, False), (False, True)])
def test_sal18_a_vendor_custom_scope_is_no_smart_write_scope(scope: str, note: bool, patient: bool) -> None:
    """A vendor's own scope (not ``patient/``, ``user/`` or ``system/``) is no SMART resource scope: it was dropped
    whatever the features when its last dot-segment read like a write permission (``.*``, ``.write``, ``.create``)."""
    assert least_privilege_scopes(f"openid {scope} patient/*.rs", note=note, patient=patient) == (
        f"openid {scope} patient/*.rs",
        [],
    )


def test_sal18_a_narrowed_list_is_logged_once_not_on_every_resolve(
    make_app: Callable[..., AppHandle], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile resolves on every launch, connect page and token refresh (the vault's client resolver): a configured
    list with a write scope no feature uses logged the same info line each time. Once per tenant, provider and
    narrowing now, naming the tenant (which config to fix) and the scope names only."""
    monkeypatch.setattr(write_scopes, "_LOGGED", set())  # what other tests in this process logged already
    h = make_app(SMART_ENABLE_WRITE="true")
    epic = {**EPIC, "scopes": ["openid", "patient/*.rs", "patient/Patient.c"]}
    integrations = {"enabledProviders": ["epic"], "providerConfigs": {"epic": epic}}
    h.bootstrap("t1", {"ehrIntegrations": {**integrations, "enableWrite": True, "enableNoteCreate": True}})
    ctx = h.app.state.ctx
    with caplog.at_level(logging.INFO, logger="auth_service"):
        for _ in range(3):
            with ctx.db.session() as session:
                assert (
                    "patient/Patient.c" not in resolve_profile(session, ctx.cipher, ctx.settings, "t1", "epic").scopes
                )
    lines = [r.getMessage() for r in caplog.records if "narrowed" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "t1" in lines[0] and "patient/Patient.c" in lines[0] and "epic-secret-9" not in lines[0], lines
