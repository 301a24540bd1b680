"""Long-lived collaborators of one app instance (built once in ``create_app``)."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import httpx
from sqlalchemy.orm import Session

from auth_service.core.config import Settings
from auth_service.core.key_warnings import KeyIdWarnings
from auth_service.core.links import LinkSigner
from auth_service.core.sealed_links import ConnectLinks
from connectors.smart import ClientAuth, DiscoveryCache, JwksCache
from connectors.transport import BoundedClient
from store.crypto import ENV_OLD_KEYS, TokenCipher, VaultKeys
from store.database import AppDatabase
from store.models import Connection
from store.rate_windows import vendor_call_budget
from store.states import OAuthStateStore
from store.vault import TokenVault

__all__ = ["ServiceContext", "build_context"]

logger = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    settings: Settings
    db: AppDatabase
    keys: VaultKeys  # parsed once: the cipher and every HMAC key derive from these bytes, never the key text
    cipher: TokenCipher
    http: httpx.Client
    discovery: DiscoveryCache
    jwks: JwksCache
    states: OAuthStateStore
    vault: TokenVault
    links: ConnectLinks
    sessions: LinkSigner
    #: the level of a refusal naming a key id not configured: a warning bounded per key id (forged values name any)
    key_warnings: KeyIdWarnings = field(default_factory=KeyIdWarnings)

    def close(self) -> None:
        self.http.close()
        self.db.dispose()

    def call_budget(self, provider_id: str, fhir_base: str) -> AbstractContextManager[None]:
        """The vendor's shared call budget (eCW) for calls a person waits on: a saturated budget answers
        ``ehr_unavailable`` after ``EHR_CALL_BUDGET_WAIT_SECONDS``, never a page that hangs."""
        return vendor_call_budget(
            self.db, provider_id, fhir_base, max_wait_s=self.settings.EHR_CALL_BUDGET_WAIT_SECONDS
        )


def build_context(settings: Settings, *, http: httpx.Client | None = None, migrate: bool = True) -> ServiceContext:
    """Open the database (migrating it), the cipher, the vault and the caches from validated settings."""
    from datetime import timedelta

    from auth_service.services.profiles import resolve_profile

    environ = {"INTEGRATIONS_TOKEN_ENC_KEY": settings.INTEGRATIONS_TOKEN_ENC_KEY.get_secret_value()}
    if settings.INTEGRATIONS_TOKEN_ENC_KEYS_OLD is not None:
        environ[ENV_OLD_KEYS] = settings.INTEGRATIONS_TOKEN_ENC_KEYS_OLD.get_secret_value()
    keys = VaultKeys.from_env(environ)
    _warn_placeholders(keys)
    cipher = keys.cipher()
    db = AppDatabase.from_url(settings.database_url)
    if migrate:
        db.migrate()
    client = http or BoundedClient(
        bounds=settings.request_bounds(), timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=False
    )
    discovery = DiscoveryCache(ttl_seconds=float(settings.DISCOVERY_CACHE_TTL_SECONDS))

    def resolver(session: Session, conn: Connection) -> ClientAuth:
        """A connection's refresh, mint and revocation authenticate as the client id it stored (the one its grant
        was issued to), with the provider config's current credentials: as the pipelines' vault does, so every
        process signs in alike and ``store._same_client`` pauses exactly the connections sharing a refusal."""
        profile = resolve_profile(session, cipher, settings, conn.tenant_id, conn.provider_id)
        return profile.client_auth(settings, client_id=conn.client_id)

    vault = TokenVault(db, cipher, client, discovery_cache=discovery, client_auth_resolver=resolver)
    secret, *also = keys.active_texts  # earlier-format links and cookies: the active key only, as before
    return ServiceContext(
        settings=settings,
        db=db,
        keys=keys,
        cipher=cipher,
        http=client,
        discovery=discovery,
        jwks=JwksCache(),
        states=OAuthStateStore(db, cipher, ttl=timedelta(seconds=settings.OAUTH_STATE_TTL_SECONDS)),
        vault=vault,
        links=ConnectLinks(cipher, LinkSigner(secret, "connect-link", old_secrets=also)),
        sessions=LinkSigner(secret, "browser-session", old_secrets=also),
    )


def _warn_placeholders(keys: VaultKeys) -> None:
    """A placeholder old key (public) is fine for a rotation away from it, not for long: say so at start-up."""
    for kid in keys.placeholder_kids:
        logger.warning(
            "%s lists a placeholder key (every byte the same; key id %s): it still opens stored tokens so "
            "`ehrsync keys rotate` can re-seal them, but it is never accepted for cookies, connect links, csrf "
            "tokens or page cursors (anyone can seal with it); remove it once the rotation has finished",
            ENV_OLD_KEYS,
            kid,
        )
