"""The ``search_shape`` fault: a searchset page written the way some servers and gateways write it.

``shape`` picks how:

- ``single_objects``: a one-element array (``entry``, ``link``) comes as the bare object, as a naive XML-to-JSON
  converter writes it. FHIR's JSON format forbids it (a repeating element is an array even with one item): a page
  of one match then holds an ``entry`` that is an object, and a client reading ``entry`` as a list finds nothing.
- ``relation_case``: link relations spelt with a capital (``Self``, ``Next``). RFC 8288 compares relation types
  case-insensitively, and FHIR R4's ``Bundle.link.relation`` is a plain string naming one.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["SearchShape", "reshape_searchset"]

SearchShape = Literal["single_objects", "relation_case"]


def reshape_searchset(bundle: dict[str, Any], shape: SearchShape) -> dict[str, Any]:
    """The searchset ``bundle`` as ``shape`` writes it (a new dict; the entries themselves are not copied)."""
    reshaped = dict(bundle)
    if shape == "single_objects":
        for key in ("entry", "link"):
            value = reshaped.get(key)
            if isinstance(value, list) and len(value) == 1:
                reshaped[key] = value[0]
    else:
        links = reshaped.get("link") or []
        reshaped["link"] = [{**link, "relation": str(link.get("relation", "")).capitalize()} for link in links]
    return reshaped
