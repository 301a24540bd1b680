"""Whose record a token answer without ``patient`` opens: the verified ``fhirUser``, read as one FHIR reference."""

from __future__ import annotations

import pytest

from auth_service.services.grant_checks import patient_of_fhir_user

BASE = "https://ehr.example/fhir/R4"


@pytest.mark.parametrize(
    "fhir_user",
    [
        "Patient/p-1/_history/2",
        f"{BASE}/Patient/p-1/_history/2",
        f"{BASE}/Patient/p-1",
        "Patient/p-1",
    ],
)
def test_sal15_a_versioned_or_absolute_patient_fhir_user_is_that_patient(fhir_user: str) -> None:
    """SAL-15: a ``fhirUser`` naming a version of the signed-in Patient (``Patient/p-1/_history/2``) is that patient;
    it named none before, so a sign-in whose answer left ``patient`` out was refused ``no_patient_context``."""
    assert patient_of_fhir_user(fhir_user, BASE) == "p-1"


@pytest.mark.parametrize(
    "fhir_user",
    [
        None,
        "",
        "Practitioner/d-1/_history/1",
        "https://other.example/fhir/Patient/p-1",
        "Patient/p-1/Observation/o-1",
        "Patient/" + "x" * 65,
        "Patient/p 1",
    ],
)
def test_sal15_a_fhir_user_naming_no_patient_of_this_server_is_none(fhir_user: str | None) -> None:
    """SAL-15: another server's Patient, a Practitioner, a longer path or no FHIR id names no patient here."""
    assert patient_of_fhir_user(fhir_user, BASE) is None
