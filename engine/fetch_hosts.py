"""``EHRSYNC_FETCH_ALLOWED_HOSTS``: the off-origin file servers a Bulk manifest or an attachment may name.

Each entry must be written as the fetch guard (``connectors.http.urls.outbound_url_guard``) compares it: a host
name or an IPv6 literal in brackets, lower case, and a port only as a URL carries one (1..65535, no leading zero).
An entry no URL can match (``files:99999``, ``files:08443``) would never allow anything, and the file would be
refused at run time far from the setting, so it is refused here, naming the variable."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from engine.errors import PipelineConfigurationError

__all__ = ["fetch_allowed_hosts"]

# Underscores too: URLs and the fetch guard take them (a Docker Compose service name, ``bulk_files``).
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = rf"{_LABEL}(?:\.{_LABEL})*"
_ENTRY = re.compile(rf"(?P<host>{_NAME}|\[(?P<ipv6>[0-9a-f:.]+)\])(?::(?P<port>[1-9][0-9]{{0,4}}))?")


def _valid(entry: str) -> bool:
    m = _ENTRY.fullmatch(entry)
    if m is None or (m["port"] is not None and int(m["port"]) > 65_535):
        return False
    if m["ipv6"] is None:
        return True
    try:
        ipaddress.IPv6Address(m["ipv6"])
    except ValueError:
        return False
    return True


def fetch_allowed_hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    """The comma-separated entries, lower case; a malformed one raises ``PipelineConfigurationError``."""
    hosts = tuple(h.strip().lower() for h in env.get("EHRSYNC_FETCH_ALLOWED_HOSTS", "").split(",") if h.strip())
    bad = [h for h in hosts if not _valid(h)]
    if bad:
        raise PipelineConfigurationError(
            f"EHRSYNC_FETCH_ALLOWED_HOSTS names {bad[0]!r}, which is not a host or host:port (no scheme or path; "
            "a port from 1 to 65535 with no leading zero, an IPv6 address in brackets)"
        )
    return hosts
