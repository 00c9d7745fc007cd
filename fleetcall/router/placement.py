"""The prediction model every placement shares: a call's cached prefix, service time and wait
at an endpoint (its slots, its queue), the decode interference of other prompts' prefill, the
endpoints available, and work stealing. Pure functions of the views
(:mod:`fleetcall.router.views`); the policies themselves are in
:mod:`fleetcall.router.dispatcher` (the baselines, the registry) and
:mod:`fleetcall.router.slack`."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from fleetcall.errors import LLMError
from fleetcall.router.predict import ServicePredictor
from fleetcall.router.queue import Discipline, SortKey
from fleetcall.router.views import CallId, CallView, EndpointView

if TYPE_CHECKING:
    from fleetcall.router.slack import Placement

DEFAULT_CHUNK_TOKENS = 2048  # prompt tokens an engine prefills per iteration (vLLM's default)


class NoEndpointAvailable(LLMError):
    """Every endpoint of the pool is unavailable (unhealthy or its breaker open)."""


def cached_tokens(call: CallView, endpoint: EndpointView) -> int:
    """Prompt tokens of ``call`` probably in ``endpoint``'s prefix cache."""
    if endpoint.prefixes is None or not call.prefix_hashes:
        return 0
    return min(endpoint.prefixes.match(call.prefix_hashes) * call.block_tokens, call.prompt_tokens)


def expected_batch(endpoint: EndpointView) -> int:
    """Calls running beside a new call once it runs there, itself included: everything running
    or queued shares the engine with it (continuous batching), up to the slots."""
    return min(endpoint.slots, len(endpoint.running) + len(endpoint.queued) + 1)


def predicted_service_s(call: CallView, endpoint: EndpointView, batch: int | None = None) -> float:
    """Predicted service seconds of ``call`` at ``endpoint`` with its cached prefix there
    (``batch`` defaults to :func:`expected_batch`). What the pool passes to ``LocalQueue.push``."""
    b = expected_batch(endpoint) if batch is None else batch
    return endpoint.predictor.predict(call.prompt_tokens, call.output_tokens,
                                      cached_tokens=cached_tokens(call, endpoint), batch=b).total_s


def slot_free_times(endpoint: EndpointView) -> list[float]:
    """Heap of seconds from now until each slot frees, from the running calls' remainders (an
    endpoint running more calls than its slots, after a resize, counts them all as slots)."""
    times = [0.0] * (endpoint.slots - len(endpoint.running))
    times += sorted([0.0 if r < 0.0 else r for r in endpoint.running])  # max(r, 0.0)
    return times  # ascending (the free slots first), so already a heap


def queued_finish_offsets(endpoint: EndpointView) -> list[float]:
    """Seconds from now until each queued call finishes (same order as ``queued``), simulating
    the slots: each call starts on the earliest free slot, in serve order."""
    if not endpoint.available:
        return [math.inf] * len(endpoint.queued)
    free = slot_free_times(endpoint)
    out = []
    for service in endpoint.queued_service_s:
        end = heapq.heappop(free) + service
        heapq.heappush(free, end)
        out.append(end)
    return out


def wait_offset(endpoint: EndpointView, ahead_services: Sequence[float]) -> float:
    """Seconds from now until a slot is free for a call served after ``ahead_services``."""
    if not ahead_services and len(endpoint.running) < endpoint.slots:
        return 0.0  # a slot is free now (a hot path: an idle endpoint at every placement)
    free = slot_free_times(endpoint)
    replace = heapq.heapreplace  # the earliest free slot takes the next call (pop + push)
    for service in ahead_services:
        replace(free, free[0] + service)
    return free[0]


def decode_interference_s(tokens: int, tpot_s: float, chunk_s: float, prefill_load: float) -> float:
    """Seconds that other prompts' prefill adds to decoding ``tokens`` tokens.

    An engine with continuous batching runs a prefill chunk (``chunk_s`` seconds) in the same
    iteration as every running call's decode step. If prompts are in prefill a fraction
    ``prefill_load`` (0..1) of the time, the decoding call spends that fraction of its wall time
    in chunk-long iterations (one token each) and the rest in plain decode steps (``tpot_s``
    each), so its tokens come at ``load / chunk_s + (1 - load) / tpot_s`` per second::

        >>> decode_interference_s(100, 0.01, 1.0, 0.0), decode_interference_s(100, 0.01, 1.0, 1.0)
        (0.0, 99.0)
        >>> round(decode_interference_s(100, 0.01, 1.0, 0.5), 2)  # half the time: twice as long
        0.98

    ``prefill_load`` is a fraction of *time*, not of iterations: charging every token a chunk
    with probability ``prefill_load`` over-counts by ``chunk_s / tpot_s`` (tens of times on a
    large model), which made a fast GPU that had just prefilled look slower than an idle slow
    one. A chunk never shortens a step (an iteration takes at least ``tpot_s``).
    """
    load = min(max(prefill_load, 0.0), 1.0)
    if tokens <= 0 or load <= 0.0 or tpot_s <= 0.0:
        return 0.0
    chunk = max(chunk_s, tpot_s)
    per_token = 1.0 / (load / chunk + (1.0 - load) / tpot_s)
    return tokens * max(per_token - tpot_s, 0.0)


