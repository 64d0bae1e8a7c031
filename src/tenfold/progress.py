"""Progress of a run without a terminal: a start line per seed, and a line at least every
``every`` seconds per running seed with its step and an ETA.

A seed's loops report through :meth:`SeedTracker.wrap` (``RunContext.progress`` calls it), in the
seed's own process; the tracker sends a short status to the parent at most once a second, and the
parent's :class:`ProgressBoard` prints the latest status of each running seed on a timer. On a
terminal the tqdm bars are used instead and the board stays quiet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

SEND_EVERY_S = 1.0


def duration(seconds: float) -> str:
    """``"42s"``, ``"3m05s"`` or ``"1h02m"``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class _Loop:
    desc: str
    total: int | None
    start: float
    done: int = 0


class SeedTracker:
    """Tracks the loops of one seed that run through :meth:`wrap` (nested loops stack up) and sends
    ``("status", seed, text)`` to ``send`` at most every ``send_every`` seconds."""

    def __init__(self, seed: int, send: Callable[[tuple], None], send_every: float = SEND_EVERY_S):
        self.seed, self._send, self._send_every = seed, send, send_every
        self._loops: list[_Loop] = []
        self._last_sent = -float("inf")
        self._between = ""  # what the last finished outermost loop did, shown until the next one starts

    def wrap(self, iterable: Iterable, total: int | None = None, desc: str | None = None) -> Iterator:
        """Yield from ``iterable``, counting the steps."""
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        loop = _Loop(desc or "step", total, time.monotonic())
        self._loops.append(loop)
        try:
            self._maybe_send(force=True)
            for item in iterable:
                yield item
                loop.done += 1
                self._maybe_send()
        finally:
            if loop in self._loops:
                del self._loops[self._loops.index(loop):]
            if not self._loops:
                self._between = f"{loop.desc} {loop.done}{f'/{loop.total}' if loop.total else ''} done"
            self._maybe_send(force=True)

    def status(self) -> str:
        """E.g. ``"arms 1/4 > train 300/1000, ETA 2m10s"``: each active loop, outermost first, and the
        time left for the outermost loop at its pace so far (nested loops refine its fraction)."""
        if not self._loops:
            return self._between
        steps = " > ".join(f"{loop.desc} {loop.done}/{loop.total}" if loop.total else f"{loop.desc} {loop.done}"
                           for loop in self._loops)
        fraction = self._fraction()
        elapsed = time.monotonic() - self._loops[0].start
        if fraction is None or fraction <= 0:
            return f"{steps}, ETA unknown"
        return f"{steps}, ETA {duration(elapsed * (1 - fraction) / fraction)}"

    def _fraction(self) -> float | None:
        """Fraction of the outermost loop done, counting the inner loops' fractions."""
        fraction = 0.0
        for loop in reversed(self._loops):
            if not loop.total:
                return None
            fraction = min(1.0, (loop.done + fraction) / loop.total)
        return fraction

    def _maybe_send(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_sent >= self._send_every:
            self._last_sent = now
            self._send(("status", self.seed, self.status()))


@dataclass
class _Running:
    start: float
    status: str = ""


class ProgressBoard:
    """The parent's view of running seeds: a start line per seed at once, and every ``every``
    seconds a status line per running seed (its steps, ETA and time so far).

    Messages (from :class:`SeedTracker`, through ``source`` when seeds run in worker processes, or
    from the runner): ``("start", seed)``, ``("status", seed, text)``, ``("done", seed)``. ``quiet``
    prints nothing (a terminal shows tqdm bars instead); ``source`` is drained either way."""

    def __init__(self, name: str, total_seeds: int, done: int, log: Callable[[str], None], every: float = 20.0,
                 quiet: bool = False, source=None):
        self.name, self.total_seeds, self.done, self.log = name, total_seeds, done, log
        self.every, self.quiet, self.source = every, quiet, source
        self._running: dict[int, _Running] = {}
        self._finished_s: list[float] = []
        self._finished: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def receive(self, message: tuple) -> None:
        kind, seed = message[0], message[1]
        with self._lock:
            if seed in self._finished:  # a late message from a seed already done
                return
            if kind == "start":
                self._running[seed] = _Running(time.monotonic())
            elif kind == "status" and seed in self._running:
                self._running[seed].status = message[2]
            elif kind == "done":
                self._finished.add(seed)
                self.done += 1
                if seed in self._running:
                    self._finished_s.append(time.monotonic() - self._running.pop(seed).start)
        if kind == "start" and not self.quiet:
            self.log(f"[{self.name}] seed {seed} started")

    def lines(self) -> list[str]:
        """One line per running seed: its steps and ETA, and the time it has run."""
        now = time.monotonic()
        with self._lock:
            running = sorted(self._running.items())
            finished = list(self._finished_s)
            done = self.done
        lines = []
        for seed, state in running:
            status = state.status or "running (this experiment reports no steps)"
            lines.append(f"[{self.name}] seed {seed}: {status}; {duration(now - state.start)} elapsed, "
                         f"{done}/{self.total_seeds} seeds done{self._run_eta(finished, done, len(running))}")
        return lines

    def _run_eta(self, finished: list[float], done: int, running: int) -> str:
        """``", run ETA ~..."`` from the mean time of the seeds finished in this run, where there are any."""
        left = self.total_seeds - done
        if not finished or not running or not left:
            return ""
        waves = -(-left // running)  # ceil: the seeds left, run `running` at a time
        return f", run ETA ~{duration(waves * sum(finished) / len(finished))}"

    def __enter__(self) -> ProgressBoard:
        self._thread = threading.Thread(target=self._beat, name="tenfold-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        next_beat = time.monotonic() + self.every
        while not self._stop.is_set():
            wait = max(0.0, next_beat - time.monotonic())
            if self.source is None:
                self._stop.wait(min(wait, 0.5))
            else:
                self._drain(min(wait, 0.5))
            if time.monotonic() >= next_beat:
                next_beat += self.every
                if not self.quiet:
                    for line in self.lines():
                        self.log(line)

    def _drain(self, timeout: float) -> None:
        import queue

        try:
            self.receive(self.source.get(timeout=timeout))
        except queue.Empty:
            pass
        except (EOFError, OSError, ValueError):  # the queue was closed (workers terminated)
            self._stop.wait(timeout)
