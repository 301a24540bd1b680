"""The CapabilityStatement readers over the ways FHIR R4 lets a server write what they look for, and the ways it
does not (``connectors.fhir.capability``; the sandbox serves such variants: tests/engine/test_capability_variants)."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.errors import DiscoveryError, FhirError
from connectors.fhir.capability import (
    INTERACTIONS,
    NOTE_WRITE,
    SEARCH_PARAMS,
    SECURITY,
    SYSTEM_EXPORT,
    Reads,
    declares_search_param,
    statement_problem,
)
from connectors.smart.configuration import parse_capability_statement
from connectors.writeback import WriteFlags, check_note_write

_LAST_UPDATED = "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"
#: A server's own parameter named ``lastUpdated`` (a type-specific one: no ``_``), defined as something else.
_VENDOR_LAST_UPDATED = "http://ehr.example/fhir/SearchParameter/Observation-result-last-updated"


def _statement(*rests: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance", "rest": list(rests)}


@pytest.mark.parametrize(
    ("param", "declared"),
    [
        ({"name": "_lastUpdated", "type": "date"}, True),
        ({"name": "lastUpdated", "type": "date"}, True),
        ({"name": "modified", "type": "date", "definition": _LAST_UPDATED}, True),
        ({"name": "modified", "type": "date", "definition": f"{_LAST_UPDATED}|4.0.1"}, True),
        ({"name": "date", "type": "date"}, False),
        ({"name": "lastUpdated", "type": "date", "definition": _VENDOR_LAST_UPDATED}, False),
    ],
    ids=[
        "name",
        "name-without-underscore",
        "definition",
        "versioned-definition",
        "another-parameter",
        "the-servers-own-lastUpdated",
    ],
)
def test_bdx26_last_updated_is_declared_by_name_or_by_definition(param: dict[str, str], declared: bool) -> None:
    """A name without the ``_`` counts unless its ``definition`` names another parameter: a server's own
    ``lastUpdated`` is not ``_lastUpdated`` (before, it counted, and every incremental search sent ``_lastUpdated``
    to a server that had not declared it: refused, or ignored, each run)."""
    statement = _statement({"mode": "server", "resource": [{"type": "Observation", "searchParam": [param]}]})
    assert declares_search_param(statement, "Observation", "_lastUpdated") is declared


def test_bdx26_last_updated_counts_in_any_server_entry_describing_the_type_never_in_a_client_one() -> None:
    """Before, the first server entry describing the type decided alone (a later one declaring it was never read)."""
    bare = {"type": "Observation", "interaction": [{"code": "read"}]}
    searched = {"type": "Observation", "searchParam": [{"name": "_lastUpdated", "type": "date"}]}
    later = _statement({"mode": "server", "resource": [bare]}, {"mode": "server", "resource": [searched]})
    assert declares_search_param(later, "Observation", "_lastUpdated") is True
    client = _statement({"mode": "client", "resource": [searched]}, {"mode": "server", "resource": [bare]})
    assert declares_search_param(client, "Observation", "_lastUpdated") is False


@pytest.mark.parametrize(
    ("body", "reads", "named"),
    [
        (
            _statement({"mode": "server"}) | {"rest": {"mode": "server"}},
            SEARCH_PARAMS,
            "CapabilityStatement.rest is an",
        ),
        (_statement({"mode": "server", "operation": {"name": "export"}}), SYSTEM_EXPORT, "rest[0].operation is an"),
        (_statement({"resource": [{"type": "Patient", "interaction": {"code": "read"}}]}), INTERACTIONS, "interaction"),
        (_statement({"security": [{"service": []}]}), SECURITY, "rest[0].security is an array, not an object"),
        (_statement({"resource": ["Patient"]}), NOTE_WRITE, "resource[0] is a string, not an object"),
        ([_statement()], None, "the body is an array, not a JSON object"),
        ({"resourceType": "OperationOutcome"}, None, "'OperationOutcome', not a CapabilityStatement"),
    ],
    ids=["rest", "operation", "interaction", "security", "resource-item", "array-body", "another-resource"],
)
def test_bdx26_what_is_not_a_capability_statement_in_fhir_json_is_named(
    body: Any, reads: Reads | None, named: str
) -> None:
    problem = statement_problem(body, reads)
    assert problem is not None and named in problem


@pytest.mark.parametrize(
    ("rest", "refused_by"),
    [
        ({"searchParam": {"name": "_lastUpdated"}}, {SEARCH_PARAMS}),
        ({"operation": {"name": "export"}}, {SYSTEM_EXPORT}),
        ({"resource": [{"type": "Patient", "searchParam": {"name": "_id"}}]}, {SEARCH_PARAMS}),
        ({"resource": [{"type": "Patient", "interaction": {"code": "read"}}]}, {INTERACTIONS}),
        ({"resource": [{"type": "DocumentReference", "interaction": {"code": "create"}}]}, {INTERACTIONS, NOTE_WRITE}),
        ({"resource": [{"type": "DocumentReference", "supportedProfile": "urn:p"}]}, {NOTE_WRITE}),
        ({"resource": [{"type": "Patient", "operation": {"name": "everything"}}]}, set()),
        ({"security": [{"service": []}]}, {SECURITY}),
        ({"compartment": "http://hl7.org/fhir/CompartmentDefinition/patient"}, set()),
        ({"mode": "client", "resource": {"type": "Patient"}}, set()),
    ],
    ids=[
        "rest-param",
        "rest-operation",
        "param",
        "interaction",
        "note-interaction",
        "profile",
        "type-op",
        "security",
        "compartment",
        "client",
    ],
)
def test_bdx01_bdx26_dwb40_sal04_each_reader_refuses_a_slip_only_in_what_it_reads(rest: Any, refused_by: Any) -> None:
    """Before, every reader but SMART v1 discovery refused the statement for a slip in any element any of them read,
    a type's ``operation`` (which none reads) and ``rest.security`` (only discovery reads it) included."""
    body = _statement({"mode": "server", **rest}) | {"implementation": [{}], "messaging": {}, "document": {}}
    readers = {SEARCH_PARAMS, INTERACTIONS, SYSTEM_EXPORT, NOTE_WRITE, SECURITY}
    assert {r for r in readers if statement_problem(body, r) is not None} == refused_by
    assert statement_problem(body) is None  # the body itself is a CapabilityStatement


