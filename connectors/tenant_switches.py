"""A tenant's switches in ``practice_settings`` (``smartFhir``/``ehrIntegrations``) are JSON ``true`` or ``false``,
nothing else: the rule their writer (``ehrsync auth seed``, ``auth_service.tenants.settings``) and their readers (the
auth service, ``auth_service.tenants.settings``; the write-back, ``engine.writeback.target``) apply, so a value one
refuses is the value the others neither read as on nor as off: a decision that hangs on it is not taken.
A leaf module (standard library only): the seed is checked before anything heavy is imported."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FINAL_NOTES",
    "SECTIONS",
    "TenantSwitch",
    "all_on",
    "json_kind",
    "read_switch",
    "section_switches",
    "shape_problem",
    "stored_problems",
    "switch_problem",
]

#: The tenant's opt-in to ``final`` notes (DWB-03); read only by the write-back, so no model field declares it.
FINAL_NOTES = "allowFinalNotes"
#: The sections a switch may be set in: either saying ``true`` turns it on.
SECTIONS = ("smartFhir", "ehrIntegrations")
#: Switches only one section declares (``smartFhir.enabled``, ``ehrIntegrations.enableBulkExport``).
_ONLY_IN = {"enabled": ("smartFhir",), "enableBulkExport": ("ehrIntegrations",)}
_SWITCHES = ("enabled", "enableWrite", "enablePatientCreate", "enableNoteCreate", "enableBulkExport", FINAL_NOTES)


def section_switches(section: str) -> tuple[str, ...]:
    """The switches ``section`` (one of ``SECTIONS``) may hold, in one order for every reader and the seed model."""
    return tuple(n for n in _SWITCHES if section in _ONLY_IN.get(n, SECTIONS))


def json_kind(value: object) -> str:
    """A stored value's JSON type, as an operator reads the row (never the value itself: it may be anything)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return "an object" if isinstance(value, Mapping) else "an array" if isinstance(value, list) else "not JSON"


def switch_problem(where: str, value: object) -> str | None:
    """What is wrong with the switch ``where`` holding ``value`` (None: it is ``true`` or ``false``)."""
    return None if isinstance(value, bool) else f"{where} must be true or false, got {json_kind(value)}"


@dataclass(frozen=True)
class TenantSwitch:
    """A tenant switch as stored: on when a section says ``true``; else ``problem`` names the first value that is
    neither ``true`` nor ``false`` (no answer), and without one it is off."""

    on: bool
    problem: str | None = None


def _practice(stored: object) -> Mapping[str, Any] | str:
    """The stored ``practice_settings`` (none, or JSON null: ``{}``), or the problem naming the part that is no
    object. A falsy one (``[]``, ``false``, ``0``) is named too: read as ``{}``, every switch was clearly off, the
    write-back blocked notes and cleared owed Provenances for good as if the tenant had said no."""
    if not isinstance(stored, Mapping):
        return f"settings must be an object, got {json_kind(stored)}"
    practice = stored.get("practice_settings")
    if practice is None:
        return {}
    if not isinstance(practice, Mapping):
        return f"practice_settings must be an object, got {json_kind(practice)}"
    return practice


def shape_problem(stored: object) -> str | None:
    """What makes a tenant's stored settings unreadable as a whole (``settings`` or ``practice_settings`` that is
    no object, in ``read_switch``'s words), or None: for the readers of more than its switches (the auth service)."""
    practice = _practice(stored)
    return practice if isinstance(practice, str) else None


def read_switch(stored: object, name: str) -> TenantSwitch:
    """The switch ``name`` of a tenant's stored settings (the whole ``settings`` JSON of its row). No
    ``practice_settings`` at all, or a section or switch left out: off."""
    if isinstance(practice := _practice(stored), str):
        return TenantSwitch(False, practice)
    problems = []
    for section in (s for s in _ONLY_IN.get(name, SECTIONS) if s in practice):
        values = practice[section]
        if not isinstance(values, Mapping):
            problems.append(f"practice_settings.{section} must be an object, got {json_kind(values)}")
        elif values.get(name, False) is True:
            return TenantSwitch(True)
        elif (problem := switch_problem(f"practice_settings.{section}.{name}", values.get(name, False))) is not None:
            problems.append(problem)
    return TenantSwitch(False, problems[0] if problems else None)


def all_on(switches: Iterable[TenantSwitch]) -> tuple[bool, str | None]:
    """Whether every one of ``switches`` is on: ``(True, None)``; ``(False, None)`` when one is clearly off (the
    answer is no whatever an unreadable one says); else ``(False, problem)``, the answer hanging on that value."""
    read = list(switches)
    if any(not s.on and s.problem is None for s in read):
        return False, None
    problem = next((s.problem for s in read if s.problem is not None), None)
    return problem is None, problem


def stored_problems(stored: object) -> list[str]:
    """Every switch of a tenant's stored settings that is neither true nor false (and a part that is not an object),
    named with the value's JSON type: what ``ehrsync auth bootstrap`` reports of a tenant it leaves as stored."""
    if isinstance(practice := _practice(stored), str):
        return [practice]
    problems: list[str] = []
    for section in (s for s in SECTIONS if s in practice):
        values = practice[section]
        if not isinstance(values, Mapping):
            problems.append(f"practice_settings.{section} must be an object, got {json_kind(values)}")
            continue
        for name in (n for n in section_switches(section) if n in values):
            if (problem := switch_problem(f"practice_settings.{section}.{name}", values[name])) is not None:
                problems.append(problem)
    return problems
