"""BDX-18: downloads run in bounded parallel, and the per-host cap holds across jobs sharing one
``HostConcurrencyLimiter``, not only through each job's thread pool. Counted at a real socket server: each answer
is held until a request over the cap arrives (never, when the cap holds) or a bound passes."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from connectors.bulk import BulkClient, HostConcurrencyLimiter, ManifestItem, download_items
from tests.connectors.helpers import recording_policy
from tests.connectors.scripted import Scripted, send

LINE = b'{"resourceType":"Observation","id":"o"}\n'
HOLD_S = 1.0  # how long an answer waits for a request over the cap; ample on a loaded machine


class _Gauge:
    """Requests in flight at the server, and the most seen at once."""

    def __init__(self, cap: int) -> None:
        self.cap, self.now, self.most = cap, 0, 0
        self.changed = threading.Condition()

    def serve(self, h: BaseHTTPRequestHandler) -> None:
        with self.changed:
            self.now += 1
            self.most = max(self.most, self.now)
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.now > self.cap, timeout=HOLD_S)
            # counted out before the answer goes: once a client has read it, its slot is free and its next request
            # may reach another server thread before this one runs again (a third "in flight" that never was)
            self.now -= 1
        send(200, LINE, {"Content-Type": "application/fhir+ndjson"})(h)


def test_bdx18_two_jobs_sharing_a_host_limiter_never_exceed_its_cap_together(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    base, script = server
    gauge = _Gauge(cap=2)
    script.actions = [gauge.serve] * 8
    hosts = HostConcurrencyLimiter(2)
    outcomes: list[bool] = []

    def job(name: str) -> None:
        bulk = BulkClient(f"{base}/fhir", None, retry=recording_policy([]))  # type: ignore[arg-type]
        items = [ManifestItem("Observation", f"{base}/bulk/{name}{i}.ndjson") for i in range(4)]
        (tmp_path / name).mkdir()
        got = download_items(bulk, items, tmp_path / name, requires_token=False, max_workers=4, hosts=hosts)
        outcomes.extend(o.ok for o in got)

    threads = [threading.Thread(target=job, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert outcomes == [True] * 8
    assert gauge.most == 2  # each job's pool of 4 would have sent 8 at once
