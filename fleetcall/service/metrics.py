"""The service's Prometheus metrics (``GET /metrics``), with prometheus-client on a registry per app.

Fed once per finished run (:meth:`ServiceMetrics.record`, no per-event or per-token work); the
pool's live state is read at scrape time (:class:`PoolCollector`)::

    fleetcall_runs_started_total                      counter   runs accepted
    fleetcall_runs_total{status}                      counter   runs finished, by RunStatus
    fleetcall_runs_in_flight                          gauge     runs executing now
    fleetcall_run_duration_seconds{mode}              histogram a run's latency, start to result
    fleetcall_tasks_total{status}                     counter   tasks of finished runs, by status
    fleetcall_task_duration_seconds{tool}             histogram tasks that ran, by tool
    fleetcall_llm_calls_total{kind}                   counter   LLM calls (planner, joiner, tool:llm, ...)
    fleetcall_llm_call_duration_seconds{endpoint}     histogram an LLM call's latency
    fleetcall_llm_queue_wait_seconds{endpoint}        histogram waiting for an endpoint slot
    fleetcall_llm_ttft_seconds{endpoint}              histogram time to first token
    fleetcall_endpoint_in_flight{endpoint}            gauge     calls running at the endpoint
    fleetcall_endpoint_queued{endpoint}               gauge     calls waiting in its local queue
    fleetcall_endpoint_calls_total{endpoint}          counter   attempts finished there
    fleetcall_endpoint_errors_total{endpoint}         counter   failed attempts there
    fleetcall_endpoint_rate_limited_total{endpoint}   counter   attempts answered with a rate limit
    fleetcall_endpoint_cooldowns_total{endpoint}      counter   rate-limit cooldowns begun there
    fleetcall_endpoint_breaker_trips_total{endpoint}  counter   times its circuit breaker opened
    fleetcall_endpoint_ttft_ewma_seconds{endpoint}    gauge     the pool's EWMA TTFT
    fleetcall_endpoint_breaker{endpoint,fleetcall_endpoint_breaker}  stateset  closed|open|half-open

LLM calls made without a pool (a scripted model, a direct endpoint) carry no serving details:
their latency is counted under ``endpoint="none"`` and they have no queue wait or TTFT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.registry import Collector

from fleetcall.executor.result import RunResult, RunStatus
from fleetcall.router.health import EndpointSnapshot
from fleetcall.router.pool import EndpointPool

__all__ = ["ServiceMetrics", "PoolCollector", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NO_ENDPOINT = "none"    # the endpoint label of LLM calls that did not go through a pool
BREAKER_STATES = ("closed", "open", "half-open")   # fleetcall.router.health.BreakerState

# Bucket bounds, seconds: agent runs take seconds to minutes; LLM calls and tools less.
RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1, 2, 5, 10)


class ServiceMetrics:
    """The metrics of one app, on its own :class:`CollectorRegistry` (two apps in one process
    never mix their counts, and the process-wide default registry is left alone).

    Args:
        in_flight: called at scrape time for ``fleetcall_runs_in_flight``.
        pool: its endpoints' live state is exported at scrape time (None: no endpoint metrics).
    """

    def __init__(self, in_flight: Callable[[], int] = lambda: 0, pool: EndpointPool | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs_started = Counter("fleetcall_runs_started", "Runs accepted.", registry=r)
        self.runs = Counter("fleetcall_runs", "Runs finished, by status.", ["status"], registry=r)
        for status in RunStatus:   # every status present from the start, at 0
            self.runs.labels(status=status.value)
        self.in_flight = Gauge("fleetcall_runs_in_flight", "Runs executing now.", registry=r)
        self.in_flight.set_function(lambda: float(in_flight()))
        self.run_latency = Histogram("fleetcall_run_duration_seconds", "Run latency, start to result.",
                                     ["mode"], buckets=RUN_BUCKETS, registry=r)
        self.tasks = Counter("fleetcall_tasks", "Tasks of finished runs, by status.", ["status"], registry=r)
        self.task_latency = Histogram("fleetcall_task_duration_seconds", "Latency of tasks that ran, by tool.",
                                      ["tool"], buckets=TASK_BUCKETS, registry=r)
        self.llm_calls = Counter("fleetcall_llm_calls", "LLM calls of finished runs, by kind.", ["kind"], registry=r)
        self.llm_latency = Histogram("fleetcall_llm_call_duration_seconds", "LLM call latency, by endpoint.",
                                     ["endpoint"], buckets=CALL_BUCKETS, registry=r)
        self.queue_wait = Histogram("fleetcall_llm_queue_wait_seconds",
                                    "Seconds LLM calls waited for an endpoint slot, by endpoint.",
                                    ["endpoint"], buckets=WAIT_BUCKETS, registry=r)
        self.ttft = Histogram("fleetcall_llm_ttft_seconds", "LLM calls' time to first token, by endpoint.",
                              ["endpoint"], buckets=TTFT_BUCKETS, registry=r)
        if pool is not None:
            r.register(PoolCollector(pool.snapshot))

    def started(self) -> None:
        self.runs_started.inc()

    def record(self, result: RunResult) -> None:
        """Count one finished run: its status and latency, its tasks and its LLM calls."""
        self.runs.labels(status=result.status.value).inc()
        self.run_latency.labels(mode=result.mode).observe(max(0.0, result.latency))
        for task in result.tasks:
            self.tasks.labels(status=task.status).inc()
            if task.start is not None and task.end is not None:
                self.task_latency.labels(tool=task.tool).observe(max(0.0, task.end - task.start))
        for call in result.llm_calls:
            self.llm_calls.labels(kind=call.kind).inc()
            info = call.info or {}
            endpoint = info.get("endpoint")
            endpoint = endpoint if isinstance(endpoint, str) else NO_ENDPOINT
            total = _seconds(info.get("total_s"))
            latency = total if total is not None else max(0.0, call.end - call.start)
            self.llm_latency.labels(endpoint=endpoint).observe(latency)
            if (queue_s := _seconds(info.get("queue_s"))) is not None:
                self.queue_wait.labels(endpoint=endpoint).observe(queue_s)
            if (ttft_s := _seconds(info.get("ttft_s"))) is not None:
                self.ttft.labels(endpoint=endpoint).observe(ttft_s)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's current value (``fleetcall_runs_total``, {"status": "answered"}), None if absent."""
        return self.registry.get_sample_value(name, labels)

    def render(self) -> bytes:
        """The Prometheus text exposition (version 0.0.4) of every metric, pool state read now."""
        return generate_latest(self.registry)


