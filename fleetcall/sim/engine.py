"""An emulated vLLM engine: continuous batching, a KV cache with prefix caching, on the loop clock.

:class:`Engine` plays one model server's GPU side. Like vLLM's scheduler it keeps a FCFS waiting
list and a running batch; every iteration decodes one token for each running request and
computes up to ``deployment.max_prefill_chunk`` tokens of pending prefill, and takes
:meth:`~fleetcall.gpumodel.perf.Deployment.iteration_time` seconds of loop time. Nothing runs per
token: while the batch is unchanged (decode only) consecutive iterations differ only in their
growing context, so their total time has a closed form (:class:`_DecodeLine`), and the engine
sleeps straight to the next batch change (a request finishing, or a stream's next progress
report). An arrival or a cancellation in the middle of such a stretch cuts it at the end of the
iteration in progress, as a real scheduler would see it between two iterations.

Events: every request gets one event when its first token is out (the end of its prefill) and
one when it is done. A request submitted with ``stream=True`` also gets progress events, about
every ``stream_interval_s`` of engine time (0: every iteration). Each event costs a task wake-up
(and, behind the emulator, an SSE chunk), so the default of 0.2 s keeps streamed text smooth
without making long simulations pay per token.

KV memory and admission (a choice, documented): a request is admitted only when blocks for its
whole prompt *and* its whole output fit (vLLM reserves as it goes and preempts; reserving up
front never preempts and keeps the model simple). Memory is counted in blocks of
``block_tokens``; full prompt blocks are named by the chained hashes of
:mod:`fleetcall.router.prefix`. When a request's prefill completes its blocks join the prefix
cache; when it ends they stay cached, unreferenced, and are evicted least recently used first
(tail blocks before head blocks, as in vLLM) only when an admission needs memory. A new request
whose leading hashes are cached skips their prefill; at least the last prompt token is always
computed, as in vLLM. Unreferenced cached blocks count as free in ``kv_used_tokens`` (vLLM's
KV-usage gauge) and appear in ``kv_cached_tokens``.

The fixed per-request cost of the GPU's ``request_overhead_s`` (HTTP, tokenizing) passes before a
request reaches the waiting list, so a lone request takes exactly
:meth:`~fleetcall.gpumodel.perf.Deployment.single_request_latency`.

Speed: the engine keeps its own clock, *engine time* = the loop's time x ``speed``, and every
figure it computes or reports (iteration and request costs, stream intervals, ``busy_s``,
:meth:`Engine.now`) is in engine seconds, i.e. the emulated GPU's. Only its timers convert,
in :meth:`Engine._call_at`: at ``speed=K`` a request takes 1/K of the loop time it would take at
speed 1 and reports the same figures, so real-clock experiments run K times faster.

    >>> # async with Engine(Deployment.of("A100", "llama-3.1-8b")) as engine:
    >>> #     async for ev in engine.generate(1000, 100):
    >>> #         ...  # TokenEvent(tokens=1, first=True, ...), then the done event
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from fleetcall.errors import LLMError
from fleetcall.gpumodel import perf
from fleetcall.sim.kvcache import BlockCache as _BlockCache

__all__ = ["Engine", "EngineRequest", "EngineStats", "TokenEvent"]

DEFAULT_STREAM_INTERVAL_S = 0.2  # engine seconds between progress events of a streamed request


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """Progress of one request, as its consumer sees it."""

    tokens: int         # output tokens generated so far (1 on the first event)
    first: bool         # True iff this event brings the first token (the end of prefill)
    done: bool          # True iff every output token is out (last event; may also be first)
    cached_tokens: int  # prompt tokens taken from the prefix cache instead of computed


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of an engine, as of its last batch change (engine state advances in jumps)."""

    running: int             # requests in the batch (prefilling or decoding)
    waiting: int             # requests in vLLM's own waiting list (not admitted yet)
    kv_used_tokens: int      # KV memory held by running requests, tokens (whole blocks)
    kv_capacity_tokens: int  # KV memory of the deployment, tokens (whole blocks)
    requests_done: int       # requests that generated their last token
    prompt_tokens: int       # prompt tokens of admitted requests
    cached_prompt_tokens: int  # of those, tokens served from the prefix cache
    busy_s: float            # engine seconds spent with a non-empty batch
    iterations: int          # engine iterations run
    kv_cached_tokens: int = 0  # KV memory holding unreferenced cached prefix blocks, tokens
    arriving: int = 0        # requests still in the per-request front-end overhead
    waiting_tokens: int = 0  # prompt + output tokens of the waiting requests