# A decode measured while other prompts' prefill took more than this fraction of its time says
# too little about the endpoint's own decode speed to learn from (see undo_interference_s).
MAX_LEARNABLE_LOAD = 0.8


def undo_interference_s(tpot_s: float, chunk_s: float, prefill_load: float) -> float:
    """The inverse of :func:`decode_interference_s`: the seconds per output token a call would
    have taken alone, from the ``tpot_s`` it took while other prompts were in prefill a
    fraction ``prefill_load`` of its decode (their chunks ``chunk_s`` each). 0.0 (no usable
    sample, which the predictor ignores) when that load is above :data:`MAX_LEARNABLE_LOAD` or
    the measurement cannot be explained by it.

        >>> slowed = 0.01 + decode_interference_s(100, 0.01, 1.0, 0.3) / 100
        >>> round(undo_interference_s(slowed, 1.0, 0.3), 6)
        0.01
    """
    load = min(max(prefill_load, 0.0), 1.0)
    if tpot_s <= 0.0 or load <= 0.0 or chunk_s <= tpot_s:
        return tpot_s
    if load > MAX_LEARNABLE_LOAD:
        return 0.0
    rate = 1.0 / tpot_s - load / chunk_s  # tokens a second of the plain decode steps
    alone = (1.0 - load) / rate if rate > 0.0 else 0.0
    return alone if 0.25 * tpot_s <= alone <= tpot_s else 0.0


def prefill_chunk_s(predictor: ServicePredictor, chunk_tokens: int,
                    typical_prefill_tokens: int) -> float:
    """Seconds of one prefill chunk at an endpoint: as long as the prompts it computes
    (``typical_prefill_tokens``, 0 if unknown), at most the engine's ``chunk_tokens``."""
    chunk = chunk_tokens
    if typical_prefill_tokens > 0:
        chunk = min(chunk, typical_prefill_tokens)
    return predictor.predict(chunk, 1).ttft_s


class _Turns:
    """Tie-breaking by rotation: each decision starts the endpoint order one further, so
    endpoints that tie (idle twins) take calls in turn and all of their prefix caches warm up,
    instead of the first-listed one taking every tie. Deterministic (the rotation starts at the
    first endpoint), so simulations replay exactly."""

    __slots__ = ("turn",)

    def __init__(self) -> None:
        self.turn = 0  # decisions made so far

    def ranks(self, candidates: Sequence[EndpointView | Placement]) -> dict[str, int]:
        """Candidate endpoint name -> its tie rank for this decision (0 first); advances."""
        n = len(candidates)
        ranks = {_name(e): (i - self.turn) % n for i, e in enumerate(candidates)}
        self.turn += 1
        return ranks


def _name(candidate: EndpointView | Placement) -> str:
    return candidate.name if isinstance(candidate, EndpointView) else candidate.endpoint


# hexgen scores within this fraction of the best tie (learned predictions of identical GPUs
# differ by noise); slack's placements tie exactly by default (its knob ``tie_tolerance``)
TIE_TOLERANCE = 0.01


def available_endpoints(endpoints: Sequence[EndpointView], call: CallView) -> list[EndpointView]:
    """The available endpoints, or :class:`NoEndpointAvailable` naming every endpoint."""
    ok = [e for e in endpoints if e.available]
    if not ok:
        names = ", ".join(e.name for e in endpoints) or "(the pool is empty)"
        raise NoEndpointAvailable(f"no endpoint is available for call {call.call_id} "
                                  f"({call.kind}, query {call.query_id}); unavailable: {names}")
    return ok



class _Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)



def pick_steal(idle: EndpointView, others: Sequence[EndpointView], now: float, *,
               discipline: Discipline | None = None,
               min_gain_s: float = 0.05) -> tuple[str, CallId] | None:
    """A waiting call to move to ``idle``: ``(endpoint it waits at, call_id)``, or None.

    Only when ``idle`` is available, has a free slot and an empty queue. Queued calls elsewhere
    are taken most urgent first (by ``discipline``'s key, default the urgency queue's); the
    first one that would finish at least ``min_gain_s`` sooner here (served at once, with its
    cached prefix here) than its predicted finish where it waits (slot simulation of that
    queue; never, if that endpoint is unavailable) is returned. The pool then removes it from
    that queue and pushes it here.
    """
    if not idle.available or idle.queued or len(idle.running) >= idle.slots:
        return None
    disc = discipline or Discipline("urgency")
    # (key, position, endpoint name, call, predicted finish offset there)
    waiting: list[tuple[SortKey, int, str, CallView, float]] = []
    for e in others:
        if e.name == idle.name or not e.queued:
            continue
        finishes = queued_finish_offsets(e)
        for call, service, finish in zip(e.queued, e.queued_service_s, finishes):
            waiting.append((disc.key(call, service, now), len(waiting), e.name, call, finish))
    waiting.sort(key=lambda w: (w[0], w[1]))
    batch = len(idle.running) + 1
    for _, _, name, call, finish in waiting:
        if predicted_service_s(call, idle, batch) + min_gain_s < finish:
            return name, call.call_id
    return None
