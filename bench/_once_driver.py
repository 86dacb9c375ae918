"""Runs ``notifier once`` in this process with each stage timed, for ``bench/once.py``; not meant to be run alone.

Whichever ``notifier`` comes first on ``PYTHONPATH`` is the tree measured: the driver imports it, wraps the
functions named in :data:`STAGES` (where that tree has them) in timers, calls ``notifier.cli.main(["once"])``, and
writes a JSON result: which ``notifier`` and templates ran, each stage's seconds, calls and span (from its first
call's start to its last call's end), the wall time of the
command, its exit code and output, the process's peak RSS, and the peak of the RSS of the process and all its
descendants together (worker processes), sampled every :data:`SAMPLE_EVERY` seconds from ``/proc``, with the CPU
time the process and its descendants had used by then (a process that ended counts with its last sample).

A stage counts only its outermost call (a wrapped function that calls another of the same stage, or itself, is
timed once), in coroutines and worker threads alike. Calls on several threads at once add up, so a stage run in
parallel can show more seconds than the wall clock. A stage that belongs to another (:data:`PARENTS`) and is called
while that one is not under way is counted apart, as "STAGE outside PARENT" (matching for the API look-ups).

With ``--profile FILE`` nothing is wrapped: the command runs under cProfile, on the main thread and on every
thread it starts, and the merged statistics are written to FILE for ``pstats``.

    PYTHONPATH=TREE python bench/_once_driver.py --result RESULT.json [--profile STATS]
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import cProfile
import functools
import gc
import importlib
import inspect
import io
import json
import os
import pstats
import resource
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent)
if sys.path and sys.path[0] == HERE:
    sys.path.pop(0)  # the bench folder's own modules must not shadow anything of the tree measured

# Stage -> the functions (dotted names) whose calls it times. Names a tree lacks are skipped and reported.
STAGES: dict[str, tuple[str, ...]] = {
    "load config": ("notifier.config.subscribers.load_config", "notifier.config.last_good.load_or_last_good"),
    "compile": ("notifier.matching.rules.RuleSet.compile",),
    "poll": ("notifier.daemon.Notifier.poll",),
    "enrich": ("notifier.daemon.Notifier.enrich",),
    "plan": ("notifier.daemon.Notifier.plan",),
    "match": ("notifier.matching.rules.RuleSet.evaluate",),
    "hits": ("notifier.matching.rules.MatchBatch.matches",),
    "render": ("notifier.render.renderer.Renderer.email", "notifier.render.renderer.Renderer.slack"),
    "store": ("notifier.store.deliveries.DeliveryQueries.record_digests", "notifier.store.sql.SqlStore.record_digests"),
    "send": ("notifier.daemon.Notifier.send",),
    "deliver": ("notifier.outbox.sender.Sender.deliver_due",),
}
# A stage that is part of another: its calls outside that one count as "STAGE outside PARENT".
PARENTS = {"compile": "load config", "match": "plan", "hits": "plan", "render": "plan", "store": "plan"}

SAMPLE_EVERY = 0.2  # seconds between samples of the process tree's memory
TICKS = os.sysconf("SC_CLK_TCK")  # units of the CPU times in /proc/PID/stat

_ACTIVE: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("active_stages", default=frozenset())


class CollectorClock:
    """The cyclic garbage collector's work, through ``gc.callbacks``: seconds and collections per generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1


