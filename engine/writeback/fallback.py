"""Find a lost note by what it is when its identifier cannot (DWB-32/33): patient, type, date, encounter, content.

Used only when the identifier search cannot decide: the server ignored it, or its vendor is declared to drop the
``identifier`` of a created note (``WriteProfile.drops_identifier``). Searches
``DocumentReference?patient=&type=&date=`` (+ ``encounter``), only when the server's CapabilityStatement declares
each of them for DocumentReference, and counts a resource as this note only when it matches exactly what ehrsync
sent and a server keeps: subject, type coding, date as the same instant, encounter, and the attachment's ``size``
and ``hash`` (those the server returns; when it returns neither, the description and attachment title, both);
never one carrying another draft's identifier.

Date precision: ehrsync sends the note's ``created_at`` in whole seconds, UTC, identical on every try. A server
keeping it may write it in another offset or with a zero fraction; both are the same instant and match. Anything
else (another second, a non-zero fraction, a date without seconds or zone) is not what was sent: no match. A
server that lowers the precision thus leaves the note for a person rather than matching a neighbour.

A match another note of the tenant not yet written (or written with its id unknown) matches as well (``twinned``)
is neither's: the caller leaves the note for a person rather than guess which of the two the EHR holds.

The answer decides only when the listing was read whole within the bound; "none" proves absence only when the
server demonstrably applied every parameter (its first page's self link names each, no OperationOutcome says
otherwise, as ``lookup`` rules for ``identifier``). Even then nothing is sent again: the caller leaves it unknown.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import or_, select

from connectors import errors as ce
from connectors.budgets import step_budget
from connectors.fhir import FhirClient
from connectors.fhir.capability import SEARCH_PARAMS, declares_search_param, statement_problem
from connectors.fhir.search import SearchPage
from connectors.providers import get_provider
from connectors.writeback.note import identifier_system
from engine.writeback.config import WritebackConfig
from engine.writeback.lookup import LOOKUP_KEPT, SETTING, about_the_search
from engine.writeback.preflight import build_payload
from store import AppDatabase
from store.models import Connection, NoteOutbox
from store.outbox import NoteRecord

__all__ = ["DetailsLookup", "drops_identifier", "find_by_details", "same_note", "twinned", "unclaimed"]

_log = logging.getLogger(__name__)
_TYPE = "DocumentReference"
_LOINC = "http://loinc.org"
#: Pages the listing may take: patient + type + one second names one note (a few when a server ignores some).
_MAX_PAGES = 20
#: A FHIR instant: seconds and a zone required (a dateTime with less is a lower precision than was sent).
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


@dataclass(frozen=True)
class DetailsLookup:
    """``matches``: the resources that are exactly this note; ``decided``: the listing was read whole (else the
    matches prove nothing: a duplicate may hide); ``applied``: the server showed it applied every parameter (only
    then does "none" say the note is absent); ``unreadable``: the search was not made because the server's
    CapabilityStatement cannot be read for its search parameters (what is wrong with it; no PHI)."""

    matches: list[dict[str, Any]] = field(default_factory=list)
    decided: bool = False
    applied: bool = False
    unreadable: str | None = None


def drops_identifier(db: AppDatabase, note: NoteRecord) -> bool:
    """Whether the note's vendor is declared to drop a created note's ``identifier`` (``WriteProfile``)."""
    with db.session() as session:
        row = session.get(Connection, note.connection_id)
        provider_id = row.provider_id if row is not None else None
    return provider_id is not None and get_provider(provider_id).write_profile.drops_identifier


def unclaimed(db: AppDatabase, note: NoteRecord, matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``matches`` less those another note of the tenant holds as its own (``ehr_resource_id``): two drafts of
    the same patient, type, second and text are the same to the search, and the one another note was written as is
    not this one (counting it would mark this note written while it never reached the EHR)."""
    ids = [str(r["id"]) for r in matches]
    with db.session() as session:
        held = set(
            session.scalars(
                select(NoteOutbox.ehr_resource_id).where(
                    NoteOutbox.tenant_id == note.tenant_id,
                    NoteOutbox.id != note.id,
                    NoteOutbox.ehr_resource_id.in_(ids),
                )
            )
        )
    return [r for r in matches if not (isinstance(r["id"], str) and r["id"] in held)]  # no note holds a non-str


