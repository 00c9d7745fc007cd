"""The global dispatcher: which endpoint of the pool a call goes to.

Pure decision code (see docs/architecture.md): a policy looks at a snapshot -- the call
(:class:`CallView`), every endpoint (:class:`EndpointView`) and ``now`` (the loop's time) --
and names an endpoint. It never sleeps, reads a clock or touches a socket; the pool carries the
decision out and feeds measurements back into each endpoint's
:class:`~fleetcall.router.predict.ServicePredictor`. Policies, by name
(:func:`make_dispatcher`):

========== ============================================================ ==============
name       picks                                                        local queue
========== ============================================================ ==============
rr-fcfs    the next available endpoint in turn (vLLM baseline)          ``fcfs``
least-busy fewest calls running + queued (LiteLLM's least-busy)         ``fcfs``
hexgen     HEXGEN-TEXT2SQL's workload-balanced score, weight ``alpha``  ``hexgen``
slack      earliest predicted finish, with prefix-cache affinity (ours) ``urgency``
========== ============================================================ ==============

How the pool uses a policy::

    dispatcher = make_dispatcher("slack", affinity_max_delay_s=1.0)
    queues = {name: dispatcher.new_queue() for name in endpoint_names}   # paired local queues
    name = dispatcher.choose(call_view, endpoint_views, now)             # place a new call
    queues[name].push(call_view, predicted_service_s(call_view, views[name]))
    # when an endpoint has a free slot and an empty queue:
    move = dispatcher.steal(idle_view, other_views, now)   # (endpoint, call_id) or None
"""


from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import Field, ValidationError

from fleetcall.errors import ConfigError
from fleetcall.router.queue import Discipline, LocalQueue, QueueOrder
from fleetcall.router.views import CallId, CallView, EndpointView
from fleetcall.router.placement import (DEFAULT_CHUNK_TOKENS, MAX_LEARNABLE_LOAD,
                                        TIE_TOLERANCE, NoEndpointAvailable, _Knobs, _Turns,
                                        available_endpoints, cached_tokens,
                                        decode_interference_s, expected_batch, pick_steal,
                                        predicted_service_s, prefill_chunk_s,
                                        queued_finish_offsets, slot_free_times,
                                        undo_interference_s, wait_offset)
from fleetcall.router.slack import Placement, Slack, SlackKnobs

__all__ = [  # the policies and their protocol; the prediction model and slack, re-exported
    "DEFAULT_CHUNK_TOKENS", "DEFAULT_DISPATCHER", "MAX_LEARNABLE_LOAD", "TIE_TOLERANCE",
    "Dispatcher", "Hexgen", "HexgenKnobs", "LeastBusy", "NoEndpointAvailable", "NoKnobs",
    "Placement", "RoundRobin", "Slack", "SlackKnobs", "available_endpoints", "cached_tokens",
    "decode_interference_s", "dispatcher_names", "expected_batch", "make_dispatcher",
    "pick_steal", "predicted_service_s", "prefill_chunk_s", "queued_finish_offsets",
    "reads_prefill_state", "slot_free_times", "undo_interference_s", "wait_offset",
]

DEFAULT_DISPATCHER = "slack"


@runtime_checkable
class Dispatcher(Protocol):
    """A dispatch policy and the local queue discipline it pairs with.

    Optional: ``reads_prefill_state = False`` (a class attribute) tells the scheduler core
    that the policy never reads an :class:`EndpointView`'s prefill fields
    (``prefill_backlog_s``, ``prefill_load``, ``typical_prefill_tokens``) or
    ``running_queries``: it then leaves them at their defaults rather than compute them for
    every endpoint at every placement (see :func:`reads_prefill_state`). Without it, they are
    filled in.
    """

    name: str                 # its registry name
    queue_order: QueueOrder   # the local queue order it pairs with
    discipline: Discipline    # that order with its knobs
    prefill_slots: int | None  # prefill chunks of prompt in flight per endpoint before its
                               # queue holds the next call (None: no prefill gate)
    prefill_chunk_tokens: int  # tokens of one such chunk (the engines' chunked-prefill size)

    def choose(self, call: CallView, endpoints: Sequence[EndpointView], now: float) -> str:
        """Name of the available endpoint ``call`` goes to (NoEndpointAvailable if none)."""
        ...

    def new_queue(self) -> LocalQueue:
        """An empty local queue of the paired discipline, one per endpoint."""
        ...

    def steal(self, idle: EndpointView, others: Sequence[EndpointView],
              now: float) -> tuple[str, CallId] | None:
        """A queued call to move to ``idle`` (see :func:`pick_steal`); None: leave all."""
        ...


def reads_prefill_state(dispatcher: object) -> bool:
    """False iff ``dispatcher`` declares that it never reads the views' prefill fields nor
    ``running_queries`` (its ``reads_prefill_state`` attribute; see :class:`Dispatcher`)."""
    return bool(getattr(dispatcher, "reads_prefill_state", True))



class NoKnobs(_Knobs):
    """rr-fcfs and least-busy take no knobs."""


class HexgenKnobs(_Knobs):
    """alpha: weight of relative speed against relative load (1: fastest GPU for the call,
    0: least loaded). The paper tunes it per workload by simulation; its public simulator's
    command line defaults to 0.0. 0.5 weighs both alike."""

    alpha: float = Field(default=0.5, ge=0.0, le=1.0)



class _Baseline:
    """Shared by the baselines: no stealing, no prefill gating (parity with the systems they
    reproduce)."""

    name: str
    queue_order: QueueOrder
    discipline: Discipline
    prefill_slots: int | None = None
    prefill_chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    reads_prefill_state = False  # they look at slots, queues, predictions and load only

    def new_queue(self) -> LocalQueue:
        return LocalQueue.of(self.discipline)

    def steal(self, idle: EndpointView, others: Sequence[EndpointView],
              now: float) -> tuple[str, CallId] | None:
        return None