class StageClock:
    """Seconds and calls per stage, counting only a stage's outermost call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.spans: dict[str, list[float]] = {}  # stage -> [first start, last end], perf_counter seconds
        self._running: dict[str, int] = {}  # outermost calls under way, on any thread or task
        self._lock = threading.Lock()

    def _begin(self, stage: str) -> float:
        with self._lock:
            self._running[stage] = self._running.get(stage, 0) + 1
        return time.perf_counter()

    def _end(self, stage: str, started: float) -> None:
        ended = time.perf_counter()
        seconds = ended - started
        with self._lock:
            span = self.spans.setdefault(stage, [started, ended])
            span[0], span[1] = min(span[0], started), max(span[1], ended)
            self._running[stage] -= 1
            parent = PARENTS.get(stage)
            if parent is not None and not self._running.get(parent):
                stage = f"{stage} outside {parent}"
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
            self.calls[stage] = self.calls.get(stage, 0) + 1

    def wrap(self, stage: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` timed as ``stage``: a coroutine function stays one, and an awaitable that a plain function
        returns is timed until it is done."""
        clock = self

        async def awaited(started: float, pending: Awaitable[Any]) -> Any:
            token = _ACTIVE.set(_ACTIVE.get() | {stage})
            try:
                return await pending
            finally:
                _ACTIVE.reset(token)
                clock._end(stage, started)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
                if stage in _ACTIVE.get():
                    return await func(*args, **kwargs)
                return await awaited(clock._begin(stage), func(*args, **kwargs))

            return timed_coroutine

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            active = _ACTIVE.get()
            if stage in active:
                return func(*args, **kwargs)
            token = _ACTIVE.set(active | {stage})
            started = clock._begin(stage)
            try:
                result = func(*args, **kwargs)
            except BaseException:
                clock._end(stage, started)
                raise
            finally:
                _ACTIVE.reset(token)
            if inspect.isawaitable(result):
                return awaited(started, result)
            clock._end(stage, started)
            return result

        return timed


def _resolve(dotted: str) -> tuple[Any, str] | None:
    """(owner, attribute) for a dotted name: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for name in parts[split:-1]:
                owner = getattr(owner, name)
        except AttributeError:
            return None
        return (owner, parts[-1]) if hasattr(owner, parts[-1]) else None
    return None


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    subclasses: list[type] = cls.__subclasses__()
    for sub in subclasses:
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def _wrap_method(clock: StageClock, stage: str, cls: type, name: str) -> None:
    raw = cls.__dict__[name]
    if isinstance(raw, classmethod):
        setattr(cls, name, classmethod(clock.wrap(stage, raw.__func__)))
    elif isinstance(raw, staticmethod):
        setattr(cls, name, staticmethod(clock.wrap(stage, raw.__func__)))
    elif callable(raw):
        setattr(cls, name, clock.wrap(stage, raw))


def install(clock: StageClock) -> dict[str, list[str]]:
    """Wrap every function of :data:`STAGES` that this tree has; returns, per stage, the names wrapped."""
    importlib.import_module("notifier.cli")
    wrapped: dict[str, list[str]] = {}
    for stage, names in STAGES.items():
        wrapped[stage] = []
        for dotted in names:
            found = _resolve(dotted)
            if found is None:
                continue
            owner, name = found
            if isinstance(owner, type):
                # Subclasses that override the method are wrapped too; the stage counts the outermost call.
                defining = [cls for cls in (owner, *_subclasses(owner)) if name in cls.__dict__]
                if not defining:
                    continue  # inherited from elsewhere: not this name's function
                for cls in defining:
                    _wrap_method(clock, stage, cls, name)
            else:
                original = getattr(owner, name)
                timed = clock.wrap(stage, original)
                for module in list(sys.modules.values()):  # every module that imported the function by name
                    if (
                        getattr(module, "__name__", "").startswith("notifier")
                        and getattr(module, name, None) is original
                    ):
                        setattr(module, name, timed)
            wrapped[stage].append(dotted)
    return wrapped


def _templates() -> str:
    """Where the measured tree's built-in templates are found."""
    try:
        render = importlib.import_module("notifier.render.renderer")
        loader = render.builtin_templates()
    except (ImportError, AttributeError):
        return "?"
    for name in ("searchpath", "root", "_template_root"):  # FileSystemLoader, older trees' loader, PackageLoader
        if getattr(loader, name, None):
            return str(getattr(loader, name))
    return str(loader)


