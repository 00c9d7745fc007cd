"""The pool: model endpoints behind one :class:`~fleetcall.llm.base.LLM`, with a two-level scheduler.

``Orchestrator(tools, llm=pool)`` is all a user writes. Each call is placed in two steps:

1. the *dispatcher* (a pure policy of :mod:`fleetcall.router.dispatcher`) picks an endpoint
   from a snapshot of every endpoint (calls running there with their predicted remaining time,
   its local queue, its service-time predictor, its recently served prompt prefixes);
2. the endpoint's *local queue* (:mod:`fleetcall.router.queue`) decides which waiting call gets
   the next free slot: FCFS for the baselines, by slack for ``slack``.

This module is the I/O around those decisions: slots, waiting, HTTP through the shared
:class:`~fleetcall.router.client.EndpointClient`, retries on another endpoint, a circuit breaker
per endpoint (calls queued at an endpoint whose breaker opens are dispatched again, not lost),
admission control, rpm limits, and the measurements fed back into each endpoint's predictor.

Endpoints are real OpenAI-compatible servers (``http(s)://...``) or emulated GPUs served
in-process (``emulated://GPU/model?tp=N``, see :mod:`fleetcall.sim.emulator`): the same
client talks to both through :class:`~fleetcall.router.client.RoutingTransport`, so a pool of
emulated endpoints runs unchanged under the virtual clock.

Every call's final chunk carries ``info``: ``endpoint``, ``gpu``, ``queue_s`` (waiting for a slot,
all attempts), ``attempts``, ``ttft_s``, ``tpot_s``, ``total_s``, ``prompt_tokens``,
``completion_tokens``, ``cached_tokens``. The first text chunk carries the placement part
(``endpoint``, ``gpu``, ``queue_s``, ``attempts``, ``ttft_s``), for callers that stop reading
early, as the planner does at ``join()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from fleetcall.errors import ConfigError, EndpointError, LLMError
from fleetcall.llm.base import CallContext, Chunk, LLMRequest, Message, count_tokens
from fleetcall.router import prefix
from fleetcall.router.client import EndpointClient, RoutingTransport, emulated_host, make_http_client
from fleetcall.router.config import (BreakerConfig, EndpointConfig, PoolConfig, RetryConfig,
                                      load_pool_config)
from fleetcall.router.views import CallView, EndpointView
from fleetcall.router.dispatcher import (Dispatcher, NoEndpointAvailable,
                                          make_dispatcher, predicted_service_s)
from fleetcall.sim.emulator import EmulatedEndpoint, Faults
from fleetcall.sim.fronts import EmulatorTransport
from fleetcall.sim.responders import Reply, Responder, ScriptedResponder
from fleetcall.router.health import CircuitBreaker, EndpointSnapshot, EndpointStats, probe
from fleetcall.router.predict import OutputLengths, PrefixIndex, ServicePredictor
from fleetcall.router.queue import LocalQueue
from fleetcall.throttle import LoopThrottler, TokenWindow

DEFAULT_PREFIX_CAPACITY_TOKENS = 200_000
DEFAULT_CALL_S = 1.0  # an LLM call's service time before any was measured (remaining-work estimates)  # prefix index size of an endpoint of unknown memory
_QUERIES_REMEMBERED = 100_000  # admitted query ids kept to tell a new query from a known one
_OVERRUN_FLOOR_S = 0.01
_LOAD_WINDOW_S = 30.0  # time constant of an endpoint's measured prefill load  # a running call past its predicted end still holds its slot a little


class OverloadedError(LLMError):
    """Every endpoint is saturated beyond the pool's admission bound: the query is refused now
    rather than queued without bound."""


class _Redispatch(Exception):
    """Raised into a waiting call whose endpoint became unavailable: place it again."""


@dataclass(slots=True)
class _Waiter:
    """One call waiting for a slot (in a local queue) or holding one."""

    view: CallView
    grant: asyncio.Future[str]      # set to the endpoint name when a slot is granted
    service_s: float                # predicted service seconds where it is queued


@dataclass(slots=True)
class _Running:
    """A call holding a slot at an endpoint."""

    end: float                # predicted finish, loop time
    prefill_s: float          # predicted seconds to its first token, alone
    granted_at: float         # loop time the slot was granted
    backlog_s: float = 0.0    # predicted prefill owed to calls ahead of it when granted
    decoding: bool = False    # True once its first token came back


@dataclass(slots=True)
class _Endpoint:
    config: EndpointConfig
    client: EndpointClient
    predictor: ServicePredictor
    prefixes: PrefixIndex
    queue: LocalQueue
    stats: EndpointStats
    throttle: LoopThrottler | None = None        # rpm
    tokens: TokenWindow | None = None            # tpm
    emulated: EmulatedEndpoint | None = None
    waiting: dict[int, _Waiter] = field(default_factory=dict)   # call id -> queued here
    running: dict[int, _Running] = field(default_factory=dict)  # call id -> its slot
    removed: bool = False
    busy_since: float | None = None   # loop time the endpoint last went from idle to busy
    busy_s: float = 0.0               # loop seconds with at least one call running
    prefill_load: float = 0.0         # decayed fraction of recent time with a prompt in prefill
    prefill_tokens: float = 0.0       # EWMA of the uncached prompt tokens of calls granted here
    load_at: float = 0.0              # loop time prefill_load was last brought up to date

    @property
    def name(self) -> str:
        return self.config.name

    def available(self, now: float) -> bool:
        """Not removed, and its breaker closed or ready to let a probe call through."""
        return not self.removed and self.stats.breaker.can_allow(now)

    def free_slots(self) -> int:
        return self.config.slots - len(self.running)

    def prefill_load_at(self, now: float) -> float:
        """Fraction of the last ~:data:`_LOAD_WINDOW_S` seconds this endpoint had a prompt in
        prefill: how often a decode step here shares its iteration with a prefill chunk."""
        busy = 1.0 if any(not r.decoding for r in self.running.values()) else 0.0
        keep = math.exp(-max(now - self.load_at, 0.0) / _LOAD_WINDOW_S)
        return self.prefill_load * keep + busy * (1.0 - keep)

    def note_prefill_change(self, now: float) -> None:
        """Bring :attr:`prefill_load` up to ``now``; call just before the prefill state changes."""
        self.prefill_load = self.prefill_load_at(now)
        self.load_at = now

    def in_prefill(self) -> list[_Running]:
        return [r for r in self.running.values() if not r.decoding]

    def prefill_backlog_s(self, now: float) -> float:
        """Predicted prefill seconds still owed to running calls without a first token: they
        run one after another from the earliest grant (each owes at least a little)."""
        waiting = self.in_prefill()
        if not waiting:
            return 0.0
        owed = sum(r.prefill_s for r in waiting) - (now - min(r.granted_at for r in waiting))
        return max(owed, _OVERRUN_FLOOR_S * len(waiting))


class EndpointPool:
    """Endpoints behind the LLM protocol, scheduled by a named policy (default ``slack``).

    endpoints: :class:`EndpointConfig` objects (or dicts of their fields).
    policy, policy_options: a dispatcher of :func:`~fleetcall.router.dispatcher.make_dispatcher`.
    retry, breaker: fault handling; ``max_queued_per_slot`` bounds waiting calls (admission).
    health_interval_s: seconds between active probes of endpoints whose breaker is open (None:
        only the breaker's own half-open probe by a real call).
    responder, faults, seed: content and fault injection of emulated endpoints;
        stream_interval_s: engine seconds between their streamed chunks (coarser is faster to
        simulate; the first token always comes out on time).

    Use ``async with pool:`` or ``await pool.aclose()`` to stop emulated engines, the health
    loop and HTTP connections.
    """

    def __init__(self, endpoints: Iterable[EndpointConfig | dict[str, Any]], *,
                 policy: str = "slack", policy_options: dict[str, Any] | None = None,
                 retry: RetryConfig | None = None, breaker: BreakerConfig | None = None,
                 health_interval_s: float | None = None, max_queued_per_slot: int = 64,
                 block_tokens: int = 16, responder: Responder | None = None,
                 faults: Faults | None = None, seed: int = 0,
                 stream_interval_s: float | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        if max_queued_per_slot < 1 or block_tokens < 1:
            raise ConfigError("max_queued_per_slot and block_tokens must be >= 1")
        self.dispatcher: Dispatcher = make_dispatcher(policy, **(policy_options or {}))
        self.retry = retry or RetryConfig()
        self.breaker = breaker or BreakerConfig()
        self.health_interval_s = health_interval_s
        self.max_queued_per_slot = max_queued_per_slot
        self.block_tokens = block_tokens
        self.responder = responder
        self.faults = faults
        self.seed = seed
        self.stream_interval_s = stream_interval_s
        self.output_lengths = OutputLengths()
        self._routing = RoutingTransport()
        self._http = http or make_http_client(self._routing, retry=self.retry)
        self._own_http = http is None
        self._endpoints: dict[str, _Endpoint] = {}
        self._ids = itertools.count(1)
        self._health: asyncio.Task[None] | None = None
        self._queries: OrderedDict[str, None] = OrderedDict()  # recently admitted query ids
        self._mean_call_s = DEFAULT_CALL_S  # EWMA of calls' service seconds (queue wait excluded)
        for config in endpoints:
            self.add(config)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: PoolConfig, **kwargs: Any) -> "EndpointPool":
        return cls(config.endpoints, policy=config.policy, policy_options=config.policy_options,
                   retry=config.retry, breaker=config.breaker,
                   health_interval_s=config.health_interval_s,
                   max_queued_per_slot=config.max_queued_per_slot,
                   block_tokens=config.block_tokens, **kwargs)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> "EndpointPool":
        """A pool from a TOML or YAML file (see :class:`PoolConfig`)."""
        return cls.from_config(load_pool_config(path), **kwargs)

    @classmethod
    def emulated(cls, gpus: Sequence[str], model: str, *, tp: int | None = None,
                 slots: int = 16, **kwargs: Any) -> "EndpointPool":
        """A pool of in-process emulated endpoints, one per GPU type named (a TP group each;
        ``tp=None`` picks the smallest that leaves room for a KV cache)."""
        from fleetcall.gpumodel.perf import default_tp
        configs = []
        for i, gpu in enumerate(gpus):
            degree = tp or default_tp(gpu, model)
            configs.append(EndpointConfig(name=f"{gpu}-{i}", base_url=f"emulated://{gpu}/{model}?tp={degree}",
                                          slots=slots))
        return cls(configs, **kwargs)

    def add(self, config: EndpointConfig | dict[str, Any]) -> None:
        """Add an endpoint (also while calls run); ConfigError if the name is taken."""
        if isinstance(config, dict):
            config = EndpointConfig(**config)
        if config.name in self._endpoints:
            raise ConfigError(f"the pool already has an endpoint named {config.name!r}")
        target = config.emulated
        emulated = None
        capacity_tokens = DEFAULT_PREFIX_CAPACITY_TOKENS
        gpu, model = config.gpu, config.model or None
        if target is not None:
            index = len(self._endpoints)
            emulated = EmulatedEndpoint(target.gpu, target.model, tp=target.tp, name=config.name,
                                        responder=self.responder, faults=self.faults,
                                        seed=self.seed * 1000 + index, block_tokens=self.block_tokens,
                                        **({} if self.stream_interval_s is None
                                           else {"stream_interval_s": self.stream_interval_s}))
            self._routing.add(emulated_host(config.name), EmulatorTransport(emulated))
            capacity_tokens = emulated.deployment.kv_capacity_tokens()
            gpu, model = target.gpu, target.model
        predictor = ServicePredictor(gpu, model if gpu != "unknown" else None, config.tp)
        ep = _Endpoint(
            config=config,
            client=EndpointClient(config, self._http, timeout_s=self.retry.attempt_timeout_s),
            predictor=predictor,
            prefixes=PrefixIndex(max(capacity_tokens // self.block_tokens, 1)),
            queue=self.dispatcher.new_queue(),
            stats=EndpointStats(config.name, CircuitBreaker(self.breaker.failures, self.breaker.cooldown_s)),
            throttle=LoopThrottler(config.rpm, 60.0) if config.rpm else None,
            tokens=TokenWindow(config.tpm, 60.0) if config.tpm else None,
            emulated=emulated,
        )
        self._endpoints[config.name] = ep

    async def remove(self, name: str) -> None:
        """Remove an endpoint: its queued calls go elsewhere; calls running there finish."""
        ep = self._endpoint(name)
        ep.removed = True
        self._evict_queue(ep)
        del self._endpoints[name]
        self._routing.remove(emulated_host(name))
        if ep.emulated is not None and not ep.running:
            await ep.emulated.aclose()

    def _endpoint(self, name: str) -> _Endpoint:
        try:
            return self._endpoints[name]
        except KeyError:
            raise ConfigError(f"no endpoint named {name!r}; the pool has: "
                              f"{', '.join(self._endpoints) or '(none)'}") from None

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    # -- the LLM protocol ------------------------------------------------------------------
    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        """Serve one call: place it, wait for a slot, stream it, retry elsewhere on failure."""
        loop = asyncio.get_running_loop()
        self._start_health()
        view = self._call_view(request, loop.time())
        self._admit(view)
        attempts, queue_s, excluded = 0, 0.0, set[str]()
        last: EndpointError | None = None
        while True:
            attempts += 1
            waited_from = loop.time()
            ep = await self._acquire(view, excluded)
            queue_s += loop.time() - waited_from
            yielded = False
            first_token_s: float | None = None
            started = loop.time()
            batch = len(ep.running)
            ep.stats.started()
            try:
                if ep.throttle is not None:
                    await ep.throttle.acquire()
                if ep.tokens is not None:
                    await ep.tokens.acquire(view.prompt_tokens + view.output_tokens)
                sent = _with_metadata(request) if ep.emulated is not None else request
                chunks = ep.client.stream(sent, timeout_s=self.retry.attempt_timeout_s)
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        if chunk.info is not None:
                            chunk = self._finished(ep, view, chunk, started, batch, queue_s, attempts)
                        elif not yielded and chunk.text:
                            first_token_s = loop.time() - started
                            # placement on the first text chunk too: a caller that stops reading
                            # early (the planner, at join()) still learns where the call ran
                            chunk = replace(chunk, info={"endpoint": ep.name, "gpu": ep.config.gpu,
                                                         "queue_s": queue_s, "attempts": attempts,
                                                         "ttft_s": first_token_s})
                            self._first_token(ep, view.call_id)
                        yielded = yielded or bool(chunk.text)
                        yield chunk
                return
            except EndpointError as exc:
                ep.stats.failed(loop.time(), exc.cause, endpoint_fault=exc.retryable)
                last = exc
                if ep.stats.breaker.state(loop.time()) == "open":
                    self._evict_queue(ep)
                if not exc.retryable or yielded or attempts >= self.retry.max_attempts:
                    raise LLMError(f"LLM call failed at endpoint {exc.endpoint!r} after {attempts} "
                                   f"attempt(s): {exc.cause}") from exc
                excluded.add(ep.name)
            except GeneratorExit:
                # The caller stopped reading (the planner does at join()): the endpoint served
                # what was asked of it, so it counts as a success, not an abandoned attempt.
                if yielded:
                    ep.stats.succeeded(loop.time(), ttft_s=first_token_s)
                else:
                    ep.stats.abandoned()
                raise
            except BaseException:
                ep.stats.abandoned()
                raise
            finally:
                self._release(ep, view.call_id)
            await asyncio.sleep(self._backoff(attempts, last))

    def _backoff(self, attempts: int, error: EndpointError | None) -> float:
        pause = self.retry.backoff_s * 2 ** (attempts - 1)
        if error is not None and error.retry_after_s is not None:
            pause = max(pause, min(error.retry_after_s, self.retry.attempt_timeout_s))
        return pause

    def _call_view(self, request: LLMRequest, now: float) -> CallView:
        ctx = request.context
        text = prefix.prompt_text(request.messages)
        hashes = request.prefix_hashes or prefix.block_hashes(text, self.block_tokens)
        expected = request.max_tokens or self.output_lengths.expect(ctx.kind)
        remaining = ctx.remaining_work_s
        if remaining <= 0 and ctx.remaining_calls > 0:
            # the caller knows how many LLM calls its query still needs, not how long they take
            remaining = ctx.remaining_calls * self._mean_call_s
        return CallView(call_id=next(self._ids), query_id=ctx.query_id, kind=ctx.kind,
                        prompt_tokens=count_tokens(text), output_tokens=max(int(expected), 1),
                        deadline=ctx.deadline, remaining_work_s=max(remaining, 0.0),
                        priority=ctx.priority, enqueued_at=now, prefix_hashes=hashes,
                        block_tokens=self.block_tokens)

    def _admit(self, view: CallView) -> None:
        """Refuse a new query (the first call the pool sees of it) when every available
        endpoint's queue is past the bound; calls of queries already admitted always pass, so
        no admitted query is cut off half-way."""
        known = view.query_id and view.query_id in self._queries
        if view.query_id:
            self._queries[view.query_id] = None
            self._queries.move_to_end(view.query_id)
            if len(self._queries) > _QUERIES_REMEMBERED:
                self._queries.popitem(last=False)
        if known:
            return
        now = asyncio.get_running_loop().time()
        live = [ep for ep in self._endpoints.values() if ep.available(now)]
        bound = self.max_queued_per_slot
        if live and all(len(ep.queue) >= bound * ep.config.slots for ep in live):
            if view.query_id:
                del self._queries[view.query_id]
            raise OverloadedError(
                f"the pool is overloaded: every endpoint has {bound} or more calls queued per slot "
                f"({', '.join(f'{ep.name}: {len(ep.queue)}' for ep in live)}); try again later")

    # -- slots and queues ------------------------------------------------------------------
    def _views(self, now: float, excluded: set[str] = frozenset()) -> list[EndpointView]:
        views = []
        all_excluded = all(name in excluded or not ep.available(now)
                           for name, ep in self._endpoints.items())
        for ep in self._endpoints.values():
            queued, services = ep.queue.snapshot(now)
            ok = ep.available(now) and (ep.name not in excluded or all_excluded)
            views.append(EndpointView(
                name=ep.name, slots=ep.config.slots,
                running=tuple(max(r.end - now, _OVERRUN_FLOOR_S) for r in ep.running.values()),
                queued=queued, predictor=ep.predictor, prefixes=ep.prefixes, available=ok,
                queued_service_s=services, prefill_backlog_s=ep.prefill_backlog_s(now),
                prefill_load=ep.prefill_load_at(now), typical_prefill_tokens=int(ep.prefill_tokens)))
        return views

    async def _acquire(self, view: CallView, excluded: set[str]) -> _Endpoint:
        """Dispatch ``view`` and wait until an endpoint grants it a slot."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if not self._endpoints:
                raise NoEndpointAvailable("the pool has no endpoints")
            views = self._views(now, excluded)
            name = self.dispatcher.choose(view, views, now)
            chosen = next(v for v in views if v.name == name)
            ep = self._endpoints[name]
            waiter = _Waiter(view, loop.create_future(), predicted_service_s(view, chosen))
            ep.queue.push(view, waiter.service_s)
            ep.waiting[view.call_id] = waiter
            self._pump(ep, now)
            try:
                granted = await waiter.grant
            except _Redispatch:
                continue
            except BaseException:
                self._forget(waiter)
                raise
            ep = self._endpoints.get(granted)
            if ep is None or ep.removed:  # removed between the grant and this task resuming
                continue
            return ep

    def _forget(self, waiter: _Waiter) -> None:
        """A waiting call was cancelled: take it out of whichever queue holds it, or give back
        the slot it was granted in the meantime."""
        for ep in self._endpoints.values():
            if ep.waiting.pop(waiter.view.call_id, None) is not None:
                ep.queue.remove(waiter.view.call_id)
                return
        if waiter.grant.done() and not waiter.grant.cancelled() and waiter.grant.exception() is None:
            self._release(self._endpoints[waiter.grant.result()], waiter.view.call_id)

    def _pump(self, ep: _Endpoint, now: float) -> None:
        """Give ``ep``'s free slots to its queue's most urgent calls; steal work when idle."""
        if not ep.available(now):
            return
        gate = self.dispatcher.prefill_slots
        while ep.free_slots() > 0 and (gate is None or len(ep.in_prefill()) < gate):
            entry = ep.queue.pop_entry(now)
            if entry is None:
                if not self._steal_into(ep, now):
                    return
                continue
            self._grant(ep, ep.waiting.pop(entry.call.call_id), entry.service_s, now)

    def _grant(self, ep: _Endpoint, waiter: _Waiter, service_s: float, now: float) -> None:
        if not ep.running:
            ep.busy_since = now
        v = waiter.view
        cached = min(ep.prefixes.match(v.prefix_hashes) * v.block_tokens, v.prompt_tokens)
        prefill = ep.predictor.predict(v.prompt_tokens, v.output_tokens, cached_tokens=cached).ttft_s
        ep.note_prefill_change(now)
        uncached = v.prompt_tokens - cached
        ep.prefill_tokens = uncached if ep.prefill_tokens == 0 else ep.prefill_tokens + 0.1 * (uncached - ep.prefill_tokens)
        ep.running[v.call_id] = _Running(now + service_s, prefill, now, ep.prefill_backlog_s(now))
        ep.stats.breaker.allow(now)  # closed: a no-op; half-open: this call is the probe
        waiter.grant.set_result(ep.name)

    def _first_token(self, ep: _Endpoint, call_id: int) -> None:
        """A call's prefill is over: its place in the prefill gate goes to the next call."""
        running = ep.running.get(call_id)
        if running is not None and not running.decoding:
            ep.note_prefill_change(asyncio.get_running_loop().time())
            running.decoding = True
            if ep.name in self._endpoints:
                self._pump(ep, asyncio.get_running_loop().time())

    def _steal_into(self, ep: _Endpoint, now: float) -> bool:
        """Move the most urgent call waiting elsewhere to idle ``ep`` if it finishes sooner."""
        if not any(other.waiting for other in self._endpoints.values() if other is not ep):
            return False  # nothing waits anywhere: skip snapshotting every queue (a hot path)
        views = self._views(now)
        idle = next(v for v in views if v.name == ep.name)
        move = self.dispatcher.steal(idle, [v for v in views if v.name != ep.name], now)
        if move is None:
            return False
        source = self._endpoints[move[0]]
        waiter = source.waiting.pop(move[1])
        source.queue.remove(move[1])
        self._grant(ep, waiter, predicted_service_s(waiter.view, idle), now)
        return True

    def _release(self, ep: _Endpoint, call_id: int) -> None:
        now = asyncio.get_running_loop().time()
        ep.note_prefill_change(now)
        if ep.running.pop(call_id, None) is not None and not ep.running and ep.busy_since is not None:
            ep.busy_s += now - ep.busy_since
            ep.busy_since = None
        ep.stats.queued = len(ep.queue)
        if ep.name in self._endpoints:
            self._pump(ep, now)

    def _evict_queue(self, ep: _Endpoint) -> None:
        """Send every call queued at ``ep`` back to the dispatcher (its breaker opened, or it
        was removed): they are placed again, never lost."""
        for call_id, waiter in list(ep.waiting.items()):
            ep.queue.remove(call_id)
            del ep.waiting[call_id]
            if not waiter.grant.done():
                waiter.grant.set_exception(_Redispatch())

    def _finished(self, ep: _Endpoint, view: CallView, chunk: Chunk, started: float, batch: int,
                  queue_s: float, attempts: int) -> Chunk:
        """Feed a finished call's measurements back, and complete its ``info``."""
        now = asyncio.get_running_loop().time()
        info = dict(chunk.info or {})
        ttft, tpot = info.get("ttft_s"), info.get("tpot_s")
        out = int(info.get("completion_tokens") or (chunk.usage.completion_tokens if chunk.usage else 0))
        cached = int(info.get("cached_tokens") or 0)
        ep.stats.succeeded(now, ttft_s=ttft, tpot_s=tpot)
        running = ep.running.get(view.call_id)
        if ttft is not None:
            # The predictor models a prompt computed alone; the prefill that was still owed to
            # calls ahead of this one is the dispatcher's backlog term, not this call's cost.
            own_ttft = max(ttft - (running.backlog_s if running else 0.0), 0.25 * ttft)
            ep.predictor.observe(view.prompt_tokens, max(out, 1), own_ttft, tpot or 0.0,
                                 max(batch + 1, 1), cached_tokens=cached)
        if out:
            self.output_lengths.observe(view.kind, out)
        ep.prefixes.add(view.prefix_hashes)
        info.update(endpoint=ep.name, gpu=ep.config.gpu, queue_s=queue_s, attempts=attempts)
        info.setdefault("total_s", now - started)
        self._mean_call_s += 0.1 * (float(info["total_s"]) - self._mean_call_s)
        return replace(chunk, info=info)

    # -- health ----------------------------------------------------------------------------
    def _start_health(self) -> None:
        if self.health_interval_s is None or self._health is not None:
            return
        self._health = asyncio.get_running_loop().create_task(self._health_loop(), name="pool-health")

    async def _health_loop(self) -> None:
        """Probe endpoints whose breaker is open; a healthy answer closes it early."""
        loop = asyncio.get_running_loop()
        assert self.health_interval_s is not None
        while True:
            await asyncio.sleep(self.health_interval_s)
            for ep in list(self._endpoints.values()):
                if ep.stats.breaker.state(loop.time()) == "closed":
                    continue
                try:
                    key = ep.config.api_key() if ep.config.api_key_env else None
                except ConfigError as exc:  # the key's variable is gone: the breaker stays open
                    ep.stats.last_error = str(exc)
                    continue
                if await probe(self._http, ep.client.base_url, timeout_s=self.retry.connect_timeout_s,
                               api_key=key):
                    ep.stats.breaker.reset()
                    self._pump(ep, loop.time())

    # -- observability ---------------------------------------------------------------------
    def snapshot(self) -> list[EndpointSnapshot]:
        """Live state of every endpoint (in flight, queued, EWMA TTFT/TPOT, errors, breaker)."""
        now = asyncio.get_running_loop().time()
        out = []
        for ep in self._endpoints.values():
            ep.stats.queued = len(ep.queue)
            out.append(ep.stats.snapshot(now))
        return out

    def busy_seconds(self) -> dict[str, float]:
        """Loop seconds each endpoint had at least one call running (for utilisation)."""
        now = asyncio.get_running_loop().time()
        return {ep.name: ep.busy_s + (now - ep.busy_since if ep.busy_since is not None else 0.0)
                for ep in self._endpoints.values()}

    def engine_stats(self) -> dict[str, Any]:
        """The emulated engines' own counters (batch, KV, prefix hits), by endpoint."""
        return {ep.name: ep.emulated.engine.stats() for ep in self._endpoints.values()
                if ep.emulated is not None}

    async def aclose(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
            self._health = None
        for ep in self._endpoints.values():
            if ep.emulated is not None:
                await ep.emulated.aclose()
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> "EndpointPool":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _with_metadata(request: LLMRequest) -> LLMRequest:
    """The request with its call context in the body's ``metadata`` (OpenAI's field of string
    pairs), so an emulated endpoint's responder can tell a planner call from a joiner call."""
    ctx = request.context
    metadata = {"query_id": ctx.query_id, "kind": ctx.kind, "stage": str(ctx.stage)}
    return replace(request, extra_body={**(request.extra_body or {}), "metadata": metadata})


def script_responder(script: Callable[[LLMRequest], str]) -> Responder:
    """An emulated endpoint's responder from an :class:`~fleetcall.llm.scripted.ScriptedLLM`
    script (a function of the request): the request is rebuilt from the body, with the call
    context the pool put in its ``metadata``. Demos and tests use one script for both."""

    def respond(body: dict[str, Any]) -> Reply:
        meta = body.get("metadata") or {}
        messages = tuple(Message(m.get("role", "user"), m.get("content") or "")
                         for m in body.get("messages", []))
        context = CallContext(query_id=str(meta.get("query_id", "")), kind=str(meta.get("kind", "other")),
                              stage=int(meta.get("stage", 0) or 0))
        request = LLMRequest(messages, context, max_tokens=body.get("max_tokens"),
                             response_format=body.get("response_format"),
                             tools=tuple(body.get("tools") or ()), tool_choice=body.get("tool_choice"))
        return Reply(text=script(request))

    return ScriptedResponder(respond)
