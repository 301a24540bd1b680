"""DWB-50: ids a FHIR server names on a create are FHIR ids (``[A-Za-z0-9-.]{1,64}``) or read as none named, with
what was wrong said by length or type (never the id's text)."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.fhir.created import result_of
from connectors.fhir.ids import fhir_id, id_problem

LONG = "a" * 70


@pytest.mark.parametrize("value", ["a", "A-1.b", "x" * 64])
def test_fhir_ids_are_kept(value: str) -> None:
    assert fhir_id(value) == value


@pytest.mark.parametrize("value", [None, "", "x" * 65, "a_b", "a/b", "a b", "a\n", 12, ["a"]])
def test_what_is_no_fhir_id_is_none(value: object) -> None:
    assert fhir_id(value) is None


def test_the_problem_says_length_or_type_never_the_text() -> None:
    assert id_problem(LONG) == "70 characters long, where FHIR allows 1 to 64" and LONG not in id_problem(LONG)
    assert id_problem(12) == "a JSON int rather than a string"
    assert "a_b" not in id_problem("a_b")


def test_dwb50_a_create_answer_naming_a_long_id_names_none() -> None:
    result = result_of(201, f"DocumentReference/{LONG}/_history/1", None, "DocumentReference")
    assert (result.id, result.id_not_fhir) == (None, "70 characters long, where FHIR allows 1 to 64")


def test_dwb50_a_body_id_that_is_no_string_names_none() -> None:
    body = {"resourceType": "DocumentReference", "id": 12, "meta": {"versionId": "1"}}
    result = result_of(201, None, body, "DocumentReference")
    assert (result.id, result.id_not_fhir) == (None, "a JSON int rather than a string")


def test_a_fhir_id_in_the_body_stands_for_a_location_naming_none() -> None:
    body = {"resourceType": "DocumentReference", "id": "doc-1", "meta": {"versionId": LONG}}
    result = result_of(201, f"DocumentReference/{LONG}", body, "DocumentReference", etag='W/"2"')
    assert (result.id, result.version_id, result.id_not_fhir) == ("doc-1", "2", None)


def test_an_answer_naming_no_id_has_no_problem() -> None:
    assert result_of(201, None, None, "DocumentReference").id_not_fhir is None


def test_dwb50_a_location_percent_encoding_a_fhir_id_names_it() -> None:
    """RFC 3986 §2.3/§6.2.2.2: ``abc%2Ddef`` is ``abc-def`` (a FHIR id holds no ``%``, so its encoding is decoded);
    the base URL's own encoding is no part of the id."""
    location = "https://ehr.example/my%20fhir/DocumentReference/abc%2Ddef%2E1/_history/%32"
    result = result_of(201, location, None, "DocumentReference")
    assert (result.id, result.version_id, result.id_not_fhir) == ("abc-def.1", "2", None)


def test_dwb50_a_location_encoding_a_slash_in_its_id_names_no_fhir_id() -> None:
    result = result_of(201, "DocumentReference/a%2Fb", None, "DocumentReference")
    assert (result.id, result.id_not_fhir) == (None, "3 characters, some of them not allowed in a FHIR id")


def test_dwb50_a_location_semicolon_the_body_shows_is_the_ids_own_names_no_fhir_id() -> None:
    """``s;1`` in the Location reads as segment ``s`` with a parameter (RFC 3986 §3.3), but the body names ``s;1``:
    the ``;`` is the id's own, which is no FHIR id, never ``s``. A parameter the body does not name is dropped."""
    body = {"resourceType": "DocumentReference", "id": "s;1", "meta": {"versionId": "1"}}
    result = result_of(201, "DocumentReference/s;1/_history/1", body, "DocumentReference")
    assert (result.id, result.id_not_fhir) == (None, "3 characters, some of them not allowed in a FHIR id")
    body = {"resourceType": "DocumentReference", "id": "s", "meta": {"versionId": "1"}}
    assert result_of(201, "DocumentReference/s;jsessionid=A1", body, "DocumentReference").id == "s"


@pytest.mark.parametrize(
    ("location", "named"),
    [
        ("https://ehr.example/fhir/DocumentReference/123/", "123"),  # FHIR's [type]/[id], a "/" after it
        ("DocumentReference/123/", "123"),
        ("https://ehr.example/fhir/DocumentReference/123;jsessionid=A1/", "123"),
        ("https://ehr.example/fhir/DocumentReference/", None),  # the type, no id
        ("https://ehr.example/fhir/DocumentReference/;jsessionid=A1/", None),
        ("https://ehr.example/fhir/Observation/123/", None),  # another type's: not "[type]/[id]/" of this create
        ("https://ehr.example/DocumentReference/", None),
    ],
)
def test_dwb50_a_location_ending_in_a_slash_after_the_id_names_that_id(location: str, named: str | None) -> None:
    """RFC 3986 §3.3: a trailing "/" leaves an empty last segment; FHIR's Location is ``[base]/[type]/[id]``
    (http.html "create") and no FHIR id is empty, so ``DocumentReference/123/`` can only mean ``123``. Before, it named
    no id (the identifier search had to find the note, and a server ignoring that search left it ``id_unknown``).
    ``DocumentReference/`` still names none: the type is never taken for the id."""
    result = result_of(201, location, None, "DocumentReference")
    assert (result.id, result.version_id, result.id_not_fhir) == (named, None, None)


@pytest.mark.parametrize(
    ("location", "body", "named"),
    [
        ("https://ehr.example/fhir/Binary", None, None),  # the type's collection: no resource
        ("Binary", None, None),
        ("https://ehr.example/fhir/Binary?_id=12", None, None),
        ("https://ehr.example/fhir/Binary/_history/3", None, None),
        ("https://ehr.example/fhir/Binary", {"resourceType": "Binary", "id": "12"}, "12"),  # the body's, then
        ("https://ehr.example/fhir/Binary/Binary", None, "Binary"),  # [type]/[id]: an id spelt as the type
        ("https://ehr.example/Binary/fhir/Binary/12", None, "12"),  # a base path holding the type's name
        ("https://ehr.example/Binary/fhir/Binary/12/", None, "12"),
        ("https://ehr.example/fhir/Binary/12?_format=json", None, "12"),
    ],
)
def test_dwb18_50_a_location_naming_only_the_type_created_names_no_id(
    location: str, body: Any, named: str | None
) -> None:
    """A ``Location`` ending in the type created names its collection, not a resource: before, the type was taken
    for the id, over the body's (a note then referenced ``Binary/Binary``, which holds nothing of it)."""
    assert result_of(201, location, body, "Binary").id == named
