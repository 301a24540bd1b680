"""One TLS client context per process for httpx's default trust store.

httpx builds a new ``ssl.SSLContext`` for every transport it creates, and loading the CA bundle into it costs
~30-50 ms of CPU each time: for every client (a sync run's EHR client, the vault's, the auth service's) and every
proxy transport. A context that only verifies against the default trust store holds no per-client state, and
``SSLContext`` is safe to share between threads, so one is built per trust setting and reused.
"""

from __future__ import annotations

import os
import ssl
import threading

import httpx

__all__ = ["default_ssl_context"]

_LOCK = threading.Lock()
_CONTEXTS: dict[tuple[bool, str | None, str | None], ssl.SSLContext] = {}


def default_ssl_context(trust_env: bool = True) -> ssl.SSLContext:
    """What ``httpx.create_ssl_context(verify=True, trust_env=trust_env)`` builds (``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` when ``trust_env``, else certifi's bundle), built once per distinct setting and reused.
    Callers must not change it (no ``load_cert_chain``: a client certificate needs a context of its own)."""
    env = os.environ if trust_env else {}
    key = (trust_env, env.get("SSL_CERT_FILE") or None, env.get("SSL_CERT_DIR") or None)
    with _LOCK:
        context = _CONTEXTS.get(key)
        if context is None:
            context = _CONTEXTS[key] = httpx.create_ssl_context(verify=True, trust_env=trust_env)
        return context
