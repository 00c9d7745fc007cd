"""The virtual clock: an asyncio event loop on which time jumps instead of passing.

fleetcall reads time only from the running loop (``loop.time()``) and waits only with asyncio
primitives (docs/architecture.md, "One clock"). Run the same code on :class:`VirtualEventLoop` and the whole
system (orchestrator, scheduler, in-process emulated GPUs) becomes a discrete-event simulation:
when every task is waiting, the loop asks its selector for events with a timeout, and the virtual
selector answers at once with none, setting the clock to the earliest pending timer. Nothing
really sleeps, so an hour of simulated traffic takes as long as its callbacks take to run.

    >>> import asyncio
    >>> from fleetcall.vclock import run_virtual
    >>> async def main() -> float:
    ...     await asyncio.sleep(3600)
    ...     return asyncio.get_running_loop().time()
    >>> run_virtual(main())
    3600.0

Determinism: given the same program and seed, every run has the same event order and times.
asyncio's ready queue is FIFO; its timer heap is not stable for equal deadlines, so this loop
breaks ties by scheduling order. Code under simulation must draw randomness from seeded RNGs it
is given (``loop.random``, or ``random.Random`` instances derived from it), never from the global
``random`` module, and must not iterate sets of objects whose order depends on memory addresses.

What cannot work is refused loudly with :class:`~fleetcall.errors.VirtualClockError`: threads
(``run_in_executor``, ``asyncio.to_thread``, ``call_soon_threadsafe`` from another thread) would
run in real time, and real sockets, DNS, pipes and subprocesses would wait for a world that is
not simulated. A program that waits forever (every task blocked, no timer pending) raises a
deadlock error naming the waiting tasks instead of hanging.
"""

from __future__ import annotations

import asyncio
import asyncio.log
import functools
import heapq
import itertools
import math
import os
import random
import selectors
import threading
import weakref
from asyncio import base_events, format_helpers
from collections.abc import Callable, Coroutine, Mapping
from contextvars import Context
from typing import Any, TypeVar

from fleetcall.errors import VirtualClockError

__all__ = ["VirtualEventLoop", "VirtualEventLoopPolicy", "is_virtual", "run_virtual"]

_T = TypeVar("_T")

# asyncio's own thresholds, which VirtualEventLoop._run_once keeps
_MIN_SCHEDULED_TIMER_HANDLES = base_events._MIN_SCHEDULED_TIMER_HANDLES
_MIN_CANCELLED_TIMER_HANDLES_FRACTION = base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION
_MAXIMUM_SELECT_TIMEOUT = base_events.MAXIMUM_SELECT_TIMEOUT

_THREADS = ("threads are not allowed under the virtual clock: the thread's time would be real, "
            "not virtual; run the work as a coroutine (or an emulated endpoint) instead")
_REAL_IO = ("real I/O (sockets, DNS, pipes, subprocesses) is not allowed under the virtual clock: "
            "it would wait in real time; plug an in-process transport or emulator in instead")

# Loop methods that reach the real world, refused by name (see the end of this module).
_REAL_IO_METHODS = (
    "create_connection", "create_server", "create_unix_connection", "create_unix_server",
    "create_datagram_endpoint", "connect_accepted_socket", "connect_read_pipe",
    "connect_write_pipe", "subprocess_exec", "subprocess_shell", "getaddrinfo", "getnameinfo",
    "sendfile", "start_tls", "sock_recv", "sock_recv_into", "sock_recvfrom",
    "sock_recvfrom_into", "sock_sendall", "sock_sendto", "sock_connect", "sock_accept",
    "sock_sendfile",
)


class _Timer(tuple):  # (when, seq, TimerHandle)
    """A pending timer in the loop's heap: ``(deadline, scheduling order, handle)``, so equal
    deadlines fire first-in first-out.

    ``TimerHandle`` compares by deadline only, and ``heapq`` does not keep equal keys in insertion
    order; under a virtual clock equal deadlines are common (two tasks sleeping 1.0 from the same
    instant), so without the tie-break the wake-up order would be an artefact of heap layout. A
    tuple compares in C (a handle's ``__lt__`` is a Python call, made ~log2(timers) times for
    every timer pushed and popped); the order is unique, so the handle itself is never compared.
    """

    __slots__ = ()

    def when(self) -> float:
        """The deadline, as ``TimerHandle.when()`` (for code that reads the heap)."""
        return self[0]


