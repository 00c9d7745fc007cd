"""Worker threads for sync tools: one bounded lane per tool, never the loop's default executor.

Python cannot stop a thread. A sync tool call that is cancelled (its run's deadline, the tool's
``timeout_s``, ``handle.cancel()``) therefore returns at once to its run, but the function keeps
running in its thread until it returns by itself: the call is *abandoned*. Each tool gets its own
:class:`ThreadLane` of at most ``size`` threads, so abandoned calls of one tool can use up only
that tool's threads: other tools, and the runs using them, are not starved, and a call waiting
for a thread of a full lane waits under its own timeout and deadline like any other wait.

The threads are daemon threads, not ``concurrent.futures`` workers: neither ``asyncio.run``
(which joins only the loop's default executor) nor the interpreter's exit (which joins every
``ThreadPoolExecutor`` thread) waits for an abandoned call. The price: a call still running when
the process exits is stopped mid-way, as a daemon thread is.

A slot of the lane is taken from the moment a call is handed to a thread until its function
returns, abandoned or not; the slot accounting is shared across threads and event loops, so a
call that finishes after its loop closed still gives its slot back.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleetcall.logs import EXECUTOR, event

log = logging.getLogger(EXECUTOR)

IDLE_THREAD_S = 5.0   # a worker thread with nothing to do for this long (wall seconds) ends


class _Slots:
    """A counting semaphore that worker threads release and event loops (any of them) wait on."""

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._free = size                                      # slots nobody holds
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()  # FIFO

    async def acquire(self) -> None:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiters:     # never granted: just leave the line
                    self._waiters.remove(waiter)
                    raise
            if waiter.done() and not waiter.cancelled():   # granted, then cancelled: give it back
                self.release()
            raise   # (granted while being cancelled: _grant sees the cancelled waiter and passes it on)

    def release(self) -> None:
        """Give a slot back (from any thread): to the first waiter whose loop still runs, else free."""
        while True:
            with self._lock:
                if not self._waiters:
                    self._free += 1
                    return
                waiter = self._waiters.popleft()
            try:
                waiter.get_loop().call_soon_threadsafe(self._grant, waiter)
                return
            except RuntimeError:   # that waiter's loop is closed: the next one gets the slot
                continue

    def _grant(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():          # cancelled after it was chosen: the slot goes on
            self.release()
        else:
            waiter.set_result(None)


@dataclass(slots=True, eq=False, repr=False)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    context: contextvars.Context
    label: str                                  # who called, for the log: "query_id=q1 round=0 task_id=3"
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    started: float = field(default_factory=time.monotonic)   # wall time (s) it was handed over
    abandoned: bool = False                     # True once its caller stopped waiting

    def __call__(self) -> Any:
        """Run the function in the caller's context variables (in a worker thread)."""
        return self.context.run(self.fn, *self.args, **self.kwargs)

    def __repr__(self) -> str:   # shown in errors and logs: never the arguments (any size, any repr)
        return f"<sync call of {getattr(self.fn, '__qualname__', type(self.fn).__name__)} ({self.label})>"


