"""The shared pause of the cyclic garbage collector (penchant._gc): restored on every path, in
every thread, and never held off for good by overlapping batches."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from penchant import _gc


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    assert gc.isenabled()
    yield
    enabled = gc.isenabled()
    gc.enable()
    assert enabled, "a test left the collector off"


def in_thread(body: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            body()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_two_threads_share_one_pause_and_the_last_restores_it() -> None:
    inside, release = threading.Event(), threading.Event()

    def batch() -> None:
        with _gc.paused(_gc.MIN_BATCH):
            inside.set()
            assert release.wait(10)

    thread, errors = in_thread(batch)
    assert inside.wait(10)
    with _gc.paused(_gc.MIN_BATCH):
        assert not gc.isenabled()
    assert not gc.isenabled(), "the other thread's batch still runs"
    release.set()
    thread.join(10)
    assert not errors
    assert gc.isenabled()


def test_a_failing_batch_in_one_thread_restores_the_collector_after_the_other() -> None:
    inside, release = threading.Event(), threading.Event()

    def failing() -> None:
        with _gc.paused(_gc.MIN_BATCH):
            inside.set()
            assert release.wait(10)
            raise RuntimeError("a failing batch")

    thread, errors = in_thread(failing)
    assert inside.wait(10)
    with _gc.paused(_gc.MIN_BATCH):
        release.set()
        thread.join(10)
        assert not gc.isenabled()
    assert [type(e) for e in errors] == [RuntimeError]
    assert gc.isenabled()


def test_overlapping_batches_cannot_keep_the_collector_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """While one long batch holds the shared pause, batches of another thread come and go; past
    MAX_PAUSE each one that finishes runs a full collection, with the collector still paused."""
    monkeypatch.setattr(_gc, "MAX_PAUSE", 0.0)
    full_collections: list[bool] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            full_collections.append(gc.isenabled())

    gc.callbacks.append(count)
    try:
        with _gc.paused(_gc.MIN_BATCH):

            def short_batches() -> None:
                for _ in range(3):
                    with _gc.paused(_gc.MIN_BATCH):
                        assert not gc.isenabled()

            thread, errors = in_thread(short_batches)
            thread.join(10)
            assert not errors
            assert not gc.isenabled()
    finally:
        gc.callbacks.remove(count)
    assert full_collections == [False, False, False]
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off() -> None:
    inside, release = threading.Event(), threading.Event()

    def batch() -> None:
        with _gc.paused(_gc.MIN_BATCH):
            inside.set()
            assert release.wait(10)

    gc.disable()
    try:
        thread, errors = in_thread(batch)
        assert inside.wait(10)
        with _gc.paused(_gc.MIN_BATCH):
            release.set()
            thread.join(10)
        assert not errors
        assert not gc.isenabled()
    finally:
        gc.enable()
