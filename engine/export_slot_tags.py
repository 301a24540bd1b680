"""The export slot's run tag (``engine.export_slots``): which connections share one Bulk export at a time.

A module of its own because listing connections (``engine.connection_snapshots``, ``ehrsync connections list``)
names each one's slot, and must not load what claiming a slot needs (the sync environment, the HTTP stack).
"""

from __future__ import annotations

import hashlib

from connectors.errors import ConfigurationError
from connectors.providers import get_provider

__all__ = ["export_slot", "slot_base"]


def slot_base(fhir_base: str) -> str:
    """The FHIR base as a slot knows it: with or without its trailing slash, one base (a base is stored as
    configured, so two connections of one tenant may spell it either way)."""
    return fhir_base.rstrip("/")


def export_slot(provider_id: str, client_id: str | None, fhir_base: str) -> str | None:
    """The slot's run tag value, ``<provider>-<16 hex>`` (a hash: a client id may be a multi-KB JWT and a base URL
    holds characters a tag value may not), or None when the vendor allows concurrent exports."""
    try:
        one_at_a_time = get_provider(provider_id).one_export_per_client
    except ConfigurationError:  # an unknown provider fails where it is used, naming the known ones
        return None
    if not one_at_a_time:
        return None
    digest = hashlib.sha256(f"{client_id or ''}\n{slot_base(fhir_base)}".encode()).hexdigest()[:16]
    return f"{provider_id}-{digest}"
