"""URL rules for talking to an EHR: which base URLs are acceptable, where a token may go (SAL-40), what may
be logged, and which server-named URLs may be fetched at all (no internal addresses)."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Collection
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from connectors.errors import ConfigurationError, EhrSyncError, SecurityPolicyError

__all__ = [
    "checked_url",
    "has_control_characters",
    "is_loopback_host",
    "is_within_base",
    "normalize_base_url",
    "outbound_url_guard",
    "redact_url",
    "resolve_checked_url",
    "resolve_url",
    "same_origin",
    "url_problem",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: ASCII control characters (C0 and DEL): httpx refuses a URL holding one, and urllib drops tabs and newlines.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
#: The longest URL httpx sends (``httpx._urlparse.MAX_URL_LENGTH``).
MAX_URL_CHARS = 65_536


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (plain http is tolerated only there)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds an ASCII control character (C0 or DEL). One pass in C (``isprintable`` for ASCII text,
    a compiled class otherwise): a manifest of 20,000 signed URLs of ~2 KB each took seconds a character at a time."""
    if text.isascii() and text.isprintable():  # for ASCII, printable is exactly "no C0 or DEL"
        return False
    return _CONTROL_CHARACTERS.search(text) is not None


def url_problem(url: object) -> str | None:
    """Why ``url`` cannot be requested, or None for an absolute http(s) URL with a host and a usable port.

    urllib raises a bare ValueError for an unclosed ``[`` IPv6 bracket or a port outside 1-65535, and httpx refuses
    control characters only when the request is built: every URL from outside (settings, a server's answer, a
    launch) is checked here first, so its caller raises its own typed error naming the field.
    """
    if not isinstance(url, str) or not url.strip():
        return "is empty"
    if has_control_characters(url):
        return "contains control characters"
    if len(url) > MAX_URL_CHARS:
        return f"is longer than the {MAX_URL_CHARS} characters an HTTP request may carry"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "has a malformed host (an unclosed or invalid [IPv6] bracket, or characters no host may hold)"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an absolute http(s) URL with a host"
    if port == 0:
        return "has a port that is not a number in 1-65535"
    if any(c.isspace() for c in parts.netloc):
        return "has spaces in its host"
    return _authority_problem(parts.scheme, parts.netloc)


@functools.lru_cache(maxsize=256)
def _authority_problem(scheme: str, netloc: str) -> str | None:
    """What httpx finds wrong with an authority urllib split, or None. Only the authority is parsed (what httpx would
    refuse in the rest is refused above), once per host: the files of one manifest share a few."""
    import httpx  # here: a command reading connections (their providers' URL rules) loads no HTTP client

    try:  # urllib splits what httpx cannot send: an invalid punycode label (idna's ValueError), [v1.x]
        httpx.URL(f"{scheme}://{netloc}/").host  # noqa: B018 - decoding the host is what raises
    except (httpx.InvalidURL, ValueError):
        return "has a host no request can be sent to (an invalid internationalised name or [IP] literal)"
    return None


def checked_url(url: str, what: str, error: Callable[[str], EhrSyncError] = ConfigurationError) -> str:
    """``url`` when :func:`url_problem` finds nothing, else ``error`` raised with a message naming ``what``."""
    problem = url_problem(url)
    if problem is not None:
        raise error(f"{what} {problem}: {redact_url(str(url))[:200]!r}")
    return url


def resolve_checked_url(
    reference: str, against: str, what: str, error: Callable[[str], EhrSyncError] = ConfigurationError
) -> str:
    """:func:`resolve_url`, then :func:`checked_url`: for a URL a server names (a Location, a ``next`` link)."""
    return checked_url(resolve_url(reference, against), what, error)


def normalize_base_url(url: str, *, allow_http: bool = False) -> str:
    """Validate a FHIR base URL and return it without a trailing slash.

    Raises ConfigurationError naming the problem: not absolute, not http(s), a malformed host or port, query/fragment
    present, or plain http to a non-loopback host (tokens would travel in clear) unless ``allow_http``.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("FHIR base URL is empty")
    parts = urlsplit(checked_url(url.strip(), "FHIR base URL"))
    if not parts.hostname:  # checked_url saw one: for the type checker
        raise ConfigurationError("FHIR base URL has no host")
    if parts.query or parts.fragment:
        raise ConfigurationError("FHIR base URL must not carry a query string or fragment")
    if parts.username or parts.password:
        raise ConfigurationError("FHIR base URL must not embed credentials")
    if parts.scheme == "http" and not allow_http and not is_loopback_host(parts.hostname):
        raise ConfigurationError(f"FHIR base URL must use https (http only on loopback): {redact_url(url)!r}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed host is no origin: it matches nothing
        return "", "", None
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def same_origin(url: str, base: str) -> bool:
    """True when scheme, host and (default-normalised) port match."""
    return _origin(url) == _origin(base) and bool(_origin(url)[1])


def is_within_base(url: str, base: str) -> bool:
    """True when ``url`` is on ``base``'s origin and under its path (the only place a token may go, SAL-40)."""
    if not same_origin(url, base):
        return False
    base_path = urlsplit(base).path.rstrip("/")
    path = urlsplit(url).path
    if any(segment in (".", "..") for segment in unquote(path).split("/")):
        return False
    return path == base_path or path.startswith(base_path + "/")


