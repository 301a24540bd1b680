"""Find a draft's DocumentReference on the EHR by its business identifier (DWB-32/33), trusting only exact matches.

A search answer is evidence only when the server applied the ``identifier`` parameter. FHIR servers ignore
search parameters they do not support (lenient handling, the default), and then answer with the patient's other
notes. So a resource counts only when its ``identifier[]`` holds this draft's exact ``{system, value}``, and a
search the server says it did not apply as asked is no evidence at all (``ignored``): its first page's self link
names no ``identifier`` parameter (servers name there the parameters they applied), or an OperationOutcome entry
of the answer reports an error, or warns that a parameter is not supported (code ``not-supported``) or names
``identifier``; a server's routine warnings say nothing about the search. A self link that is absent says nothing,
and the exact filter still holds.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connectors.budgets import step_budget
from connectors.errors import SearchIncompleteError, StepBudgetExceededError
from connectors.fhir import FhirClient
from connectors.fhir.ids import id_problem, resource_ids
from connectors.fhir.search import SearchPage
from connectors.http import redact_url
from connectors.writeback.note import identifier_system
from engine.writeback.config import WritebackConfig
from store.outbox import NoteRecord

__all__ = ["LOOKUP_KEPT", "SETTING", "IdentifierLookup", "about_the_search", "carries_identifier", "find_by_identifier"]

_log = logging.getLogger(__name__)
_PARAM = "identifier"
#: Listings of one identifier search: the first, and again after one that came back incomplete.
_PASSES = 3
#: Pages one listing may take: a draft's identifier matches one note (a few on a server ignoring the parameter
#: silently), so a listing this long, or one whose next links never end, is not one to trust.
_MAX_PAGES = 20
#: What a lookup running out of its time budget leaves (the end of its error's message).
LOOKUP_KEPT = "the note stays unknown: never sent again blindly, never failed on no evidence"
#: What bounds a lookup (its budget error names it): the write-back's own setting, not a sync step's budget.
SETTING = "lookup_wait_s of the writeback resource"


@dataclass(frozen=True)
class IdentifierLookup:
    """``matches``: the DocumentReferences carrying this draft's identifier exactly; ``ignored``: the server did not
    apply the identifier search (``matches`` is then empty and proves nothing); ``started``: when it began
    (``time.monotonic``; None: not known), so a search made after it spends what is left of ``lookup_wait_s``."""

    matches: list[dict[str, Any]] = field(default_factory=list)
    ignored: bool = False
    started: float | None = field(default=None, compare=False)

    @property
    def found(self) -> dict[str, Any] | None:
        """The one note found, or None (none, several, or no evidence)."""
        return self.matches[0] if len(self.matches) == 1 and not self.ignored else None

    @property
    def found_ref(self) -> tuple[str | None, str | None] | None:
        """``(id, meta.versionId)`` of the one note found (each None when it is no FHIR id: ``found_not_fhir``), or
        None when none was found."""
        found = self.found
        return None if found is None else resource_ids(found)

    @property
    def found_not_fhir(self) -> str | None:
        """What makes the found note's id no FHIR id (``ids.id_problem``: never its text), None when it is one."""
        found = self.found
        if found is None or resource_ids(found)[0] is not None:
            return None
        return id_problem(found.get("id"))


def find_by_identifier(client: FhirClient, note: NoteRecord, config: WritebackConfig) -> IdentifierLookup:
    """Search ``DocumentReference?patient=&identifier=`` (raises ``EhrSyncError`` when the search fails).

    Each pass reads every page (``stop_at_repeat=False``): a match repeated on a later page is the same note, read past
    (pages that overlap by one, or offset paging over changing notes). A listing that came back incomplete
    (``SearchIncompleteError``: a match came again with no ``total`` showing none was skipped, a next link loops,
    more than ``_MAX_PAGES`` pages) may have missed a match: the search is made again, at most ``_PASSES`` times.
    Every exact match any pass read counts (each is the EHR's own evidence); a pass that ends whole settles it. When
    none does, the matches read stand (the note is there; a duplicate may hide), and none read proves nothing.

    ``config.lookup_wait_s`` bounds the whole lookup, every pass and page and the transport's waits (a server
    trickling its pages would otherwise hold the run for passes x pages x the request deadline): running out is
    as a pass that did not end (``StepBudgetExceededError`` when no match was read)."""
    system = identifier_system(note.tenant_id)
    params = {"patient": note.patient_id, _PARAM: f"{system}|{note.draft_id}"}
    matches: dict[str, dict[str, Any]] = {}  # by id: a server paging by offset may repeat a match on a later page
    try:
        with step_budget("the identifier search", config.lookup_wait_s, kept=LOOKUP_KEPT, setting=SETTING):
            return _passes(client, note, params, matches)
    except StepBudgetExceededError:
        if not matches:
            raise
        _log.warning("note %s: the identifier search ran out of time; the matches it read stand", note.id)
        return IdentifierLookup(list(matches.values()))


