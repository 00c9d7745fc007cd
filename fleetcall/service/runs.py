"""The runs an app started: :class:`RunRegistry` owns their tasks, keeps their results, counts them."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict

from fleetcall.executor import events as ev
from fleetcall.executor.orchestrator import DEFAULT, Orchestrator, RunHandle
from fleetcall.executor.result import RunResult, RunStatus
from fleetcall.router.pool import EndpointPool
from fleetcall.service.metrics import ServiceMetrics
from fleetcall.service.requests import ApiError, Mode, new_run_id

__all__ = ["RunRegistry"]


def _drop(event: ev.Event) -> None:
    """The event sink of a run nobody streams."""


class RunRegistry:
    """Owns every run the app started: handles in flight, results of finished runs (an LRU).

    Each run executes in a task created here that records its result and metrics when it ends,
    whoever (if anyone) is awaiting it, so ``GET /v1/runs/{id}`` sees every run settle. Run ids
    are :func:`~fleetcall.service.requests.new_run_id`: random, revealing nothing of other runs.

    Its runs are logged by the executor (``run.start`` and ``run.end`` on
    ``fleetcall.executor``, the run id as ``query_id``; never the query text), not again here.
    """

    def __init__(self, orchestrator: Orchestrator, max_runs: int, max_in_flight: int | None = None,
                 pool: EndpointPool | None = None) -> None:
        self.orchestrator = orchestrator
        self.max_runs = max_runs
        self.max_in_flight = max_in_flight  # runs executing at once; more get a 429
        self.metrics = ServiceMetrics(lambda: len(self.running), pool)
        self.running: dict[str, RunHandle] = {}                   # run id -> handle, until it ends
        self.finished: OrderedDict[str, RunResult] = OrderedDict()  # run id -> result, oldest first
        self.closed = False                                       # True once shutdown began

    def start(self, query: str, deadline_s: float | None, mode: Mode, emit: ev.Emit | None = None) -> RunHandle:
        """Start a run now; ``emit`` receives its events. Raises :class:`ApiError` (503 when
        shutting down, 429 past ``max_in_flight``) and ``ValueError`` on bad input."""
        if self.closed:
            raise ApiError(503, "shutting_down", "the service is shutting down")
        if self.max_in_flight is not None and len(self.running) >= self.max_in_flight:
            raise ApiError(429, "overloaded", f"{len(self.running)} runs are in flight, the most this "
                           "service takes at once; retry later")
        sink = emit or _drop
        deadline = DEFAULT if deadline_s is None else deadline_s   # a caller cannot ask for no deadline
        handle = self.orchestrator.start(query, deadline=deadline, mode=mode, emit=sink, query_id=new_run_id())
        run_id = handle.query_id
        # Registered before anyone awaits the handle, so it runs first: a waiter finds the record.
        handle.add_done_callback(lambda t: self._settled(run_id, query, mode, sink, t))
        self.running[run_id] = handle
        self.metrics.started()
        return handle

    def _settled(self, run_id: str, query: str, mode: str, emit: ev.Emit, task: "asyncio.Task[RunResult]") -> None:
        """Record a run's result; a run that never produced one (its task cancelled from
        outside the handle, or a bug) gets a stand-in result, and its stream a RunFinished, so
        nothing hangs. (A cancel through the handle always yields the run's own result.)"""
        self.running.pop(run_id, None)
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or error is not None:
            now = asyncio.get_running_loop().time()
            status = RunStatus.CANCELLED if error is None else RunStatus.FAILED
            result = RunResult(query_id=run_id, query=query, mode=mode, status=status,
                               error="run cancelled" if error is None else f"internal error: {error!r}",
                               started_at=now, finished_at=now)
            emit(ev.RunFinished(result))
        else:
            result = task.result()
        self.finished[run_id] = result
        while len(self.finished) > self.max_runs:
            self.finished.popitem(last=False)
        self.metrics.record(result)

    async def outcome(self, handle: RunHandle) -> RunResult:
        """The run's result; if the caller is cancelled meanwhile, the run is cancelled too."""
        try:
            return await handle.result()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                handle.cancel()
                raise
        except Exception:   # noqa: BLE001  # recorded as a failed run by _settled
            pass
        result = self.finished.get(handle.query_id)
        if result is None:
            raise ApiError(500, "internal", f"run {handle.query_id} ended without a result")
        return result

    def lookup(self, run_id: str) -> RunHandle | RunResult:
        """The run's handle while it runs, its result once finished; 404 if unknown or evicted."""
        if (handle := self.running.get(run_id)) is not None:
            return handle
        if (result := self.finished.get(run_id)) is not None:
            self.finished.move_to_end(run_id)
            return result
        raise ApiError(404, "not_found", f"no run {run_id!r} (unknown, or evicted from the last {self.max_runs})",
                       param="run_id")

    async def shutdown(self) -> list[str]:
        """Refuse new runs, cancel every run in flight and wait for each to settle; their ids."""
        self.closed = True
        handles = list(self.running.values())
        for handle in handles:
            handle.cancel()
        for handle in handles:
            with contextlib.suppress(ApiError):
                await self.outcome(handle)
        return [h.query_id for h in handles]
