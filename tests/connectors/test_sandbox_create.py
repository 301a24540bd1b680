"""FhirClient.create against the sandbox: conditional create, 412/422/429, lost connections (DWB-31..34, 50, 51)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from connectors.errors import (
    CreateRedirectError,
    FhirError,
    FhirPreconditionFailedError,
    FhirUnprocessableError,
    TransportError,
)
from connectors.fhir import FhirClient
from connectors.tokens import MintingTokenSource
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import recording_policy

SYSTEM = "urn:ehrsync:draft"


@pytest.fixture
def client(ehr: SandboxServer) -> FhirClient:
    backend = BackendClient(ehr, scope="system/*.rs system/DocumentReference.c")
    return FhirClient(ehr.fhir_base, MintingTokenSource(backend.mint_with_expiry), retry=recording_policy([]))


def _note(patient: str, identifier: str) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "preliminary",
        "identifier": [{"system": SYSTEM, "value": identifier}],
        "subject": {"reference": f"Patient/{patient}"},
        "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(b"draft").decode()}}],
    }


def _count(client: FhirClient, identifier: str) -> int:
    pages = client.search_pages("DocumentReference", {"identifier": f"{SYSTEM}|{identifier}"})
    return sum(len(page.resources) for page in pages)


def test_dwb31_34_conditional_create_after_dropped_connection_gives_one_note(
    ehr: SandboxServer, client: FhirClient
) -> None:
    patient, key = ehr.admin.patients()[0], uuid.uuid4().hex
    ehr.admin.set_fault("drop", path="/fhir/DocumentReference", times=1)
    created = client.create(_note(patient, key), if_none_exist=f"identifier={SYSTEM}|{key}")
    assert created.status == 201 and created.id and created.version_id == "1"
    assert created.resource is not None and created.resource["id"] == created.id  # DWB-50 representation
    again = client.create(_note(patient, key), if_none_exist=f"identifier={SYSTEM}|{key}")
    assert (again.status, again.id, again.created) == (200, created.id, False)
    assert _count(client, key) == 1


def test_dwb32_unconditional_create_is_not_retried_after_drop(ehr: SandboxServer, client: FhirClient) -> None:
    patient, key = ehr.admin.patients()[0], uuid.uuid4().hex
    ehr.admin.set_fault("drop", path="/fhir/DocumentReference", times=1)
    with pytest.raises(TransportError):
        client.create(_note(patient, key))
    assert _count(client, key) == 0  # the drop fired before the server stored it; no blind retry made one


def test_dwb_412_when_the_identifier_matches_several(ehr: SandboxServer, client: FhirClient) -> None:
    patient, key = ehr.admin.patients()[0], uuid.uuid4().hex
    client.create(_note(patient, key))
    client.create(_note(patient, key))
    with pytest.raises(FhirPreconditionFailedError) as info:
        client.create(_note(patient, key), if_none_exist=f"identifier={SYSTEM}|{key}")
    assert info.value.status == 412 and info.value.issue_codes


def test_dwb51_422_carries_the_operation_outcome(ehr: SandboxServer, client: FhirClient) -> None:
    note = _note(ehr.admin.patients()[0], uuid.uuid4().hex)
    note["content"] = []
    with pytest.raises(FhirUnprocessableError) as info:
        client.create(note)
    assert info.value.operation_outcome is not None and info.value.issue_codes


def test_dwb_429_on_create_is_waited_out(ehr: SandboxServer, client: FhirClient) -> None:
    patient, key = ehr.admin.patients()[0], uuid.uuid4().hex
    ehr.admin.set_fault("429", path="/fhir/DocumentReference", times=1, retry_after="3")
    assert client.create(_note(patient, key)).status == 201
    assert _count(client, key) == 1


@pytest.mark.parametrize("moved_to", ["the FHIR base", "another host"])
def test_dwb34_a_create_whose_lost_answer_came_before_a_307_says_so_whatever_the_redirect_ends_in(
    ehr: SandboxServer, client: FhirClient, moved_to: str
) -> None:
    """DWB-34: a conditional create whose first try's answer is lost, its retry answered 307: the follow-up POST to
    ``Location`` is a new request, and its 412 (here) or the redirect's refusal (off the base) says nothing of that
    first try. Before, its error did not carry ``after_lost_answer`` (a fresh request's), so the write-back took the
    refusal as the note's whole outcome; now it does, and the note is searched for first."""
    patient, key = ehr.admin.patients()[0], uuid.uuid4().hex
    client.create(_note(patient, key))
    client.create(_note(patient, key))  # two notes carrying the identifier: the follow-up's If-None-Exist is 412
    elsewhere = {"create_redirect_origin": "http://127.0.0.1:9"} if moved_to == "another host" else {}
    ehr.admin.settings(create_answer="temporary_redirect", **elsewhere)
    ehr.admin.set_fault("drop_response", path="/fhir/DocumentReference", method="POST", times=1)
    with pytest.raises(FhirError) as info:
        client.create(_note(patient, key), if_none_exist=f"identifier={SYSTEM}|{key}")
    expected = CreateRedirectError if elsewhere else FhirPreconditionFailedError
    assert isinstance(info.value, expected) and info.value.after_lost_answer
    with pytest.raises(expected) as never_lost:  # every answer heard: nothing said of an earlier try
        client.create(_note(patient, key), if_none_exist=f"identifier={SYSTEM}|{key}")
    assert not never_lost.value.after_lost_answer


def test_dwb50_a_create_answered_with_an_unversioned_location_and_no_body_takes_its_version_from_the_etag(
    ehr: SandboxServer, client: FhirClient
) -> None:
    """A server may answer a create 201 with ``Location: .../DocumentReference/<id>`` (no ``/_history``)
    and no body; the version is in the ``ETag`` (``W/"1"``, FHIR R4 §3.1.0.8). Before, it was lost, so the note's row
    held no version and its Provenance named the DocumentReference unversioned."""
    ehr.admin.settings(create_unversioned_location=True)
    try:
        created = client.create(_note(ehr.admin.patients()[0], uuid.uuid4().hex))
    finally:
        ehr.admin.settings(create_unversioned_location=False)
    assert created.status == 201 and created.id and created.resource is None
    assert created.version_id == "1"


def test_dwb50_the_etag_of_a_create_answered_with_a_body_is_not_taken_for_its_version(
    ehr: SandboxServer, client: FhirClient
) -> None:
    """A server keeping no versions, behind a framework that hashes each answer's body into its ETag (Rails'
    Rack::ETag: ``W/"<MD5>"``), answers a create with an unversioned ``Location`` and the resource without ``meta``.
    The ETag names the body, not a version: taken for one, the Provenance targeted ``/_history/<hash>``, a version
    that does not exist. The ETag counts only when no body came back (the body, when sent, says the version)."""
    ehr.admin.settings(create_hashed_etag=True)
    try:
        created = client.create(_note(ehr.admin.patients()[0], uuid.uuid4().hex))
    finally:
        ehr.admin.settings(create_hashed_etag=False)
    assert created.status == 201 and created.id and created.resource is not None
    assert created.version_id is None