class _State(Enum):
    ARRIVING = "arriving"  # in the request overhead, not yet in the waiting list
    WAITING = "waiting"    # in the waiting list
    PREFILL = "prefill"    # admitted, prompt not fully computed
    DECODE = "decode"      # admitted, generating
    DONE = "done"          # finished, cancelled or failed: holds no memory


# ---- the closed form of decode-only stretches ------------------------------------------------


def _sum_max_lines(a1: float, b1: float, a2: float, b2: float, n: int) -> float:
    """Sum over i = 0..n-1 of max(a1 + b1*i, a2 + b2*i): two arithmetic series split where the
    lines cross (their difference changes sign at most once)."""
    if n <= 0:
        return 0.0

    def series(a: float, b: float, lo: int, hi: int) -> float:  # sum of a + b*i, lo <= i < hi
        count = hi - lo
        return count * a + b * (lo + hi - 1) * count / 2 if count > 0 else 0.0

    slope = b1 - b2
    if slope == 0.0:
        return series(max(a1, a2), b1, 0, n)
    split = min(max(math.ceil((a2 - a1) / slope), 0), n)  # first i on the other side
    if slope > 0:  # line 2 is higher before the crossing, line 1 after
        return series(a2, b2, 0, split) + series(a1, b1, split, n)
    return series(a1, b1, 0, split) + series(a2, b2, split, n)


@dataclass(frozen=True, slots=True)
class _DecodeLine:
    """A decode-only iteration of ``B`` requests attending to ``X`` context tokens in total costs
    ``overhead + max(mem0 + mem1*X, comp_b*B + comp_x*X)`` (perf's roofline is linear in each);
    the coefficients are probed once from :func:`perf.iteration_cost`, so this stays its exact
    sum while the context grows by ``B`` tokens an iteration."""

    overhead: float  # seconds per iteration
    mem0: float      # seconds streaming the weights
    mem1: float      # seconds per context token read
    comp_b: float    # compute seconds per decoded token
    comp_x: float    # compute seconds per (query, context token) pair

    @classmethod
    def of(cls, d: perf.Deployment) -> "_DecodeLine":
        probe = 1 << 20  # large, so differences keep full precision

        def cost(batch: int, context: int) -> perf.IterationCost:
            return perf.iteration_cost(d.gpu, d.model, decode_batch=batch,
                                       decode_context_tokens=context, tp=d.tp)

        base, ctx, toks = cost(0, 0), cost(0, probe), cost(probe, 0)
        return cls(overhead=base.overhead_s, mem0=base.memory_s,
                   mem1=(ctx.memory_s - base.memory_s) / probe,
                   comp_b=(toks.compute_s - base.compute_s) / probe,
                   comp_x=(ctx.compute_s - base.compute_s) / probe)

    def time(self, batch: int, context: int, k: int) -> float:
        """Seconds of ``k`` decode iterations starting from total context ``context``."""
        return k * self.overhead + _sum_max_lines(
            self.mem0 + self.mem1 * context, self.mem1 * batch,
            self.comp_b * batch + self.comp_x * context, self.comp_x * batch, k)

    def covering(self, batch: int, context: int, k: int, elapsed: float) -> int:
        """The fewest iterations (1..k) whose time reaches ``elapsed``: those done or running."""
        lo, hi = 1, k
        while lo < hi:
            mid = (lo + hi) // 2
            if self.time(batch, context, mid) >= elapsed:
                hi = mid
            else:
                lo = mid + 1
        return lo


# ---- requests ------------------------------------------------------------------------------------


