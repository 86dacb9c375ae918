"""Rendering on every core: the digests of a large plan rendered in worker processes.

Rendering is pure and CPU-bound (templates, text wrapping, MIME), and in one process it runs on one core. A
:class:`RenderPool` runs a :class:`~notifier.render.renderer.Renderer` in each of a few worker processes, started
by a fork server (or spawned where there is none: never forked from this process, whose threads may hold locks),
with the same templates. The planner hands it jobs in chunks, and each worker is sent each paper once: most
papers are listed by many digests. Each job comes back as its payload, or as why it could not be rendered,
as :func:`render_all` says in this process.

The workers start with the first chunk and stop when the pool is closed. If they cannot be started, or one dies
(killed, out of memory), the chunks they had are rendered here instead, and so is every later one; that is logged
once. No job is lost, and each payload is handed back once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copyreg
import io
import logging
import multiprocessing
import os
import pickle
import signal
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from notifier.errors import describe_failure
from notifier.heap import frozen
from notifier.models import Paper
from notifier.render.renderer import Renderer, RenderJob

log = logging.getLogger(__name__)

MAX_WORKERS = 8


@dataclass(frozen=True, slots=True)
class RenderFailure:
    """Why a job could not be rendered: what the renderer raised, in one line (see
    :func:`~notifier.errors.describe_failure`)."""

    reason: str


Outcome = bytes | RenderFailure


def render_all(renderer: Renderer, jobs: Sequence[RenderJob]) -> list[Outcome]:
    """Each job's payload, or its :class:`RenderFailure`: one job that fails does not stop the others."""
    outcomes: list[Outcome] = []
    with renderer.templates_checked_once():
        for job in jobs:
            try:
                outcomes.append(renderer.payload(job))
            except Exception as exc:
                log.debug("digest for %s not rendered", job.digest.subscriber, exc_info=exc)
                outcomes.append(RenderFailure(describe_failure(exc)))
    return outcomes


def default_workers() -> int:
    """Worker processes when ``NOTIFIER_RENDER_WORKERS`` is unset: one per core this process may use (at most
    :data:`MAX_WORKERS`), or none on a single core, where workers would only add their start-up and pickling."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, MAX_WORKERS) if cores > 1 else 0


class Chunk(Protocol):
    """Jobs handed to a renderer, rendered or on their way."""

    def done(self) -> bool: ...

    def wait(self, timeout: float) -> None:
        """Return when the chunk is rendered, or after ``timeout`` seconds."""

    def outcomes(self) -> list[Outcome]:
        """One outcome per job, in order, waiting for them if need be."""

    def when_done(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (from any thread) once the chunk is rendered, or at once if it is."""


async def until_rendered(chunk: Chunk) -> None:
    """Return once ``chunk`` is rendered (or its workers gave up on it), the event loop free meanwhile.

    Cancelling the wait leaves the chunk to its workers: its outcomes are still collected."""
    if chunk.done():
        return
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def wake() -> None:
        if not finished.done():
            finished.set_result(None)

    def woken() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while the workers rendered: nobody waits any more
            loop.call_soon_threadsafe(wake)

    chunk.when_done(woken)
    await finished


class Rendering(Protocol):
    """Where a plan's digests are rendered: here (:class:`InProcess`) or in workers (:class:`RenderPool`)."""

    def submit(self, jobs: Sequence[RenderJob]) -> Chunk: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Rendered:
    rendered: list[Outcome]

    def done(self) -> bool:
        return True

    def wait(self, timeout: float) -> None:
        return None

    def outcomes(self) -> list[Outcome]:
        return self.rendered

    def when_done(self, callback: Callable[[], object]) -> None:
        callback()


