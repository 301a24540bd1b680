"""A tenant's switches in ``practice_settings`` (``smartFhir``/``ehrIntegrations``) are JSON ``true`` or ``false``,
nothing else: the rule both their writer (``ehrsync auth seed``, ``auth_service.tenants.settings``) and their reader
(the write-back, ``engine.writeback.target``) apply, so a value one refuses is the value the other holds a note for.
A leaf module (standard library only): the seed is checked before anything heavy is imported."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["FINAL_NOTES", "json_kind", "switch_problem"]

#: The tenant's opt-in to ``final`` notes (DWB-03); read only by the write-back, so no model field declares it.
FINAL_NOTES = "allowFinalNotes"


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