def _seconds(value: object) -> float | None:
    """A duration from a call's ``info``: a finite number >= 0, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if 0.0 <= seconds < float("inf") else None


class PoolCollector(Collector):
    """The pool's live state per endpoint, read from ``snapshot`` (:meth:`EndpointPool.snapshot`)
    at scrape time. The counters (calls, errors, rate limits, cooldowns, breaker trips) are the
    scheduler core's own counts (:class:`~fleetcall.router.health.EndpointSnapshot`): a cooldown
    is counted when it begins (a later Retry-After extending it is not a new one), a breaker
    trip each time it opens (a failed half-open probe re-opens it: one more trip)."""

    def __init__(self, snapshot: Callable[[], Iterable[EndpointSnapshot]]) -> None:
        self.snapshot = snapshot   # EndpointPool.snapshot: needs the running loop

    def describe(self) -> Iterable[Metric]:
        """The families without samples: registering must not read the pool (no loop may run yet)."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        in_flight, queued, calls, errors, ttft, breaker, limited, cooldowns, trips = families
        for s in self.snapshot():
            in_flight.add_metric([s.name], s.in_flight)
            queued.add_metric([s.name], s.queued)
            calls.add_metric([s.name], s.calls)
            errors.add_metric([s.name], s.failures)
            limited.add_metric([s.name], s.rate_limited)
            cooldowns.add_metric([s.name], s.cooldowns)
            trips.add_metric([s.name], s.breaker_trips)
            if s.ttft_s is not None:
                ttft.add_metric([s.name], s.ttft_s)
            breaker.add_metric([s.name], {state: state == s.breaker for state in BREAKER_STATES})
        return families

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily,
                             GaugeMetricFamily, StateSetMetricFamily, CounterMetricFamily,
                             CounterMetricFamily, CounterMetricFamily]:
        labels = ["endpoint"]
        return (
            GaugeMetricFamily("fleetcall_endpoint_in_flight", "Calls running at the endpoint.", labels=labels),
            GaugeMetricFamily("fleetcall_endpoint_queued", "Calls waiting in the endpoint's queue.", labels=labels),
            CounterMetricFamily("fleetcall_endpoint_calls", "Attempts finished at the endpoint.", labels=labels),
            CounterMetricFamily("fleetcall_endpoint_errors", "Failed attempts at the endpoint.", labels=labels),
            GaugeMetricFamily("fleetcall_endpoint_ttft_ewma_seconds", "The pool's EWMA time to first token.",
                              labels=labels),
            StateSetMetricFamily("fleetcall_endpoint_breaker", "The endpoint's circuit breaker state.",
                                 labels=labels),
            CounterMetricFamily("fleetcall_endpoint_rate_limited", "Attempts the endpoint answered with a "
                                "rate limit (429, or 503 with Retry-After).", labels=labels),
            CounterMetricFamily("fleetcall_endpoint_cooldowns", "Rate-limit cooldowns the endpoint began.",
                                labels=labels),
            CounterMetricFamily("fleetcall_endpoint_breaker_trips", "Times the endpoint's circuit breaker opened.",
                                labels=labels),
        )
