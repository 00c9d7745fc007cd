"""Containing a tool's coroutine: step timing, cancellation that wins, and a grace period.

:func:`contained` drives the coroutine of one tool call itself, one step at a time, inside the
task that awaits it (no extra task), and so can see what a tool does with the event loop:

* **Loop-blocking steps.** Each step (the code between two awaits) is timed on the wall clock
  (``time.perf_counter``: blocking is about the host, and under the virtual clock loop time does
  not move while a step runs). A step longer than ``slow_step_s`` is logged once per call on the
  ``fleetcall.executor`` logger, naming the tool and the run, and the longest is kept for the
  task's record (``tool.loop_blocked``, see :mod:`fleetcall.logs`). Nothing can interrupt a
  step: while it runs, no timer of the loop fires.
* **Cancellation wins.** Once the task is cancelled (deadline, ``timeout_s``, ``cancel()``), the
  call ends cancelled even if the tool swallows the ``CancelledError`` and returns a value or
  raises something else. A cancellation the tool's own scope takes back (``asyncio.timeout``
  inside the tool, an anyio cancel scope: they ``uncancel()`` the task and go on) is the tool's
  business: the call goes on as the tool decides, unless its owner (the run, ``watch.owner``) is
  being cancelled meanwhile.
* **Grace period.** A tool that goes on after being cancelled (it swallowed the cancellation, or
  cleans up with awaits) gets ``grace_s`` seconds of loop time. Then the task is woken once more
  and the tool's coroutine is not resumed: it is closed (``GeneratorExit`` at its await: its
  ``finally`` blocks run, but an ``await`` inside them fails) and the call ends cancelled. So a
  cancelled call always ends within the grace period, plus at most the step in progress.

A ``CancelledError`` that the tool raises while nobody cancelled its task is passed on as it is;
the caller (:func:`fleetcall.executor.runner.call_tool`) tells the two apart with
``Task.cancelling()``.

The model's stream is contained the same way, one chunk at a time
(:class:`~fleetcall.executor.recording.RecordingLLM`, a watch of ``kind`` "LLM call").
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Awaitable, Generator
from dataclasses import dataclass
from typing import Any

from fleetcall.logs import EXECUTOR, event
from fleetcall.observe import describe_exception

log = logging.getLogger(EXECUTOR)


@dataclass(slots=True, eq=False)
class CallWatch:
    """What the executor saw of one task's tool call, over all its attempts: for its record."""

    tool: str
    label: str                        # the run and task, for the log: "query_id=q1 round=0 task_id=3"
    slow_step_s: float | None = 0.1   # a step holding the loop longer is reported; None: never
    grace_s: float = 1.0              # loop seconds a cancelled tool gets before it is stopped
    thread: str = ""                  # the last attempt's thread: "" (none), waiting, running,
                                      # abandoned (cancelled while its function ran), done
    threads: int = 0                  # size of the tool's thread lane (0: not a sync tool)
    threads_abandoned: int = 0        # attempts whose thread was still running when abandoned
    loop_blocked_s: float = 0.0       # longest step (wall s) at or over slow_step_s; 0 if none
    ignored_cancel: bool = False      # the tool returned or raised another error after its task
                                      # was cancelled (the call ended cancelled all the same)
    stopped: bool = False             # a grace period ran out and the coroutine was closed
    kind: str = "tool"                # what is watched, for messages: "tool", or "LLM call"
    owner: asyncio.Task[Any] | None = None  # the run's task, when the call runs in a task of its
                                      # own: while it is being cancelled, so is the call

    @property
    def prefix(self) -> str:
        """The log events' prefix: ``tool`` (tool.loop_blocked...) or ``llm`` (llm.stopped...)."""
        return "tool" if self.kind == "tool" else "llm"

    @property
    def named(self) -> dict[str, str]:
        """The log events' field naming what is watched: ``tool=search`` or ``call=planner``."""
        return {"tool": self.tool} if self.kind == "tool" else {"call": self.tool}

    @property
    def subject(self) -> str:
        """``tool 'search'``, ``LLM call 'planner'``: what the log and the errors name."""
        return f"{self.kind} {self.tool!r}"

    def on_thread(self, state: str) -> None:
        self.thread = state
        if state == "abandoned":
            self.threads_abandoned += 1

    @property
    def abandoned(self) -> bool:
        """True iff the run stopped waiting for an attempt before the tool ended by itself."""
        return self.threads_abandoned > 0 or self.stopped

    def step(self, seconds: float) -> None:
        if self.slow_step_s is None or seconds < self.slow_step_s or seconds <= self.loop_blocked_s:
            return
        if not self.loop_blocked_s:   # every run of the process waited
            advice = ("make it a sync function (it then runs in a thread) or await instead of blocking"
                      if self.kind == "tool" else "await instead of blocking")
            event(log, logging.WARNING, f"{self.prefix}.loop_blocked", self.label, **self.named,
                  blocked_s=seconds, hint=advice)
        self.loop_blocked_s = seconds

    def why_stopped(self) -> str:
        """Why the call ended before the tool did (for an error or a cancelled record); '' if not."""
        if self.thread == "abandoned":
            return "the tool's thread is still running and was abandoned (Python cannot stop a thread)"
        if self.thread == "waiting" and self.threads:
            return f"it was waiting for one of the tool's {self.threads} threads, all busy"
        if self.stopped:
            return (f"the {self.kind} did not stop within the {self.grace_s:g}s grace period after it "
                    "was cancelled, so its coroutine was closed")
        if self.ignored_cancel:
            return f"the {self.kind} ignored the cancellation"
        return ""


