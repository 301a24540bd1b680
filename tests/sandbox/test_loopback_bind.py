"""The sandbox speaks plain HTTP, so it listens on loopback only (SAL-37): a wider host is refused before any
socket is bound, and ``localhost`` means 127.0.0.1, never every interface.

These fail (rather than hang, as a served ``run_server`` would) when the check in ``sandbox/server.py`` is lost.
"""

from __future__ import annotations

import pytest

from sandbox import SandboxServer
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError
from sandbox.server import bind_socket


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::"])
def test_sal37_a_host_wider_than_loopback_is_refused_before_binding(host: str) -> None:
    with pytest.raises(SandboxError, match="loopback only"):
        bind_socket(host, 0).close()


def test_sal37_localhost_listens_on_127_0_0_1_only() -> None:
    sock = bind_socket("localhost", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_sal37_an_in_process_sandbox_on_all_interfaces_does_not_start() -> None:
    server = SandboxServer(SandboxConfig(patients=1, host="0.0.0.0", port=0))
    try:
        with pytest.raises(SandboxError, match="loopback only"), server:
            pass
        assert server.base_url == ""
    finally:
        server.stop()  # a failed start skips __exit__: close the state's temporary data directory here
