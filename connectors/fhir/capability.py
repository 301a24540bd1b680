"""Reading a server's CapabilityStatement: which interactions it declares for a resource type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["declared_interactions", "interactions_of", "server_resources"]


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


def declared_interactions(capabilities: Mapping[str, Any], resource_type: str) -> set[str]:
    """Interaction codes declared for ``resource_type`` (over every entry of that type)."""
    codes: set[str] = set()
    for resource in server_resources(capabilities):
        if resource.get("type") == resource_type:
            codes |= interactions_of(resource)
    return codes
