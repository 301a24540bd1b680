"""``one_ahead`` builds the next item in a thread while the caller works on the current one (warehouse/_ahead.py).

What the PostgreSQL merge relies on: items arrive in order and all of them; the producer is never more than one
item ahead (memory stays bounded by two chunks); an error in the producer reaches the caller in its place, after
the items before it; and leaving the block early stops the producer and leaves no thread behind.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator

import pytest

from warehouse._ahead import one_ahead

_WAIT_S = 30.0  # generous: a loaded machine may starve the producer for a while


class _Source:
    """Items 0..n-1 built on demand, recording how many were built and whether the generator was closed."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.built: list[int] = []
        self.threads: set[str] = set()
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise ValueError(f"item {i} is unreadable")
                self.threads.add(threading.current_thread().name)
                self.built.append(i)
                yield i
        finally:
            self.closed.set()


def _wait_until(predicate: object, what: str) -> None:
    done = threading.Event()
    for _ in range(int(_WAIT_S / 0.01)):
        if predicate():  # type: ignore[operator]
            return
        done.wait(0.01)
    raise AssertionError(f"timed out waiting until {what}")


def test_every_item_arrives_in_order_built_in_the_named_thread() -> None:
    source = _Source(50)
    with one_ahead(iter(source), name="ahead-test") as items:
        assert list(items) == list(range(50))
    assert source.threads == {"ahead-test"}
    assert source.closed.is_set()


def test_the_producer_builds_the_next_item_while_the_caller_holds_one_and_never_more() -> None:
    source = _Source(10)
    with one_ahead(iter(source), name="ahead-test") as items:
        first = next(items)
        assert first == 0
        _wait_until(lambda: len(source.built) == 2, "item 1 is built while the caller holds item 0")
        threading.Event().wait(0.2)  # room for a producer that ran further ahead to show it
        assert source.built == [0, 1]  # item 2 waits until the caller takes item 1
        assert next(items) == 1
        _wait_until(lambda: len(source.built) == 3, "item 2 is built once item 1 is taken")
        threading.Event().wait(0.2)
        assert source.built == [0, 1, 2]


def test_a_producer_error_reaches_the_caller_after_the_items_before_it() -> None:
    source = _Source(10, fail_at=3)
    got: list[int] = []
    with (
        pytest.raises(ValueError, match="item 3 is unreadable") as caught,
        one_ahead(iter(source), name="ahead-test") as items,
    ):
        got.extend(items)
    assert got == [0, 1, 2]
    assert any(frame.name == "__iter__" for frame in caught.traceback)  # the producer's own traceback
    assert source.closed.is_set()


def test_leaving_early_stops_the_producer_and_leaves_no_thread() -> None:
    source = _Source(1_000)
    generator = iter(source)  # held here, so only ``one_ahead`` closing it (not its collection) sets ``closed``
    with pytest.raises(RuntimeError, match="the server refused"), one_ahead(generator, name="ahead-early") as items:
        for item in items:
            if item == 2:
                raise RuntimeError("the server refused")
    assert source.closed.is_set()
    assert len(source.built) <= 4  # the one held, the one built next, at most one being built when told to stop
    assert not [t for t in threading.enumerate() if t.name == "ahead-early"]


def test_a_break_stops_the_producer_too() -> None:
    source = _Source(1_000)
    generator = iter(source)  # held here: see above
    with one_ahead(generator, name="ahead-break") as items:
        for item in items:
            if item == 0:
                break
    assert source.closed.is_set()
    assert len(source.built) <= 3
    assert not [t for t in threading.enumerate() if t.name == "ahead-break"]


def test_an_empty_source_ends_at_once() -> None:
    source = _Source(0)
    with one_ahead(iter(source), name="ahead-empty") as items:
        assert list(items) == []
    assert source.closed.is_set()


class _Chunk:
    """An item that can be watched with a weak reference (an int cannot)."""

    @classmethod
    def new(cls, built: list[weakref.ref[_Chunk]]) -> _Chunk:
        item = cls()
        built.append(weakref.ref(item))
        return item


def test_leaving_early_lets_go_of_the_item_built_ahead() -> None:
    """A caller leaving on an error may keep that error, and with it the iterator, for a long time (the engine
    chains and reports it); the item built ahead and never taken must not stay alive with them."""
    built: list[weakref.ref[_Chunk]] = []
    chunks = (_Chunk.new(built) for _ in range(10))
    with pytest.raises(RuntimeError, match="the server refused"), one_ahead(chunks, name="ahead-drop") as items:
        for _ in items:
            _wait_until(lambda: len(built) == 2, "item 1 is built while the caller holds item 0")
            raise RuntimeError("the server refused")
    assert items is not None  # the caller still holds the iterator, as a kept error's frames do
    assert len(built) == 2
    assert built[1]() is None