class DelegatingSelector(selectors.BaseSelector):
    """A selector whose registrations are a real ``DefaultSelector``'s; subclasses decide what
    ``select(timeout)`` does (the virtual loop's and the dilated loop's selectors)."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class _VirtualSelector(DelegatingSelector):
    """Answers ``select(timeout)`` at once with no events, moving the loop's clock instead.

    Registration is delegated to a real selector so asyncio's self-pipe (used for
    ``call_soon_threadsafe`` and signal wake-ups) keeps working; the real selector is only polled,
    with a zero timeout, while signal handlers are installed.
    """

    def __init__(self, loop: VirtualEventLoop) -> None:
        super().__init__()  # the real selector holds the self-pipe registration only
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self._loop
        if loop._foreign_thread_error is not None:
            raise loop._foreign_thread_error
        if timeout is None:  # nothing ready, no timer: only a thread or a signal could wake us,
            # and waiting for either would be waiting in real time
            raise VirtualClockError(loop._deadlock_message("no timer is pending"))
        if timeout > 0:  # nothing ready; the heap's head is live (asyncio pruned it)
            when = loop._scheduled[0][0]
            if when > loop._now:
                if when == math.inf:
                    raise VirtualClockError(loop._deadlock_message("the only timers are at infinity"))
                # Jump to the deadline itself, not now + timeout: the subtraction asyncio did to
                # get the timeout can round below it, and it is capped at one day.
                loop._advance_to(when)
        if loop._signal_handlers:
            return self._real.select(0)
        return []


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose ``time()`` is virtual: it jumps to the next timer when all tasks wait.

    ``start`` is the virtual time at creation (seconds); ``seed`` seeds ``self.random``, the RNG
    that code under simulation should draw from. Usable wherever a loop factory is accepted:

        >>> with asyncio.Runner(loop_factory=VirtualEventLoop) as runner:
        ...     runner.run(asyncio.sleep(10.0))
        ...     runner.get_loop().time()
        10.0
    """

    def __init__(self, *, start: float = 0.0, seed: int | None = None) -> None:
        start = float(start)
        self._now = start  # virtual time in seconds; only ever increases
        self._next_timer_seq = itertools.count().__next__  # tie-break for equal deadlines
        # Live tasks in creation order (dicts keep insertion order), so that shutdown and error
        # messages list them deterministically rather than in address-dependent set order.
        self._tasks_by_birth: weakref.WeakKeyDictionary[asyncio.Task[Any], None] = (
            weakref.WeakKeyDictionary())
        # Set from a foreign thread that touched the loop; raised in the loop's thread.
        self._foreign_thread_error: VirtualClockError | None = None
        self.seed = seed
        self.random = random.Random(seed)  # the simulation's randomness; seeded iff seed given
        super().__init__(_VirtualSelector(self))
        if not math.isfinite(start):  # checked once the loop exists, so it can be closed cleanly
            self.close()
            raise ValueError(f"start must be a finite time in seconds, not {start!r}")
        self._clock_resolution = math.ulp(self._now)  # timers fire exactly at their deadline

    def time(self) -> float:
        """The virtual time in seconds (``start`` plus every jump so far)."""
        return self._now

    def _advance_to(self, when: float) -> None:
        self._now = when
        # _run_once fires timers with deadline < now + resolution: one ulp keeps that exact at
        # any magnitude (a fixed 1e-9 vanishes in rounding beyond ~1e7 s and timers would stall).
        self._clock_resolution = math.ulp(when)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any,
                context: Context | None = None) -> asyncio.TimerHandle:
        """Schedule ``callback`` at virtual time ``when``; equal deadlines run in call order."""
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        timer = asyncio.TimerHandle(when, callback, args, self, context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        heapq.heappush(self._scheduled, _Timer((when, self._next_timer_seq(), timer)))
        timer._scheduled = True
        return timer

    def _run_once(self) -> None:
        """asyncio's ``BaseEventLoop._run_once`` (Python 3.11) on a heap of :class:`_Timer`:
        drop cancelled timers, poll the (virtual) selector, move the timers now due to the
        ready queue, run the callbacks that were ready."""
        heap: list[_Timer] = self._scheduled  # type: ignore[has-type]
        count = len(heap)
        if count > _MIN_SCHEDULED_TIMER_HANDLES \
                and self._timer_cancelled_count / count > _MIN_CANCELLED_TIMER_HANDLES_FRACTION:  # type: ignore[has-type]
            live = []
            for timer in heap:
                if timer[2]._cancelled:
                    timer[2]._scheduled = False
                else:
                    live.append(timer)
            heapq.heapify(live)
            self._scheduled = heap = live
            self._timer_cancelled_count = 0
        else:
            while heap and heap[0][2]._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(heap)[2]._scheduled = False
        timeout = None
        if self._ready or self._stopping:
            timeout = 0.0
        elif heap:
            timeout = min(max(0.0, heap[0][0] - self._now), _MAXIMUM_SELECT_TIMEOUT)
        self._process_events(self._selector.select(timeout))
        end_time = self._now + self._clock_resolution
        ready = self._ready
        while heap and heap[0][0] < end_time:
            handle = heapq.heappop(heap)[2]
            handle._scheduled = False
            ready.append(handle)
        for _ in range(len(ready)):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            if self._debug:
                self._run_debug(handle)
                continue
            try:  # handle._run(), without its frame: the loop's innermost step
                handle._context.run(handle._callback, *handle._args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._callback_failed(handle, exc)

    def _callback_failed(self, handle: asyncio.Handle, exc: BaseException) -> None:
        """What ``Handle._run`` does when its callback raises: the exception handler is told."""
        callback, args = handle._callback, handle._args
        context = {"message": f"Exception in callback "
                              f"{format_helpers._format_callback_source(callback, args)}",
                   "exception": exc, "handle": handle}
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
        self.call_exception_handler(context)

    def _run_debug(self, handle: asyncio.Handle) -> None:
        """Run ``handle`` as asyncio's debug mode does: warn of a slow callback."""
        try:
            self._current_handle = handle
            t0 = self.time()
            handle._run()
            dt = self.time() - t0
            if dt >= self.slow_callback_duration:
                asyncio.log.logger.warning("Executing %s took %.3f seconds",
                                           base_events._format_handle(handle), dt)
        finally:
            self._current_handle = None  # type: ignore[assignment]  # asyncio resets it so too

    def create_task(self, coro: Coroutine[Any, Any, _T], *, name: str | None = None,
                    context: Context | None = None) -> asyncio.Task[_T]:
        task = super().create_task(coro, name=name, context=context)
        self._tasks_by_birth[task] = None
        return task

    def live_tasks(self) -> list[asyncio.Task[Any]]:
        """Unfinished tasks of this loop, oldest first (a deterministic order)."""
        return [task for task in list(self._tasks_by_birth) if not task.done()]

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any,
                             context: Context | None = None) -> asyncio.Handle:
        """Like asyncio's, but a call from a thread other than the loop's is a VirtualClockError.

        The error is raised in the calling thread and again in the loop's thread, so that a
        thread that swallows it still cannot make the simulation silently wrong.
        """
        if self._thread_id is not None and threading.get_ident() != self._thread_id:
            error = VirtualClockError(f"call_soon_threadsafe({callback!r}) from another thread: "
                                      f"{_THREADS}")
            self._foreign_thread_error = error
            raise error
        return super().call_soon_threadsafe(callback, *args, context=context)

    def _asyncgen_finalizer_hook(self, agen: Any) -> None:
        """asyncio's (close a dropped async generator in a task of its own), minus the write to
        the self-pipe that ``call_soon_threadsafe`` makes to wake a selector from another thread:
        this loop's selector never sleeps, and other threads are refused anyway."""
        if self._thread_id is not None and threading.get_ident() != self._thread_id:
            super()._asyncgen_finalizer_hook(agen)  # type: ignore[misc]  # asyncio's own hook;
            return                                    # its call_soon_threadsafe refuses
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon(self.create_task, agen.aclose())

    def run_in_executor(self, executor: Any, func: Callable[..., _T], *args: Any) -> Any:
        """Refused: raises at once so the error surfaces in the task (``asyncio.to_thread`` too)."""
        raise VirtualClockError(f"run_in_executor({func!r}): {_THREADS}")

    def add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        """Refused for every file descriptor but the loop's own self-pipe."""
        self._refuse_fd("add_reader", fd)
        super().add_reader(fd, callback, *args)

    def add_writer(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        """Refused for every file descriptor but the loop's own self-pipe."""
        self._refuse_fd("add_writer", fd)
        super().add_writer(fd, callback, *args)

    def _refuse_fd(self, method: str, fd: Any) -> None:
        fileno = fd if isinstance(fd, int) else fd.fileno()
        if self._ssock is None or fileno != self._ssock.fileno():
            raise VirtualClockError(f"loop.{method}(fd={fileno}) is not allowed: {_REAL_IO}")

    def _deadlock_message(self, why: str) -> str:
        tasks = self.live_tasks()
        shown = "; ".join(_describe(task) for task in tasks[:8])
        more = f"; and {len(tasks) - 8} more" if len(tasks) > 8 else ""
        return (f"deadlock at virtual time {self._now!r}: every task is waiting and {why}, so "
                f"nothing can ever wake them (a never-set Event, an unfed Queue, a lost future?). "
                f"{len(tasks)} waiting: {shown or '(no tasks)'}{more}")


def _describe(task: asyncio.Task[Any]) -> str:
    """``name: outer (file:line) -> ... -> inner (file:line)``, the await chain a task waits in."""
    steps: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        code = frame.f_code
        steps.append(f"{code.co_name} ({os.path.basename(code.co_filename)}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None)
    return f"{task.get_name()}: {' -> '.join(steps[-4:]) or '(not started)'}"


def _refused(name: str) -> Callable[..., Any]:
    def method(self: VirtualEventLoop, *args: Any, **kwargs: Any) -> Any:
        raise VirtualClockError(f"loop.{name}() is not allowed: {_REAL_IO}")

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Refused under the virtual clock: {name} would do real I/O."
    return method


for _name in _REAL_IO_METHODS:
    setattr(VirtualEventLoop, _name, _refused(_name))
del _name


class VirtualEventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """A policy whose new loops are :class:`VirtualEventLoop` (for tools that take a policy)."""

    _loop_factory = VirtualEventLoop


def is_virtual(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """True iff ``loop`` (default: the running loop, if any) runs on the virtual clock."""
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
    return isinstance(loop, VirtualEventLoop)


def run_virtual(main: Coroutine[Any, Any, _T], *, start: float = 0.0, seed: int | None = None,
                debug: bool = False) -> _T:
    """Run ``main`` to completion on a fresh :class:`VirtualEventLoop`, like ``asyncio.run``.

    Leftover tasks are cancelled oldest first, async generators are shut down and the loop is
    closed. ``seed`` seeds ``loop.random``; same program and seed give the same run.

        >>> async def pick() -> int:
        ...     return asyncio.get_running_loop().random.randrange(100)
        >>> run_virtual(pick(), seed=7) == run_virtual(pick(), seed=7)
        True
    """
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    factory = functools.partial(VirtualEventLoop, start=start, seed=seed)
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        try:
            return runner.run(main)
        finally:
            _cancel_leftovers(runner.get_loop())


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel unfinished tasks in creation order and wait for them (asyncio.run's cleanup)."""
    assert isinstance(loop, VirtualEventLoop)
    tasks = loop.live_tasks()
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({
                "message": "unhandled exception during run_virtual() shutdown",
                "exception": task.exception(), "task": task,
            })
