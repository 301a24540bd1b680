"""Scope parsing tables (SAL-18..21)."""

from __future__ import annotations

import pytest

from connectors.smart import parse_scopes

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


@pytest.mark.parametrize(
    ("scope", "rtype", "interaction", "expected"),
    [
        ("patient/Observation.rs", "Observation", "read", True),
        ("patient/Observation.rs", "Observation", "search", True),
        ("patient/Observation.rs", "Observation", "create", False),
        ("patient/Observation.r", "Observation", "search", False),
        ("patient/*.rs", "Condition", "search", True),
        ("patient/*.cruds", "Condition", "delete", True),
        ("user/DocumentReference.c", "DocumentReference", "create", True),
        ("user/DocumentReference.c", "DocumentReference", "read", False),
        ("patient/Observation.read", "Observation", "search", True),  # v1
        ("patient/Observation.read", "Observation", "update", False),
        ("patient/Observation.write", "Observation", "create", True),
        ("patient/Observation.write", "Observation", "read", False),
        ("system/*.read", "Patient", "read", True),
        ("patient/*.*", "Encounter", "delete", True),
        ("patient/Observation.sr", "Observation", "read", False),  # wrong letter order: not a v2 scope
        ("patient/Observation.rx", "Observation", "read", False),
        ("openid fhirUser offline_access", "Patient", "read", False),
        (f"patient/Observation.rs?category={LAB}", "Observation", "search", True),
    ],
)
def test_sal18_sal20_allows_table(scope: str, rtype: str, interaction: str, expected: bool) -> None:
    assert parse_scopes(scope).allows(rtype, interaction) is expected


def test_sal18_granular_filter_parsed() -> None:
    scopes = parse_scopes(f"patient/Observation.rs?category={LAB} patient/Condition.rs")
    obs = scopes.resource_scopes[0]
    assert obs.filters == (("category", LAB),)
    assert obs.version == "v2"
    assert scopes.allows("Observation", "search")
    assert not scopes.allows("Observation", "search", unfiltered_only=True)
    assert scopes.filters_for("Observation") == [(("category", LAB),)]
    assert scopes.filters_for("Condition") == [()]


def test_context_filter_and_other_scopes() -> None:
    scopes = parse_scopes("launch/patient openid fhirUser offline_access user/Patient.rs")
    assert scopes.has_offline_access
    assert scopes.allows("Patient", "read", context="user")
    assert not scopes.allows("Patient", "read", context="patient")
    assert "openid" in scopes and "user/Patient.rs" in scopes
    assert scopes.other == ("launch/patient", "openid", "fhirUser", "offline_access")


@pytest.mark.parametrize(
    ("v2", "v1"),
    [
        ("patient/Observation.rs", "patient/Observation.read"),
        ("patient/Observation.cud", "patient/Observation.write"),
        ("patient/*.cruds", "patient/*.*"),
        ("system/Patient.r", "system/Patient.read"),
        ("user/Observation.rus", "user/Observation.read user/Observation.write"),
        (f"patient/Observation.rs?category={LAB} patient/Observation.rs", "patient/Observation.read"),
        ("openid fhirUser launch/patient", "openid fhirUser launch/patient"),
    ],
)
def test_sal20_to_v1_mapping(v2: str, v1: str) -> None:
    mapped = parse_scopes(v2).to_v1()
    assert mapped.raw == v1
    assert mapped.versions <= {"v1"}


def test_sal21_missing_types_computed_from_granted_scope() -> None:
    granted = parse_scopes("patient/Patient.rs patient/Observation.read")
    assert granted.missing(["Patient", "Observation", "Condition", "MedicationRequest"]) == [
        "Condition",
        "MedicationRequest",
    ]


def test_unknown_interaction_is_rejected() -> None:
    with pytest.raises(ValueError, match="interaction"):
        parse_scopes("patient/*.rs").allows("Patient", "patch")


def test_empty_and_duplicate_scopes() -> None:
    assert parse_scopes(None).raw == ""
    assert parse_scopes("a a  b").raw == "a b"
    assert parse_scopes(["patient/*.rs openid", "openid"]).raw == "patient/*.rs openid"