def _passes(
    client: FhirClient, note: NoteRecord, params: dict[str, str], matches: dict[str, dict[str, Any]]
) -> IdentifierLookup:
    """Up to ``_PASSES`` listings into ``matches`` (kept by the caller: a budget running out keeps what was read);
    the first whole one settles it, else the matches read stand, or the last ``SearchIncompleteError`` if none."""
    incomplete: SearchIncompleteError | None = None
    for _ in range(_PASSES):
        try:
            if _one_pass(client, note, params, matches):
                return IdentifierLookup(ignored=True)
            return IdentifierLookup(list(matches.values()))
        except SearchIncompleteError as exc:
            _log.warning(
                "note %s: the identifier search came back incomplete (%s); searching again", note.id, exc.reason
            )
            incomplete = exc
    if not matches:
        assert incomplete is not None
        raise incomplete
    return IdentifierLookup(list(matches.values()))


def _one_pass(client: FhirClient, note: NoteRecord, params: dict[str, str], matches: dict[str, Any]) -> bool:
    """Read one whole listing into ``matches``; True when the server said it did not apply the search."""
    system, value = identifier_system(note.tenant_id), note.draft_id
    for number, page in enumerate(client.search_pages("DocumentReference", params, stop_at_repeat=False)):
        if _ignored(page, first=number == 0):
            _log.warning("note %s: the EHR did not apply the identifier search; its answer is no evidence", note.id)
            return True
        matches.update((str(r["id"]), r) for r in page.resources if _carries(r, system, value))
        if number + 1 >= _MAX_PAGES and page.next_url is not None:
            what, url = f"identifier search: more than {_MAX_PAGES} pages", redact_url(page.url)
            raise SearchIncompleteError(what, url, received=len(matches), total=None, reason="too_many_pages")
    return False


def carries_identifier(resource: dict[str, Any], note: NoteRecord) -> bool:
    """Whether ``resource`` is a DocumentReference (with an id) carrying this draft's exact identifier: an id that is
    no FHIR id (a JSON number) still names the note the EHR holds (``reconcile`` writes it with its id unknown)."""
    return _carries(resource, identifier_system(note.tenant_id), note.draft_id)


def _carries(resource: dict[str, Any], system: str, value: str) -> bool:
    if resource.get("resourceType") != "DocumentReference" or resource.get("id") is None:
        return False
    identifiers = resource.get("identifier")
    return isinstance(identifiers, list) and any(
        isinstance(i, dict) and i.get("system") == system and i.get("value") == value for i in identifiers
    )


def _ignored(page: SearchPage, *, first: bool) -> bool:
    """Whether the server said it did not apply the search as asked (only the first page's self link counts: later
    pages' links may be opaque paging tokens)."""
    for outcome in page.outcomes:
        issues = outcome.get("issue")
        if isinstance(issues, list) and any(about_the_search(i, (_PARAM,)) for i in issues if isinstance(i, dict)):
            return True
    if not first or page.self_url is None:
        return False
    applied = {name.split(":", 1)[0] for name, _ in parse_qsl(urlsplit(page.self_url).query, keep_blank_values=True)}
    return _PARAM not in applied


def about_the_search(issue: dict[str, Any], params: Collection[str]) -> bool:
    """An issue saying the search was not applied as asked: an error, or a warning that a parameter is not
    supported or that names one of ``params`` (a server's routine warnings, e.g. about paging, are not evidence of
    anything and must not leave every note for a person)."""
    severity = issue.get("severity")
    if severity in ("error", "fatal"):
        return True
    if severity != "warning":
        return False
    details = issue.get("details")
    text = " ".join(
        str(part)
        for part in (issue.get("diagnostics"), details.get("text") if isinstance(details, dict) else None)
        if part
    ).lower()
    expressions = [str(e).lower() for e in issue.get("expression") or []]
    named = any(p in text or any(p in e for e in expressions) for p in params)
    return issue.get("code") == "not-supported" or named
