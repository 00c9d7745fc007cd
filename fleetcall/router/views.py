"""What the scheduler sees: a call (:class:`CallView`) and an endpoint (:class:`EndpointView`).

Plain frozen dataclasses shared by the dispatcher, the local queues and the pool, in a module of
their own so that none of those imports another to name them. Times are loop seconds.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleetcall.router.predict import PrefixIndex, ServicePredictor

if TYPE_CHECKING:
    from fleetcall.router.queue import Discipline

__all__ = ["CallId", "CallView", "EndpointView"]

CallId = Hashable  # a call's id: an int in one process, e.g. (replica, n) across processes


@dataclass(frozen=True, slots=True)
class CallView:
    """What the scheduler knows of one LLM call. Times are on the loop's clock, seconds."""

    call_id: CallId                   # unique per pool (per scheduler core)
    query_id: str                     # the query (run) the call belongs to
    kind: str                         # "planner", "joiner" or a tool name
    prompt_tokens: int                # tokens of the prompt
    output_tokens: int                # expected output tokens (max_tokens or the kind's mean)
    deadline: float | None            # absolute; None: no deadline (ordered by priority)
    remaining_work_s: float           # predicted work of the query after this call, seconds
    priority: int                     # lower is served first (vLLM's convention), default 0
    enqueued_at: float                # when the call entered the pool (kept when moved)
    prefix_hashes: tuple[int, ...]    # chained block hashes of the prompt (prefix.block_hashes)
    block_tokens: int = 16            # tokens per hashed block

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0 or self.output_tokens < 1 or self.block_tokens < 1:
            raise ValueError(f"call {self.call_id}: prompt_tokens must be >= 0, output_tokens "
                             "and block_tokens >= 1")
        if not 0.0 <= self.remaining_work_s < math.inf:  # also NaN
            raise ValueError(f"call {self.call_id}: remaining_work_s must be finite and >= 0 "
                             f"(predicted seconds of its query's work after it), got "
                             f"{self.remaining_work_s!r}")
        if self.deadline is not None and math.isnan(self.deadline):
            raise ValueError(f"call {self.call_id}: the deadline is NaN (a loop time, or None)")


@dataclass(frozen=True, slots=True)
class EndpointView:
    """A snapshot of one endpoint, as the dispatcher sees it.

    ``running`` holds the predicted remaining seconds of each call in flight (the pool floors
    overrunning calls at a small positive value). ``queued`` is the local queue in serve order
    (:meth:`LocalQueue.snapshot`) and ``queued_service_s`` the predicted service seconds of each
    queued call here, same order; when left empty it is filled from ``predictor`` (at a full
    batch, no cached prefix).
    """

    name: str
    slots: int                                # max calls in flight at once (>= 1)
    running: tuple[float, ...]                # predicted remaining seconds of each running call
    queued: tuple[CallView, ...]              # waiting calls, in the local queue's serve order
    predictor: ServicePredictor               # this endpoint's service-time model
    prefixes: PrefixIndex | None = None       # recently served prefix blocks (None: unknown)
    available: bool = True                    # healthy and circuit breaker closed
    queued_service_s: tuple[float, ...] = ()  # predicted service seconds of each queued call
    prefill_backlog_s: float = 0.0            # predicted prefill seconds still to run for the
                                              # running calls that have no first token yet
    prefill_load: float = 0.0                 # recent fraction of time a prompt was in prefill
                                              # here (a decode step then waits for a chunk)
    typical_prefill_tokens: int = 0           # recent mean of uncached prompt tokens computed
                                              # here (0: unknown, assume full chunks)
    running_queries: tuple[str, ...] = ()     # the query of each running call, same order as
                                              # ``running`` (empty: unknown)
    running_latest_end: tuple[float, ...] = ()  # loop time each running call must end by for
                                              # its query to keep its deadline (inf: none;
                                              # empty: unknown), same order as ``running``
    cost_per_hour: float | None = None        # what an hour of this endpoint costs (None: unknown)
    # (discipline, now): ``queued`` is sorted by that discipline's key at that loop time, ties
    # in push order (the local queue's own snapshot); None: no such promise. A dispatcher of
    # that discipline deciding at that time may then find a key's place by bisection.
    queued_order: tuple[Discipline, float] | None = None

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"endpoint {self.name!r}: slots must be >= 1, got {self.slots}")
        if len(self.queued_service_s) == len(self.queued):
            return
        if self.queued_service_s:
            raise ValueError(f"endpoint {self.name!r}: {len(self.queued_service_s)} service "
                             f"times for {len(self.queued)} queued calls")
        filled = tuple(self.predictor.predict(c.prompt_tokens, c.output_tokens,
                                              batch=self.slots).total_s for c in self.queued)
        object.__setattr__(self, "queued_service_s", filled)  # frozen: set once, here

    @property
    def outstanding_work_s(self) -> float:
        """Predicted seconds of work left here: running remainders plus queued services."""
        return sum(self.running) + sum(self.queued_service_s)
