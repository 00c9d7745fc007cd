"""What a call will cost on one endpoint: service-time prediction, learned online.

Pure bookkeeping, no clock and no I/O: the pool feeds measurements in, the dispatcher reads
predictions out. Three small objects:

- :class:`ServicePredictor` -- one per endpoint. Starts from the GPU roofline of
  :mod:`fleetcall.gpumodel.perf` (or from a conservative prior when the GPU or model is unknown)
  and multiplies it by two learned correction ratios, one for time to first token and one for
  time per output token, so an endpoint whose profile is wrong converges to its measured speed::

      >>> p = ServicePredictor("A100", "llama-3.1-8b")
      >>> before = p.predict(1000, 100).total_s
      >>> for _ in range(30):  # the endpoint is really twice as slow as its profile says
      ...     base = p.base(1000, 100)
      ...     p.observe(1000, 100, ttft_s=2 * base.ttft_s, tpot_s=2 * base.tpot_s, batch=1)
      >>> round(p.predict(1000, 100).total_s / before, 2)
      2.0

- :class:`OutputLengths` -- expected output tokens of a call kind when ``max_tokens`` is unset.
- :class:`PrefixIndex` -- which prompt-prefix blocks an endpoint has probably cached.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

from fleetcall.gpumodel.gpus import GPUSpec, get_gpu
from fleetcall.gpumodel.models import ModelShape, get_model
from fleetcall.gpumodel.perf import iteration_time, single_request_latency
from fleetcall.router.prefix import compacted, live_blocks

UNKNOWN = "unknown"  # the GPU (or model) name that selects the learned-from-scratch prior


class Prediction(NamedTuple):
    """Predicted latency of one call, seconds (a tuple: ``ttft, tpot, total = ...`` works)."""

    ttft_s: float   # arrival at the engine to first token
    tpot_s: float   # mean time per output token after the first
    total_s: float  # ttft_s + (output_tokens - 1) * tpot_s


@dataclass(frozen=True, slots=True)
class Prior:
    """The latency model used when the roofline cannot be (unknown GPU or model).

    Deliberately pessimistic -- about a 70B model on a mid-range GPU -- so that an endpoint
    nobody has measured yet does not attract the whole workload before its first calls come
    back; the learned ratios then move it to its real speed within a few calls.
    """

    request_overhead_s: float = 0.15    # fixed cost per call (HTTP, tokenizer, scheduling)
    prefill_tokens_per_s: float = 1500.0  # uncached prompt tokens computed per second
    tpot_s: float = 0.06                # seconds per output token, running alone
    batch_slowdown: float = 0.02        # TPOT grows by this fraction per other running call

    def latency(self, prompt_tokens: int, output_tokens: int, cached_tokens: int,
                batch: int) -> Prediction:
        new = max(prompt_tokens - cached_tokens, 1)
        ttft = self.request_overhead_s + new / self.prefill_tokens_per_s
        tpot = self.tpot_s * (1.0 + self.batch_slowdown * (batch - 1))
        return Prediction(ttft, tpot, ttft + (output_tokens - 1) * tpot)


UNKNOWN_PRIOR = Prior()

_CACHE_LIMIT = 4096  # memoized base predictions per predictor (cleared wholesale when full)


class ServicePredictor:
    """Predicts a call's latency on one endpoint and corrects itself from measurements.

    gpu, model: catalog names (:func:`~fleetcall.gpumodel.gpus.get_gpu`,
        :func:`~fleetcall.gpumodel.models.get_model`); ``None`` or ``"unknown"`` for either
        selects :data:`UNKNOWN_PRIOR`. A misspelt name raises :class:`ConfigError`.
    tp: tensor-parallel degree of the deployment. The weights are not checked to fit: an
        endpoint that runs is evidence enough, and prediction must not refuse to predict.
    weight: EWMA weight of a new sample once warmed up (0 < weight <= 1).
    max_step: a sample's measured/predicted ratio is clamped to within this factor of the
        current estimate, so one stalled or instant call cannot swing the estimate.
    prior_samples: how many samples the starting estimate is worth; sample ``n`` is blended
        with weight ``max(weight, 1 / (n + prior_samples))``. A catalog profile counts as 3
        samples; the unknown prior as 0, so the first measurement replaces it (unclamped).

    The ratios are averaged in log space: a ratio of 2 and one of 0.5 cancel out.
    """

    __slots__ = ("gpu", "model", "tp", "weight", "max_step", "prior", "_log_ttft", "_log_tpot",
                 "_n_ttft", "_n_tpot", "_prior_samples", "_cache", "_corrected")

    def __init__(self, gpu: str | GPUSpec | None, model: str | ModelShape | None, tp: int = 1,
                 *, weight: float = 0.2, max_step: float = 4.0,
                 prior_samples: float | None = None, prior: Prior = UNKNOWN_PRIOR) -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"weight must be in (0, 1], got {weight}")
        if max_step <= 1.0:
            raise ValueError(f"max_step must be > 1, got {max_step}")
        if tp < 1:
            raise ValueError(f"tp must be >= 1, got {tp}")
        self.gpu: GPUSpec | None = None if gpu is None or _is_unknown(gpu) else get_gpu(gpu)
        self.model: ModelShape | None = (None if model is None or _is_unknown(model)
                                         else get_model(model))
        self.tp = tp
        self.weight = weight
        self.max_step = max_step
        self.prior = prior
        self._prior_samples = (3.0 if self.profiled else 0.0) if prior_samples is None \
            else prior_samples
        self._log_ttft = 0.0  # log of the measured/predicted TTFT ratio
        self._log_tpot = 0.0  # log of the measured/predicted TPOT ratio
        self._n_ttft = 0      # TTFT samples taken
        self._n_tpot = 0      # TPOT samples taken
        # (prompt, output, cached, batch) -> uncorrected prediction
        self._cache: dict[tuple[int, int, int, int], Prediction] = {}
        # (prompt, output, cached, batch) as given -> predict()'s answer with the ratios as they
        # are now; emptied whenever a ratio changes (a dispatcher asks again for every queued
        # call at every placement, between two measurements)
        self._corrected: dict[tuple[int, int, int, int], Prediction] = {}

    @property
    def profiled(self) -> bool:
        """True iff predictions come from the GPU roofline rather than the unknown prior."""
        return self.gpu is not None and self.model is not None

    @property
    def ttft_ratio(self) -> float:
        """Learned measured/predicted ratio of time to first token (1.0 before any sample)."""
        return math.exp(self._log_ttft)

    @property
    def tpot_ratio(self) -> float:
        """Learned measured/predicted ratio of time per output token (1.0 before any sample)."""
        return math.exp(self._log_tpot)

    @property
    def samples(self) -> int:
        """Measurements taken so far (TTFT samples; every observation has one)."""
        return self._n_ttft

    def base(self, prompt_tokens: int, output_tokens: int, *, cached_tokens: int = 0,
             batch: int = 1) -> Prediction:
        """The uncorrected prediction: profile (or prior) only, no learned ratios.

        batch: calls running on the endpoint while this one decodes, itself included (>= 1).
        """
        prompt, output = max(int(prompt_tokens), 1), max(int(output_tokens), 1)
        cached, batch = min(max(int(cached_tokens), 0), prompt - 1), max(int(batch), 1)
        key = (prompt, output, cached, batch)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._compute(prompt, output, cached, batch)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def predict(self, prompt_tokens: int, output_tokens: int, *, cached_tokens: int = 0,
                batch: int = 1) -> Prediction:
        """Predicted latency of a call on this endpoint, corrected by what was measured."""
        key = (prompt_tokens, output_tokens, cached_tokens, batch)
        hit = self._corrected.get(key)
        if hit is None:
            b = self.base(prompt_tokens, output_tokens, cached_tokens=cached_tokens, batch=batch)
            ttft, tpot = b.ttft_s * self.ttft_ratio, b.tpot_s * self.tpot_ratio
            hit = Prediction(ttft, tpot, ttft + (max(int(output_tokens), 1) - 1) * tpot)
            if len(self._corrected) >= _CACHE_LIMIT:
                self._corrected.clear()
            self._corrected[key] = hit
        return hit

    def observe(self, prompt_tokens: int, output_tokens: int, ttft_s: float, tpot_s: float,
                batch: int = 1, *, cached_tokens: int = 0) -> None:
        """Learn from one finished call: its token counts and measured TTFT and TPOT.

        batch: calls that ran on the endpoint alongside it, itself included (the pool's best
        guess, e.g. its in-flight count when the call started). TPOT is learned only from
        calls with at least two output tokens; non-positive or non-finite times are ignored.
        """
        b = self.base(prompt_tokens, output_tokens, cached_tokens=cached_tokens, batch=batch)
        self._corrected.clear()
        if _usable(ttft_s) and b.ttft_s > 0:
            self._n_ttft += 1
            self._log_ttft = self._blend(self._log_ttft, ttft_s / b.ttft_s, self._n_ttft)
        if output_tokens > 1 and _usable(tpot_s) and b.tpot_s > 0:
            self._n_tpot += 1
            self._log_tpot = self._blend(self._log_tpot, tpot_s / b.tpot_s, self._n_tpot)

    def adopt(self, twin: "ServicePredictor") -> None:
        """Take a twin's learned ratios (an endpoint of the same GPU, model and parallelism)
        while this one has no measurement of its own: an endpoint nobody has measured yet is
        then predicted like its measured twin rather than by the prior, so it gets its share
        of calls -- and its own measurements, which replace the twin's as they come."""
        if self._n_ttft == 0 and self._n_tpot == 0:
            self._log_ttft, self._log_tpot = twin._log_ttft, twin._log_tpot
            self._corrected.clear()

    def _blend(self, current: float, ratio: float, n: int) -> float:
        """One EWMA step in log space, with the sample clamped to ``max_step`` of the estimate
        -- except the first sample after a prior worth nothing (the unknown one): there is no
        estimate yet to protect, and a clamped first step would leave the endpoint looking
        slower than its measured twins until it is measured again, which may never happen."""
        sample = math.log(ratio)
        if n + self._prior_samples > 1:
            step = math.log(self.max_step)
            sample = min(max(sample, current - step), current + step)
        w = max(self.weight, 1.0 / (n + self._prior_samples))
        return current + w * (sample - current)

    def _compute(self, prompt: int, output: int, cached: int, batch: int) -> Prediction:
        gpu, model = self.gpu, self.model
        if gpu is None or model is None:
            return self.prior.latency(prompt, output, cached, batch)
        lone = single_request_latency(gpu, model, prompt, output, tp=self.tp,
                                      cached_tokens=cached)
        tpot = lone.tpot_s * _batch_factor(gpu, model, self.tp, prompt + output // 2, batch)
        return Prediction(lone.ttft_s, tpot, lone.ttft_s + (output - 1) * tpot)


def _batch_factor(gpu: GPUSpec, model: ModelShape, tp: int, context: int, batch: int) -> float:
    """How much longer a decode step takes with ``batch`` calls of ``context`` tokens each than
    with one alone: the weights are read once per step whatever the batch; KV and FLOPs scale."""
    if batch <= 1:
        return 1.0
    alone = iteration_time(gpu, model, decode_batch=1, decode_context_tokens=context, tp=tp)
    shared = iteration_time(gpu, model, decode_batch=batch, decode_context_tokens=context * batch,
                            tp=tp)
    return shared / alone


def _is_unknown(name: object) -> bool:
    """True iff ``name`` asks for the unknown prior ("unknown", any case)."""
    return isinstance(name, str) and name.strip().lower() == UNKNOWN


def _usable(seconds: float) -> bool:
    return math.isfinite(seconds) and seconds > 0.0


class OutputLengths:
    """Expected output tokens per call kind ("planner", "joiner", a tool name ...).

    The mean of the first ``1 / weight`` observations of a kind, then an exponentially
    weighted mean (so it follows a prompt change); ``default`` until a kind has been seen.

        >>> lengths = OutputLengths(default=200)
        >>> lengths.expect("joiner")
        200
        >>> lengths.observe("joiner", 40); lengths.observe("joiner", 60)
        >>> lengths.expect("joiner")
        50
    """

    __slots__ = ("default", "weight", "_mean", "_count")

    def __init__(self, default: int = 256, *, weight: float = 0.1) -> None:
        if default < 1:
            raise ValueError(f"default must be >= 1, got {default}")
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"weight must be in (0, 1], got {weight}")
        self.default = default
        self.weight = weight
        self._mean: dict[str, float] = {}  # kind -> running mean of output tokens
        self._count: dict[str, int] = {}  # kind -> observations

    def expect(self, kind: str) -> int:
        """Expected output tokens of a call of this kind (at least 1)."""
        mean = self._mean.get(kind)
        return self.default if mean is None else max(1, round(mean))

    def observe(self, kind: str, output_tokens: int) -> None:
        """Record the output tokens a finished call of this kind produced."""
        n = self._count.get(kind, 0) + 1
        self._count[kind] = n
        mean = self._mean.get(kind, 0.0)
        self._mean[kind] = mean + max(self.weight, 1.0 / n) * (max(output_tokens, 0) - mean)

    def kinds(self) -> dict[str, int]:
        """Every kind seen so far -> its expected output tokens (for live state views)."""
        return {kind: self.expect(kind) for kind in self._mean}


