"""Reading a server's CapabilityStatement: which interactions it declares for a resource type.

R4's ``rest`` repeats (a client entry beside the server's, or several server entries: "behaviors under different
configuration settings"), and cpb-9 forbids describing a type twice only within one entry: so a type may be
described in several server entries, and every one of them counts. ``statement_problem`` names what makes a body no
CapabilityStatement in FHIR JSON for one reader (a repeating element it goes through sent as a bare object, or a
string it compares, such as a type or an interaction code, sent as another JSON kind), which that reader would
otherwise take for a statement declaring nothing; a slip in an element the reader never goes through is no reason to
refuse it (real servers ship them, e.g. a type's one ``operation`` as an object), nor is one in the entry of a type
it does not read (``Reads.of``: the search of Observation reads Observation's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "INTERACTIONS",
    "NOTE_WRITE",
    "SEARCH_PARAMS",
    "SECURITY",
    "SYSTEM_EXPORT",
    "Reads",
    "declared_interactions",
    "declares_search_param",
    "described",
    "interactions_of",
    "security_problem",
    "server_resources",
    "server_rests",
    "statement_problem",
]

#: The standard search parameters' canonical (FHIR R4 ``SearchParameter/Resource-lastUpdated``...), by code.
_STANDARD_PARAM = "http://hl7.org/fhir/SearchParameter/Resource-"


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (``of`` makes a new one each time)
class Reads:
    """What one reader of the statement goes through, so it is refused only for a slip there: per element kind,
    its repeating (array) children FHIR JSON always writes as arrays, and its single (object) children."""

    #: Named in the refusal: "the CapabilityStatement cannot be read for <what>".
    what: str
    arrays: Mapping[str, tuple[str, ...]]
    objects: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The reader takes ``mode: server`` entries only (``server_rests``): a client entry's slips are not its own.
    server_only: bool = True
    #: The types whose ``rest.resource`` entries the reader goes into (``None``: every type): another type's slip
    #: (its one ``interaction`` or ``searchParam`` as a bare object) is not its own.
    types: frozenset[str] | None = None

    def of(self, *types: str) -> Reads:
        """This reader as it reads ``types`` only (the search parameters of the type a run searches...)."""
        return replace(self, types=frozenset(types))


_REST = {"CapabilityStatement": ("rest",)}
#: ``declares_search_param``: ``rest.searchParam`` and the searchParam of the entries describing the type (``.of``).
SEARCH_PARAMS = Reads(
    "its search parameters", _REST | {"rest": ("resource", "searchParam"), "resource": ("searchParam",)}
)
#: ``declared_interactions`` (``search-type`` before a batched ``_id`` search), of the type searched (``.of``).
INTERACTIONS = Reads("its interactions", _REST | {"rest": ("resource",), "resource": ("interaction",)})
#: ``engine.bulk_level.declares_system_export``: ``rest.operation``.
SYSTEM_EXPORT = Reads("its system operations", _REST | {"rest": ("operation",)})
#: ``connectors.writeback.check_note_write``: DocumentReference's interactions and supported profiles (Binary's and
#: Provenance's interactions: ``INTERACTIONS.of("Binary", "Provenance")``).
NOTE_WRITE = Reads(
    "DocumentReference create",
    _REST | {"rest": ("resource",), "resource": ("interaction", "supportedProfile")},
    types=frozenset({"DocumentReference"}),
)
#: SMART v1 discovery (SAL-04): the oauth-uris extension in ``rest.security``, of every ``rest`` entry.
SECURITY = Reads(
    "its security",
    _REST | {"security": ("extension",), "extension": ("extension",)},
    {"rest": ("security",)},
    server_only=False,
)
#: The single (string) children the readers compare, by element kind: one of another JSON kind matches nothing, so
#: a ``type`` written as ``["DocumentReference"]`` would read as a type declaring no create (``rest.mode``, which
#: only the server readers read, is checked in ``_item_problem``).
_SCALARS: Mapping[str, tuple[str, ...]] = {
    "resource": ("type",),
    "interaction": ("code",),
    "searchParam": ("name", "definition"),
    "operation": ("name", "definition"),
}
#: Nothing past the body itself: what makes it no CapabilityStatement for any reader (``FhirClient.capabilities``).
_BODY = Reads("anything", {})


def server_rests(capabilities: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``rest`` entries of ``mode: server`` (a missing ``mode`` counts as server); malformed parts ignored."""
    rests = capabilities.get("rest")
    if not isinstance(rests, list):
        return []
    return [r for r in rests if isinstance(r, Mapping) and r.get("mode", "server") == "server"]


