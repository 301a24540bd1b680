"""The note write gate (DWB-40..43) and the DocumentReference builder (DWB-01..19, DWB-30, DWB-80)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.errors import ConfigurationError, WriteNotSupportedError
from connectors.writeback import (
    DRAFT_BANNER,
    DRAFT_LABEL,
    NoteDraft,
    WriteFlags,
    build_document_reference,
    check_note_write,
    scopes_allow_binary_create,
    scopes_allow_note_create,
)
from connectors.writeback.gate import scopes_allow_provenance_create

ON = WriteFlags(service_enabled=True, tenant_enabled=True, note_create_enabled=True)


def capability(doc_interactions: list[str], conditional: bool = True, binary: bool = False) -> dict[str, Any]:
    resources: list[dict[str, Any]] = [
        {
            "type": "DocumentReference",
            "interaction": [{"code": c} for c in doc_interactions],
            "conditionalCreate": conditional,
        }
    ]
    if binary:
        resources.append({"type": "Binary", "interaction": [{"code": "create"}]})
    return {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": resources}]}


@pytest.mark.parametrize(
    ("granted", "allowed"),
    [
        ("patient/DocumentReference.write", True),
        ("user/DocumentReference.c", True),
        ("system/DocumentReference.cruds", True),
        ("patient/*.write", True),
        ("user/*.*", True),
        ("patient/DocumentReference.*", True),
        (
            "patient/DocumentReference.c?category=http://hl7.org/fhir/us/core/CodeSystem/"
            "us-core-documentreference-category|clinical-note",
            True,
        ),
        ("patient/DocumentReference.c?category=http://loinc.org|LP29708-2", False),
        (  # v1 scopes take no filter: a v1 scope written with one grants nothing ehrsync can rely on
            "patient/DocumentReference.write?category=http://hl7.org/fhir/us/core/CodeSystem/"
            "us-core-documentreference-category|clinical-note",
            False,
        ),
        ("patient/DocumentReference.rs patient/*.read", False),
        ("patient/DocumentReference.read", False),
        ("patient/Observation.c", False),
        ("", False),
    ],
)
def test_dwb41_granted_scopes(granted: str, allowed: bool) -> None:
    assert scopes_allow_note_create(granted) is allowed


@pytest.mark.parametrize(
    "flags",
    [
        WriteFlags(service_enabled=False, tenant_enabled=True, note_create_enabled=True),
        WriteFlags(service_enabled=True, tenant_enabled=False, note_create_enabled=True),
        WriteFlags(service_enabled=True, tenant_enabled=True, note_create_enabled=False),
        WriteFlags(service_enabled=True, tenant_enabled=True, note_create_enabled=True, vendor_allows_notes=False),
    ],
)
def test_dwb43_any_flag_off_is_vendor_disabled(flags: WriteFlags) -> None:
    with pytest.raises(WriteNotSupportedError) as info:
        check_note_write(capability(["create"]), "patient/DocumentReference.c", flags)
    assert info.value.reason == "vendor_disabled"
    assert info.value.code == "WRITE_NOT_SUPPORTED"


def test_dwb40_no_create_interaction() -> None:
    with pytest.raises(WriteNotSupportedError) as info:
        check_note_write(capability(["read", "search-type"]), "patient/DocumentReference.c", ON)
    assert info.value.reason == "no_create_interaction"
    with pytest.raises(WriteNotSupportedError):
        check_note_write({"resourceType": "CapabilityStatement"}, "patient/DocumentReference.c", ON)


def test_dwb41_missing_scope() -> None:
    with pytest.raises(WriteNotSupportedError) as info:
        check_note_write(capability(["create"]), "patient/DocumentReference.rs", ON)
    assert info.value.reason == "missing_scope"


def test_dwb40_records_capabilities() -> None:
    cap = check_note_write(capability(["create", "read"], conditional=True, binary=True), "user/*.write", ON)
    assert cap.conditional_create and cap.binary_create
    cap = check_note_write(capability(["create"], conditional=False), "user/*.write", ON)
    assert not cap.conditional_create and not cap.binary_create


def _rests(*entries: dict[str, Any]) -> dict[str, Any]:
    """A CapabilityStatement whose ``rest`` entries are the given ones, each a server's unless it says its mode."""
    return {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", **e} for e in entries]}


def test_dwb40_31_every_server_rest_entry_counts_and_conditional_create_needs_all_that_create() -> None:
    """R4 repeats ``rest`` (cpb-9 forbids a type twice only within one entry): DocumentReference create and Binary
    create declared in any server entry count, a client entry never does; conditional create only when every
    entry declaring create says so (a configuration ignoring If-None-Exist would let a repeat duplicate)."""
    doc = {"type": "DocumentReference", "interaction": [{"code": "create"}], "conditionalCreate": True}
    read_only = {"type": "DocumentReference", "interaction": [{"code": "read"}], "supportedProfile": ["urn:p"]}
    binary = {"type": "Binary", "interaction": [{"code": "create"}]}
    cap = check_note_write(_rests({"resource": [doc]}, {"resource": [read_only, binary]}), "user/*.write", ON)
    assert (cap.conditional_create, cap.binary_create, cap.supported_profiles) == (True, True, ("urn:p",))
    unconditional = {**doc, "conditionalCreate": False}
    cap = check_note_write(_rests({"resource": [doc]}, {"resource": [unconditional]}), "user/*.write", ON)
    assert not cap.conditional_create
    with pytest.raises(WriteNotSupportedError) as info:
        check_note_write(_rests({"mode": "client", "resource": [doc]}, {"resource": [read_only]}), "user/*.write", ON)
    assert info.value.reason == "no_create_interaction"


@pytest.mark.parametrize("written", ["true", "false", 1])
def test_dwb31_conditional_create_is_trusted_only_when_declared_as_the_boolean_true(written: object) -> None:
    """DWB-31: If-None-Exist is sent only to a server whose CapabilityStatement says ``conditionalCreate: true``;
    a value written as text or a number (a slip: ``"false"`` is truthy) is not that, so the note goes the
    DWB-32 way (never blindly retried) instead of trusting a conditional create the server may ignore."""
    doc = {"type": "DocumentReference", "interaction": [{"code": "create"}], "conditionalCreate": written}
    assert not check_note_write(_rests({"resource": [doc]}), "user/*.write", ON).conditional_create


def test_note_builder_draft_fields() -> None:
    draft = NoteDraft(
        tenant_id="t1",
        draft_id="7d0c2a4e-6a8f-4b55-9f43-2f1f4c3f0a11",
        patient_id="p1",
        text="Patient doing well.",
        encounter_id="e9",
        author_practitioner_id="dr1",
        created_at=datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
    )
    doc = build_document_reference(draft)
    assert doc["status"] == "current" and doc["docStatus"] == "preliminary"  # DWB-01, DWB-02
    assert doc["type"]["coding"][0] == {"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}
    assert doc["category"][0]["coding"][0]["code"] == "clinical-note"  # DWB-11
    assert doc["subject"] == {"reference": "Patient/p1"}  # DWB-12
    assert doc["context"]["encounter"] == [{"reference": "Encounter/e9"}]
    assert doc["date"] == "2026-11-25T10:00:00Z"  # DWB-15
    assert doc["description"].startswith(DRAFT_LABEL)  # DWB-19
    assert doc["identifier"] == [{"system": "urn:ehrsync:note-draft:t1", "value": draft.draft_id}]  # DWB-30
    (content,) = doc["content"]  # DWB-17
    body = base64.b64decode(content["attachment"]["data"]).decode("utf-8")
    assert body.startswith(DRAFT_BANNER)  # DWB-80
    assert content["attachment"]["size"] == len(body.encode())
    assert content["attachment"]["contentType"] == "text/plain; charset=utf-8"
    assert "Patient doing well." not in repr(draft)


_BASE: dict[str, Any] = {"tenant_id": "t", "draft_id": "d", "patient_id": "p", "text": "x"}


def test_note_builder_rejects_empty_text() -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        build_document_reference(NoteDraft(**{**_BASE, "text": "  "}))


def test_dwb10_an_unknown_loinc_code_is_refused_naming_it() -> None:
    """Not a KeyError deep in the builder: a ConfigurationError that names the code and the known ones."""
    with pytest.raises(ConfigurationError, match=r"LOINC code '0000-0'.*11506-3"):
        build_document_reference(NoteDraft(**{**_BASE, "loinc_code": "0000-0"}))


def test_dwb15_a_creation_time_without_a_timezone_is_refused() -> None:
    """A naive time would be read as this host's local time and sent as if it were UTC."""
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        build_document_reference(NoteDraft(**{**_BASE, "created_at": datetime(2026, 1, 1)}))


@pytest.mark.parametrize("doc_status", ["amended", "entered-in-error", ""])
def test_dwb02_a_new_note_is_preliminary_or_final_never_another_doc_status(doc_status: str) -> None:
    with pytest.raises(ConfigurationError, match="docStatus"):
        build_document_reference(NoteDraft(**{**_BASE, "doc_status": doc_status}))


@pytest.mark.parametrize(
    ("granted", "allowed"),
    [
        ("user/*.write", True),
        ("patient/Binary.*", True),
        ("system/Binary.c", True),
        ("patient/*.cruds?_tag=http://x|y", True),
        ("patient/DocumentReference.c patient/*.rs", False),
        ("patient/*.cruds?category=clinical-note", False),
        ("patient/Binary.rs", False),
        ("patient/Binary.c?category:text=note", False),
    ],
)
def test_dwb18_41_binary_create_needs_a_granted_scope_covering_it(granted: str, allowed: bool) -> None:
    """DWB-18/41: Binary create counts only when the granted scopes cover it (a filter only on parameters every
    resource has): before, the CapabilityStatement alone decided, and the Binary POST was refused 403."""
    assert scopes_allow_binary_create(granted) is allowed
    cap = check_note_write(capability(["create"], binary=True), f"user/DocumentReference.c {granted}", ON)
    assert cap.binary_create is allowed


@pytest.mark.parametrize(
    ("granted", "allowed"),
    [
        ("user/*.write", True),
        ("patient/Provenance.c", True),
        ("patient/*.cruds?_tag=http://x|y", True),
        ("patient/*.c?patient=Patient/1", True),
        ("patient/*.cruds?category=clinical-note", False),
        ("patient/*.c?category:text=note&patient=1", False),
        ("patient/Provenance.rs", False),
    ],
)
def test_dwb82_41_provenance_create_follows_the_filter_rule_of_the_scopes_asked(granted: str, allowed: bool) -> None:
    """DWB-82/41: a filter covers Provenance only on parameters Provenance has (as Binary, and as the scopes a launch
    asks for): ``patient/*.c?category=...`` was read as covering it, and its create could only be refused 403."""
    assert scopes_allow_provenance_create(granted) is allowed
    resources = capability(["create"])["rest"][0]["resource"] + [
        {"type": "Provenance", "interaction": [{"code": "create"}]}
    ]
    cap = check_note_write(
        {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": resources}]},
        f"user/DocumentReference.c {granted}",
        ON,
    )
    assert cap.provenance_create is allowed
