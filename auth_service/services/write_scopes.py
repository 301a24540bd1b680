"""Least privilege for a launch's scope list: write access only where a write feature that is on uses it.

SMART App Launch asks an app to request only what it needs. ehrsync's writes are creates: a note write-back
creates a DocumentReference (and a Binary, where a vendor takes the content that way, and a Provenance, DWB-82),
a patient creation a Patient. A configured or plugin scope list is narrowed to that, feature by feature, whatever
its spelling:

- v2: write letters (``c``, ``u``, ``d``) are dropped but a needed ``c``; read letters stay (``patient/Patient.cruds``
  with patient creation off asks ``patient/Patient.rs``); a ``?filter`` stays on what is kept.
- v1: ``.write`` is kept on a needed type (v1 has no create-only spelling; ``scope_for_server`` turns ``.c`` into
  it for a v1-only server anyway), else dropped; ``.*`` becomes ``.read`` on a type no feature writes.
- a wildcard type (``patient/*.*``, ``user/*.cruds``) keeps its read part and gets a write scope per needed type:
  with note write-back on and patient creation off, ``patient/*.*`` asks ``patient/*.read patient/Binary.write
  patient/DocumentReference.write patient/Provenance.write``, never write access to every type. A v2 wildcard's
  ``?filter`` goes only onto a type that has every parameter it filters on (FHIR R4 search parameters): with both
  features on, ``patient/*.cruds?category=clinical-note`` asks ``patient/*.rs?category=clinical-note
  patient/DocumentReference.c?category=clinical-note`` and no create on Binary, Provenance or Patient, which have no
  ``category`` (``patient/Binary.c?category=...`` means nothing, and the unfiltered scope is more than configured).

A token the parser does not read as a resource scope but that looks like a write one (``patient/``, ``user/`` or
``system/``, e.g. ``patient/Patient.write?x=1``) is dropped; a vendor's own scope is kept, whatever its spelling.
"""

from __future__ import annotations

import logging

from connectors.smart import parse_scopes
from connectors.smart.scopes import ResourceScope
from connectors.writeback.scope_filters import filters_apply

__all__ = ["least_privilege_scopes", "log_narrowed"]

logger = logging.getLogger(__name__)

_ORDER = "cruds"
_READS = frozenset("rs")
_WRITES = frozenset("cud")
_NOTE_TYPES = ("Binary", "DocumentReference", "Provenance")  # Provenance: DWB-82, after a written note
_PATIENT_TYPES = ("Patient",)
_LOGGED: set[tuple[str, ...]] = set()  # what was said already: a profile resolves on every refresh
_LOGGED_MAX = 1024
_CONTEXTS = frozenset({"patient", "user", "system"})  # SMART resource scopes; any other is a vendor's own


def least_privilege_scopes(scope: str, *, note: bool, patient: bool) -> tuple[str, list[str]]:
    """``scope`` narrowed to the write access the features on use, and the tokens dropped or narrowed (for a log:
    scope names only, no secrets)."""
    creatable = (_NOTE_TYPES if note else ()) + (_PATIENT_TYPES if patient else ())
    kept: list[str] = []
    changed: list[str] = []
    for token in scope.split():
        out = _narrow(token, creatable)
        if out != [token]:
            changed.append(token)
        kept.extend(out)
    return " ".join(dict.fromkeys(kept)), changed


def _narrow(token: str, creatable: tuple[str, ...]) -> list[str]:
    parsed = parse_scopes(token).resource_scopes
    if not parsed:
        return [] if _looks_like_write(token) else [token]
    rs = parsed[0]
    if not rs.interactions & _WRITES:
        return [token]
    query = token.split("?", 1)[1] if "?" in token else ""
    suffix = f"?{query}" if query else ""
    prefix = f"{rs.context}/"
    if rs.version == "v1":
        return _narrow_v1(rs, creatable, prefix)
    reads = "".join(c for c in _ORDER if c in rs.interactions & _READS)
    if rs.resource_type == "*":
        out = [f"{prefix}*.{reads}{suffix}"] if reads else []
        wanted = (t for t in creatable if "c" in rs.interactions and filters_apply(t, (name for name, _ in rs.filters)))
        return out + [f"{prefix}{t}.c{suffix}" for t in wanted]
    create = "c" if rs.resource_type in creatable and "c" in rs.interactions else ""
    letters = "".join(c for c in _ORDER if c in create + reads)
    return [f"{prefix}{rs.resource_type}.{letters}{suffix}"] if letters else []


def _narrow_v1(rs: ResourceScope, creatable: tuple[str, ...], prefix: str) -> list[str]:
    """v1 ``.write`` or ``.*``: ``.write`` where a feature creates the type, ``.read`` kept from ``.*``."""
    read = [f"{prefix}{rs.resource_type}.read"] if rs.interactions & _READS else []
    if rs.resource_type == "*":
        return read + [f"{prefix}{t}.write" for t in creatable]
    if rs.resource_type in creatable:
        return [rs.raw]
    return read


def _looks_like_write(token: str) -> bool:
    """An unparsed ``patient|user|system/Type.perm``: v1 ``.write``/``.*``, or a permission with c, u or d (``.read``'s
    d is no delete). Another context is a vendor's own scope (``athena/service/Athenanet.MDP.*``, a URL): kept."""
    if token.split("/", 1)[0] not in _CONTEXTS or "." not in token:
        return False
    perm = token.split("?", 1)[0].rsplit(".", 1)[1]
    if perm in ("read", "write", "*"):
        return perm != "read"
    return any(c in perm for c in "cud")


def log_narrowed(tenant_id: str, provider_id: str, changed: list[str], *, note: bool, patient: bool) -> None:
    """Say once per process (per tenant, provider and narrowing) which configured scopes were narrowed: a profile
    resolves on every launch, connect page and token refresh, and one config mistake is one line. Names only."""
    if not changed:
        return
    key = (tenant_id, provider_id, str(note), str(patient), *changed)
    if key in _LOGGED:
        return
    if len(_LOGGED) >= _LOGGED_MAX:
        _LOGGED.clear()
    _LOGGED.add(key)
    logger.info(
        "tenant %s provider %s: scopes %s narrowed to the write features on (note=%s, patient=%s)",
        tenant_id,
        provider_id,
        " ".join(changed),
        note,
        patient,
    )
