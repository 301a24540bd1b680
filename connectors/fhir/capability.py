"""Reading a server's CapabilityStatement: which interactions it declares for a resource type.

R4's ``rest`` repeats (a client entry beside the server's, or several server entries: "behaviors under different
configuration settings"), and cpb-9 forbids describing a type twice only within one entry: so a type may be
described in several server entries, and every one of them counts. ``statement_problem`` names what makes a body
no CapabilityStatement in FHIR JSON (a repeating element sent as a bare object), which the readers would otherwise
take for a statement declaring nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
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
#: Where the readers look, per element: the repeating (array) children FHIR JSON always writes as arrays.
_ARRAYS = {
    "CapabilityStatement": ("rest",),
    "rest": ("resource", "searchParam", "operation"),
    "resource": ("interaction", "searchParam", "operation", "supportedProfile"),
    "security": ("extension",),
    "extension": ("extension",),
}
#: The single (object) children the readers go into: ``rest.security`` holds the SMART oauth-uris extension.
_OBJECTS = {"rest": ("security",)}
#: What SMART v1 discovery reads (``rest.security``'s extensions): the rest is no reason to refuse a sign-in.
_SECURITY_ARRAYS = {"CapabilityStatement": ("rest",), "security": ("extension",), "extension": ("extension",)}


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


def statement_problem(body: Any) -> str | None:
    """What makes ``body`` no CapabilityStatement in FHIR JSON, or None: not an object, another resource, or an
    element the readers go through (``rest``, its ``resource``/``searchParam``/``operation``, a resource's
    ``interaction``...) written other than as an array of objects (FHIR JSON writes a repeating element as an array
    even with one item; a naive XML-to-JSON converter writes the bare object)."""
    return _problem(body, _ARRAYS)


def security_problem(body: Any) -> str | None:
    """``statement_problem`` limited to what SMART v1 discovery reads: ``rest`` and its ``security`` extensions."""
    return _problem(body, _SECURITY_ARRAYS)


def _problem(body: Any, arrays: Mapping[str, tuple[str, ...]]) -> str | None:
    if not isinstance(body, Mapping):
        return f"the body is {_a(body)}, not a JSON object"
    if body.get("resourceType") != "CapabilityStatement":
        return f"the body is a {str(body.get('resourceType'))[:40]!r}, not a CapabilityStatement"
    return _element_problem(body, "CapabilityStatement", "CapabilityStatement", arrays)


def _element_problem(
    element: Mapping[str, Any], kind: str, path: str, arrays: Mapping[str, tuple[str, ...]]
) -> str | None:
    for name in _OBJECTS.get(kind, ()):
        value = element.get(name)
        if value is not None and not isinstance(value, Mapping):
            return f"{path}.{name} is {_a(value)}, not an object"
        if value is not None and (found := _element_problem(value, name, f"{path}.{name}", arrays)):
            return found
    for name in arrays.get(kind, ()):
        value = element.get(name)
        if value is None:
            continue
        where = f"{path}.{name}"
        if not isinstance(value, list):
            return f"{where} is {_a(value)}, not an array (FHIR JSON writes a repeating element as one)"
        for index, item in enumerate(value):
            at = f"{where}[{index}]"
            if name == "supportedProfile":  # null: an item with an extension but no value (its _supportedProfile)
                if item is not None and not isinstance(item, str):
                    return f"{at} is {_a(item)}, not a string"
            elif not isinstance(item, Mapping):
                return f"{at} is {_a(item)}, not an object"
            elif found := _element_problem(item, name, at, arrays):
                return found
    return None


def _a(value: Any) -> str:
    """``value``'s JSON kind with its article ("an object", "a string")."""
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return kinds.get(type(value), "a number" if isinstance(value, float) else "a null")