class EngineRequest:
    """One submitted request: an async iterator of its :class:`TokenEvent` s.

    Iteration ends after the done event, or when the request is cancelled; it raises
    :class:`~fleetcall.errors.LLMError` if the engine is closed under it.
    """

    __slots__ = ("_engine", "seq", "prompt", "output", "hashes", "stream", "state", "cancelled",
                 "cached", "computed", "held", "private", "gen0", "iter0", "sent", "sent_t", "_events",
                 "_waiter", "_error", "_over", "_arrival")

    def __init__(self, engine: Engine, seq: int, prompt: int, output: int,
                 hashes: tuple[int, ...], stream: bool) -> None:
        self._engine = engine
        self.seq = seq              # submission order, unique per engine
        self.prompt = prompt        # prompt tokens
        self.output = output        # output tokens to generate
        self.hashes = hashes        # chained hashes of the full prompt blocks
        self.stream = stream        # True iff progress events are wanted
        self.state = _State.ARRIVING
        self.cancelled = False      # True iff cancel() came while admitted (retired at a boundary)
        self.cached = 0             # prompt tokens found in the prefix cache
        self.computed = 0           # prompt tokens in KV so far (cached included)
        self.held = 0               # leading blocks of ``hashes`` this request references
        self.private = 0            # blocks reserved and not (yet) hash-named
        self.gen0 = 0               # tokens generated when it entered decode (1)
        self.iter0 = 0              # engine iteration count when it entered decode
        self.sent = 0               # tokens reported in the last event
        self.sent_t = 0.0           # engine time of the last event, seconds
        self._events: deque[TokenEvent] = deque()  # produced, not yet consumed
        self._waiter: asyncio.Future[None] | None = None  # set while the consumer waits
        self._error: BaseException | None = None    # raised to the consumer (engine closed)
        self._over = False          # True iff iteration has ended (done consumed or cancelled)
        self._arrival: asyncio.TimerHandle | None = None  # pending arrival, while ARRIVING

    def __aiter__(self) -> EngineRequest:
        return self

    async def __anext__(self) -> TokenEvent:
        while not self._events:
            if self._error is not None:
                raise self._error
            if self._over:
                raise StopAsyncIteration
            self._waiter = self._engine._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        if event.done:
            self._over = True
        return event

    def cancel(self) -> None:
        """Remove the request from the engine and free its KV memory (idempotent)."""
        self._over = True
        self._events.clear()
        self._wake()
        if self.state is not _State.DONE:
            self._engine._cancel(self)

    def _push(self, event: TokenEvent) -> None:
        self.sent = event.tokens
        if self._over:  # the consumer has gone
            return
        self._events.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


@dataclass(slots=True)
class _Segment:
    """A stretch of iterations with an unchanged batch, planned at ``t0``."""

    t0: float       # engine time it starts
    k: int          # iterations (1 if it carries prefill)
    batch: int      # decoding requests
    context: int    # their total context at the start, tokens
    duration: float  # seconds of the k iterations
    chunk: list[tuple[EngineRequest, int]] = field(default_factory=list)  # (request, prefill tokens)


# ---- the engine ----------------------------------------------------------------------------------