class PrefixIndex:
    """The prompt-prefix blocks one endpoint served recently: a guess at its prefix cache.

    Holds up to ``capacity_blocks`` block hashes (:func:`fleetcall.router.prefix.block_hashes`,
    chained, so equal hashes mean equal prefixes) and forgets the least recently used first.
    :meth:`add` touches a prompt's blocks from the last to the first, so a prompt's leading
    blocks are the most recent and its tail is evicted first -- as vLLM evicts -- and a
    shared system prompt stays matchable while the long tails behind it come and go.

        >>> index = PrefixIndex(capacity_blocks=4)
        >>> index.add([1, 2, 3])
        >>> index.match([1, 2, 9]), index.match([7, 1])
        (2, 0)
    """

    __slots__ = ("capacity_blocks", "_blocks", "_queue", "_head", "_tag", "_places")
    STALE_SLACK = 64  # stale places beyond ``capacity_blocks`` that make the queue compact itself

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise ValueError(f"capacity_blocks must be >= 1, got {capacity_blocks}")
        self.capacity_blocks = capacity_blocks
        # hash -> the tag of the add that touched it last (tags count down from -1). The LRU
        # order is the queue of adds, oldest first, each its blocks in touch order with its
        # tag; a block touched again keeps a stale place in an older add, which counts only
        # while _blocks holds that add's tag (so an add is bulk updates, no per-block nodes).
        self._blocks: dict[int, int] = {}
        self._queue: deque[tuple[int, tuple[int, ...]]] = deque()
        self._head = 0      # places of the first add already consumed
        self._tag = 0
        self._places = 0    # places in the queue not consumed (stale ones included)

    def add(self, hashes: Sequence[int]) -> None:
        """Record that the endpoint served (and so probably cached) a prompt of these blocks."""
        if not hashes:
            return
        self._tag -= 1
        touched = tuple(reversed(hashes))
        if len(set(touched)) != len(touched):  # repeats: a block's place is its last touch
            touched = tuple(reversed(dict.fromkeys(hashes)))
        self._blocks.update(zip(touched, repeat(self._tag)))
        self._queue.append((self._tag, touched))
        self._places += len(touched)
        excess = len(self._blocks) - self.capacity_blocks
        if excess > 0:  # the least recently used go, oldest first
            self._evict(excess)
        if self._places - len(self._blocks) > self.capacity_blocks + self.STALE_SLACK:
            self._compact()

    def _evict(self, n: int) -> None:
        blocks, queue, pos = self._blocks, self._queue, self._head
        while n:
            tag, hashes = queue[0]
            end, start = len(hashes), pos
            ahead = hashes[pos:pos + n]
            if list(map(blocks.get, ahead)).count(tag) == len(ahead):  # all live: in bulk
                for h in ahead:
                    del blocks[h]
                pos += len(ahead)
                n -= len(ahead)
            while pos < end and n:
                h = hashes[pos]
                pos += 1
                if blocks.get(h) == tag:
                    del blocks[h]
                    n -= 1
            self._places -= pos - start
            if pos == end:
                queue.popleft()
                pos = 0
        self._head = pos

    def _compact(self) -> None:
        """Forget the stale places: the queue stays bounded."""
        self._queue, self._places = compacted(self._queue, self._head, self._blocks)
        self._head = 0

    def order(self) -> list[int]:
        """The blocks held, least recently used first."""
        return live_blocks(self._queue, self._head, self._blocks)

    def match(self, hashes: Iterable[int]) -> int:
        """How many leading blocks of a prompt are probably cached here (does not touch LRU)."""
        count = 0
        for h in hashes:
            if h not in self._blocks:
                break
            count += 1
        return count

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._blocks

    def clear(self) -> None:
        """Forget everything (the endpoint restarted, so its cache is empty)."""
        self._blocks.clear()
        self._queue.clear()
        self._head = self._places = 0