def resolve_url(reference: str, against: str) -> str:
    """Resolve a relative URL against a request URL (or a FHIR base, treated as a directory). A reference urllib
    cannot split comes back as it is, for :func:`checked_url` to name."""
    try:
        if urlsplit(reference).scheme:
            return reference
        return urljoin(against, reference)
    except ValueError:
        return reference


def redact_url(url: str) -> str:
    """The URL without ``user:password@``, path parameters, query string or fragment: safe to log (queries may hold
    signatures or search values, and a segment's parameters a session id or a signature: ``/Binary/12;jsessionid=``,
    ``/1.ndjson;token=``). Never raises: a URL urllib cannot split loses everything from its first ``?`` or ``#``.

    A segment's parameters are everything from its first ``;`` to its end (RFC 3986 §3.3), in every segment: no FHIR
    id holds a ``;``, so nothing a log needs is there. A percent-encoded ``%3B`` is data, not a delimiter: it is kept.
    Empty segments are kept as they are (``a//b`` stays so), and a segment that was only parameters becomes one
    (``/a/;s=1/b`` is logged ``/a//b``): the path's shape is kept, nothing is made up."""
    try:
        parts = urlsplit(url)
    except ValueError:
        scheme, sep, rest = url.split("#", 1)[0].split("?", 1)[0].partition("://")
        authority, slash, path = rest.partition("/")
        return f"{scheme}{sep}{authority.rpartition('@')[2]}{slash}{_without_parameters(path)}" if sep else scheme
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], _without_parameters(parts.path), "", ""))


def _without_parameters(path: str) -> str:
    """``path`` with each segment's parameters (from its first ``;`` to the segment's end) dropped."""
    if ";" not in path:
        return path
    return "/".join(segment.partition(";")[0] for segment in path.split("/"))


def _canonical_host(entry: str) -> str:
    """``entry`` (a host, ``[IPv6]`` or ``[IPv6]:port``) with an IPv6 literal in its RFC 5952 text: one address has
    many spellings (``[fd00:0:0::5]``, ``[FD00::5]``), and an allowed host is compared with a URL's as text."""
    if not entry.startswith("["):
        return entry
    literal, bracket, rest = entry[1:].partition("]")
    try:
        return f"[{ipaddress.IPv6Address(literal).compressed}{bracket}{rest}"
    except ValueError:  # not an address: compared as written, so it matches nothing it should not
        return entry


def outbound_url_guard(fhir_base: str, *, allowed_hosts: Collection[str] = ()) -> Callable[[str], None]:
    """A check for URLs a *server* names (attachments, bulk files): anything under the FHIR base's origin is
    fine; elsewhere only https to hosts whose every address is public, so a record cannot point ehrsync's
    workers at internal services (cloud metadata, the app database, loopback admin ports). ``allowed_hosts``
    (``host`` or ``host:port``, chosen by the operator, e.g. an on-premises file server) pass over http(s) to
    any address. Raises SecurityPolicyError."""
    allowed = {_canonical_host(h.strip().lower()) for h in allowed_hosts if h.strip()}

    def guard(url: str) -> None:
        if same_origin(url, fhir_base):
            return
        checked_url(url, "refusing to fetch: the URL", SecurityPolicyError)
        target = urlsplit(url)
        host = (target.hostname or "").lower()
        port = target.port
        named = _canonical_host(f"[{host}]") if ":" in host else host  # IPv6 literals keep their brackets
        with_port = f"{named}:{port}" if port else named
        if target.scheme in ("http", "https") and host and (named in allowed or with_port in allowed):
            return
        if target.scheme != "https" or not target.hostname:
            raise SecurityPolicyError(
                f"refusing to fetch {redact_url(url)}: off the FHIR server's origin and not https"
            )
        try:
            infos = socket.getaddrinfo(target.hostname, port or 443, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise SecurityPolicyError(f"refusing to fetch {redact_url(url)}: host does not resolve") from exc
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not address.is_global:
                raise SecurityPolicyError(f"refusing to fetch {redact_url(url)}: it resolves to a non-public address")

    return guard