@pytest.mark.parametrize(
    ("slipped", "held"), [("Patient", False), ("Location", False), ("Binary", True), ("Provenance", True)]
)
def test_dwb40_the_write_gate_is_held_by_a_slip_only_in_the_types_it_reads(slipped: str, held: bool) -> None:
    """DocumentReference's entry and Binary's and Provenance's interactions: a slip there holds the note (a named
    ``FhirError``), another type's (its one interaction or profile sent bare) does not. Before, any type's did."""
    doc = {"type": "DocumentReference", "interaction": [{"code": "create"}]}
    odd = {"type": slipped, "interaction": {"code": "create"}, "supportedProfile": "urn:p"}
    statement = _statement({"mode": "server", "resource": [doc, odd]})
    on = WriteFlags(service_enabled=True, tenant_enabled=True, note_create_enabled=True)
    if held:
        with pytest.raises(FhirError, match=r"DocumentReference create: .*resource\[1\]\.interaction is an object"):
            check_note_write(statement, "patient/DocumentReference.c", on)
    else:
        assert not check_note_write(statement, "patient/DocumentReference.c", on).binary_create
    # the sync's interaction reader refuses it for the slipped type's ``_id`` search only
    assert statement_problem(statement, INTERACTIONS.of(slipped)) is not None
    assert statement_problem(statement, INTERACTIONS.of("Observation")) is None


def test_sal04_a_legal_statement_has_no_problem_and_a_security_list_is_refused_by_discovery_not_crashed_on() -> None:
    """Before, ``rest.security`` sent as an array raised AttributeError out of SMART v1 discovery."""
    legal = _statement({"mode": "server", "security": {"extension": []}, "resource": []})
    assert all(statement_problem(legal, r) is None for r in (SEARCH_PARAMS, INTERACTIONS, SYSTEM_EXPORT, NOTE_WRITE))
    with pytest.raises(DiscoveryError, match="security is an array"):
        parse_capability_statement("https://ehr.example/fhir", _statement({"security": [{"extension": []}]}))


def test_bdx26_dwb40_a_primitive_array_holding_null_beside_its_extension_is_fhir_json() -> None:
    """FHIR JSON writes ``null`` in an array of primitives where an item has an extension but no value (its
    ``_supportedProfile`` twin carries the extension). Before, such a statement was refused as not FHIR JSON: the
    run fell back to the vendor's defaults, a note waited until it failed and SMART v1 discovery failed; and the
    null was taken for a profile named ``None``."""
    profiled = {
        "type": "DocumentReference",
        "interaction": [{"code": "create"}],
        "supportedProfile": [None, "http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference"],
        "_supportedProfile": [{"extension": [{"url": "http://example.org/why", "valueString": "no value"}]}, None],
    }
    statement = _statement({"mode": "server", "resource": [profiled]})
    assert statement_problem(statement, NOTE_WRITE) is None
    on = WriteFlags(service_enabled=True, tenant_enabled=True, note_create_enabled=True)
    assert check_note_write(statement, "patient/DocumentReference.c", on).supported_profiles == (
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference",
    )
    assert statement_problem(
        _statement({"mode": "server", "resource": [profiled | {"supportedProfile": [{}]}]}), NOTE_WRITE
    )


def test_sal04_discovery_reads_oauth_uris_past_a_bare_object_in_an_element_it_does_not_read() -> None:
    """SMART v1 discovery reads ``rest.security`` only: a bare object elsewhere (a type's one ``interaction``) is
    for the sync's readers to refuse (they fall back to the vendor's defaults), not a reason to refuse sign-in.
    Before, the whole statement was checked: such a server, which connected before, could no longer be connected."""
    oauth = {
        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
        "extension": [
            {"url": "token", "valueUri": "https://ehr.example/oauth/token"},
            {"url": "authorize", "valueUri": "https://ehr.example/oauth/authorize"},
        ],
    }
    security = {"extension": [oauth]}
    odd = _statement({"mode": "server", "security": security, "resource": [{"type": "Patient", "interaction": {}}]})
    assert statement_problem(odd, INTERACTIONS) is not None
    found = parse_capability_statement("https://ehr.example/fhir", odd)
    assert found.token_endpoint == "https://ehr.example/oauth/token" and found.smart_v1
    bare = _statement({"mode": "server", "security": {"extension": oauth}})
    with pytest.raises(DiscoveryError, match=r"rest\[0\].security.extension is an object, not an array"):
        parse_capability_statement("https://ehr.example/fhir", bare)


