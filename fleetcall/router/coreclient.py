"""The seam between the pool's I/O shell and its scheduler core.

:class:`~fleetcall.router.pool.EndpointPool` reaches its core through :class:`CoreClient`: the
events of :class:`~fleetcall.router.core.SchedulerCore` (each returns the actions it causes at
once) and the few reads the shell needs. A :class:`SchedulerCore` is one, used in place: the
pool's default. A core that lives elsewhere (one shared by several processes, in a Ray actor:
:mod:`fleetcall.distributed`) is an :class:`AsyncCoreClient`: its events return what is known
at once (often nothing) and the actions decided later are handed to the ``deliver`` callback
the pool connects, on the pool's loop. The shell is the same either way: it streams from the
endpoint itself, reports each event exactly once, and carries out each action by call id.

Reporting stays synchronous on purpose: a call's end is reported from ``finally`` blocks and
generator closing, where an ``await`` would not be safe; an async client queues the event and
sends it from a task of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from fleetcall.router.actions import Action, Outcome
from fleetcall.router.dispatcher import Dispatcher
from fleetcall.router.faults import CallId, Failure
from fleetcall.router.health import EndpointSnapshot
from fleetcall.router.predict import OutputLengths
from fleetcall.router.state import EndpointSpec, EndpointState
from fleetcall.router.views import CallView

__all__ = ["AsyncCoreClient", "CoreClient", "Deliver"]

Deliver = Callable[[list[Action]], None]  # carries out actions decided after the event returned


@runtime_checkable
class CoreClient(Protocol):
    """What the pool's shell asks of its scheduler core. Times are the pool loop's seconds."""

    dispatcher: Dispatcher
    @property
    def output_lengths(self) -> OutputLengths: ...  # expected output tokens per call kind
    @property
    def mean_call_s(self) -> float: ...             # an LLM call's mean service seconds

    @property
    def endpoints(self) -> list[str]: ...
    @property
    def clock(self) -> float: ...  # the latest event's time: no event may come earlier
    def endpoint(self, name: str) -> EndpointState: ...
    def name_taken(self, name: str) -> str: ...

    def add_endpoint(self, spec: EndpointSpec, now: float) -> list[Action]: ...
    def remove_endpoint(self, name: str, now: float) -> list[Action]: ...
    def healthy(self, name: str, now: float) -> list[Action]: ...
    def rate_limited(self, name: str, now: float, until: float,
                     status: int | str | None = 429) -> list[Action]: ...
    def submit(self, call: CallView, now: float) -> list[Action]: ...
    def started(self, call_id: CallId, now: float) -> list[Action]: ...
    def first_token(self, call_id: CallId, now: float) -> list[Action]: ...
    def finished(self, call_id: CallId, now: float, outcome: Outcome) -> list[Action]: ...
    def failed(self, call_id: CallId, now: float, failure: Failure) -> list[Action]: ...
    def cancelled(self, call_id: CallId, now: float) -> list[Action]: ...
    def advance(self, now: float) -> list[Action]: ...
    def next_wakeup(self) -> float | None: ...

    def snapshot(self, now: float) -> list[EndpointSnapshot]: ...
    def busy_seconds(self, now: float) -> dict[str, float]: ...
    def where(self, call_id: CallId) -> tuple[str, str | None] | None: ...


@runtime_checkable
class AsyncCoreClient(CoreClient, Protocol):
    """A core that answers later. The pool calls ``connect`` once (at construction), ``start``
    on its loop before the first call (idempotent: the client starts the tasks it owns), and
    ``aclose`` when it closes (the client stops its tasks). ``cancelled`` never raises for a
    call the core no longer knows (it may have been forgotten remotely)."""

    def connect(self, deliver: Deliver) -> None: ...
    def start(self) -> None: ...
    async def aclose(self) -> None: ...