def _profile_threads(profiles: list[cProfile.Profile]) -> None:
    """Run every thread started from now on under a profiler of its own, collected in ``profiles``."""
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            original(self)
        finally:
            profiler.disable()
            profiles.append(profiler)

    threading.Thread.run = run  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description="Time one `notifier once` of the tree on PYTHONPATH.")
    parser.add_argument("--result", required=True, type=Path, help="where to write the JSON result")
    parser.add_argument("--profile", type=Path, help="run under cProfile and write the statistics here")
    args = parser.parse_args()

    import notifier
    import notifier.cli

    clock = StageClock()
    wrapped = {} if args.profile else install(clock)
    memory = TreeMemory()
    memory.start()
    output = io.StringIO()
    profiles: list[cProfile.Profile] = []
    collector = CollectorClock()
    gc.callbacks.append(collector)
    started = time.perf_counter()
    with contextlib.redirect_stdout(output):
        if args.profile:
            _profile_threads(profiles)
            profiler = cProfile.Profile()
            code = profiler.runcall(notifier.cli.main, ["once"])
        else:
            code = notifier.cli.main(["once"])
    wall = time.perf_counter() - started
    memory.stop()
    gc.callbacks.remove(collector)
    if args.profile:
        stats = pstats.Stats(profiler)
        for extra in profiles:
            stats.add(extra)
        stats.dump_stats(args.profile)
    result = {
        "notifier": notifier.__file__,
        "templates": _templates(),
        "wrapped": wrapped,
        "seconds": clock.seconds,
        "spans": clock.spans,
        "calls": clock.calls,
        "wall": wall,
        "gc_seconds": collector.seconds,
        "gc_collections": collector.collections,
        "exit": code,
        "stdout": output.getvalue(),
        "threads_profiled": len(profiles),
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "tree_peak_kb": memory.peak_kb,
        "tree_peak_pss_kb": memory.peak_pss_kb,
        "memory_samples": memory.samples,
    }
    args.result.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


class TreeMemory(threading.Thread):
    """Samples the resident memory of this process and of every process under it, added up, and keeps the peak;
    each sample also holds the CPU time they have used. Where ``/proc`` cannot be read the peak stays 0. The peak
    of their proportional set sizes is kept too: a page that several of them share (the fork server's modules,
    which every render worker maps) counts once, split between them, where each one's RSS counts it again."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kb = 0
        self.peak_pss_kb = 0
        # (perf_counter, this process's RSS kB, the tree's, CPU seconds the tree used so far, and this process alone)
        self.samples: list[tuple[float, int, int, float, float]] = []
        self._cpu: dict[int, float] = {}  # the last CPU seconds seen of each process of the tree
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(SAMPLE_EVERY):
            with contextlib.suppress(OSError):
                tree, own, proportional = _tree_usage(self._cpu)
                self.peak_kb = max(self.peak_kb, tree)
                self.peak_pss_kb = max(self.peak_pss_kb, proportional)
                cpu = self._cpu
                self.samples.append((time.perf_counter(), own, tree, sum(cpu.values()), cpu.get(os.getpid(), 0.0)))

    def stop(self) -> None:
        self._done.set()
        self.join()


def _tree_usage(cpu: dict[int, float]) -> tuple[int, int, int]:
    """The RSS of this process and every process under it, added up, of this process alone, and their PSS added up
    (kB); ``cpu`` gets the user and system seconds each of them has used."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                parents[int(entry.name)] = int(fields[1])
                used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    tree, grown = {os.getpid()}, True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    cpu.update((pid, used[pid]) for pid in tree if pid in used)
    sizes, proportional = {}, 0
    for pid in tree:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes[pid] = int(line.split()[1])
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    proportional += int(line.split()[1])
    return sum(sizes.values()), sizes.get(os.getpid(), 0), proportional


if __name__ == "__main__":
    sys.exit(main())
