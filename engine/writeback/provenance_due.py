"""A Provenance still owed by a ``written`` note (DWB-82): its writing run was killed before sending it, or the EHR
could not take it then (unreachable, lost answer, 5xx, 429). A later write-back run, asked for by the note sensor
once ``provenance_due_at`` has come (``store.outbox_queue.provenance_owed``, notes of active connections only),
sends it here: one note, one Provenance POST at most per run, at most ``max_attempts`` runs per note.

Each run first claims the try (``provenance_tries`` + 1, ``provenance_due_at`` moved on by the backoff) in one
commit before any request, so two runs never send it at once and a run killed from there on is followed by another
once the backoff has passed. The gates are read as now: a tenant that switched write off, a server no longer
offering Provenance create, or scopes no longer covering it clear it (logged, audited); an unreadable statement,
or a connection that cannot write now (re-authorization pending: the sensor asks again once it is active), leaves
it owed. A run in a process that cannot open the connection's token (its key missing here), or meeting a tenant
switch the Provenance hangs on stored neither true nor false (an operator's typo: read as off, it cleared the
Provenance for good), asked the EHR nothing: it gives the try back and puts the Provenance off as ``wait_for_key``
and ``wait_for_setting`` put a note off (``_put_off``, audited naming the key id or the setting).

A second Provenance where a first may be stored (an answer lost, a run killed after its POST and before the id was
committed): when the CapabilityStatement declares the ``target`` search for Provenance, ``Provenance?target=
DocumentReference/<id>`` is read first (a few pages at most; the granted scopes must cover Provenance search, which
ehrsync never asks for by itself: an admin lists it), and ehrsync's own (its contained software Device for this
note, its model and version, as assembler; another app's is not) is taken as sent: its id is stored (not one that is
no FHIR id: taken all the same), nothing is POSTed. A failed search leaves it owed for a later run; one refused for
good (a 4xx other than 408/429: it would be refused on every run) is gone without. Without that search the
Provenance is POSTed: ehrsync cannot tell a stored one from none, and the one case that could store two is a POST
that reached the EHR whose answer never came back; two identical statements of where a note came from mislead no
one, a missing one loses the AI note's origin in the EHR. While a run's POST is alive, it never falls due
(``provenance_beat``): no second run beside it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from connectors import errors as ce
from connectors.fhir import FhirClient
from connectors.fhir.capability import declared_interactions, declares_search_param
from connectors.fhir.ids import fhir_id
from connectors.smart.scopes import parse_scopes
from connectors.writeback.provenance import PARTICIPANT, build_provenance
from engine.environment import SyncEnvironment
from engine.writeback.config import WritebackConfig
from engine.writeback.provenance import (
    ProvenanceGate,
    clear_owed,
    post_provenance,
    provenance_draft,
    refused_for_good,
    settled_already,
    statement,
    warn,
)
from engine.writeback.target import load_target
from engine.writeback.waiting import held_until
from store.models import utcnow
from store.outbox import NoteRecord, transition

__all__ = ["SEARCH_PAGES", "send_owed"]

_log = logging.getLogger(__name__)
#: Pages of the ``Provenance?target=`` search read at most (a server ignoring ``target`` lists every Provenance).
SEARCH_PAGES = 3


def send_owed(env: SyncEnvironment, config: WritebackConfig, note: NoteRecord) -> NoteRecord:
    """``note`` (``written``, a Provenance owed and due) after one try at it (never raises for the EHR)."""
    if note.provenance_tries >= config.max_attempts:
        _log.warning("note %s: its Provenance was tried %d times; given up", note.id, note.provenance_tries)
        return clear_owed(env.db, note, "given_up", {"tries": note.provenance_tries})
    if (settled := settled_already(env.db, note)) is not None:
        return settled
    tries = note.provenance_tries + 1
    due = utcnow() + timedelta(seconds=max(config.backoff_s(tries), config.stalled_after_s))
    note = transition(env.db, note, "written", provenance_tries=tries, provenance_due_at=due, detail={"try": tries})
    try:
        target = load_target(env.db, note, service_write_enabled=config.service_write_enabled)
    except (LookupError, ce.ConfigurationError):
        _log.info("note %s: no Provenance, its connection or tenant is gone", note.id)
        return clear_owed(env.db, note, "not_sent", {})
    if target.connection.status != "active":  # asked for before it changed: owed until it is active again
        _log.info("note %s: its Provenance waits for its connection (%s)", note.id, target.connection.status)
        return note
    with env.fhir_client(target.connection) as client:
        gate = ProvenanceGate(env, client, note, target)
        if (allowed := gate.allows()) is None:  # the statement unreadable (a warning), the token's key missing,
            return _held(env, config, note, gate)  # or a tenant switch neither true nor false
        if not allowed:
            return clear_owed(env.db, note, "not_allowed", {})
        if _searchable(client, target.connection.granted_scopes or ""):
            try:
                found = _stored(client, note)
            except ce.EhrSyncError as exc:  # refused for good it would be on every run: sent as without the search
                if not refused_for_good(exc):
                    warn(env, note, exc, "search failed; still owed")
                    return note
                warn(env, note, exc, "search refused; sent without it")
                found = None
            if found is not None:  # taken as sent; an id that is no FHIR id is not stored, as a POST's answer's
                _log.info("note %s: its Provenance is in the EHR already; not sent again", note.id)
                named = {"provenance_id": found[0]} if found[0] else {}
                found_detail = {"provenance_found": True, "id_named": bool(named)}
                return clear_owed(env.db, note, "sent", found_detail, **named)
        return post_provenance(env, client, note, config.stalled_after_s)


def _held(env: SyncEnvironment, config: WritebackConfig, note: NoteRecord, gate: ProvenanceGate) -> NoteRecord:
    """``note`` after a gate that could not decide: the statement unreadable (tried again once due, a try spent), or
    something on this side the EHR was never asked about (``_put_off``): the token's key missing in this process, or
    a tenant switch the Provenance hangs on stored neither true nor false (named; fixed, a run sends it)."""
    if (key := gate.key_missing) is not None:
        detail = {"provenance": "waiting_for_key", "error_code": key.code, "key_id": key.key_id}
        return _put_off(env, config, note, detail)
    if (setting := gate.setting_invalid) is not None:
        detail = {"provenance": "waiting_for_setting", "error_code": setting.code, "problem": setting.message}
        return _put_off(env, config, note, detail)
    return note


def _put_off(env: SyncEnvironment, config: WritebackConfig, note: NoteRecord, detail: dict[str, Any]) -> NoteRecord:
    """The EHR was asked nothing (this process cannot open the connection's token, or a tenant switch is unreadable):
    the try claimed is given back and the Provenance stays owed, put off as ``wait_for_key`` and ``wait_for_setting``
    put a note off (in the claim's compare-and-set chain: a run that claimed it meanwhile keeps it), audited with
    ``detail``. Counted, runs landing in a process deployed without the key, or meeting an operator's typo in a
    switch, gave it up for good after ``max_attempts`` of them; left due, they would head the sensor's reads while it
    lasts. A run that can decide sends it once due."""
    _, due = held_until(config)
    return transition(
        env.db,
        note,
        "written",
        provenance_tries=max(note.provenance_tries - 1, 0),
        provenance_due_at=due,
        detail=detail,
    )


def _searchable(client: FhirClient, granted: str) -> bool:
    """Whether the statement (read by the gate) declares the ``target`` search of Provenance and the granted scopes
    cover Provenance search (unfiltered: a filter could hide ehrsync's own)."""
    if not parse_scopes(granted).allows("Provenance", "search", unfiltered_only=True):
        return False
    capabilities = statement(client)
    searches = "search-type" in declared_interactions(capabilities, "Provenance")
    return searches and declares_search_param(capabilities, "Provenance", "target")


def _stored(client: FhirClient, note: NoteRecord) -> tuple[str | None] | None:
    """``(its id,)`` of ehrsync's Provenance of this note the EHR holds (``(None,)``: found, named by an id that is
    no FHIR id, DWB-50: it cannot be stored, 64 characters at most), or None: none found."""
    document = f"DocumentReference/{note.ehr_resource_id}"
    device = build_provenance(provenance_draft(note))["contained"][0]  # what ehrsync's own names as its assembler
    pages = client.search_pages("Provenance", {"target": document}, stop_at_repeat=False)
    for number, page in enumerate(pages):
        for resource in page.resources:
            if _ours(resource, document, device):
                return (fhir_id(resource.get("id")),)
        if number + 1 >= SEARCH_PAGES:
            break
    return None


def _ours(resource: dict[str, Any], document: str, device: dict[str, Any]) -> bool:
    """A Provenance of ``document`` (any version) assembled by ehrsync's own contained software Device for this note
    (``device``: its type, model name and model + prompt version, as ehrsync sends them). Another app's Provenance
    of the same note (an EHR's own scribe names a software Device too) is not ehrsync's: taken for it, ehrsync's
    own would never be sent."""
    targets = [t.get("reference", "") for t in resource.get("target") or [] if isinstance(t, dict)]
    if not any(t == document or str(t).startswith(f"{document}/_history/") for t in targets):
        return False
    same = ("resourceType", "type", "deviceName", "version")
    devices = {
        f"#{d.get('id')}"
        for d in resource.get("contained") or []
        if isinstance(d, dict) and all(d.get(k) == device[k] for k in same)
    }
    return any(_assembler(agent) in devices for agent in resource.get("agent") or [])


def _assembler(agent: Any) -> str | None:
    """The reference of an ``assembler`` agent (None for any other agent)."""
    if not isinstance(agent, dict) or not isinstance(who := agent.get("who"), dict):
        return None
    kind = agent.get("type")
    codings = kind.get("coding") if isinstance(kind, dict) else None
    codes = {c.get("code") for c in codings or [] if isinstance(c, dict) and c.get("system") == PARTICIPANT}
    reference = who.get("reference")
    return reference if "assembler" in codes and isinstance(reference, str) else None
