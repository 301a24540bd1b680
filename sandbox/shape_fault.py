"""The ``search_shape`` fault: a searchset page written the way some servers and gateways write it.

``shape`` picks how:

- ``single_objects``: a one-element array (``entry``, ``link``) comes as the bare object, as a naive XML-to-JSON
  converter writes it. FHIR's JSON format forbids it (a repeating element is an array even with one item): a page
  of one match then holds an ``entry`` that is an object, and a client reading ``entry`` as a list finds nothing.
- ``relation_case``: link relations spelt with a capital (``Self``, ``Next``). RFC 8288 compares relation types
  case-insensitively, and FHIR R4's ``Bundle.link.relation`` is a plain string naming one.
- ``unmarked_others``: after the matches, the resources they refer to (the Patient of ``subject``/``patient``, the
  Medication of ``medicationReference``), once a page, in entries with no ``search`` at all: legal (R4
  ``Bundle.entry.search`` and its ``mode`` are 0..1), as servers send what a match refers to, or an ``_include``,
  without saying so.
- ``number_ids``: each match's ``id`` a JSON number (a stable one per id), as a server keying rows by integer and
  writing them unquoted does. FHIR's JSON format forbids it (``id`` is a string).

The ``bulk_deleted_shape`` fault writes a Bulk ``deleted`` file the same naive way (``bare_deleted_entries``): each
Bundle's one DELETE entry comes as the bare object instead of a one-element array.
"""

from __future__ import annotations

import zlib
from typing import Any, Literal

import orjson

from sandbox.data.store import DataStore
from sandbox.errors import SandboxError

__all__ = ["SearchShape", "bare_deleted_entries", "reshape_searchset"]

SearchShape = Literal["single_objects", "relation_case", "unmarked_others", "number_ids"]
_REFERRING = ("subject", "patient", "medicationReference")


def reshape_searchset(bundle: dict[str, Any], shape: SearchShape, store: DataStore) -> dict[str, Any]:
    """The searchset ``bundle`` as ``shape`` writes it (a new dict; the entries themselves are not copied)."""
    reshaped = dict(bundle)
    if shape == "single_objects":
        for key in ("entry", "link"):
            value = reshaped.get(key)
            if isinstance(value, list) and len(value) == 1:
                reshaped[key] = value[0]
    elif shape == "relation_case":
        links = reshaped.get("link") or []
        reshaped["link"] = [{**link, "relation": str(link.get("relation", "")).capitalize()} for link in links]
    elif shape == "number_ids":
        reshaped["entry"] = [_number_id(entry) for entry in reshaped.get("entry") or []]
    else:
        entries = list(reshaped.get("entry") or [])
        reshaped["entry"] = entries + _referred(entries, store)
    return reshaped


def _number_id(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` with its resource's ``id`` written as a JSON number (the same for the same id, page after page)."""
    resource = entry.get("resource")
    if not isinstance(resource, dict) or not isinstance(resource.get("id"), str):
        return entry
    return {**entry, "resource": {**resource, "id": zlib.crc32(resource["id"].encode())}}


def _referred(entries: list[dict[str, Any]], store: DataStore) -> list[dict[str, Any]]:
    """Entries (no ``search``) of what the matches refer to, each once, those the store still holds."""
    refs: dict[str, str] = {}  # reference -> its fullUrl (the match's base)
    for entry in entries:
        resource, base = entry.get("resource") or {}, str(entry.get("fullUrl", "")).rsplit("/", 2)[0]
        for name in _REFERRING:
            target = resource.get(name)
            if isinstance(target, dict) and isinstance(target.get("reference"), str):
                refs.setdefault(target["reference"], f"{base}/{target['reference']}")
    referred = []
    for ref, full_url in refs.items():
        rtype, _, rid = ref.partition("/")
        try:
            referred.append({"fullUrl": full_url, "resource": store.read(rtype, rid)})
        except SandboxError:
            continue
    return referred


def bare_deleted_entries(data: bytes) -> bytes:
    """A ``deleted`` file's NDJSON with each Bundle's one-element ``entry`` written as the bare object."""
    lines = []
    for line in data.splitlines():
        bundle = orjson.loads(line) if line.strip() else None
        if isinstance(bundle, dict) and isinstance(bundle.get("entry"), list) and len(bundle["entry"]) == 1:
            line = orjson.dumps({**bundle, "entry": bundle["entry"][0]})
        lines.append(line)
    return b"".join(line + b"\n" for line in lines)