class RoundRobin(_Baseline):
    """``rr-fcfs``: the available endpoints in turn, FCFS queues (HEXGEN's vLLM baseline)."""

    name = "rr-fcfs"
    queue_order: QueueOrder = "fcfs"
    discipline = Discipline("fcfs")

    def __init__(self, knobs: NoKnobs | None = None) -> None:
        self._next = 0  # position in the endpoint sequence to try first next time

    def choose(self, call: CallView, endpoints: Sequence[EndpointView], now: float) -> str:
        available_endpoints(endpoints, call)
        n = len(endpoints)
        for k in range(n):
            i = (self._next + k) % n
            if endpoints[i].available:
                self._next = i + 1
                return endpoints[i].name
        raise AssertionError("unreachable: available_endpoints() found one")


class LeastBusy(_Baseline):
    """``least-busy``: fewest calls running + queued (LiteLLM's least-busy); ties in turn
    (a rotation starting at the first-listed endpoint). FCFS queues."""

    name = "least-busy"
    queue_order: QueueOrder = "fcfs"
    discipline = Discipline("fcfs")

    def __init__(self, knobs: NoKnobs | None = None) -> None:
        self._turns = _Turns()

    def choose(self, call: CallView, endpoints: Sequence[EndpointView], now: float) -> str:
        cands = available_endpoints(endpoints, call)
        rank = self._turns.ranks(cands)
        return min(cands, key=lambda e: (len(e.running) + len(e.queued), rank[e.name])).name


class Hexgen(_Baseline):
    """``hexgen``: HEXGEN-TEXT2SQL's workload-balanced dispatch, urgency-guided queues.

    For each available endpoint ``e``, with ``t_e`` the call's predicted lone service time there
    and ``w_e`` the endpoint's outstanding predicted work per slot::

        score_e = alpha * t_e / min(t) + (1 - alpha) * w_e / max(w)    (lowest wins)

    The paper's simulator (``WorkloadBalancePolicy``) maximizes ``alpha * t_base / t_e -
    (1 - alpha) * W_e / W_base`` against a baseline engine, with ``W`` the work ever assigned;
    here both terms are relative to the pool's best/worst and ``w`` is the work still
    outstanding, so the score does not drift over a long run. Ties (scores within
    :data:`TIE_TOLERANCE` of the best): faster, then in turn.
    """

    name = "hexgen"
    queue_order: QueueOrder = "hexgen"
    discipline = Discipline("hexgen", aging_per_s=0.0, demote_hopeless=False)

    def __init__(self, knobs: HexgenKnobs | None = None) -> None:
        self.alpha = (knobs or HexgenKnobs()).alpha
        self._turns = _Turns()

    def choose(self, call: CallView, endpoints: Sequence[EndpointView], now: float) -> str:
        cands = available_endpoints(endpoints, call)
        times = [e.predictor.predict(call.prompt_tokens, call.output_tokens).total_s
                 for e in cands]
        loads = [e.outstanding_work_s / e.slots for e in cands]
        fastest, heaviest = min(times), max(loads)
        scores = [self.alpha * times[i] / fastest
                  + (1.0 - self.alpha) * (loads[i] / heaviest if heaviest > 0 else 0.0)
                  for i in range(len(cands))]
        rank = self._turns.ranks(cands)
        top = min(scores) * (1.0 + TIE_TOLERANCE)
        tied = [i for i in range(len(cands)) if scores[i] <= top]
        quick = min(times[i] for i in tied) * (1.0 + TIE_TOLERANCE)
        best = min(tied, key=lambda i: (times[i] > quick, rank[cands[i].name]))
        return cands[best].name



def _build_hexgen(knobs: _Knobs) -> Dispatcher:
    assert isinstance(knobs, HexgenKnobs)
    return Hexgen(knobs)


def _build_slack(knobs: _Knobs) -> Dispatcher:
    assert isinstance(knobs, SlackKnobs)
    return Slack(knobs)


@dataclass(frozen=True, slots=True)
class _Entry:
    knobs: type[_Knobs]                    # validates the keyword arguments
    build: Callable[[_Knobs], Dispatcher]  # gets an instance of `knobs`


# name -> how to build it: the one table of policies
_REGISTRY: dict[str, _Entry] = {
    "rr-fcfs": _Entry(NoKnobs, lambda _: RoundRobin()),
    "least-busy": _Entry(NoKnobs, lambda _: LeastBusy()),
    "hexgen": _Entry(HexgenKnobs, _build_hexgen),
    "slack": _Entry(SlackKnobs, _build_slack),
}


def dispatcher_names() -> list[str]:
    """Names :func:`make_dispatcher` accepts."""
    return list(_REGISTRY)


def make_dispatcher(name: str = DEFAULT_DISPATCHER, **knobs: object) -> Dispatcher:
    """The dispatch policy called ``name``, configured by ``knobs``.

        >>> make_dispatcher("hexgen", alpha=0.3).alpha
        0.3
        >>> make_dispatcher("fastest")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        fleetcall.errors.ConfigError: unknown dispatcher 'fastest'; valid: rr-fcfs, ...

    Raises :class:`ConfigError` for an unknown name, or an unknown or invalid knob (listing
    the policy's knobs).
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"unknown dispatcher {name!r}; valid: {', '.join(_REGISTRY)}")
    try:
        config = entry.knobs(**knobs)
    except ValidationError as exc:
        valid = ", ".join(entry.knobs.model_fields) or "(none)"
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'knobs'}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"bad knobs for dispatcher {name!r}: {problems}; valid knobs: "
                          f"{valid}") from exc
    return entry.build(config)
