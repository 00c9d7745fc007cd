"""Latency histograms of an emulated endpoint, in the emulated GPU's seconds, vLLM's names.

An :class:`~fleetcall.sim.emulator.EmulatedEndpoint` records each answered request's time to
first token, time per output token and end-to-end latency, measured on its engine's clock
(:meth:`~fleetcall.sim.engine.Engine.now`). At ``--speed K`` the engine runs K times faster than
the loop, and these figures stay what the real GPU would show: ``/metrics`` reads the same at
any speed.

    >>> h = LatencyHistogram("vllm:time_to_first_token_seconds", "TTFT.", (0.1, 1.0))
    >>> h.observe(0.05); h.observe(0.5); h.observe(5.0)
    >>> h.count, h.cumulative()
    (3, [('0.1', 1.0), ('1.0', 2.0), ('+Inf', 3.0)])
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from prometheus_client.core import HistogramMetricFamily

__all__ = ["LatencyHistogram", "RequestTimings"]

# vLLM's bucket bounds (seconds), shortened at both ends.
TTFT_BUCKETS_S = (0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                  20.0, 40.0, 80.0, 160.0, 640.0)
TPOT_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
E2E_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                 120.0, 240.0, 480.0, 960.0, 1920.0)


class LatencyHistogram:
    """A Prometheus histogram of seconds, kept as plain counts (no registry, no locks)."""

    __slots__ = ("name", "documentation", "bounds", "counts", "count", "sum")

    def __init__(self, name: str, documentation: str, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"{name}: bucket bounds must be increasing and not empty")
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in bounds)  # upper bounds, seconds (+Inf implied)
        self.counts = [0] * (len(self.bounds) + 1)     # per bucket, not cumulative; last: +Inf
        self.count = 0                                  # observations
        self.sum = 0.0                                  # their total, seconds

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, observations <= le)`` per bound, then ``+Inf`` (Prometheus' layout)."""
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts):
            running += n
            out.append((bound, float(running)))
        return out

    def family(self, model: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["model_name"])
        family.add_metric([model], self.cumulative(), sum_value=self.sum)
        return family


class RequestTimings:
    """The three per-request histograms vLLM exports, fed with engine-clock seconds."""

    __slots__ = ("ttft", "tpot", "e2e")

    def __init__(self) -> None:
        self.ttft = LatencyHistogram("vllm:time_to_first_token_seconds",
                                     "Time to first token, emulated-GPU seconds.", TTFT_BUCKETS_S)
        self.tpot = LatencyHistogram("vllm:time_per_output_token_seconds",
                                     "Time per output token after the first, emulated-GPU seconds.",
                                     TPOT_BUCKETS_S)
        self.e2e = LatencyHistogram("vllm:e2e_request_latency_seconds",
                                    "Request latency, emulated-GPU seconds.", E2E_BUCKETS_S)

    def record(self, ttft_s: float, total_s: float, output_tokens: int) -> None:
        """One answered request: seconds from its arrival to its first and its last token."""
        self.ttft.observe(ttft_s)
        self.e2e.observe(total_s)
        if output_tokens > 1:
            self.tpot.observe((total_s - ttft_s) / (output_tokens - 1))

    def families(self, model: str) -> list[HistogramMetricFamily]:
        return [h.family(model) for h in (self.ttft, self.tpot, self.e2e)]