class _Handover(concurrent.futures.Executor):
    """How a job reaches the lane: through ``loop.run_in_executor``, the loop's own seam for
    threads (so a loop that refuses threads, such as the virtual clock's, refuses it)."""

    def __init__(self, lane: "ThreadLane") -> None:
        self._lane = lane

    def submit(self, job: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        assert isinstance(job, _Job) and not args and not kwargs, "only ThreadLane.run hands jobs over"
        self._lane._submit(job)
        return job.future


class ThreadLane:
    """At most ``size`` daemon threads running one tool's sync calls (see the module docstring).

    ``await lane.run(fn, args, kwargs)`` waits for a free slot, runs ``fn`` in a thread (in a
    copy of the caller's context variables) and returns its result or raises its exception. If
    the caller is cancelled while ``fn`` runs, the call is abandoned: :attr:`abandoned` lists it
    until ``fn`` returns, and its slot stays taken until then.
    """

    def __init__(self, name: str, size: int) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"a thread lane needs at least one thread, got {size!r}")
        self.name = name                       # the tool's name; threads are fleetcall-tool-<name>-<n>
        self.size = size
        self._slots = _Slots(size)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0                      # worker threads started and not yet told to stop
        self._running: set[_Job] = set()       # jobs handed to a thread whose fn has not returned
        self._closed = False                   # True once close() was called: no new calls
        self._handover = _Handover(self)

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  label: str = "", on_state: Callable[[str], None] | None = None) -> Any:
        """``fn(*args, **kwargs)`` in one of the lane's threads.

        ``on_state`` hears ``"waiting"`` (every thread busy), ``"running"``, ``"abandoned"``
        (cancelled while ``fn`` runs) and ``"done"``. Raises ``RuntimeError`` once the lane is
        closed; whatever the loop's ``run_in_executor`` raises (the virtual clock refuses threads).
        """
        loop = asyncio.get_running_loop()
        if self._closed:
            raise RuntimeError(f"the threads of tool {self.name!r} are closed (the orchestrator was closed)")
        note = on_state or _ignore
        note("waiting")
        await self._slots.acquire()
        job = _Job(fn, args, kwargs, contextvars.copy_context(), label)
        try:
            outcome = loop.run_in_executor(self._handover, job)
        except BaseException:
            self._slots.release()
            raise
        note("running")
        try:
            result = await outcome
        except asyncio.CancelledError:
            if not job.future.cancel() and not job.future.done():   # (cancel() succeeds if not started)
                job.abandoned = True
                note("abandoned")
            raise
        note("done")
        return result

    @property
    def busy(self) -> int:
        """Calls whose function is running in a thread now, abandoned ones included."""
        with self._lock:
            return len(self._running)

    @property
    def abandoned(self) -> list[tuple[str, float]]:
        """(label, wall seconds since it started) of each abandoned call still running."""
        now = time.monotonic()
        with self._lock:
            return [(job.label, now - job.started) for job in self._running if job.abandoned]

    def close(self) -> None:
        """Refuse new calls and let each thread end once its current call returns; never waits."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            stopping, self._threads = self._threads, 0
            still = [job.label for job in self._running]
        for _ in range(stopping):
            self._jobs.put(None)
        if still:
            event(log, logging.WARNING, "tool.threads_abandoned", tool=self.name, calls=len(still),
                  running="; ".join(still))

    def _submit(self, job: _Job) -> None:   # (called by the handover, in the loop's thread)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the threads of tool {self.name!r} are closed (the orchestrator was closed)")
            self._running.add(job)
            start = self._threads < len(self._running)   # every live thread is busy: one more
            if start:
                self._threads += 1
                number = self._threads
        if start:
            threading.Thread(target=self._work, name=f"fleetcall-tool-{self.name}-{number}", daemon=True).start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=IDLE_THREAD_S)
            except queue.Empty:
                with self._lock:   # more threads than calls in flight: this one is not needed
                    if self._threads > len(self._running):
                        self._threads -= 1
                        return
                continue
            if job is None:
                return
            self._run_one(job)
            del job   # drop the result with the job before waiting for the next one

    def _run_one(self, job: _Job) -> None:
        if job.future.set_running_or_notify_cancel():   # False: cancelled before it started
            try:
                value = job()
            except StopIteration as exc:  # an asyncio future cannot hold StopIteration (PEP 479)
                job.future.set_exception(RuntimeError(f"the function raised StopIteration: {exc!r}"))
            except BaseException as exc:  # every outcome goes back to the caller, SystemExit included
                job.future.set_exception(exc)
            else:
                job.future.set_result(value)
        with self._lock:
            self._running.discard(job)
        if job.abandoned:
            event(log, logging.INFO, "tool.abandoned_call_done", job.label, tool=self.name,
                  after_s=time.monotonic() - job.started)
        self._slots.release()


class LaneRunner:
    """A :class:`~fleetcall.tools.base.ThreadRunner` over a lane, for one tool call (its label
    and the listener of its thread's state)."""

    __slots__ = ("lane", "label", "on_state")

    def __init__(self, lane: ThreadLane, label: str, on_state: Callable[[str], None] | None = None) -> None:
        self.lane = lane
        self.label = label
        self.on_state = on_state

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return await self.lane.run(fn, args, kwargs, self.label, self.on_state)


def _ignore(state: str) -> None:
    """The default ``on_state``: nobody listens."""