@types.coroutine
def contained(awaitable: Awaitable[Any], watch: CallWatch) -> Generator[Any, Any, Any]:
    """Await ``awaitable`` (a tool's ``run(...)``) as the module docstring describes.

    Raises what the tool raises; ``CancelledError`` once its task was cancelled, whatever the
    tool did with the cancellation; ``TypeError`` if ``awaitable`` is not awaitable.
    """
    try:
        steps = awaitable.__await__()
    except AttributeError:
        made = "run()" if watch.kind == "tool" else "its stream's __anext__()"
        raise TypeError(f"{watch.subject}: {made} returned {type(awaitable).__name__}, "
                        "not an awaitable") from None
    task = asyncio.current_task()
    cancelled = _Cancelled(task, watch.owner)
    timer: asyncio.TimerHandle | None = None             # the grace period, once cancelled
    expired: list[bool] = []                             # [True] once this call's grace period ran out
    value: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            yielded = _step(steps, value, thrown, watch, cancelled)
            if isinstance(yielded, _Done):
                return yielded.value
            if timer is not None and not cancelled():   # the tool's own scope took it back
                timer.cancel()
                timer = None
            try:
                value, thrown = (yield yielded), None
            except BaseException as exc:  # thrown in by the task: a cancellation, a failed future
                value, thrown = None, exc
                if expired:   # the grace period is over: do not resume the tool
                    _stop(steps, task, watch)
                if isinstance(exc, asyncio.CancelledError):
                    cancelled.seen = True
                if timer is None and task is not None and isinstance(exc, asyncio.CancelledError) and cancelled():
                    timer = asyncio.get_running_loop().call_later(watch.grace_s, _expire, task, watch, expired)
    finally:
        if timer is not None:
            timer.cancel()


class _Cancelled:
    """Whether the call is being cancelled now: its task has a cancellation requested since the
    call began that nobody took back, or it had one (``seen``) and its owner is being cancelled."""

    __slots__ = ("task", "base", "owner", "owner_base", "seen")

    def __init__(self, task: asyncio.Task[Any] | None, owner: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.base = task.cancelling() if task is not None else 0   # cancellations not ours to see
        self.owner = owner if owner is not task else None
        self.owner_base = self.owner.cancelling() if self.owner is not None else 0
        self.seen = False   # a CancelledError was thrown into the call

    def __call__(self) -> bool:
        return ((self.task is not None and self.task.cancelling() > self.base)
                or (self.seen and self.owner is not None and self.owner.cancelling() > self.owner_base))


@dataclass(slots=True)
class _Done:
    value: Any


def _step(steps: Any, value: Any, thrown: BaseException | None, watch: CallWatch, cancelled: _Cancelled) -> Any:
    """Run the tool to its next await: what it yields, or ``_Done`` with its result."""
    start = time.perf_counter()
    try:
        yielded = steps.send(value) if thrown is None else steps.throw(thrown)
    except StopIteration as stop:
        watch.step(time.perf_counter() - start)
        if cancelled():
            watch.ignored_cancel = True
            raise asyncio.CancelledError(f"{watch.subject} returned after it was cancelled") from None
        return _Done(stop.value)
    except asyncio.CancelledError:
        watch.step(time.perf_counter() - start)
        raise
    except BaseException as exc:
        watch.step(time.perf_counter() - start)
        if cancelled():
            watch.ignored_cancel = True
            raise asyncio.CancelledError(
                f"{watch.subject} raised {describe_exception(exc)} after it was cancelled") from exc
        raise
    watch.step(time.perf_counter() - start)
    return yielded   # (after a cancellation: cleaning up with awaits, or ignoring it; the grace period runs)


def _expire(task: asyncio.Task[Any], watch: CallWatch, expired: list[bool]) -> None:
    """The grace period is over: wake the task so that :func:`contained` stops the tool."""
    expired.append(True)
    watch.stopped = True
    task.cancel(f"{watch.subject} did not stop within {watch.grace_s:g}s of being cancelled")


def _stop(steps: Any, task: asyncio.Task[Any] | None, watch: CallWatch) -> None:
    """Close the tool's coroutine and end the call cancelled (the cancellation it ignored).

    ``GeneratorExit`` is thrown in first, then ``close()``: for a coroutine that is what
    ``close()`` does; an async generator's ``__anext__()`` (a model's stream) has a ``close()``
    that leaves its generator suspended and marked running for good, while the throw ends it."""
    if task is not None:
        task.uncancel()   # the wake-up call of _expire; the original cancellation stays
    start = time.perf_counter()
    try:
        try:
            steps.throw(GeneratorExit)
        except (GeneratorExit, StopIteration, StopAsyncIteration):
            pass   # it ended
        else:      # it awaited again: not resumed, closed
            steps.close()
    except BaseException as exc:  # its finally blocks awaited or raised: it is over all the same
        if isinstance(exc, KeyboardInterrupt):
            raise
        event(log, logging.WARNING, f"{watch.prefix}.close_failed", watch.label, **watch.named,
              error=describe_exception(exc))
    watch.step(time.perf_counter() - start)
    event(log, logging.WARNING, f"{watch.prefix}.stopped", watch.label, **watch.named, grace_s=watch.grace_s,
          why="it did not stop within its grace period after it was cancelled; its coroutine was closed")
    raise asyncio.CancelledError(f"{watch.subject} stopped after the grace period")