class InProcess:
    """Renders each chunk at once, in this process."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer

    def submit(self, jobs: Sequence[RenderJob]) -> Chunk:
        return _Rendered(render_all(self.renderer, jobs))

    def close(self) -> None:
        return None


class RenderPool:
    """Renders chunks in ``workers`` processes, each with a renderer of the templates in ``templates`` (and ours);
    ``renderer`` renders here whatever the workers cannot. Use it as a context manager, or :meth:`close` it.

    Each chunk goes to the worker with the fewest chunks in hand, and each worker is sent each paper once: a chunk
    carries the papers its worker has not had yet, and names the others by their number (see :class:`_Worker`).
    Most papers are listed by many digests, so a chunk is a small fraction of what its jobs pickle to on their own.
    """

    def __init__(self, renderer: Renderer, templates: Path | None, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a render pool needs at least one worker, not {workers}")
        self.renderer = renderer
        self.templates = templates
        self.workers = workers
        self._started: list[_Worker] = []
        self._numbers: dict[int, tuple[int, Paper]] = {}  # id(paper) -> its number, and the paper (so ids stay)
        self._broken = False

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit(self, jobs: Sequence[RenderJob]) -> Chunk:
        if not jobs:
            return _Rendered([])
        if self._broken:
            return _Rendered(render_all(self.renderer, jobs))
        try:
            worker = min(self._workers(), key=_Worker.in_hand)
        except (BrokenProcessPool, OSError, RuntimeError) as exc:
            return _Rendered(self._instead(jobs, exc))
        try:
            papers, packed, numbers = self._packed(jobs, worker)
        except Exception as exc:  # a job that does not pickle: rendered here, the pool left as it is
            return _Rendered(self._instead(jobs, exc))
        try:
            future = worker.executor.submit(_render_chunk, papers, packed)
        except (BrokenProcessPool, OSError, RuntimeError) as exc:
            return _Rendered(self._instead(jobs, exc))
        worker.sent.update(numbers)
        worker.futures.append(future)
        return _Pooled(self, jobs, future)

    def close(self) -> None:
        started, self._started = self._started, []
        for worker in started:
            worker.executor.shutdown(wait=True, cancel_futures=True)

    def _workers(self) -> list[_Worker]:
        if not self._started:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if "forkserver" in methods:
                context.set_forkserver_preload(["notifier.render.pool"])  # what its workers run
            self._started = [
                _Worker(
                    concurrent.futures.ProcessPoolExecutor(
                        1, mp_context=context, initializer=_start_worker, initargs=(self.templates,)
                    )
                )
                for _ in range(self.workers)
            ]
            log.info("rendering in %d worker processes", self.workers)
        return self._started

    def _packed(self, jobs: Sequence[RenderJob], worker: _Worker) -> tuple[bytes, bytes, list[int]]:
        """``jobs`` pickled for ``worker``, each paper as its number; the papers it has not had yet, pickled as
        ``(number, paper)`` pairs; and their numbers."""
        new: list[tuple[int, Paper]] = []

        def by_number(paper: Paper) -> tuple[Callable[[int], Paper], tuple[int]]:
            known = self._numbers.get(id(paper))
            if known is None:
                known = self._numbers[id(paper)] = (len(self._numbers), paper)
            number = known[0]
            if number not in worker.sent:
                new.append((number, paper))
            return _sent_paper, (number,)

        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = {**copyreg.dispatch_table, Paper: by_number}
        pickler.dump(list(jobs))
        return pickle.dumps(new, protocol=pickle.HIGHEST_PROTOCOL), buffer.getvalue(), [n for n, _ in new]

    def _instead(self, jobs: Sequence[RenderJob], exc: BaseException) -> list[Outcome]:
        """Render ``jobs`` here, because the workers could not: for good once the pool is broken."""
        if isinstance(exc, BrokenProcessPool | OSError | RuntimeError) and not self._broken:
            self._broken = True
            log.warning("rendering in this process from now on: the render workers stopped or could not start: %s", exc)
            started, self._started = self._started, []
            for worker in started:
                worker.executor.shutdown(wait=False, cancel_futures=True)
        else:
            log.debug("a chunk of %d digests could not be rendered by the workers; rendering it here", len(jobs))
        return render_all(self.renderer, jobs)


@dataclass(eq=False)
class _Worker:
    """One worker process (an executor of one, so that what it was sent is known) and the numbers of the papers
    sent to it. Its chunks are rendered in the order they were sent, so a paper sent with one chunk is there for
    every later one."""

    executor: concurrent.futures.ProcessPoolExecutor
    sent: set[int] = field(default_factory=set)
    futures: deque[concurrent.futures.Future[list[Outcome]]] = field(default_factory=deque)

    def in_hand(self) -> int:
        """Chunks sent to it and not rendered yet."""
        while self.futures and self.futures[0].done():
            self.futures.popleft()
        return len(self.futures)


class _Pooled:
    def __init__(self, pool: RenderPool, jobs: Sequence[RenderJob], future: concurrent.futures.Future[list[Outcome]]):
        self.pool = pool
        self.jobs = jobs
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    def wait(self, timeout: float) -> None:
        concurrent.futures.wait([self.future], timeout)

    def when_done(self, callback: Callable[[], object]) -> None:
        self.future.add_done_callback(lambda _future: callback())

    def outcomes(self) -> list[Outcome]:
        try:
            return self.future.result()
        except Exception as exc:  # the worker died, or the chunk could not be pickled: render it here
            return self.pool._instead(self.jobs, exc)


_WORKER: dict[str, Renderer] = {}  # in a worker process: its renderer
_PAPERS: dict[int, Paper] = {}  # in a worker process: the papers it was sent, by number


def _start_worker(templates: Path | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it closes the pool
    _WORKER["renderer"] = Renderer(templates)


def _render_chunk(papers: bytes, jobs: bytes) -> list[Outcome]:
    with frozen():  # what the worker keeps (templates, papers, cards) is left out of the chunk's collections
        _PAPERS.update(pickle.loads(papers))
        return render_all(_WORKER["renderer"], pickle.loads(jobs))


def _sent_paper(number: int) -> Paper:
    """In a worker process: the paper sent to it as ``number``, with this chunk or an earlier one."""
    return _PAPERS[number]