def server_resources(capabilities: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``rest[mode=server].resource`` entries of every server ``rest`` entry; malformed parts ignored."""
    return [r for rest in server_rests(capabilities) for r in rest.get("resource") or [] if isinstance(r, Mapping)]


def interactions_of(resource: Mapping[str, Any]) -> set[str]:
    """Interaction codes (``read``, ``search-type``, ``create`` ...) of one ``rest.resource`` entry."""
    return {str(i["code"]) for i in resource.get("interaction") or [] if isinstance(i, Mapping) and i.get("code")}


def described(capabilities: Mapping[str, Any], resource_type: str) -> list[Mapping[str, Any]]:
    """Every server ``rest.resource`` entry describing ``resource_type``, in every server ``rest`` entry."""
    return [r for r in server_resources(capabilities) if r.get("type") == resource_type]


def declared_interactions(capabilities: Mapping[str, Any], resource_type: str) -> set[str]:
    """Interaction codes declared for ``resource_type`` (over every entry of that type)."""
    codes: set[str] = set()
    for resource in described(capabilities, resource_type):
        codes |= interactions_of(resource)
    return codes


def declares_search_param(capabilities: Mapping[str, Any], resource_type: str, code: str) -> bool:
    """Whether a server ``rest`` entry declares the standard parameter ``code`` (``_lastUpdated``) for the type:
    at ``rest.searchParam`` (every type) or in any entry describing the type. A parameter counts by its name, or by
    its ``definition`` canonical (a ``|version`` suffix ignored); by its name without the leading ``_`` only when
    no ``definition`` names another parameter (a server's own ``lastUpdated`` is not the standard one)."""
    bare = code.removeprefix("_")
    canonical = _STANDARD_PARAM + bare
    params = [p for rest in server_rests(capabilities) for p in rest.get("searchParam") or []]
    params += [p for resource in described(capabilities, resource_type) for p in resource.get("searchParam") or []]
    for param in params:
        if not isinstance(param, Mapping):
            continue
        definition = str(param.get("definition") or "").split("|", 1)[0]
        name = str(param.get("name") or "")
        if name == code or definition == canonical or (name == bare and not definition):
            return True
    return False


def statement_problem(body: Any, reads: Reads | None = None) -> str | None:
    """What makes ``body`` no CapabilityStatement in FHIR JSON for the reader ``reads`` describes, or None: not an
    object, another resource, or an element that reader goes through (``rest``, its ``resource``/``searchParam``/
    ``operation``, a resource's ``interaction``...) written other than as an array of objects (FHIR JSON writes a
    repeating element as an array even with one item; a naive XML-to-JSON converter writes the bare object), or a
    string it compares (``_SCALARS``: a resource's ``type``, an interaction's ``code``...) written as another kind.
    Without ``reads``, the body only."""
    if not isinstance(body, Mapping):
        return f"the body is {_a(body)}, not a JSON object"
    if body.get("resourceType") != "CapabilityStatement":
        return f"the body is a {str(body.get('resourceType'))[:40]!r}, not a CapabilityStatement"
    return _element_problem(body, "CapabilityStatement", "CapabilityStatement", reads or _BODY)


def security_problem(body: Any) -> str | None:
    """``statement_problem`` limited to what SMART v1 discovery reads: ``rest`` and its ``security`` extensions."""
    return statement_problem(body, SECURITY)


def _element_problem(element: Mapping[str, Any], kind: str, path: str, reads: Reads) -> str | None:
    for name in _SCALARS.get(kind, ()):
        value = element.get(name)
        if value is not None and not isinstance(value, str):
            return f"{path}.{name} is {_a(value)}, not a string"
    for name in reads.objects.get(kind, ()):
        value = element.get(name)
        if value is not None and not isinstance(value, Mapping):
            return f"{path}.{name} is {_a(value)}, not an object"
        if value is not None and (found := _element_problem(value, name, f"{path}.{name}", reads)):
            return found
    for name in reads.arrays.get(kind, ()):
        value = element.get(name)
        if value is None:
            continue
        where = f"{path}.{name}"
        if not isinstance(value, list):
            return f"{where} is {_a(value)}, not an array (FHIR JSON writes a repeating element as one)"
        for index, item in enumerate(value):
            if found := _item_problem(item, name, f"{where}[{index}]", reads):
                return found
    return None


def _item_problem(item: Any, name: str, at: str, reads: Reads) -> str | None:
    if name == "supportedProfile":  # null: an item with an extension but no value (its _supportedProfile)
        return None if item is None or isinstance(item, str) else f"{at} is {_a(item)}, not a string"
    if not isinstance(item, Mapping):
        return f"{at} is {_a(item)}, not an object"
    if name == "rest" and reads.server_only:
        mode = item.get("mode", "server")
        if not isinstance(mode, str) and ("server" in (named := _named_in(mode)) or not named):
            return f"{at}.mode is {_a(mode)}, not a string"  # may be a server entry, which ``server_rests`` misses
        if mode != "server":
            return None  # a client entry (also ``["client"]``): the server readers never go into it
    if name == "resource" and reads.types is not None:
        kind = item.get("type")
        if kind is not None and not isinstance(kind, str) and _named_in(kind) & reads.types:
            return f"{at}.type is {_a(kind)}, not a string"  # the reader's own type, which ``described`` misses
        if not (isinstance(kind, str) and kind in reads.types):
            return None  # another type's entry: ``described`` never goes into it
    return _element_problem(item, name, at, reads)


def _named_in(value: Any) -> set[str]:
    """The strings ``value`` holds one level down: a ``type`` or ``mode`` written as a list (``["DocumentReference"]``)
    or as an object (``{"value": "DocumentReference"}``, a naive XML-to-JSON converter's primitive) names them."""
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else ()
    return {item for item in items if isinstance(item, str)}


def _a(value: Any) -> str:
    """``value``'s JSON kind with its article ("an object", "a string")."""
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return kinds.get(type(value), "a number" if isinstance(value, float) else "a null")
