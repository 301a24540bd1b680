"""Every decision ehrsync takes from a CapabilityStatement, over statements written as other servers write them
(``sandbox.fhir.capability_variants``): what FHIR R4 allows reads as the default statement does, and what is not
FHIR JSON is refused by name, never read as a statement that declares nothing."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from connectors.errors import DiscoveryError, FhirError
from connectors.fhir.capability import (
    INTERACTIONS,
    NOTE_WRITE,
    SEARCH_PARAMS,
    SYSTEM_EXPORT,
    Reads,
    declared_interactions,
)
from connectors.smart.discovery import discover
from connectors.writeback import WriteFlags, check_note_write
from engine.bulk_level import declares_system_export
from engine.connection_info import load_connection
from engine.references import can_search_by_id
from engine.writeback import write_note
from tests.engine.helpers import SyncWorld, connect_patient, mutate
from tests.engine.job_runs import sync_type
from tests.engine.writeback_helpers import FAST, enqueue, writable_connection

LEGAL = ["params_in_later_entry", "unprefixed_params", "common_params", "decorated"]
ILLEGAL = {"bare_objects": "is an object, not an array", "not_an_object": "not a JSON object"}
_ON = WriteFlags(service_enabled=True, tenant_enabled=True, note_create_enabled=True)
#: Every reader of the statement in the sync and the write gate (SMART v1 discovery: its own test below).
_READERS = (SEARCH_PARAMS, INTERACTIONS, SYSTEM_EXPORT, NOTE_WRITE)


def _statement(world: SyncWorld, conn_id: str, reads: Reads = SEARCH_PARAMS) -> tuple[Any, dict[str, Any] | None]:
    conn = load_connection(world.env.db, conn_id)
    with world.env.fhir_client(conn) as client:
        return conn, world.env.capabilities(conn, client, reads=reads)


@pytest.mark.parametrize("variant", LEGAL)
def test_bdx01_bdx26_dwb40_a_legal_statement_decides_as_the_default_one_does(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, variant: str
) -> None:
    """``_lastUpdated`` declared, a system export declared, search-type and create declared: each is read so
    whichever way the statement writes it. Before, a type whose search parameters sat in a later server entry, or
    were named without their ``_`` (identified by their definition canonical), read as having no ``_lastUpdated``:
    every run searched the type whole."""
    sb = start_sandbox(capability_variants=[variant])
    conn_id = connect_patient(world, sb, http=http)
    conn, caps = _statement(world, conn_id)
    assert caps is not None and all(_statement(world, conn_id, reads)[1] is not None for reads in _READERS)
    assert conn.provider.supports_last_updated("Observation", caps) is True
    assert declares_system_export(caps) is True
    assert "search-type" in declared_interactions(caps, "Practitioner")
    assert can_search_by_id(conn, "Patient", caps) is True
    assert check_note_write(caps, "patient/DocumentReference.c", _ON).conditional_create is True


@pytest.mark.parametrize("variant", ["params_in_later_entry", "unprefixed_params"])
def test_bdx26_an_incremental_run_searches_since_the_mark_whatever_way_last_updated_is_declared(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: Any, variant: str
) -> None:
    """The second run's Observation search carries ``_lastUpdated=gt...`` and lands only what changed. Before, it
    searched the type whole on every run (the statement read as not declaring ``_lastUpdated``)."""
    sb = start_sandbox(patients=1, capability_variants=[variant])
    conn = connect_patient(world, sb, http=http)
    first = sync_type(world, conn, "Observation")
    assert first.error is None and first.created > 0
    changed = [r for r in mutate(http, sb, update=40)["updated"] if r.startswith("Observation/")]
    request_log.clear()
    again = sync_type(world, conn, "Observation")
    assert again.error is None and again.updated == len(changed)
    searches = request_log.paths("/fhir/Observation")
    assert searches and all("_lastUpdated" in s.params for s in searches), searches
    assert again.created + again.updated + again.unchanged < first.created  # only what changed came back


@pytest.mark.parametrize("variant", sorted(ILLEGAL))
def test_bdx26_dwb40_a_statement_that_is_not_fhir_json_is_refused_by_name(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, caplog: pytest.LogCaptureFixture, variant: str
) -> None:
    """Every reader refuses it naming what is wrong (a body that is no JSON object: the client already); the run
    logs that and goes on with the vendor's defaults (as for any unusable statement). Before, one-element arrays sent
    as bare objects read as a statement declaring nothing: no ``_lastUpdated``, no export, no create (a note blocked
    as if the server forbade it)."""
    sb = start_sandbox(capability_variants=[variant])
    conn_id = connect_patient(world, sb, http=http)
    conn = load_connection(world.env.db, conn_id)
    if variant == "not_an_object":
        with world.env.fhir_client(conn) as client, pytest.raises(FhirError, match=ILLEGAL[variant]):
            client.capabilities()
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert all(_statement(world, conn_id, reads)[1] is None for reads in [*_READERS, SEARCH_PARAMS])
    assert any(ILLEGAL[variant] in r.getMessage() for r in caplog.records), caplog.records
    if variant == "bare_objects":  # each reader says so once (a run asks per type)
        assert sum("for its search parameters" in r.getMessage() for r in caplog.records) == 1


def test_sal04_smart_v1_discovery_reads_a_decorated_statement_and_refuses_bare_objects_by_name(
    start_sandbox: Any, http: httpx.Client
) -> None:
    """SAL-04 (oauth-uris in ``rest.security``): extensions and extra elements are no obstacle; a ``rest`` sent as a
    bare object is named. Before, it was read as a statement with no ``rest`` ("no oauth-uris token endpoint")."""
    decorated = start_sandbox(profile="v1", capability_variants=["decorated"])
    assert discover(decorated.fhir_base, http=http).token_endpoint.endswith("/oauth/token")
    bare = start_sandbox(profile="v1", capability_variants=["bare_objects"])
    with pytest.raises(DiscoveryError, match="is an object, not an array"):
        discover(bare.fhir_base, http=http)


def test_dwb40_a_note_meets_a_statement_with_bare_objects_as_an_unreadable_statement_not_as_a_refusal(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: Any
) -> None:
    """DWB-40: the note waits for another try (the server may mend its statement; ``reason_code`` ``fhir_error``)
    and nothing is sent. Before, the statement read as declaring no DocumentReference create: the note was blocked
    ``WRITE_NOT_SUPPORTED (no_create_interaction)`` for good, as if the server forbade notes."""
    sb = start_sandbox(capability_variants=["bare_objects"])
    conn = writable_connection(world, sb, http)
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    assert (done.state, done.reason_code) == ("pending", "fhir_error"), (done.state, done.reason_code, done.reason)
    assert request_log.paths("/fhir/DocumentReference", "POST") == []
