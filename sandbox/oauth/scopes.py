"""SMART v1/v2 scope parsing, granting and enforcement (SAL-18..22)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

_V2 = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE_RE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z]+|\*)(?:\?(.+))?$")
NON_RESOURCE = frozenset(
    {"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter", "offline_access", "online_access"}
)


class ScopeError(ValueError):
    """A scope string that is neither a known launch/identity scope nor a valid resource scope."""


@dataclass(frozen=True)
class ResourceScope:
    context: str  # patient | user | system
    resource_type: str  # a type or "*"
    perms: frozenset[str]  # subset of c r u d s
    filters: tuple[tuple[str, str], ...] = ()
    v1: bool = False
    raw: str = field(default="", compare=False)

    def covers(self, other: ResourceScope) -> bool:
        return (
            self.context == other.context
            and self.resource_type in ("*", other.resource_type)
            and other.perms <= self.perms
            and (not self.filters or set(self.filters) <= set(other.filters))
        )

    def render(self, v1: bool) -> str:
        if v1:
            perms = "*" if self.perms == frozenset(_V2) else ("read" if self.perms <= {"r", "s"} else "write")
        else:
            perms = "".join(p for p in _V2 if p in self.perms)
        query = "&".join(f"{k}={v}" for k, v in self.filters)
        return f"{self.context}/{self.resource_type}.{perms}" + (f"?{query}" if query and not v1 else "")


def parse_scope(token: str) -> ResourceScope | None:
    """A resource scope, None for a launch/identity scope; raises ScopeError when malformed."""
    if token in NON_RESOURCE:
        return None
    m = _SCOPE_RE.match(token)
    if not m:
        raise ScopeError(f"unrecognised scope {token!r}")
    context, rtype, perm, query = m.groups()
    if perm in _V1:
        perms, v1 = frozenset(_V1[perm]), True
    elif all(p in _V2 for p in perm) and "".join(p for p in _V2 if p in perm) == perm:
        perms, v1 = frozenset(perm), False
    else:
        raise ScopeError(f"bad permissions in scope {token!r} (v2 letters must follow c r u d s order)")
    filters = tuple(sorted(parse_qsl(query))) if query else ()
    return ResourceScope(context, rtype, perms, filters, v1, token)


@dataclass(frozen=True)
class Grant:
    """A parsed, granted scope string and what it allows."""

    tokens: tuple[str, ...]
    resources: tuple[ResourceScope, ...]

    @classmethod
    def parse(cls, scope: str) -> Grant:
        tokens = tuple(dict.fromkeys(scope.split()))
        return cls(tokens, tuple(r for t in tokens if (r := parse_scope(t)) is not None))

    def has(self, token: str) -> bool:
        return token in self.tokens

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def rules_for(self, resource_type: str, perm: str) -> list[ResourceScope]:
        return [r for r in self.resources if r.resource_type in ("*", resource_type) and perm in r.perms]


def v2_syntax_error(grant: Grant) -> str | None:
    """What a SMART v1 server (``profile: v1`` or ``v1_well_known``) says of a request in v2 syntax (``.rs``,
    ``?category=``): it knows none of it, so it refuses the scope (invalid_scope), as real v1 servers do; None when
    all is v1."""
    v2 = [r.raw for r in grant.resources if not r.v1]
    return f"this SMART v1 server knows no v2 scope syntax: {', '.join(v2)}" if v2 else None


def narrow(requested: Grant, allowed: Grant) -> Grant:
    """The intersection of what was asked and what a client may have (SAL-32): broader asks shrink."""
    kept: list[str] = [t for t in requested.tokens if t in NON_RESOURCE]
    for r in requested.resources:
        for a in allowed.resources:
            if a.covers(r):
                kept.append(r.raw)
                break
            shared = a.perms & r.perms
            if a.context == r.context and r.resource_type in ("*", a.resource_type) and shared and not r.filters:
                kept.append(ResourceScope(a.context, a.resource_type, shared, a.filters).render(v1=r.v1))
    return Grant.parse(" ".join(dict.fromkeys(kept)))


def render(grant: Grant, v1: bool) -> str:
    """The ``scope`` text of a token response, optionally rewritten in v1 syntax (SAL-21 knob)."""
    if not v1:
        return grant.text
    out = [t if (r := parse_scope(t)) is None else r.render(v1=True) for t in grant.tokens]
    return " ".join(dict.fromkeys(out))


def filter_matches(filters: tuple[tuple[str, str], ...], resource: dict[str, object]) -> bool:
    """Whether a resource satisfies a granular scope's ``?category=system|code`` style filters."""
    for param, value in filters:
        if param != "category":
            return False
        system, _, code = value.rpartition("|")
        cats = resource.get("category")
        codings = (
            [c for cat in cats if isinstance(cat, dict) for c in cat.get("coding", [])]
            if isinstance(cats, list)
            else []
        )
        if not any(c.get("code") == code and (not system or c.get("system") == system) for c in codings):
            return False
    return True
