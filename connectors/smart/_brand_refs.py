"""Reference resolution inside one brands Bundle: relative, absolute and ``urn:uuid:`` references all resolve."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from connectors.http.urls import url_problem

__all__ = ["ResourceIndex", "ext_value", "extensions", "is_fhir_base"]

_HISTORY = re.compile(r"/_history/[^/]*$")
_TYPED = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")


def is_fhir_base(value: Any) -> bool:
    """An absolute http(s) URL a connection could use as its FHIR base (a bad port or ``[`` is none)."""
    if not isinstance(value, str) or len(value) > 2000 or any(c.isspace() for c in value.strip()):
        return False
    return url_problem(value.strip()) is None


def extensions(resource: Mapping[str, Any], url: str) -> list[Mapping[str, Any]]:
    items = resource.get("extension", [])
    if not isinstance(items, list):
        return []
    return [e for e in items if isinstance(e, dict) and e.get("url") == url and isinstance(e.get("extension"), list)]


def ext_value(ext: Mapping[str, Any], url: str) -> Any:
    """The first ``value[x]`` of sub-extension ``url`` (a data-absent-reason has none: ``None``)."""
    for sub in ext.get("extension", []):
        if isinstance(sub, dict) and sub.get("url") == url:
            for name in ("valueUrl", "valueString", "valueMarkdown", "valueUri"):
                if isinstance(sub.get(name), str):
                    return sub[name]
    return None


def _ref_text(ref: Any) -> str | None:
    if isinstance(ref, dict):
        ref = ref.get("reference")
    return _HISTORY.sub("", ref.strip()) if isinstance(ref, str) and ref.strip() else None


@dataclass
class ResourceIndex:
    """Every resource of the bundle under its key (``fullUrl``, else ``Type/id``) and the names it answers to."""

    resources: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    full_urls: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    _keys: dict[int, str] = field(default_factory=dict)
    _managed: dict[str, list[Any]] | None = None

    @classmethod
    def build(cls, entries: Sequence[Any]) -> ResourceIndex:
        index = cls()
        for number, entry in enumerate(entries):
            res = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                index.problems.append(f"entry {number}: has no resource with a resourceType")
                continue
            index._add(number, entry, res)
        return index

    def _add(self, number: int, entry: Mapping[str, Any], res: Mapping[str, Any]) -> None:
        rtype, rid = res["resourceType"], res.get("id")
        full = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        typed = f"{rtype}/{rid}" if isinstance(rid, str) and rid else None
        key = full or typed or f"entry-{number}"
        label = f"entry {number} ({typed or full or rtype})"
        if key in self.resources:
            self.problems.append(f"{label}: duplicates another entry's fullUrl or id {key!r}")
            return
        self.resources[key] = res
        self._keys[id(res)] = key
        self.labels[key] = label
        if full:
            self.full_urls[key] = full
        for name in filter(None, (full, typed)):
            # a Type/id shared by two absolute fullUrls is ambiguous: only the fullUrl finds it then
            self.aliases[name] = key if name not in self.aliases else ""
        self.aliases.setdefault(key, key)

    def of_type(self, rtype: str) -> list[tuple[str, Mapping[str, Any]]]:
        return [(self.labels[k], r) for k, r in self.resources.items() if r.get("resourceType") == rtype]

    def key_of(self, res: Mapping[str, Any]) -> str:
        return self._keys[id(res)]

    def resolve(self, source: Mapping[str, Any], ref: Any, rtype: str) -> str | None:
        text = _ref_text(ref)
        if text is None:
            return None
        candidates = [text]
        base = self.full_urls.get(self.key_of(source), "")
        typed = _TYPED.search(base)
        if typed and not urlsplit(text).scheme:
            candidates.append(base[: typed.start()] + ("/" if typed.group(0).startswith("/") else "") + text)
        match = _TYPED.search(text)
        if match:
            candidates.append(f"{match.group(1)}/{match.group(2)}")
        for name in candidates:
            key = self.aliases.get(name)
            if key and self.resources[key].get("resourceType") == rtype:
                return key
        return None

    def managed_endpoints(self, org: Mapping[str, Any]) -> list[Any]:
        """Endpoints naming ``org`` as ``managingOrganization`` (how early Argonaut bundles linked them)."""
        if self._managed is None:
            self._managed = {}
            for ekey, res in self.resources.items():
                if res.get("resourceType") != "Endpoint":
                    continue
                owner = self.resolve(res, res.get("managingOrganization"), "Organization")
                if owner is not None:
                    self._managed.setdefault(owner, []).append({"reference": ekey})
        return list(self._managed.get(self.key_of(org), []))

    def part_of(self, key: str) -> str | None:
        res = self.resources.get(key)
        return self.resolve(res, res.get("partOf"), "Organization") if res is not None else None