_DOC_CREATE = {"type": "DocumentReference", "interaction": [{"code": "create"}]}


@pytest.mark.parametrize(
    ("rest", "refused_by", "named"),
    [
        ({"resource": [_DOC_CREATE | {"type": ["DocumentReference"]}]}, {NOTE_WRITE}, "resource[0].type is an array"),
        ({"resource": [_DOC_CREATE | {"interaction": [{"code": ["create"]}]}]}, {NOTE_WRITE}, "code is an array"),
        ({"searchParam": [{"name": ["_lastUpdated"], "type": "date"}]}, {SEARCH_PARAMS}, "name is an array"),
        ({"operation": [{"name": "export", "definition": {"ref": "x"}}]}, {SYSTEM_EXPORT}, "definition is an object"),
        (
            {"mode": ["server"], "resource": [_DOC_CREATE]},
            {NOTE_WRITE, SEARCH_PARAMS, INTERACTIONS, SYSTEM_EXPORT},
            "mode is an",
        ),
        ({"resource": [{"type": ["Location"], "interaction": [{"code": "read"}]}]}, set(), ""),
        (
            {"resource": [_DOC_CREATE | {"type": {"value": "DocumentReference"}}]},
            {NOTE_WRITE},
            "resource[0].type is an object",
        ),
        (
            {"resource": [_DOC_CREATE | {"type": ["Observation", "DocumentReference"]}]},
            {NOTE_WRITE, SEARCH_PARAMS},
            "resource[0].type is an array",
        ),
        ({"resource": [{"type": {"value": "Location"}, "interaction": [{"code": "read"}]}]}, set(), ""),
    ],
    ids=[
        "type",
        "interaction-code",
        "param-name",
        "operation-definition",
        "rest-mode",
        "another-type-listed",
        "type-as-object",
        "type-listing-two",
        "another-type-as-object",
    ],
)
def test_dwb40_bdx26_bdx01_a_string_sent_as_another_json_kind_is_named_by_the_reader_comparing_it(
    rest: Any, refused_by: Any, named: str
) -> None:
    """A string a reader compares (a type, an interaction code, a parameter's or operation's name or definition, the
    entry's mode) written as another JSON kind matches nothing. Before, no reader named it: DocumentReference's
    ``type`` as ``["DocumentReference"]`` read as a server declaring no create (the note refused as not allowed),
    ``["_lastUpdated"]`` as an undeclared parameter. Now the reader that compares it refuses the statement by name,
    as for a bare object, also a ``type`` written as an object (``{"value": ...}``, as a naive XML-to-JSON converter
    writes a primitive) or listing another type beside the reader's; another type's is no reader's own
    (``Reads.of``)."""
    body = _statement({"mode": "server", **rest})
    readers = {SEARCH_PARAMS.of("Observation"), INTERACTIONS.of("Patient"), SYSTEM_EXPORT, NOTE_WRITE, SECURITY}
    refused = {r for r in readers if statement_problem(body, r) is not None}
    assert {r.what for r in refused} == {r.what for r in refused_by}
    for reader in refused:
        assert named in (statement_problem(body, reader) or ""), statement_problem(body, reader)
    if NOTE_WRITE in refused_by:
        on = WriteFlags(service_enabled=True, tenant_enabled=True, note_create_enabled=True)
        with pytest.raises(FhirError, match="cannot be read for DocumentReference create"):
            check_note_write(body, "patient/DocumentReference.c", on)


@pytest.mark.parametrize("mode", [["client"], {"value": "client"}])
def test_dwb40_bdx26_a_client_entry_whose_mode_is_another_json_kind_is_read_past_by_the_server_readers(
    mode: Any,
) -> None:
    """A ``mode`` that names only ``client`` (as a list or an object) is a client entry, which the server readers
    never go into: before the mode check, the readers read past it; refusing it held every note (and sent every
    search whole) though the server entry declares all they need. ``["server"]`` is still refused (see above)."""
    server = {"mode": "server", "resource": [_DOC_CREATE]}
    body = _statement({"mode": mode, "resource": [{"type": "DocumentReference"}]}, server)
    for reader in (SEARCH_PARAMS.of("Observation"), INTERACTIONS.of("Patient"), SYSTEM_EXPORT, NOTE_WRITE):
        assert statement_problem(body, reader) is None, reader.what
    on = WriteFlags(service_enabled=True, tenant_enabled=True, note_create_enabled=True)
    assert check_note_write(body, "patient/DocumentReference.c", on).binary_create is False
