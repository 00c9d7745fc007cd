"""The task fetching unit: starts each task the moment its last dependency finishes.

Event-driven, no polling: ``add`` is called as the planner streams each task; a task with no
unfinished dependency starts at once in the round's task group; finishing a task decrements the
count of its dependents and starts those that reach zero. A task whose dependency failed, was
skipped or was invalid is skipped with a reason that names the task at the root of the failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fleetcall.executor.resolve import ResolveError, substitute
from fleetcall.observe import describe_exception
from fleetcall.plan import Observation, ObservationStatus, Task

Execute = Callable[[Task, tuple[Any, ...], dict[str, Any]], Awaitable[Observation]]
OnSkip = Callable[[Task, Observation], None]
OnUnresolved = Callable[[Task, Observation], None]   # the task failed without its tool's observation:
                                                     # a reference could not be followed, a GeneratorExit


class TaskFetchingUnit:
    """One plan's tasks: dependency counting and launching into a caller-owned task group."""

    def __init__(self, group: asyncio.TaskGroup, execute: Execute, on_skip: OnSkip,
                 on_unresolved: OnUnresolved | None = None) -> None:
        self._group = group
        self._execute = execute
        self._on_skip = on_skip
        self._on_unresolved = on_unresolved
        self._tasks: dict[int, Task] = {}             # task id -> task, every task added
        self._invalid: dict[int, str] = {}            # task id -> why it will not run
        self._unmet: dict[int, int] = {}              # waiting task id -> unfinished dependencies
        self._dependents: dict[int, list[int]] = {}   # task id -> ids of waiting tasks that need it
        self._values: dict[int, Any] = {}             # task id -> result, for tasks that finished ok
        self.results: dict[int, Observation] = {}     # task id -> observation, finished or skipped
        self._open = 0                                # tasks added and not yet finished or skipped
        self._idle = asyncio.Event()                  # set iff _open == 0
        self._idle.set()

    def reject(self, task: Task, reason: str) -> None:
        """Record a task that will not run (invalid); its dependents are skipped."""
        self._invalid[task.id] = reason

    def add(self, task: Task) -> None:
        """Take a streamed task: start it now if its dependencies are done, else wait for them."""
        self._tasks[task.id] = task
        self._open += 1
        self._idle.clear()
        blocked = self._blocked_reason(task)
        if blocked is not None:
            self._skip_all([(task, blocked)])
            return
        unmet = [d for d in task.deps if d not in self.results]
        if not unmet:
            self._launch(task)
            return
        self._unmet[task.id] = len(unmet)
        for d in unmet:
            self._dependents.setdefault(d, []).append(task.id)

    async def wait_idle(self) -> None:
        """Wait until every added task has finished or been skipped."""
        await self._idle.wait()

    def _blocked_reason(self, task: Task) -> str | None:
        for d in sorted(task.deps):
            if d in self._invalid:
                return f"depends on task {d}, which was not run: {self._invalid[d]}"
            if d not in self._tasks:
                return f"depends on task {d}, which is not in the plan"
            done = self.results.get(d)
            if done is not None and done.status is not ObservationStatus.OK:
                return self._failure_reason(d, done)
        return None

    @staticmethod
    def _failure_reason(dep: int, obs: Observation) -> str:
        if obs.status is ObservationStatus.SKIPPED:
            return obs.error or f"depends on task {dep}, which was skipped"
        return f"depends on task {dep}, which failed: {obs.error}"

    def _launch(self, task: Task) -> None:
        self._group.create_task(self._run(task), name=f"task-{task.id}")

    async def _run(self, task: Task) -> None:
        try:
            args = substitute(task.args, self._values)
            kwargs = {k: substitute(v, self._values) for k, v in task.kwargs}
        except ResolveError as exc:   # (the one error substitution raises, whatever the results are)
            obs = Observation(task.id, task.tool, ObservationStatus.ERROR, error=str(exc))
            if self._on_unresolved is not None:
                self._on_unresolved(task, obs)
        else:
            try:
                obs = await self._execute(task, args, kwargs)
            except GeneratorExit as exc:
                # A future the tool awaited held GeneratorExit (a sync tool's thread raised it):
                # asyncio throws it into this, the task's outermost coroutine, and a thrown
                # GeneratorExit closes every coroutine under it (PEP 380): only here is it seen.
                obs = Observation(task.id, task.tool, ObservationStatus.ERROR, error=describe_exception(exc))
                if self._on_unresolved is not None:
                    self._on_unresolved(task, obs)
        self._finish(task.id, obs)

    def _finish(self, task_id: int, obs: Observation) -> None:
        self.results[task_id] = obs
        if obs.status is ObservationStatus.OK:
            self._values[task_id] = obs.value
        self._open -= 1
        skipped: list[tuple[Task, str]] = []
        for waiting in self._dependents.pop(task_id, ()):
            if waiting not in self._unmet:
                continue  # already skipped through another dependency
            if obs.status is not ObservationStatus.OK:
                del self._unmet[waiting]
                skipped.append((self._tasks[waiting], self._failure_reason(task_id, obs)))
                continue
            self._unmet[waiting] -= 1
            if self._unmet[waiting] == 0:
                del self._unmet[waiting]
                self._launch(self._tasks[waiting])
        if skipped:
            self._skip_all(skipped)
        if self._open == 0:
            self._idle.set()

    def _skip_all(self, todo: list[tuple[Task, str]]) -> None:
        # A worklist, not recursion: a failure at the head of a 10,000-task chain skips them all.
        while todo:
            task, reason = todo.pop()
            obs = Observation(task.id, task.tool, ObservationStatus.SKIPPED, error=reason)
            self.results[task.id] = obs
            self._open -= 1
            self._on_skip(task, obs)
            for waiting in self._dependents.pop(task.id, ()):
                if self._unmet.pop(waiting, None) is not None:
                    todo.append((self._tasks[waiting], reason))
        if self._open == 0:
            self._idle.set()
