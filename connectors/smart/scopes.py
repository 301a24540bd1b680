"""SMART scope parsing (SAL-18..21): v1 (``.read``/``.write``/``.*``) and v2 (``.cruds`` + ``?filters``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

__all__ = ["ResourceScope", "ScopeSet", "filtered_scopes", "parse_scopes", "scope_for_server"]

_INTERACTIONS = {
    "create": "c",
    "read": "r",
    "update": "u",
    "delete": "d",
    "search": "s",
    "c": "c",
    "r": "r",
    "u": "u",
    "d": "d",
    "s": "s",
}
_ORDER = "cruds"
_V1_PERMS = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset(_ORDER)}
_RESOURCE_RE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]*)\.([a-z*]+)(?:\?(.*))?\Z")


def _is_v2_perm(perm: str) -> bool:
    """Letters from ``cruds``, each at most once, in that order (SAL-18)."""
    if not perm:
        return False
    positions = [_ORDER.find(ch) for ch in perm]
    return all(p >= 0 for p in positions) and positions == sorted(set(positions))


@dataclass(frozen=True)
class ResourceScope:
    """One ``context/Type.perm[?filter]`` scope; ``interactions`` are letters of ``cruds``."""

    raw: str
    context: str
    resource_type: str
    interactions: frozenset[str]
    filters: tuple[tuple[str, str], ...]
    version: str  # "v1" or "v2"

    def covers(self, resource_type: str, letter: str) -> bool:
        return self.resource_type in ("*", resource_type) and letter in self.interactions

    def to_v1(self) -> list[str]:
        """SAL-20: ``.rs``→``.read``, ``.cud``→``.write``, ``.cruds``→``.*``; v1 has no filters."""
        prefix = f"{self.context}/{self.resource_type}"
        if self.interactions == _V1_PERMS["*"]:
            return [f"{prefix}.*"]
        out = []
        if self.interactions & _V1_PERMS["read"]:
            out.append(f"{prefix}.read")
        if self.interactions & _V1_PERMS["write"]:
            out.append(f"{prefix}.write")
        return out


def _parse_resource_scope(token: str) -> ResourceScope | None:
    match = _RESOURCE_RE.match(token)
    if not match:
        return None
    context, rtype, perm, query = match.groups()
    if perm in _V1_PERMS:
        if query:
            return None  # v1 has no granular filters
        return ResourceScope(token, context, rtype, _V1_PERMS[perm], (), "v1")
    if not _is_v2_perm(perm):
        return None
    filters = tuple(parse_qsl(query, keep_blank_values=True)) if query else ()
    return ResourceScope(token, context, rtype, frozenset(perm), filters, "v2")


@dataclass(frozen=True)
class ScopeSet:
    """A granted (or requested) scope string, parsed. The returned scope is the truth (SAL-21)."""

    resource_scopes: tuple[ResourceScope, ...]
    other: tuple[str, ...]

    @property
    def raw(self) -> str:
        return " ".join([*(s.raw for s in self.resource_scopes), *self.other])

    def __contains__(self, scope: object) -> bool:
        return scope in self.other or any(s.raw == scope for s in self.resource_scopes)

    @property
    def has_offline_access(self) -> bool:
        return "offline_access" in self.other

    @property
    def versions(self) -> frozenset[str]:
        return frozenset(s.version for s in self.resource_scopes)

    def allows(
        self,
        resource_type: str,
        interaction: str,
        *,
        context: str | None = None,
        unfiltered_only: bool = False,
    ) -> bool:
        """Whether some scope permits ``interaction`` (read/search/create/update/delete or c/r/u/d/s).

        A granular scope (``?category=...``) counts unless ``unfiltered_only``: it permits part of the type.
        """
        letter = _INTERACTIONS.get(interaction)
        if letter is None:
            raise ValueError(f"unknown interaction {interaction!r}; use read/search/create/update/delete")
        return any(
            s.covers(resource_type, letter)
            and (context is None or s.context == context)
            and not (unfiltered_only and s.filters)
            for s in self.resource_scopes
        )

    def filters_for(self, resource_type: str, interaction: str = "search") -> list[tuple[tuple[str, str], ...]]:
        """Filter sets of the scopes that permit the interaction; an empty tuple means unrestricted."""
        letter = _INTERACTIONS[interaction]
        return [s.filters for s in self.resource_scopes if s.covers(resource_type, letter)]

    def missing(self, needed_types: Iterable[str], interaction: str = "search") -> list[str]:
        """Needed resource types that no scope covers: surfaced as "insufficient scope" (SAL-21)."""
        return [t for t in needed_types if not self.allows(t, interaction)]

    def to_v1(self) -> ScopeSet:
        """The same request in v1 spelling for v1-only servers (SAL-20); one syntax, never mixed."""
        seen: list[str] = []
        for s in self.resource_scopes:
            for v1 in s.to_v1():
                if v1 not in seen:
                    seen.append(v1)
        return parse_scopes(" ".join([*seen, *self.other]))


def parse_scopes(scope: str | Iterable[str] | None) -> ScopeSet:
    """Parse a space-separated scope string (or tokens). Unknown tokens are kept but grant nothing."""
    if scope is None:
        tokens: list[str] = []
    elif isinstance(scope, str):
        tokens = scope.split()
    else:
        tokens = [t for item in scope for t in item.split()]
    resource: list[ResourceScope] = []
    other: list[str] = []
    for token in dict.fromkeys(tokens):
        parsed = _parse_resource_scope(token)
        if parsed is not None:
            resource.append(parsed)
        else:
            other.append(token)
    return ScopeSet(tuple(resource), tuple(other))


def scope_for_server(scope: str, v1_only: bool) -> str:
    """The scope to ask a server for: in v1 spelling for a v1-only one (SAL-20, one syntax per request, never
    mixed; ``SmartConfiguration.v1_scopes_only``), else as given. Patient launches and Backend Services alike."""
    return parse_scopes(scope).to_v1().raw if v1_only else scope


def filtered_scopes(scope: str) -> list[str]:
    """The granular (``?filter``) resource scopes of ``scope``. v1 spelling has none: ``scope_for_server`` asks a
    v1-only server for the whole type instead, wider than asked, so a caller that must not widen refuses these."""
    return [s.raw for s in parse_scopes(scope).resource_scopes if s.filters]
