"""Rendering on every core: the digests of a large plan rendered in worker processes.

Rendering is pure and CPU-bound (templates, text wrapping, MIME), and in one process it runs on one core. A
:class:`RenderPool` runs a :class:`~notifier.render.renderer.Renderer` in each of a few worker processes, started
by a fork server (or spawned where there is none: never forked from this process, whose threads may hold locks),
with the same templates. The planner hands it jobs in chunks; a chunk is pickled in one go, so a paper that
several of its digests list is sent once. Each job comes back as its payload, or as why it could not be rendered,
as :func:`render_all` says in this process.

The workers start with the first chunk and stop when the pool is closed. If they cannot be started, or one dies
(killed, out of memory), the chunks they had are rendered here instead, and so is every later one; that is logged
once. No job is lost, and each payload is handed back once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from notifier.errors import describe_failure
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
    ``renderer`` renders here whatever the workers cannot. Use it as a context manager, or :meth:`close` it."""

    def __init__(self, renderer: Renderer, templates: Path | None, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a render pool needs at least one worker, not {workers}")
        self.renderer = renderer
        self.templates = templates
        self.workers = workers
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._broken = False

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit(self, jobs: Sequence[RenderJob]) -> Chunk:
        if not jobs:
            return _Rendered([])
        if not self._broken:
            try:
                return _Pooled(self, jobs, self._started().submit(_render_chunk, list(jobs)))
            except (BrokenProcessPool, OSError, RuntimeError) as exc:
                return _Rendered(self._instead(jobs, exc))
        return _Rendered(render_all(self.renderer, jobs))

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _started(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if "forkserver" in methods:
                context.set_forkserver_preload(["notifier.render.renderer"])
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_start_worker, initargs=(self.templates,)
            )
            log.info("rendering in %d worker processes", self.workers)
        return self._executor

    def _instead(self, jobs: Sequence[RenderJob], exc: BaseException) -> list[Outcome]:
        """Render ``jobs`` here, because the workers could not: for good once the pool is broken."""
        if isinstance(exc, BrokenProcessPool | OSError | RuntimeError) and not self._broken:
            self._broken = True
            log.warning("rendering in this process from now on: the render workers stopped or could not start: %s", exc)
            executor, self._executor = self._executor, None
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
        else:
            log.debug("a chunk of %d digests could not be rendered by the workers; rendering it here", len(jobs))
        return render_all(self.renderer, jobs)


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


def _start_worker(templates: Path | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it closes the pool
    _WORKER["renderer"] = Renderer(templates)


def _render_chunk(jobs: list[RenderJob]) -> list[Outcome]:
    return render_all(_WORKER["renderer"], jobs)
