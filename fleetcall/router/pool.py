"""The pool: model endpoints behind one :class:`~fleetcall.llm.base.LLM`, with a two-level scheduler.

``Orchestrator(tools, llm=pool)`` is all a user writes. Each call is placed in two steps:

1. the *dispatcher* (a pure policy of :mod:`fleetcall.router.dispatcher`) picks an endpoint
   from a snapshot of every endpoint (calls running there with their predicted remaining time,
   its local queue, its service-time predictor, its recently served prompt prefixes);
2. the endpoint's *local queue* (:mod:`fleetcall.router.queue`) decides which waiting call gets
   the next free slot: FCFS for the baselines, by slack for ``slack``.

Every decision, and the state behind it (slots, queues, predictors, breakers, rate-limit
cooldowns, attempts), lives in the :class:`~fleetcall.router.core.SchedulerCore`, a pure state
machine. This module is its I/O shell: it submits each call, awaits the core's grant, streams
the attempt through the shared :class:`~fleetcall.router.client.EndpointClient`, and reports
back (first token, finished with measurements, failed by kind, cancelled -- exactly once
whatever await point a cancellation hits). One timer (``loop.call_at``) wakes the core at
:meth:`~fleetcall.router.core.SchedulerCore.next_wakeup`; an optional health loop probes
endpoints whose breaker is open. Failures by kind: :mod:`fleetcall.router.faults`.

Endpoints are real OpenAI-compatible servers (``http(s)://...``) or in-process backends found
by URL scheme (``emulated://GPU/model?tp=N``, see :mod:`fleetcall.router.backend`), reached by
the same client through :class:`~fleetcall.router.client.RoutingTransport`, so a pool of
emulated endpoints runs unchanged under the virtual clock.

Every call's final chunk carries ``info``: ``endpoint``, ``gpu``, ``model``, ``queue_s`` (waiting for a slot,
all attempts), ``attempts``, ``ttft_s``, ``tpot_s``, ``total_s``, ``prompt_tokens``,
``completion_tokens``, ``cached_tokens``. The first text chunk carries the placement part
(``endpoint``, ``gpu``, ``model``, ``queue_s``, ``attempts``, ``ttft_s``), for callers that stop reading
early, as the planner does at ``join()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from fleetcall.errors import ConfigError, EndpointError, LLMError
from fleetcall.llm.base import CallContext, Chunk, LLMRequest, Message, ModelInfo, closing, count_tokens
from fleetcall.router import prefix
from fleetcall.router.backend import Backend, BackendSpec, ClientBackend, resolve_backend
from fleetcall.router.client import EndpointClient, RoutingTransport, emulated_host, make_http_client
from fleetcall.router.config import (BreakerConfig, EndpointConfig, PoolConfig, RetryConfig,
                                      load_pool_config)
from fleetcall.router.core import Action, Grant, Outcome, Retired, SchedulerCore
from fleetcall.router.coreclient import AsyncCoreClient, CoreClient
from fleetcall.router.dispatcher import Dispatcher
from fleetcall.router.faults import (Fail, FailWhy, Failure, FaultKind, NoEndpointError,
                                     OverloadedError, classify)
from fleetcall.router.health import EndpointSnapshot, probe
from fleetcall.router.predict import OutputLengths
from fleetcall.router.state import EndpointSpec
from fleetcall.router.views import CallView
from fleetcall.throttle import LoopThrottler, TokenWindow

__all__ = ["EndpointPool", "NoEndpointError", "OverloadedError", "script_responder"]

DEFAULT_PREFIX_CAPACITY_TOKENS = 200_000  # prefix index size of an endpoint of unknown memory
# An http endpoint tagged so gets each call's context in the body's ``metadata``, as in-process
# emulated ones do (an emulated server over HTTP whose script tells planner from joiner)
CALL_METADATA_TAG = "call-metadata"


@dataclass(slots=True)
class _Link:
    """How the shell reaches one endpoint."""

    config: EndpointConfig
    client: EndpointClient
    backend: Backend | None = None         # in-process backends (emulated://); None: HTTP
    throttle: LoopThrottler | None = None  # rpm
    tokens: TokenWindow | None = None      # tpm


@dataclass(slots=True, eq=False)
class _Call:
    """One call the shell is serving: the future its next action (Grant or Fail) lands in."""

    view: CallView
    future: asyncio.Future[Grant | Fail]
    ended: bool = False                    # True once the core knows it ended (exactly once)
    served: bool = False                   # True once an attempt succeeded
    last_error: EndpointError | None = None  # its latest failed attempt, chained into errors


class EndpointPool:
    """Endpoints behind the LLM protocol, scheduled by a named policy (default ``slack``).

    endpoints: :class:`EndpointConfig` objects (or dicts of their fields).
    policy, policy_options: a dispatcher of :func:`~fleetcall.router.dispatcher.make_dispatcher`.
    retry, breaker: fault handling; ``max_queued_per_slot`` bounds waiting calls (admission).
    health_interval_s: seconds between active probes of endpoints whose breaker is open (None:
        only the breaker's own half-open probe by a real call).
    responder, faults, seed, stream_interval_s: options of in-process backends, handed to them
        as they are (the emulated one: what answers say, injected faults, their seed, engine
        seconds between streamed chunks); ``backend_options`` adds any other.
    http: the shared client (default: one over a RoutingTransport the pool owns).
    core: where scheduling happens (a :class:`~fleetcall.router.coreclient.CoreClient`; default:
        a :class:`SchedulerCore` of ``policy``, ``retry``, ``breaker`` in this process). An
        :class:`~fleetcall.router.coreclient.AsyncCoreClient` (a core shared by several
        processes, :mod:`fleetcall.distributed`) is started with the pool's first call and
        closed with the pool.

    Use ``async with pool:`` or ``await pool.aclose()`` to stop backends, the health loop and
    HTTP connections.
    """

    def __init__(self, endpoints: Iterable[EndpointConfig | dict[str, Any]], *,
                 policy: str = "slack", policy_options: dict[str, Any] | None = None,
                 retry: RetryConfig | None = None, breaker: BreakerConfig | None = None,
                 health_interval_s: float | None = None, max_queued_per_slot: int = 64,
                 block_tokens: int = 16, responder: Callable[[dict[str, Any]], Any] | None = None,
                 faults: Any = None, seed: int = 0, stream_interval_s: float | None = None,
                 backend_options: dict[str, Any] | None = None,
                 http: httpx.AsyncClient | None = None, core: CoreClient | None = None) -> None:
        if max_queued_per_slot < 1 or block_tokens < 1:
            raise ConfigError("max_queued_per_slot and block_tokens must be >= 1")
        self.retry = retry or RetryConfig()
        self.breaker = breaker or BreakerConfig()
        self.health_interval_s = health_interval_s
        self.max_queued_per_slot = max_queued_per_slot
        self.block_tokens = block_tokens
        options = {"responder": responder, "faults": faults, "seed": seed or None,
                   "stream_interval_s": stream_interval_s, **(backend_options or {})}
        self._backend_options = {k: v for k, v in options.items() if v is not None}
        self._core: CoreClient = core if core is not None else SchedulerCore(
            policy, policy_options, retry=self.retry, breaker=self.breaker,
            max_queued_per_slot=max_queued_per_slot)
        # a core that answers later: its actions come back through _apply
        self._async_core = core if isinstance(core, AsyncCoreClient) else None
        if self._async_core is not None:
            self._async_core.connect(self._apply)
        self._routing = RoutingTransport()
        self._http = http or make_http_client(self._routing, retry=self.retry)
        self._own_http = http is None
        self._links: dict[str, _Link] = {}       # live and retiring endpoints, by name
        self._closing: list[Backend] = []        # backends of retired endpoints, to close
        self._calls: dict[object, _Call] = {}    # call id -> the call, until it ends
        self._ids = itertools.count(1)
        self._health: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # wakes the core at next_wakeup()
        self._timer_at: float | None = None
        self._now = 0.0  # latest loop time seen (for changes made outside a running loop)
        self._closed = False  # True once aclose() began: no timer is armed any more
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop its calls run on
        self._in_process = False  # True once an endpoint served in-process was added
        for config in endpoints:
            self.add(config)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: PoolConfig, **kwargs: Any) -> EndpointPool:
        return cls(config.endpoints, policy=config.policy, policy_options=config.policy_options,
                   retry=config.retry, breaker=config.breaker,
                   health_interval_s=config.health_interval_s,
                   max_queued_per_slot=config.max_queued_per_slot,
                   block_tokens=config.block_tokens, **kwargs)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> EndpointPool:
        """A pool from a TOML or YAML file (see :class:`PoolConfig`)."""
        return cls.from_config(load_pool_config(path), **kwargs)

    @classmethod
    def emulated(cls, gpus: Sequence[str], model: str, *, tp: int | None = None,
                 slots: int = 16, gpu_cost_per_hour: Mapping[str, float] | None = None,
                 **kwargs: Any) -> EndpointPool:
        """A pool of in-process emulated endpoints, one per GPU type named (a TP group each;
        ``tp=None`` picks the smallest that leaves room for a KV cache). ``gpu_cost_per_hour``:
        GPU type -> what one GPU costs an hour; an endpoint's ``cost_per_hour`` is that x its
        TP degree (types left out: unknown)."""
        from fleetcall.gpumodel.perf import default_tp
        configs = []
        for i, gpu in enumerate(gpus):
            degree = tp or default_tp(gpu, model)
            price = (gpu_cost_per_hour or {}).get(gpu)
            configs.append(EndpointConfig(name=f"{gpu}-{i}", slots=slots,
                                          base_url=f"emulated://{gpu}/{model}?tp={degree}",
                                          cost_per_hour=None if price is None else price * degree))
        return cls(configs, **kwargs)

    def add(self, config: EndpointConfig | dict[str, Any]) -> None:
        """Add an endpoint (also while calls run); ConfigError if the name is taken, or the
        pool is closed."""
        if self._closed:
            raise ConfigError("the pool is closed (aclose() was called): no endpoint can be added")
        if isinstance(config, dict):
            config = EndpointConfig(**config)
        if config.name in self._links:  # live, or removed and still finishing calls
            raise ConfigError(self._core.name_taken(config.name))
        factory = resolve_backend(config.base_url)
        backend = None if factory is None else factory(BackendSpec(
            config, len(self._core.endpoints), self.block_tokens, self._backend_options))
        gpu, model, tp = config.gpu, config.model or None, config.tp
        capacity = DEFAULT_PREFIX_CAPACITY_TOKENS
        if backend is not None:
            gpu, model, tp = backend.gpu, backend.model, backend.tp
            capacity = backend.capacity_tokens or capacity
            self._routing.add(emulated_host(config.name), backend.transport)
            self._in_process = True
        spec = EndpointSpec(config.name, config.slots, gpu, model, tp,
                            max(capacity // self.block_tokens, 1), f"{gpu}|{model}|{tp}",
                            cost_per_hour=config.cost_per_hour)
        self._links[config.name] = _Link(
            config, _client_for(config, backend, self._http, self.retry.attempt_timeout_s),
            backend, LoopThrottler(config.rpm, 60.0) if config.rpm else None,
            TokenWindow(config.tpm, 60.0) if config.tpm else None)
        self._apply(self._core.add_endpoint(spec, self._time()))

    async def remove(self, name: str) -> None:
        """Remove an endpoint: its queued calls go elsewhere; calls running there finish."""
        self._apply(self._core.remove_endpoint(name, self._time()))
        await self._close_retired()

    @property
    def endpoints(self) -> list[str]:
        return self._core.endpoints

    @property
    def dispatcher(self) -> Dispatcher:
        return self._core.dispatcher

    @property
    def core(self) -> CoreClient:
        """The scheduler core (read its state; change it only through the pool)."""
        return self._core

    @property
    def output_lengths(self) -> OutputLengths:
        return self._core.output_lengths

    @property
    def model_info(self) -> ModelInfo:
        """What the pool's model can do: the weakest of its endpoints' (JSON schemas only if
        every endpoint enforces them, the smallest context); read by ``plan_format="auto"``."""
        infos = [self._links[name].config.model_info for name in self._core.endpoints if name in self._links]
        return ModelInfo.weakest(infos)

    # -- the LLM protocol ------------------------------------------------------------------
    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        """Serve one call: submitted to the core, streamed from each endpoint it grants, until
        it succeeds or the core fails it (OverloadedError, NoEndpointError, AttemptsExhausted;
        NoEndpointError at once once the pool is closed; LLMError while another event loop's
        calls run)."""
        loop = asyncio.get_running_loop()
        if self._closed:
            raise NoEndpointError("the pool is closed (aclose() was called): the call was not sent")
        self._bind(loop)
        self._start_health(loop)
        if self._async_core is not None:
            self._async_core.start()
        call = _Call(self._call_view(request, loop.time()), loop.create_future())
        self._calls[call.view.call_id] = call
        try:
            self._apply(self._core.submit(call.view, loop.time()))
            while not call.served:
                grant = await self._next_grant(call)
                chunks = self._attempt(call, grant, request)
                async with closing(chunks):
                    async for chunk in chunks:
                        yield chunk
        finally:
            self._abandon(call)

    async def _next_grant(self, call: _Call) -> Grant:
        """Wait for the core's next word on ``call``: a grant, or the error it ends with."""
        action = await call.future
        call.future = asyncio.get_running_loop().create_future()
        if isinstance(action, Fail):
            raise action.error() from call.last_error
        if self._closed:  # granted as the pool closed (its failed attempt was placed again)
            self._end(call, self._core.cancelled(call.view.call_id, self._time()))
            raise self._closed_fail(call).error() from call.last_error
        return action

    async def _attempt(self, call: _Call, grant: Grant,
                       request: LLMRequest) -> AsyncIterator[Chunk]:
        """One attempt at the granted endpoint; reports its end (or failure) to the core."""
        loop = asyncio.get_running_loop()
        link = self._links[grant.endpoint]
        self._apply(self._core.started(call.view.call_id, loop.time()))
        if not self._within_limits(call, link, loop.time()):
            return
        started, first_token_s, yielded = loop.time(), None, False
        try:
            if (link.backend is not None and link.backend.call_metadata) \
                    or CALL_METADATA_TAG in link.config.tags:
                request = _with_metadata(request)
            chunks = link.client.stream(request, timeout_s=self.retry.attempt_timeout_s)
            async with closing(chunks):
                async for chunk in chunks:
                    if chunk.info is not None:
                        chunk = self._finish(call, grant, link, chunk, started)
                    elif not yielded and chunk.text:
                        first_token_s = loop.time() - started
                        # placement on the first text chunk too: a caller that stops reading
                        # early (the planner, at join()) still learns where the call ran
                        chunk = replace(chunk, info={
                            "endpoint": grant.endpoint, "gpu": link.config.gpu, "model": link.config.model,
                            "queue_s": grant.queue_s, "attempts": grant.attempt,
                            "ttft_s": first_token_s})
                        self._apply(self._core.first_token(call.view.call_id, loop.time()))
                    yielded = yielded or bool(chunk.text)
                    yield chunk
        except EndpointError as exc:
            call.last_error = exc
            self._apply(self._core.failed(call.view.call_id, loop.time(), classify(exc)))
        except GeneratorExit:
            # The caller stopped reading (the planner does at join()): the endpoint served
            # what was asked of it, so it counts as a success, not an abandoned attempt.
            if yielded and not call.ended:
                self._end(call, self._core.finished(call.view.call_id, loop.time(),
                                                    Outcome(ttft_s=first_token_s, complete=False)),
                          served=True)
            raise

    def _within_limits(self, call: _Call, link: _Link, now: float) -> bool:
        """Count the attempt in the endpoint's own rpm/tpm windows; when one is full, the
        endpoint is rate-limited until it frees (as by a 429 with that Retry-After: the call
        goes elsewhere at once, or waits) and the attempt is not sent: False."""
        tokens = call.view.prompt_tokens + call.view.output_tokens
        rpm_at = link.throttle.free_at() if link.throttle is not None else now
        tpm_at = link.tokens.free_at(tokens) if link.tokens is not None else now
        if max(rpm_at, tpm_at) <= now:
            if link.throttle is not None:
                link.throttle.record()
            if link.tokens is not None:
                link.tokens.record(tokens)
            return True
        limit, until = ("rpm", rpm_at) if rpm_at >= tpm_at else ("tpm", tpm_at)
        name, config = link.config.name, link.config
        cause = (f"its {limit} limit ({config.rpm if limit == 'rpm' else config.tpm} per minute) "
                 f"is reached")
        self._apply(self._core.rate_limited(name, now, until, status=limit))
        self._apply(self._core.failed(call.view.call_id, now,
                                      Failure(FaultKind.RATE_LIMITED, cause, retry_at=until)))
        return False

    def _finish(self, call: _Call, grant: Grant, link: _Link, chunk: Chunk,
                started: float) -> Chunk:
        """The final chunk: report the measurements, complete its ``info``."""
        now = asyncio.get_running_loop().time()
        info = dict(chunk.info or {})
        out = int(info.get("completion_tokens")
                  or (chunk.usage.completion_tokens if chunk.usage else 0))
        info.update(endpoint=grant.endpoint, gpu=link.config.gpu, queue_s=grant.queue_s,
                    attempts=grant.attempt)
        info.setdefault("total_s", now - started)
        outcome = Outcome(info.get("ttft_s"), info.get("tpot_s"), float(info["total_s"]), out,
                          int(info.get("cached_tokens") or 0))
        self._end(call, self._core.finished(call.view.call_id, now, outcome), served=True)
        return replace(chunk, info=info)

    def _end(self, call: _Call, actions: list[Action], *, served: bool = False) -> None:
        call.ended, call.served = True, served
        self._calls.pop(call.view.call_id, None)
        self._apply(actions)

    def _abandon(self, call: _Call) -> None:
        """The call's task is leaving (cancelled, or an error of its own): unless the core
        already knows it ended, report it cancelled -- once, wherever it was."""
        if not call.ended:
            self._end(call, self._core.cancelled(call.view.call_id, self._time()))

    def _call_view(self, request: LLMRequest, now: float) -> CallView:
        ctx = request.context
        text = prefix.prompt_text(request.messages)
        tokens = count_tokens(text)
        hashes = request.prefix_hashes
        if not hashes:
            hashes = prefix.block_hashes(text, self.block_tokens)
            if self._in_process:  # an emulated endpoint here will hash and count it again
                prefix.HANDOFF.put(text, self.block_tokens, hashes, tokens)
        expected = request.max_tokens or self._core.output_lengths.expect(ctx.kind)
        remaining = ctx.remaining_work_s
        if remaining <= 0 and ctx.remaining_calls > 0:
            # the caller knows how many LLM calls its query still needs, not how long they take
            remaining = ctx.remaining_calls * self._core.mean_call_s
        return CallView(call_id=next(self._ids), query_id=ctx.query_id, kind=ctx.kind,
                        prompt_tokens=tokens, output_tokens=max(int(expected), 1),
                        deadline=ctx.deadline, remaining_work_s=max(remaining, 0.0),
                        priority=ctx.priority, enqueued_at=now, prefix_hashes=hashes,
                        block_tokens=self.block_tokens)

    # -- carrying out the core's actions ---------------------------------------------------
    def _apply(self, actions: list[Action]) -> None:
        """Hand each action to its call (or retire an endpoint), then re-arm the timer."""
        for action in actions:
            if isinstance(action, Retired):
                link = self._links.pop(action.endpoint)
                if link.backend is not None:
                    self._routing.remove(emulated_host(action.endpoint))
                    self._closing.append(link.backend)
                continue
            call = self._calls.get(action.call_id)
            if call is None:
                continue  # its task is gone and reported so: nothing waits for this
            if isinstance(action, Fail):
                call.ended = True
                del self._calls[action.call_id]
            if not call.future.done():  # done: cancelled while waiting; its task reports
                call.future.set_result(action)
        if self._closed:
            self._end_waiting()  # a call placed again after aclose() (its attempt failed)
        self._rearm()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve ``loop`` (one at a time): a pool used again under a new loop (``asyncio.run``
        once more) leaves the old loop's timer and health task behind, and the calls the old
        loop closed on (they can never report). LLMError while the old loop still runs calls,
        or if the new loop's clock is behind the pool's (the core keeps one clock)."""
        old = self._loop
        if old is loop:
            return
        if old is not None and not old.is_closed() and self._calls:
            raise LLMError("the pool is serving calls on another event loop: use one pool per "
                           "event loop, or let those calls end first")
        if loop.time() < max(self._now, self._core.clock):
            raise LLMError(f"this event loop's clock ({loop.time():.3f} s) is behind the pool's "
                           f"({max(self._now, self._core.clock):.3f} s): a pool cannot move to "
                           f"an earlier clock")
        self._loop = loop
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, None
        if self._health is not None and not self._health.get_loop().is_closed():
            self._health.cancel()
        self._health = None
        stale, self._calls = list(self._calls.values()), {}
        actions: list[Action] = []
        for call in stale:
            if self._core.where(call.view.call_id) is not None:
                actions += self._core.cancelled(call.view.call_id, loop.time())
        self._apply(actions)

    def _time(self) -> float:
        """The running loop's time (the latest seen when there is no running loop)."""
        try:
            self._now = asyncio.get_running_loop().time()
        except RuntimeError:
            pass
        return self._now

    def _rearm(self) -> None:
        """One timer: wake the core when its next timed transition is due."""
        due = None if self._closed else self._core.next_wakeup()
        if due == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, due
        if due is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._timer_at = None  # armed by the next change made inside the loop
            return
        self._timer = loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        self._apply(self._core.advance(self._time()))

    async def _close_retired(self) -> None:
        while self._closing:
            await self._closing.pop().aclose()

    # -- health ----------------------------------------------------------------------------
    def _start_health(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.health_interval_s is None or self._health is not None:
            return
        self._health = loop.create_task(self._health_loop(), name="pool-health")

    async def _health_loop(self) -> None:
        """Probe endpoints whose breaker is open; a healthy answer closes it early."""
        assert self.health_interval_s is not None
        while True:
            await asyncio.sleep(self.health_interval_s)
            for name in self._core.endpoints:
                if name not in self._links or \
                        self._core.endpoint(name).breaker.state(self._time()) == "closed":
                    continue
                link = self._links[name]
                try:
                    key = link.config.api_key() if link.config.api_key_env else None
                except ConfigError as exc:  # the key's variable is gone: the breaker stays open
                    self._core.endpoint(name).stats.last_error = str(exc)
                    continue
                if await probe(self._http, link.client.base_url,
                               timeout_s=self.retry.connect_timeout_s, api_key=key) \
                        and name in self._core.endpoints:
                    self._apply(self._core.healthy(name, self._time()))

    # -- observability ---------------------------------------------------------------------
    def snapshot(self) -> list[EndpointSnapshot]:
        """Live state of every endpoint (in flight, queued, EWMA TTFT/TPOT, errors, breaker)."""
        return self._core.snapshot(self._time())

    def busy_seconds(self) -> dict[str, float]:
        """Loop seconds each endpoint had at least one call running (for utilisation)."""
        return self._core.busy_seconds(self._time())

    def engine_stats(self) -> dict[str, Any]:
        """In-process backends' own counters (the emulated engines' batch, KV, prefix hits)."""
        out = {}
        for name in self._core.endpoints:
            backend = self._links[name].backend
            stats = backend.stats() if backend is not None else None
            if stats is not None:
                out[name] = stats
        return out

    async def aclose(self) -> None:
        """Stop the health loop and the timer, end the calls still waiting for an endpoint
        (LLMError: the pool was closed), close backends and the HTTP client. Calls made or
        placed again afterwards fail at once (NoEndpointError)."""
        with contextlib.suppress(LLMError):  # closed from a new loop: drop the old loop's parts
            self._bind(asyncio.get_running_loop())
        self._closed = True
        self._end_waiting()
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
            self._health = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, None
        if self._async_core is not None:
            await self._async_core.aclose()
        self._closing += [link.backend for link in self._links.values() if link.backend is not None]
        self._links = {n: replace(link, backend=None) for n, link in self._links.items()}
        await self._close_retired()
        if self._own_http:
            await self._http.aclose()

    def _end_waiting(self) -> None:
        now = self._time()
        for call in list(self._calls.values()):
            where = self._core.where(call.view.call_id)
            if where is None or where[0] == "running":
                continue  # running calls end as their transport closes
            self._core.cancelled(call.view.call_id, now)  # its actions: moot, all end here
            call.ended = True
            del self._calls[call.view.call_id]
            if not call.future.done():
                call.future.set_result(self._closed_fail(call))

    @staticmethod
    def _closed_fail(call: _Call) -> Fail:
        return Fail(call.view.call_id, FailWhy.NO_ENDPOINT,
                    f"the pool was closed while call {call.view.call_id} waited for an endpoint")

    async def __aenter__(self) -> EndpointPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _client_for(config: EndpointConfig, backend: Backend | None, http: httpx.AsyncClient,
                timeout_s: float) -> EndpointClient:
    """The client an endpoint's calls go through: its backend's own, else one over ``http``."""
    if isinstance(backend, ClientBackend):
        return backend.make_client(config, http, timeout_s=timeout_s)
    return EndpointClient(config, http, timeout_s=timeout_s)


def _with_metadata(request: LLMRequest) -> LLMRequest:
    """The request with its call context in the body's ``metadata`` (OpenAI's field of string
    pairs), so an emulated endpoint's responder can tell a planner call from a joiner call."""
    ctx = request.context
    metadata = {"query_id": ctx.query_id, "kind": ctx.kind, "stage": str(ctx.stage)}
    return replace(request, extra_body={**(request.extra_body or {}), "metadata": metadata})


def request_from_body(body: dict[str, Any]) -> LLMRequest:
    """The :class:`LLMRequest` an OpenAI chat body stands for, with the call context the pool
    put in its ``metadata`` (the inverse of what the pool sends to in-process backends)."""
    meta = body.get("metadata") or {}
    messages = tuple(Message(m.get("role", "user"), m.get("content") or "")
                     for m in body.get("messages", []))
    context = CallContext(query_id=str(meta.get("query_id", "")),
                          kind=str(meta.get("kind", "other")),
                          stage=int(meta.get("stage", 0) or 0))
    return LLMRequest(messages, context, max_tokens=body.get("max_tokens"),
                      response_format=body.get("response_format"),
                      tools=tuple(body.get("tools") or ()), tool_choice=body.get("tool_choice"))


def script_responder(script: Callable[[LLMRequest], str]) -> Callable[[dict[str, Any]], str]:
    """An emulated endpoint's responder from an :class:`~fleetcall.llm.scripted.ScriptedLLM`
    script (a function of the request): the request is rebuilt from the body, with the call
    context the pool put in its ``metadata``. Demos and tests use one script for both.

        >>> respond = script_responder(lambda request: request.context.kind)
        >>> respond({"messages": [{"role": "user", "content": "hi"}],
        ...          "metadata": {"kind": "joiner"}})
        'joiner'
    """

    def respond(body: dict[str, Any]) -> str:
        return script(request_from_body(body))

    return respond
