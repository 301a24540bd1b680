"""An in-process Dagster run must not change how this process answers ``kill`` once the run is over.

Dagster's ``execute_in_process`` captures SIGINT and SIGTERM for the length of the run (a stop then ends the run
cleanly) and, when it ends, puts SIGINT's old handler back and gives SIGTERM *the same one*. In a process started
in the background (``ehrsync sync CONN &`` from a script, cron, ``nohup``) SIGINT is ignored, so after its first
run the process ignored SIGTERM too and a plain ``kill`` no longer stopped it; in the foreground SIGTERM started
raising ``KeyboardInterrupt``. ``keep_sigterm`` puts SIGTERM's own disposition back after the run.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["keep_sigterm"]


@contextmanager
def keep_sigterm() -> Iterator[None]:
    """SIGTERM's disposition after the block is what it was before (main thread only: elsewhere neither Dagster nor
    we can change signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if before is not None:  # None: set outside Python, which getsignal cannot name (and Dagster cannot either)
            signal.signal(signal.SIGTERM, before)
