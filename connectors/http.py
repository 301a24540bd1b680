"""HTTP helpers shared by the FHIR REST and Bulk clients: Retry-After, backoff, rate limiting, URL safety.

Kept free of FHIR semantics so every connector throttles, backs off and guards tokens the same way.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx

from connectors.errors import ConfigurationError, SecurityPolicyError

__all__ = [
    "RateLimitedTransport",
    "RateLimiter",
    "RetryPolicy",
    "is_loopback_host",
    "is_within_base",
    "normalize_base_url",
    "outbound_url_guard",
    "parse_http_date",
    "parse_instant",
    "parse_retry_after",
    "redact_url",
    "resolve_url",
    "same_origin",
]

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_http_date(value: str | None) -> datetime | None:
    """An RFC 9110 HTTP-date (``Date``, ``Expires``, ``Retry-After``) as aware UTC, or None if unparseable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_instant(value: object) -> datetime | None:
    """A FHIR ``instant``/``dateTime`` with a timezone as aware UTC; None when absent, partial or zone-less."""
    if not isinstance(value, str) or "T" not in value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    Returns None when the value is missing, unparseable, negative or a date in the past, so the caller
    falls back to its own backoff (BDX-10). Clamping is the policy's job, not the parser's.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        when = parse_http_date(text)
        if when is None:
            return None
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        return seconds if seconds > 0 else None
    if seconds != seconds or seconds < 0 or seconds == float("inf"):  # NaN, negative, infinite
        return None
    return seconds


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait between attempts; ``sleep``/``clock``/``rng`` are injectable so tests never really wait.

    Defaults follow BDX-10: Retry-After clamped to [2 s, 15 min]; absent, unparseable, negative, past or absurd
    (more than ``retry_after_absurd_s``) values fall back to exponential backoff 2 s ×2 capped at 5 min, ±20 %.
    """

    max_attempts: int = 5
    retry_after_min_s: float = 2.0
    retry_after_max_s: float = 900.0
    retry_after_absurd_s: float = 3600.0
    backoff_start_s: float = 2.0
    backoff_factor: float = 2.0
    backoff_cap_s: float = 300.0
    jitter: float = 0.2
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("RetryPolicy.max_attempts must be at least 1")
        if not 0 < self.retry_after_min_s <= self.retry_after_max_s <= self.retry_after_absurd_s:
            raise ConfigurationError("RetryPolicy needs 0 < retry_after_min_s <= retry_after_max_s <= absurd")
        if self.backoff_start_s <= 0 or self.backoff_factor < 1 or self.backoff_cap_s < self.backoff_start_s:
            raise ConfigurationError("RetryPolicy backoff needs start > 0, factor >= 1, cap >= start")
        if not 0 <= self.jitter < 1:
            raise ConfigurationError("RetryPolicy.jitter must be in [0, 1)")

    def backoff_delay(self, attempt: int) -> float:
        """Exponential delay for the ``attempt``-th retry (0-based), capped, with ± jitter."""
        base = min(self.backoff_start_s * self.backoff_factor ** max(attempt, 0), self.backoff_cap_s)
        spread = base * self.jitter
        return max(0.0, base + self.rng.uniform(-spread, spread))

    def delay_for(self, attempt: int, retry_after: str | None) -> float:
        """Delay before the next attempt: the server's Retry-After header when sane, else backoff."""
        seconds = parse_retry_after(retry_after, now=self.wall_clock())
        if seconds is None and retry_after is not None:
            logger.info("ignoring unusable Retry-After, backing off", extra={"retry_after": retry_after[:64]})
        return self.delay_from_seconds(attempt, seconds)

    def delay_from_seconds(self, attempt: int, seconds: float | None) -> float:
        """Clamp an already parsed Retry-After to [min, max]; None or absurd values fall back to backoff."""
        if seconds is None or seconds < 0 or seconds > self.retry_after_absurd_s:
            return self.backoff_delay(attempt)
        return min(max(seconds, self.retry_after_min_s), self.retry_after_max_s)


