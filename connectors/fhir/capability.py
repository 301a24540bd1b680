"""Reading a server's CapabilityStatement: which interactions it declares for a resource type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["declared_interactions", "server_resources"]


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


def declared_interactions(capabilities: Mapping[str, Any], resource_type: str) -> set[str]:
    """Interaction codes (``read``, ``search-type``, ``create`` ...) declared for ``resource_type``."""
    codes: set[str] = set()
    for resource in server_resources(capabilities):
        if resource.get("type") != resource_type:
            continue
        for interaction in resource.get("interaction") or []:
            if isinstance(interaction, Mapping) and interaction.get("code"):
                codes.add(str(interaction["code"]))
    return codes
