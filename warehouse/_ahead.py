"""Produce an iterator's next item in a background thread while the caller works on the current one.

The PostgreSQL merge alternates client work (reading a chunk from Parquet, encoding its keys as COPY text) with
server work (the COPY, the classification, the upsert). Done in turn, one of the two always idles; with the next
chunk prepared while the server works on this one, both run at once. At most two items are alive: the one the
caller holds and the one built next, so memory stays bounded by two chunks whatever the file's size.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

__all__ = ["one_ahead"]

T = TypeVar("T")
_END = object()


@contextlib.contextmanager
def one_ahead(items: Iterator[T], *, name: str) -> Iterator[Iterator[T]]:
    """``items`` as an iterator whose next item is built in thread ``name`` while the caller uses the current one.

    An exception raised by ``items`` reaches the caller where that item would have come, with its own traceback.
    Leaving the block early (an error in the caller, or a ``break``) stops the producer once the item it is
    building is done, and the block waits for it, so no thread outlives the block; the item built but never taken
    is dropped then (and an error raised building it: the caller's own error, if any, is the one that counts)."""
    ready: queue.SimpleQueue[tuple[bool, object]] = queue.SimpleQueue()
    taken = threading.Semaphore(0)  # released once per item the caller takes: the producer may build one more
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                ready.put((True, item))
                del item  # the caller owns it now; the producer holds only the one it builds next
                taken.acquire()
                if stop.is_set():
                    return
            ready.put((True, _END))
        except BaseException as exc:  # handed to the caller, who raises it
            ready.put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[T]:
        while True:
            ok, item = ready.get()
            if not ok:
                assert isinstance(item, BaseException)
                raise item
            if item is _END:
                return
            taken.release()
            yield item  # type: ignore[misc]  # every item but _END is a T

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        taken.release()  # wake a producer waiting for the caller
        thread.join()
        while not ready.empty():  # the iterator, and an error holding it, may outlive the block: not this item
            ready.get_nowait()
