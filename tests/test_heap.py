"""The heap alive when a batch stage starts is left out of the collector's work until every stage under way ends."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable, Iterator

import pytest

from notifier.heap import frozen
from tests.clock import Clock
from tests.test_outbox import make_app, paper


class Node:
    """One half of a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A reference cycle nothing else refers to, and a weak reference that says whether it is still alive."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def collected(alive: weakref.ref[Node]) -> bool:
    gc.collect()
    return alive() is None


def make_garbage_alive_before() -> tuple[list[Node], Callable[[], weakref.ref[Node]]]:
    """A cycle referred to from a list: garbage once the list lets go of it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    holder = [a]

    def drop() -> weakref.ref[Node]:
        alive = weakref.ref(holder[0])
        holder.clear()
        return alive

    return holder, drop


@pytest.fixture(autouse=True)
def nothing_left_frozen_or_changed() -> Iterator[None]:
    """Every test ends as it began: nothing frozen, and the collector's thresholds as they were."""
    thresholds = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    yield
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds


def test_what_was_alive_at_the_start_is_left_alone_until_the_end_and_collected_after():
    _holder, drop = make_garbage_alive_before()
    with frozen():
        assert gc.get_freeze_count() > 0
        alive = drop()
        assert not collected(alive)  # frozen: the collector does not look at it
    assert gc.get_freeze_count() == 0
    assert collected(alive)


def test_what_a_stage_makes_and_drops_is_collected_during_the_stage():
    with frozen():
        assert collected(cycle())
        assert gc.get_freeze_count() > 0


def test_a_stage_makes_young_collections_only_and_the_collectors_thresholds_come_back_after_it():
    thresholds = gc.get_threshold()
    generations: list[int] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(watch)
    try:
        with frozen():
            kept = [[n] for n in range(300_000)]  # a cache the stage builds: it outgrows the oldest generation
    finally:
        gc.callbacks.remove(watch)
    assert len(kept) == 300_000
    assert generations
    assert 2 not in generations
    assert gc.get_threshold() == thresholds


def test_a_stage_that_raises_leaves_nothing_frozen():
    _holder, drop = make_garbage_alive_before()
    with pytest.raises(RuntimeError, match="template"), frozen():
        alive = drop()
        raise RuntimeError("template failed")
    assert gc.get_freeze_count() == 0
    assert collected(alive)


def test_nested_stages_hand_the_heap_back_only_when_the_outermost_ends():
    _holder, drop = make_garbage_alive_before()
    with frozen():
        with frozen():
            alive = drop()
        assert gc.get_freeze_count() > 0
        assert not collected(alive)
    assert collected(alive)


def test_overlapping_stages_on_two_threads_hand_the_heap_back_when_the_last_one_ends():
    _holder, drop = make_garbage_alive_before()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def first() -> None:
        with frozen():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with frozen():
            second_in.set()
            first_out.wait(5)
            seen["after the first ended"] = gc.get_freeze_count()
        seen["after both ended"] = gc.get_freeze_count()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_in.wait(5)
    alive = drop()
    for thread in threads:
        thread.join(5)
    assert seen["after the first ended"] > 0
    assert seen["after both ended"] == 0
    assert collected(alive)


def test_many_threads_entering_and_leaving_at_once_leave_nothing_frozen():
    start = threading.Barrier(8)

    def stage() -> None:
        start.wait(5)
        for _ in range(200):
            with frozen(), frozen():
                pass

    threads = [threading.Thread(target=stage) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert gc.get_freeze_count() == 0


async def test_a_cycle_collects_with_the_heap_frozen_and_leaves_nothing_frozen(tmp_path):
    """The daemon's planning and sending run with what was alive before them frozen; nothing stays frozen after."""
    clock = Clock()
    frozen_at_collections: list[int] = []

    def watch(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            frozen_at_collections.append(gc.get_freeze_count())

    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper(f"2506.{n}", f"A compiler for GPUs, part {n}") for n in range(50)], clock())
        gc.callbacks.append(watch)
        try:
            report = await app.cycle(force_send=True, poll=False)
        finally:
            gc.callbacks.remove(watch)
    assert report.sent.sent == 4
    assert any(count > 0 for count in frozen_at_collections)
    assert gc.get_freeze_count() == 0