def twinned(db: AppDatabase, note: NoteRecord, matches: list[dict[str, Any]]) -> bool:
    """Whether another note of the tenant not ``written`` (still to send, lost, unsettled), or ``written`` with its
    id unknown (``id_unknown``: no id tells its note apart, and ``unclaimed`` cannot remove it), would match one of
    ``matches`` exactly as well: two drafts of one patient and type filed in the same second with the same content
    (or, on a server returning neither size nor hash, the same label) are the same to the search, and which of them
    reached the EHR cannot be told. Counting it for this one could mark it written while only the other was stored;
    both are left for a person. A twin whose payload no longer builds cannot be told apart: it counts."""
    with db.session() as session:
        rows = session.scalars(
            select(NoteOutbox).where(
                NoteOutbox.tenant_id == note.tenant_id,
                NoteOutbox.id != note.id,
                NoteOutbox.patient_id == note.patient_id,
                NoteOutbox.loinc_code == note.loinc_code,
                or_(NoteOutbox.state != "written", NoteOutbox.ehr_resource_id.is_(None)),
            )
        ).all()
        others = [NoteRecord.of(row) for row in rows]
    for other in others:
        try:
            sent = build_payload(other, "preliminary")
        except ce.EhrSyncError:
            return True
        if any(same_note(match, other, sent) for match in matches):
            return True
    return False


def find_by_details(
    client: FhirClient, note: NoteRecord, config: WritebackConfig, seconds: float | None = None
) -> DetailsLookup | None:
    """The fallback search, or None when the server does not declare every parameter it needs (then it is not made; nor
    when its statement cannot be read for them: undecided, ``unreadable`` naming why). A search that fails, comes
    back incomplete, pages past the bound or runs out of time is undecided (``DetailsLookup()``): never evidence
    either way. ``seconds``: what the note's identifier search left of ``lookup_wait_s`` (None: all of it), so that
    one setting bounds all of a note's searching in a run."""
    budget = config.lookup_wait_s if seconds is None else min(seconds, config.lookup_wait_s)
    if budget <= 0:
        _log.warning("note %s: the identifier search spent lookup_wait_s; no patient, type and date search", note.id)
        return DetailsLookup()
    try:
        sent = build_payload(note, note.doc_status if note.doc_status in ("preliminary", "final") else "preliminary")
        params = {"patient": note.patient_id, "type": f"{_LOINC}|{note.loinc_code}", "date": str(sent["date"])}
        if note.encounter_id:
            params["encounter"] = f"Encounter/{note.encounter_id}"
        statement = client.capabilities()
        if (problem := statement_problem(statement, SEARCH_PARAMS.of(_TYPE))) is not None:
            _log.warning("note %s: no patient, type and date search: %s", note.id, problem)
            return DetailsLookup(unreadable=problem)  # the server's declarations are unknown, not absent
        if not all(declares_search_param(statement, _TYPE, name) for name in params):
            return None
        with step_budget("the patient, type and date search", budget, kept=LOOKUP_KEPT, setting=SETTING):
            return _listing(client, note, params, sent)
    except ce.EhrSyncError as exc:  # a budget run out, a payload no longer built, included: nothing learned
        _log.warning("note %s: the patient, type and date search gave no answer (%s)", note.id, exc.code)
        return DetailsLookup()


def _listing(client: FhirClient, note: NoteRecord, params: dict[str, str], sent: dict[str, Any]) -> DetailsLookup:
    matches: dict[str, dict[str, Any]] = {}
    applied = True
    for number, page in enumerate(client.search_pages(_TYPE, params, stop_at_repeat=False)):
        if number == 0:
            applied = _applied(page, params)
        elif any(about_the_search(i, params) for o in page.outcomes for i in _issues(o)):
            applied = False
        matches.update((str(r["id"]), r) for r in page.resources if same_note(r, note, sent))
        if number + 1 >= _MAX_PAGES and page.next_url is not None:
            _log.warning("note %s: the patient, type and date search pages past %d; undecided", note.id, _MAX_PAGES)
            return DetailsLookup()
    return DetailsLookup(list(matches.values()), decided=True, applied=applied)


