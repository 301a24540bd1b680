"""SMART User-access Brands bundles: the directory of health systems a patient recognises by name and logo.

A brands bundle (SMART App Launch 2.2, "User-access Brands and Endpoints") is a FHIR ``collection`` Bundle of
``Organization`` (brand) and ``Endpoint`` resources; a brand's portals (``organization-portal`` extension) name
the FHIR endpoints behind them. Publishers differ: optional fields are often absent, extra fields and resource
types appear, references are relative (``Endpoint/x``), absolute or ``urn:uuid:``, and early bundles used the
Argonaut ``brand-logo`` / ``patient-access-*`` extensions. All of that is accepted; what the profile requires
(a brand's name, an endpoint's address, references that resolve) is checked, and every problem names its entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.errors import ConfigurationError
from connectors.smart._brand_refs import ResourceIndex, ext_value, extensions, is_fhir_base

__all__ = [
    "DIRECTORY_NAME_PATTERN",
    "MAX_BUNDLE_BYTES",
    "MAX_BUNDLE_ENTRIES",
    "Brand",
    "BrandPortal",
    "BrandsBundle",
    "BrandsBundleError",
    "directory_name_problem",
    "parse_brands_bundle",
]

#: The name a tenant gives a loaded bundle (its connect-page directory); loading the same name again replaces it.
DIRECTORY_NAME_PATTERN = r"^[a-z0-9_.-]{1,64}$"
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_BUNDLE_ENTRIES = 20_000
_MAX_PROBLEMS = 20
_MAX_TEXT = 300
_MAX_DATA_LOGO = 64 * 1024
_BRAND_EXT = "http://hl7.org/fhir/StructureDefinition/organization-brand"
_PORTAL_EXT = "http://hl7.org/fhir/StructureDefinition/organization-portal"
_ARGO = "http://fhir.org/argonaut/StructureDefinition/"
_LOGO_TYPES = ("data:image/png;", "data:image/svg+xml;", "data:image/jpeg;", "data:image/gif;", "data:image/webp;")


class BrandsBundleError(ConfigurationError):
    """The bundle is not a usable brands bundle; ``problems`` name each bad entry (at most 20 listed)."""

    code = "invalid_brands_bundle"

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:_MAX_PROBLEMS]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        super().__init__("brands bundle rejected: " + "; ".join(shown) + more)
        self.problems = shown


def directory_name_problem(source: str) -> str | None:
    """What is wrong with ``source`` as a directory name, or None: checked before a bundle is read or stored."""
    if re.fullmatch(DIRECTORY_NAME_PATTERN, source):
        return None
    return f"directory name {source[:80]!r} must be 1-64 of a-z, 0-9, '_', '.', '-'"


@dataclass(frozen=True)
class BrandPortal:
    """Where a patient signs in for a brand; ``endpoints`` are the FHIR base URLs behind it."""

    name: str | None
    description: str | None
    url: str | None
    logo: str | None
    endpoints: tuple[str, ...]


@dataclass(frozen=True)
class Brand:
    """One health system as patients know it (an ``Organization`` of the bundle)."""

    key: str
    name: str
    aliases: tuple[str, ...]
    logo: str | None
    website: str | None
    locations: tuple[str, ...]
    portals: tuple[BrandPortal, ...]


@dataclass(frozen=True)
class BrandsBundle:
    timestamp: str | None
    brands: tuple[Brand, ...]


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return " ".join(value.split())[:_MAX_TEXT]


def _logo(value: Any) -> str | None:
    """``https:`` or an inline image ``data:`` URL (the profile allows both); anything else is dropped."""
    if not isinstance(value, str):
        return None
    if value.startswith("https://") and len(value) <= 2000 and not any(c in value for c in "\"'<> \r\n"):
        return value
    if value.startswith(_LOGO_TYPES) and len(value) <= _MAX_DATA_LOGO:
        return value
    return None


def _load(source: bytes | str | Mapping[str, Any], max_bytes: int) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    raw = source.encode("utf-8") if isinstance(source, str) else source
    if len(raw) > max_bytes:
        raise BrandsBundleError([f"bundle is {len(raw)} bytes, over the {max_bytes}-byte limit"])
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BrandsBundleError([f"bundle is not valid JSON ({exc})"]) from None
    except RecursionError:  # the parser's depth limit: the bundle nests arrays or objects past any real one
        raise BrandsBundleError(["bundle is nested too deeply to be a brands bundle"]) from None
    if not isinstance(data, dict):
        raise BrandsBundleError(["bundle must be a JSON object"])
    return data


def _entries(data: Mapping[str, Any], max_entries: int) -> list[Any]:
    if data.get("resourceType") != "Bundle":
        raise BrandsBundleError([f"resourceType must be 'Bundle', got {data.get('resourceType')!r}"])
    if data.get("type", "collection") != "collection":
        raise BrandsBundleError([f"Bundle.type must be 'collection', got {data.get('type')!r}"])
    entries = data.get("entry", [])
    if not isinstance(entries, list):
        raise BrandsBundleError(["Bundle.entry must be a list"])
    if len(entries) > max_entries:
        raise BrandsBundleError([f"bundle has {len(entries)} entries, over the limit of {max_entries}"])
    return entries


def parse_brands_bundle(
    source: bytes | str | Mapping[str, Any],
    *,
    max_bytes: int = MAX_BUNDLE_BYTES,
    max_entries: int = MAX_BUNDLE_ENTRIES,
) -> BrandsBundle:
    """Parse and check a brands bundle; raises ``BrandsBundleError`` listing every bad entry."""
    data = _load(source, max_bytes)
    index = ResourceIndex.build(_entries(data, max_entries))
    problems = list(index.problems)
    endpoints = _endpoints(index, problems)
    brands: list[Brand] = []
    for label, org in index.of_type("Organization"):
        brand = _brand(index, label, org, endpoints, problems)
        if brand is not None:
            brands.append(brand)
    if problems:
        raise BrandsBundleError(problems)
    brands = _inherit_portals(index, brands)
    return BrandsBundle(timestamp=_text(data.get("timestamp")), brands=tuple(brands))


def _endpoints(index: ResourceIndex, problems: list[str]) -> dict[str, str | None]:
    """Endpoint key -> FHIR base (``None`` when the endpoint is not active: it is skipped, not an error)."""
    found: dict[str, str | None] = {}
    for label, res in index.of_type("Endpoint"):
        address = res.get("address")
        if not is_fhir_base(address):
            problems.append(f"{label}: address must be an absolute http(s) URL, got {str(address)[:80]!r}")
            continue
        active = res.get("status", "active") == "active"
        found[index.key_of(res)] = str(address).strip() if active else None
    return found


def _brand(
    index: ResourceIndex, label: str, org: Mapping[str, Any], endpoints: dict[str, str | None], problems: list[str]
) -> Brand | None:
    name = _text(org.get("name"))
    if name is None:
        problems.append(f"{label}: Organization.name is missing (a brand needs the name patients know it by)")
        return None
    if org.get("active") is False:
        return None
    before = len(problems)
    portals = _portals(index, label, org, endpoints, problems)
    if len(problems) > before:
        return None
    brand_ext = extensions(org, _BRAND_EXT)
    logo = next(filter(None, (_logo(ext_value(e, "brandLogo")) for e in brand_ext)), None)
    logo = logo or _logo(_argo(org, "brand-logo"))
    websites = [t.get("value") for t in org.get("telecom", []) if isinstance(t, dict) and t.get("system") == "url"]
    aliases = tuple(a for a in (_text(x) for x in org.get("alias", []) if isinstance(org.get("alias"), list)) if a)
    return Brand(
        key=index.key_of(org),
        name=name,
        aliases=aliases,
        logo=logo,
        website=next((w for w in (_text(x) for x in websites) if w), None),
        locations=_locations(org),
        portals=portals,
    )


def _argo(org: Mapping[str, Any], name: str) -> Any:
    for ext in org.get("extension", []) if isinstance(org.get("extension"), list) else []:
        if isinstance(ext, dict) and ext.get("url") == _ARGO + name:
            return ext.get("valueUrl") or ext.get("valueString")
    return None


def _portals(
    index: ResourceIndex, label: str, org: Mapping[str, Any], endpoints: dict[str, str | None], problems: list[str]
) -> tuple[BrandPortal, ...]:
    def resolve(ref: Any) -> str | None:
        key = index.resolve(org, ref, "Endpoint")
        if key is None or key not in endpoints:
            shown = ref.get("reference") if isinstance(ref, dict) else ref
            problems.append(f"{label}: endpoint reference {str(shown)[:120]!r} is not an Endpoint in this bundle")
            return None
        return endpoints[key]

    portals: list[BrandPortal] = []
    for ext in extensions(org, _PORTAL_EXT):
        refs = [sub.get("valueReference") for sub in ext.get("extension", []) if sub.get("url") == "portalEndpoint"]
        bases = tuple(dict.fromkeys(b for b in (resolve(r) for r in refs) if b))
        portals.append(
            BrandPortal(
                name=_text(ext_value(ext, "portalName")),
                description=_text(ext_value(ext, "portalDescription")),
                url=_text(ext_value(ext, "portalUrl")),
                logo=_logo(ext_value(ext, "portalLogo")),
                endpoints=bases,
            )
        )
    if not portals:
        refs = list(org.get("endpoint", [])) if isinstance(org.get("endpoint"), list) else []
        refs += index.managed_endpoints(org)
        bases = tuple(dict.fromkeys(b for b in (resolve(r) for r in refs) if b))
        name, url = _text(_argo(org, "patient-access-name")), _text(_argo(org, "patient-access-url"))
        if bases or name or url:
            portals.append(BrandPortal(name=name, description=None, url=url, logo=None, endpoints=bases))
    return tuple(portals)


def _locations(org: Mapping[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    for addr in org.get("address", []) if isinstance(org.get("address"), list) else []:
        if not isinstance(addr, dict):
            continue
        city_state = ", ".join(p for p in (_text(addr.get("city")), _text(addr.get("state"))) if p)
        text = " ".join(p for p in (city_state, _text(addr.get("postalCode"))) if p) or _text(addr.get("text"))
        if text and text not in found:
            found.append(text)
    return tuple(found)


def _inherit_portals(index: ResourceIndex, brands: list[Brand]) -> list[Brand]:
    """An affiliate brand without portals of its own uses those of the brand it is ``partOf`` (depth two)."""
    by_key = {b.key: b for b in brands}
    result: list[Brand] = []
    for brand in brands:
        if not brand.portals:
            parent_key = index.part_of(brand.key)
            parent = by_key.get(parent_key) if parent_key else None
            if parent is not None and parent.portals:
                brand = Brand(**{**brand.__dict__, "portals": parent.portals})
        result.append(brand)
    return result