class Engine:
    """Continuous batching on the loop clock; see the module docstring for the model.

    A driver task steps the engine while it has work and exits when it is idle, so an idle
    engine holds no task and no timer. ``async with Engine(...)`` or :meth:`aclose` ends it.
    """

    def __init__(self, deployment: perf.Deployment, *, block_tokens: int = 16,
                 max_batch: int = 256,
                 stream_interval_s: float = DEFAULT_STREAM_INTERVAL_S,
                 speed: float = 1.0) -> None:
        if block_tokens < 1 or max_batch < 1 or stream_interval_s < 0:
            raise ValueError("block_tokens and max_batch must be >= 1, stream_interval_s >= 0")
        check_speed(speed)
        self.deployment = deployment
        self.speed = speed                        # engine seconds per loop second
        self.block_tokens = block_tokens
        self.max_batch = max_batch                # vLLM's max_num_seqs
        self.stream_interval_s = stream_interval_s  # engine seconds between progress events
        self._line = _DecodeLine.of(deployment)
        self._overhead = deployment.gpu.efficiency.request_overhead_s
        self._cache = _BlockCache(deployment.kv_capacity_tokens() // block_tokens)
        # Bound by the first submit; None only before it (nothing reads it until then).
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._seq = 0
        self._live: dict[int, EngineRequest] = {}     # seq -> request not DONE
        self._arriving = 0
        self._waiting: deque[EngineRequest] = deque()  # FCFS
        self._prefilling: list[EngineRequest] = []     # admitted, in admission order
        self._heap: list[tuple[int, int, EngineRequest]] = []  # (finish iteration, seq, request)
        self._streams: dict[int, EngineRequest] = {}   # seq -> decoding request with stream=True
        self._cancelled: list[EngineRequest] = []      # admitted, to retire at the next boundary
        self._batch = 0        # decoding requests
        self._context = 0      # their prompt + generated tokens, summed
        self._iter = 0         # iterations run so far (the decode clock of every request)
        self._t = 0.0          # engine time of the current state, engine seconds
        self._segment: _Segment | None = None  # the stretch being run, while the driver sleeps
        self._wake: asyncio.Future[bool] | None = None  # resolves the driver's sleep (True: cut)
        self._driver: asyncio.Task[None] | None = None
        self._closed = False
        self._done = self._prompt_tokens = self._cached_tokens = 0
        self._busy = 0.0

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- public API ----

    def submit(self, prompt_tokens: int, output_tokens: int, block_hashes: Sequence[int] = (),
               stream: bool = False) -> EngineRequest:
        """Submit a request now; iterate the result for its events and ``cancel()`` it when the
        consumer goes away (:meth:`generate` does both)."""
        if self._closed:
            raise LLMError("engine is closed")
        if prompt_tokens < 1 or output_tokens < 1:
            raise ValueError("prompt_tokens and output_tokens must be >= 1")
        blocks = -(-(prompt_tokens + output_tokens) // self.block_tokens)
        if blocks > self._cache.capacity:
            raise ValueError(
                f"request needs {blocks * self.block_tokens} tokens of KV cache (prompt "
                f"{prompt_tokens} + output {output_tokens}), more than the deployment holds "
                f"({self._cache.capacity * self.block_tokens})")
        self._bind(asyncio.get_running_loop())
        self._seq += 1
        hashes = tuple(block_hashes[:prompt_tokens // self.block_tokens])
        req = EngineRequest(self, self._seq, prompt_tokens, output_tokens, hashes, stream)
        self._live[req.seq] = req
        self._arriving += 1
        req._arrival = self._call_at(self._clock() + self._overhead, self._arrive, req)
        return req

    async def generate(self, prompt_tokens: int, output_tokens: int,
                       block_hashes: Sequence[int] = (),
                       stream: bool = False) -> AsyncIterator[TokenEvent]:
        """Run one request: the first-token event, progress events if ``stream``, the done
        event (one event with ``first`` and ``done`` if ``output_tokens == 1``). Closing or
        cancelling the consumer removes the request and frees its KV memory."""
        req = self.submit(prompt_tokens, output_tokens, block_hashes, stream)
        try:
            async for event in req:
                yield event
        finally:
            req.cancel()

    def now(self) -> float:
        """Engine time, seconds: the running loop's time x ``speed`` (the emulated GPU's clock,
        which every figure of the engine is measured on)."""
        return asyncio.get_running_loop().time() * self.speed

    def stats(self) -> EngineStats:
        cache, bt = self._cache, self.block_tokens
        return EngineStats(
            running=len(self._prefilling) + self._batch, waiting=len(self._waiting),
            kv_used_tokens=(cache.used - cache.cached) * bt,
            kv_capacity_tokens=cache.capacity * bt, requests_done=self._done,
            prompt_tokens=self._prompt_tokens, cached_prompt_tokens=self._cached_tokens,
            busy_s=self._busy, iterations=self._iter, kv_cached_tokens=cache.cached * bt,
            arriving=self._arriving,
            waiting_tokens=sum(r.prompt + r.output for r in self._waiting))

    def reset_prefix_cache(self) -> int:
        """Forget the cached prefix blocks no running request uses (vLLM's
        ``reset_prefix_cache``), so the next requests start cold; returns the tokens dropped."""
        return self._cache.drop_unreferenced() * self.block_tokens

    async def aclose(self) -> None:
        """Stop the driver and end every request with an LLMError; later submits fail."""
        self._closed = True
        driver = self._driver
        if driver is not None:
            driver.cancel()
            await asyncio.wait([driver])
        self._fail_all(LLMError("engine closed"))

    # ---- request flow ----

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use the running loop; an idle engine may move to a new loop (and its clock)."""
        if loop is self._loop:
            return
        if self._live:
            raise LLMError("engine has requests on another event loop")
        self._loop, self._t = loop, loop.time() * self.speed

    def _clock(self) -> float:
        """Engine time on the bound loop (see :meth:`now`)."""
        return self._loop.time() * self.speed

    def _call_at(self, engine_t: float, callback: Callable[..., object],
                 *args: object) -> asyncio.TimerHandle:
        """Schedule ``callback`` at engine time ``engine_t``: the one place engine seconds
        become loop seconds (exact at speed 1)."""
        return self._loop.call_at(engine_t / self.speed, callback, *args)

    def _arrive(self, req: EngineRequest) -> None:
        req._arrival = None
        self._arriving -= 1
        req.state = _State.WAITING
        self._waiting.append(req)
        self._poke()

    def _cancel(self, req: EngineRequest) -> None:
        if req.state is _State.ARRIVING:
            assert req._arrival is not None
            req._arrival.cancel()
            self._arriving -= 1
        elif req.state is _State.WAITING:
            self._waiting.remove(req)
        elif not req.cancelled:  # admitted: leave at the next iteration boundary
            req.cancelled = True
            self._cancelled.append(req)
            self._poke()
            return
        else:
            return
        req.state = _State.DONE
        del self._live[req.seq]

    def _poke(self) -> None:
        """Something changed the work: start the driver, or cut its current stretch short."""
        if self._driver is None:
            self._driver = self._loop.create_task(self._drive(), name="fleetcall-engine")
        elif self._segment is not None and self._segment.k > 1 and self._wake is not None \
                and not self._wake.done():
            self._wake.set_result(True)

    def _admit(self) -> None:
        """Move waiting requests into the batch, FCFS, while slots and KV memory allow."""
        while self._waiting and len(self._prefilling) + self._batch < self.max_batch:
            req = self._waiting[0]
            if not self._reserve(req):
                break  # FCFS: the head waits for memory, and so does everyone behind it
            self._waiting.popleft()
            req.state = _State.PREFILL
            self._prefilling.append(req)
            self._prompt_tokens += req.prompt
            self._cached_tokens += req.cached

    def _reserve(self, req: EngineRequest) -> bool:
        bt, hashes = self.block_tokens, req.hashes
        hit = self._cache.leading_hits(hashes, min(len(hashes), (req.prompt - 1) // bt))
        need = -(-(req.prompt + req.output) // bt) - hit
        if not self._cache.try_reserve(hashes[:hit], need):
            return False
        req.held = hit
        req.private = need
        req.cached = req.computed = hit * bt
        return True

    def _prefilled(self, req: EngineRequest) -> None:
        """The prompt is in KV: name its blocks in the cache, report the first token."""
        self._cache.register(req.hashes[req.held:])
        req.private -= len(req.hashes) - req.held
        req.held = len(req.hashes)
        req.sent_t = self._t
        if req.output == 1:
            req._push(TokenEvent(1, True, True, req.cached))
            self._retire(req)
            self._done += 1
            return
        req._push(TokenEvent(1, True, False, req.cached))
        req.state = _State.DECODE
        req.gen0, req.iter0 = 1, self._iter
        self._batch += 1
        self._context += req.prompt + 1
        heapq.heappush(self._heap, (self._iter + req.output - 1, req.seq, req))
        if req.stream:
            self._streams[req.seq] = req

    def _generated(self, req: EngineRequest) -> int:
        return min(req.gen0 + self._iter - req.iter0, req.output)

    def _retire(self, req: EngineRequest) -> None:
        """Take a request out of the batch and free its blocks (cached ones stay cached)."""
        if req.state is _State.DECODE:
            self._batch -= 1
            self._context -= req.prompt + self._generated(req)
            self._streams.pop(req.seq, None)
        req.state = _State.DONE
        self._cache.release(req.hashes[:req.held], req.private)
        req.held = req.private = 0
        self._live.pop(req.seq, None)

    def _fail_all(self, error: BaseException) -> None:
        for req in list(self._live.values()):
            if req._arrival is not None:
                req._arrival.cancel()
            req._error = error
            req._wake()
            if req.state is not _State.DONE:
                self._retire(req)
        self._live.clear()
        self._waiting.clear()
        self._prefilling.clear()
        self._heap.clear()
        self._cancelled.clear()
        self._arriving = 0

    # ---- the driver ----

    async def _drive(self) -> None:
        self._t = max(self._t, self._clock())
        try:
            while (segment := self._plan()) is not None:
                await self._sleep_through(segment)
                self._finish(segment)
        except Exception as exc:  # a bug: fail the requests rather than leave them waiting
            error = LLMError(f"emulated engine failed: {exc!r}")
            error.__cause__ = exc
            self._fail_all(error)
        finally:
            self._driver = None
            self._segment = None

    def _plan(self) -> _Segment | None:
        """The next stretch: one iteration with prefill, or decodes up to the next change."""
        if self._cancelled:  # a boundary: cancelled requests leave before anything is planned
            for req in self._cancelled:
                if req.state is not _State.DONE:
                    self._retire(req)
            self._prefilling = [r for r in self._prefilling if r.state is _State.PREFILL]
            self._cancelled.clear()
        self._admit()
        if self._prefilling:
            return self._prefill_iteration()
        heap = self._heap
        while heap and heap[0][2].state is not _State.DECODE:
            heapq.heappop(heap)
        if not heap:
            return None
        k = heap[0][0] - self._iter
        if self._streams:
            k = min(k, self._stream_k())
        return _Segment(self._t, k, self._batch, self._context,
                        self._line.time(self._batch, self._context, k))

    def _stream_k(self) -> int:
        """Iterations in about one stream interval (at least one)."""
        first = self._line.time(self._batch, self._context, 1)
        return max(1, math.ceil(min(self.stream_interval_s / first, 1e9) - 1e-9))

    def _prefill_iteration(self) -> _Segment:
        budget = self.deployment.max_prefill_chunk
        chunk: list[tuple[EngineRequest, int]] = []
        tokens = context = continued = 0
        for req in self._prefilling:
            if budget == 0:
                break
            if req.cancelled:
                continue
            n = min(req.prompt - req.computed, budget)
            chunk.append((req, n))
            budget -= n
            tokens += n
            context += req.computed
            continued += req.computed > req.cached
        duration = self.deployment.iteration_time(
            decode_batch=self._batch, decode_context_tokens=self._context, prefill_tokens=tokens,
            prefill_context_tokens=context, continued_prefills=continued)
        return _Segment(self._t, 1, self._batch, self._context, duration, chunk)

    async def _sleep_through(self, segment: _Segment) -> None:
        """Sleep to the segment's end; a poke cuts it after the iteration in progress."""
        loop = self._loop
        self._segment = segment
        while True:
            wake: asyncio.Future[bool] = loop.create_future()
            self._wake = wake
            timer = self._call_at(segment.t0 + segment.duration, _resolve, wake)
            try:
                cut = await wake
            finally:
                timer.cancel()
                self._wake = None
            if not cut:
                break
            self._cut(segment, self._clock())
        self._segment = None

    def _cut(self, segment: _Segment, now: float) -> None:
        if segment.k == 1:
            return
        line = self._line
        k = line.covering(segment.batch, segment.context, segment.k, now - segment.t0)
        if k < segment.k:
            segment.k = k
            segment.duration = line.time(segment.batch, segment.context, k)

    def _finish(self, segment: _Segment) -> None:
        """Apply a finished stretch: progress, first tokens, completions, stream progress."""
        self._t = segment.t0 + segment.duration
        self._busy += segment.duration
        self._iter += segment.k
        self._context += self._batch * segment.k
        if segment.chunk:
            for req, n in segment.chunk:
                if req.state is _State.PREFILL and not req.cancelled:
                    req.computed += n
                    if req.computed >= req.prompt:
                        self._prefilled(req)
            self._prefilling = [r for r in self._prefilling if r.state is _State.PREFILL]
        heap = self._heap
        while heap and heap[0][0] <= self._iter:
            req = heapq.heappop(heap)[2]
            if req.state is _State.DECODE:
                req._push(TokenEvent(req.output, False, True, req.cached))
                self._retire(req)
                self._done += not req.cancelled
        due = self._t - self.stream_interval_s * 0.999  # a request last told before this is due
        for req in self._streams.values():
            tokens = self._generated(req)
            if req.sent_t <= due and tokens > req.sent:
                req.sent_t = self._t
                req._push(TokenEvent(tokens, False, False, req.cached))


def check_speed(speed: float) -> float:
    """``speed`` if it is a finite number > 0, else ValueError naming it."""
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) \
            or not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a finite number > 0 (emulated-GPU seconds per real "
                         f"second), got {speed!r}")
    return float(speed)


def _resolve(wake: asyncio.Future[bool]) -> None:
    if not wake.done():
        wake.set_result(False)