def _issues(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    issues = outcome.get("issue")
    return [i for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []


def _applied(page: SearchPage, params: dict[str, str]) -> bool:
    """The first page shows every parameter applied: a self link naming each, no issue about the search."""
    if any(about_the_search(i, params) for o in page.outcomes for i in _issues(o)) or page.self_url is None:
        return False
    named = {name.split(":", 1)[0] for name, _ in parse_qsl(urlsplit(page.self_url).query, keep_blank_values=True)}
    return set(params) <= named


def same_note(resource: dict[str, Any], note: NoteRecord, sent: dict[str, Any]) -> bool:
    """Whether ``resource`` is exactly the DocumentReference ``sent`` for ``note`` (as a server keeps it; an id that
    is no FHIR id, a JSON number, still names it: ``reconcile`` writes it with its id unknown)."""
    if resource.get("resourceType") != _TYPE or resource.get("id") is None:
        return False
    if not _refers(resource.get("subject"), "Patient", note.patient_id) or _another_drafts(resource, note):
        return False
    codings = (resource.get("type") or {}).get("coding") if isinstance(resource.get("type"), dict) else None
    if not any(
        isinstance(c, dict) and c.get("system") == _LOINC and c.get("code") == note.loinc_code for c in codings or []
    ):
        return False
    if not _same_instant(resource.get("date"), str(sent["date"])):
        return False
    context: dict[str, Any] = resource["context"] if isinstance(resource.get("context"), dict) else {}
    encounters: list[Any] = context["encounter"] if isinstance(context.get("encounter"), list) else []
    if note.encounter_id is None:
        if encounters:
            return False
    elif len(encounters) != 1 or not _refers(encounters[0], "Encounter", note.encounter_id):
        return False
    return _same_content(resource, sent)


def _another_drafts(resource: dict[str, Any], note: NoteRecord) -> bool:
    """The resource carries the identifier of another draft of the tenant (a server that kept it): whatever else
    matches, it is that draft's note (e.g. an earlier stored copy of a draft later written again), never this one."""
    system, idents = identifier_system(note.tenant_id), resource.get("identifier")
    return isinstance(idents, list) and any(
        isinstance(i, dict) and i.get("system") == system and i.get("value") != note.draft_id for i in idents
    )


def _refers(ref: Any, rtype: str, rid: str) -> bool:
    target = ref.get("reference") if isinstance(ref, dict) else None
    return isinstance(target, str) and (target == f"{rtype}/{rid}" or target.endswith(f"/{rtype}/{rid}"))


def _same_instant(value: Any, sent: str) -> bool:
    """The same instant as ``sent`` (whole seconds, UTC), in any offset, with no more than a zero fraction."""
    found = _INSTANT.fullmatch(value) if isinstance(value, str) else None
    if found is None or (found.group(1) or "").strip(".0"):
        return False
    whole = re.sub(r"\.\d+", "", found.group(0)).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(whole) == datetime.fromisoformat(sent.replace("Z", "+00:00"))
    except ValueError:  # shaped like an instant but no date (a 13th month, a 25th hour): not what was sent
        return False


def _same_content(resource: dict[str, Any], sent: dict[str, Any]) -> bool:
    """One attachment whose ``size``/``hash`` (those returned) are the sent ones, and a description and title, where
    returned, the sent label + title; with neither size nor hash returned, both description and title must be."""
    content = resource.get("content")
    if not isinstance(content, list) or len(content) != 1 or not isinstance(content[0], dict):
        return False
    got, want = content[0].get("attachment"), sent["content"][0]["attachment"]
    if not isinstance(got, dict):
        return False
    kept = [key for key in ("size", "hash") if got.get(key) is not None]
    if any(got[key] != want[key] for key in kept):
        return False
    labels = {
        "description": (resource.get("description"), sent["description"]),
        "title": (got.get("title"), want["title"]),
    }
    if any(have is not None and have != wanted for have, wanted in labels.values()):
        return False
    return bool(kept) or all(have is not None for have, _ in labels.values())