class RateLimiter:
    """Thread-safe token buckets, one per key (e.g. eCW: 240 calls/min per practice base URL).

    ``acquire`` blocks until a token is free. One limiter shared by the FHIR client, the bulk client and the
    token endpoint's ``httpx.Client`` (via :class:`RateLimitedTransport`) keeps all of them under one budget.
    """

    def __init__(
        self,
        capacity: int,
        per_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if capacity < 1 or per_seconds <= 0:
            raise ConfigurationError("RateLimiter needs capacity >= 1 and per_seconds > 0")
        self.capacity = capacity
        self.per_seconds = per_seconds
        self._rate = capacity / per_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def _reserve(self, key: str) -> float:
        """Take one token now (possibly going negative) and return how long the caller must wait."""
        with self._lock:
            now = self._clock()
            tokens, stamp = self._buckets.get(key, (float(self.capacity), now))
            tokens = min(float(self.capacity), tokens + (now - stamp) * self._rate) - 1.0
            self._buckets[key] = (tokens, now)
            return 0.0 if tokens >= 0 else -tokens / self._rate

    def acquire(self, key: str) -> float:
        """Block until one call under ``key`` is allowed; returns the seconds waited."""
        wait = self._reserve(key)
        if wait > 0:
            self._sleep(wait)
        return wait


class RateLimitedTransport(httpx.BaseTransport):
    """Wraps a transport so every request (FHIR, token, authorize) spends from the same bucket ``key``."""

    def __init__(self, inner: httpx.BaseTransport, limiter: RateLimiter, key: str) -> None:
        self._inner = inner
        self._limiter = limiter
        self._key = key

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._limiter.acquire(self._key)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (plain http is tolerated only there)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_base_url(url: str, *, allow_http: bool = False) -> str:
    """Validate a FHIR base URL and return it without a trailing slash.

    Raises ConfigurationError naming the problem: not absolute, not http(s), query/fragment present, or plain
    http to a non-loopback host (tokens would travel in clear) unless ``allow_http``.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("FHIR base URL is empty")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"FHIR base URL must be an absolute http(s) URL, got {redact_url(url)!r}")
    if parts.query or parts.fragment:
        raise ConfigurationError("FHIR base URL must not carry a query string or fragment")
    if parts.username or parts.password:
        raise ConfigurationError("FHIR base URL must not embed credentials")
    if parts.scheme == "http" and not allow_http and not is_loopback_host(parts.hostname):
        raise ConfigurationError(f"FHIR base URL must use https (http only on loopback): {redact_url(url)!r}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
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
    """Resolve a relative URL against a request URL (or a FHIR base, treated as a directory)."""
    if urlsplit(reference).scheme:
        return reference
    return urljoin(against, reference)


def redact_url(url: str) -> str:
    """The URL without query string or fragment: safe to log (queries may hold signatures or search values)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def outbound_url_guard(fhir_base: str, *, allowed_hosts: Collection[str] = ()) -> Callable[[str], None]:
    """A check for URLs a *server* names (attachments, bulk files): anything under the FHIR base's origin is
    fine; elsewhere only https to hosts whose every address is public, so a record cannot point ehrsync's
    workers at internal services (cloud metadata, the app database, loopback admin ports). ``allowed_hosts``
    (``host`` or ``host:port``, chosen by the operator, e.g. an on-premises file server) pass over http(s) to
    any address. Raises SecurityPolicyError."""
    allowed = {h.strip().lower() for h in allowed_hosts if h.strip()}

    def guard(url: str) -> None:
        if same_origin(url, fhir_base):
            return
        target = urlsplit(url)
        host = (target.hostname or "").lower()
        try:
            port = target.port
        except ValueError:
            raise SecurityPolicyError(f"refusing to fetch {redact_url(url)}: its port is not a valid number") from None
        named = f"[{host}]" if ":" in host else host  # IPv6 literals keep their brackets, as in a URL
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
