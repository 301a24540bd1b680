"""Reading a server's CapabilityStatement: which interactions it declares for a resource type.

R4's ``rest`` repeats (a client entry beside the server's, or several server entries: "behaviors under different
configuration settings"), and cpb-9 forbids describing a type twice only within one entry: so a type may be
described in several server entries, and every one of them counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["declared_interactions", "described", "interactions_of", "server_resources"]


def server_resources(capabilities: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``rest[mode=server].resource`` entries (a missing ``mode`` counts as server); malformed parts ignored."""
    rests = capabilities.get("rest")
    if not isinstance(rests, list):
        return []
    resources: list[Mapping[str, Any]] = []
    for rest in rests:
        if isinstance(rest, Mapping) and rest.get("mode", "server") == "server":
            resources.extend(r for r in rest.get("resource") or [] if isinstance(r, Mapping))
    return resources


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
