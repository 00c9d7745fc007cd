"""Benchmark reports: summaries of replay records, the side-by-side table, the plot.

:func:`summarize` turns one run's :class:`~fleetcall.bench.replay.QueryRecord` list into a plain
dict (JSON-ready), the unit of ``fleetcall bench scheduler --json``'s ``runs``;
:func:`max_rate_at_95` reads a load sweep; :func:`format_table` prints runs side by side;
:func:`plot` draws the :func:`chart` of runs (SVG, HTML, or PNG with matplotlib): at one rate,
latency and SLO attainment bars per policy; over a sweep, p95 latency and attainment against
rate; both with attainment against deadline scale, titled by :func:`caption`.

Percentiles interpolate linearly between order statistics (numpy's default). Latency figures
are over completed queries; SLO attainment is over all queries (a failed query misses).
A query's *stretch* is its latency over its unloaded latency on the pool's fastest endpoint
(:attr:`~fleetcall.bench.replay.QueryRecord.stretch`; 1.0 is the physical limit, below it only
with prefix-cache hits); :func:`regret` compares one policy's p95 with the best other's.

    >>> summarize([], policy="fcfs", rate=1.0)["queries"]
    0
"""

from __future__ import annotations

import html
import importlib.util
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetcall.bench.replay import QueryRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Deadline scales of the attainment curve, relative to the run's own scale (1.0 = as run).
CURVE_FACTORS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)
SLO_TARGET = 0.95
# Fewest values on each side for a bootstrap interval of a p95 (:func:`paired_interval`): the
# p95 of fewer than 20 values lies between their two largest, and resampling a sample's maximum
# says little of how it would vary (of one value, nothing: every resample is that value).
MIN_INTERVAL_VALUES = 20

Run = Mapping[str, Any]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, linear between order statistics."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _latency_stats(values: Sequence[float]) -> dict[str, float | None]:
    return {"mean": sum(values) / len(values) if values else None,
            "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99)}


def _stretch_stats(values: Sequence[float]) -> dict[str, float | None]:
    return {"mean": sum(values) / len(values) if values else None,
            "p50": percentile(values, 50), "p95": percentile(values, 95)}


def _makespan(records: Sequence[QueryRecord], duration_s: float | None) -> float | None:
    """``duration_s`` if given, else first arrival to last finish."""
    if duration_s is not None:
        return duration_s
    finishes = [r.finish for r in records if r.finish is not None]
    if not records or not finishes:
        return None
    return max(finishes) - min(r.arrival for r in records)


def _prefix_hit_rate(records: Sequence[QueryRecord]) -> float | None:
    """Cached prompt tokens over prompt tokens, over calls that reported ``cached_tokens``."""
    reported = [c for r in records for c in r.calls if c.cached_tokens is not None]
    prompt = sum(c.prompt_tokens for c in reported)
    return sum(c.cached_tokens or 0 for c in reported) / prompt if prompt else None


def slo_curve(records: Sequence[QueryRecord], slo_scale: float,
              factors: Iterable[float] = CURVE_FACTORS) -> list[list[float]]:
    """``[[scale, attainment], ...]``: the attainment had every deadline budget been
    ``scale / slo_scale`` times the one the run used (budgets are proportional to the scale)."""
    curve = []
    for factor in factors:
        met = sum(1 for r in records
                  if not r.failed and r.latency is not None and r.deadline is not None
                  and r.latency <= (r.deadline - r.arrival) * factor)
        curve.append([slo_scale * factor, met / len(records) if records else 0.0])
    return curve


def summarize(records: Sequence[QueryRecord], *, policy: str, rate: float | None,
              duration_s: float | None = None,
              endpoints_busy: Mapping[str, float] | None = None,
              slo_scale: float | None = None,
              endpoints_cost_per_hour: Mapping[str, float | None] | None = None,
              per_query: bool = False) -> dict[str, Any]:
    """One run's figures, as a JSON-ready dict (see the module doc for the conventions).

    duration_s: the makespan to divide by (default: first arrival to last finish).
    endpoints_busy: endpoint -> busy seconds, reported as ``utilisation`` (busy / makespan).
    slo_scale: the deadline scale the run used; adds ``slo_curve`` (attainment at other scales).
    endpoints_cost_per_hour: endpoint -> its price an hour (None: unknown); with
        ``endpoints_busy``, adds ``gpu_cost`` (price x busy hours, summed over the endpoints of
        known price: the GPU time the run used, as billed per use) and ``cost_per_slo_query``
        (that over the queries that met their deadline; None if none did).
    per_query: also list each query's latency in replay order (``query_latency_s``; None: it
        did not complete), so two runs of the same queries compare query by query
        (:func:`regret`'s interval).
    """
    done = [r for r in records if not r.failed and r.finish is not None]
    makespan = _makespan(records, duration_s)
    ttfts = [c.ttft_s for r in records for c in r.calls if c.ttft_s is not None]
    out: dict[str, Any] = {
        "policy": policy, "rate": rate, "queries": len(records), "completed": len(done),
        "failed": sum(1 for r in records if r.failed),
        "latency_s": _latency_stats([r.latency for r in done if r.latency is not None]),
        "stretch": _stretch_stats([r.stretch for r in done if r.stretch is not None]),
        "slo_attainment": sum(1 for r in records if r.met) / len(records) if records else 0.0,
        "throughput_qps": len(done) / makespan if makespan else 0.0,
        "makespan_s": makespan,
        "ttft_s": {"p50": percentile(ttfts, 50), "p95": percentile(ttfts, 95)},
        "prefix_hit_rate": _prefix_hit_rate(records),
    }
    if per_query:
        out["query_latency_s"] = [r.latency if not r.failed and r.finish is not None else None
                                  for r in records]
    tenants = sorted({r.tenant for r in records})
    if len(tenants) > 1:
        out["slo_attainment_by_tenant"] = {
            t: sum(1 for r in records if r.tenant == t and r.met)
            / sum(1 for r in records if r.tenant == t) for t in tenants}
    if endpoints_busy is not None:
        out["utilisation"] = {name: busy / makespan if makespan else 0.0
                              for name, busy in sorted(endpoints_busy.items())}
    if endpoints_busy is not None and endpoints_cost_per_hour is not None:
        out.update(_gpu_cost(records, endpoints_busy, endpoints_cost_per_hour))
    if slo_scale is not None:
        out["slo_scale"] = slo_scale
        out["slo_curve"] = slo_curve(records, slo_scale)
    return out


def _gpu_cost(records: Sequence[QueryRecord], busy: Mapping[str, float],
              prices: Mapping[str, float | None]) -> dict[str, Any]:
    priced = {name: price for name, price in prices.items() if price is not None}
    if not priced:
        return {}
    cost = sum(price * busy.get(name, 0.0) / 3600.0 for name, price in priced.items())
    met = sum(1 for r in records if r.met)
    return {"gpu_cost": cost, "cost_per_slo_query": cost / met if met else None}


def max_rate_at_95(runs: Iterable[Run], target: float = SLO_TARGET) -> dict[str, float]:
    """Per policy, the highest swept rate up to which every run kept ``target`` attainment
    (rates above a first miss do not count: a lucky run past the knee is noise); 0.0 if even
    the lowest rate missed."""
    by_policy: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        if run.get("rate") is not None:
            by_policy.setdefault(run["policy"], []).append((run["rate"], run["slo_attainment"]))
    best: dict[str, float] = {}
    for policy, points in by_policy.items():
        best[policy] = 0.0
        for rate, attainment in sorted(points):
            if attainment < target:
                break
            best[policy] = rate
    return best


def regret(runs: Iterable[Run], policy: str = "slack",
           path: tuple[str, ...] = ("latency_s", "p95"), *, resamples: int = 1000,
           seed: int = 0) -> dict[float, dict[str, Any]]:
    """Per swept rate, how much worse ``policy``'s figure at ``path`` (default p95 latency) is
    than the best other policy's at that rate: ``{rate: {"best_other": name, "excess": x}}``
    with ``x = mine / best - 1`` (negative: ``policy`` is ahead). Rates where ``policy`` or
    every other one has no figure are left out.

    For p95 latency, when both runs carry their queries' latencies (``query_latency_s``, the
    same queries in the same order, as every policy of one ``bench scheduler`` comparison
    replays), ``"interval"`` is a 95% paired bootstrap interval of ``x`` (``resamples``
    resamplings of the queries, with replacement, the same queries for both policies; seeded
    by ``seed``; only if each completed at least :data:`MIN_INTERVAL_VALUES` of them, see
    :func:`paired_interval`): how far the excess could move with another draw of as many
    queries. A query one run did not complete is left out of its p95, as in :func:`summarize`;
    the best other policy is the one found over all the queries, in every resample. A p95 of
    600 long-tailed requests is their 30th-longest latency, and one request placed differently
    moves it several percent (issue 12: `hexgen` with ``alpha`` 0.32 against 0.3 on
    Mooncake-format traces, 600 requests, was more than 3% above itself in 6 of 80 cells).

        >>> runs = [{"policy": "slack", "rate": 1.0, "latency_s": {"p95": 103.0}},
        ...         {"policy": "hexgen", "rate": 1.0, "latency_s": {"p95": 100.0}}]
        >>> round(regret(runs)[1.0]["excess"], 3), regret(runs)[1.0]["best_other"]
        (0.03, 'hexgen')
    """
    by_rate: dict[float, dict[str, float]] = {}
    lists: dict[tuple[float, str], Sequence[float | None]] = {}
    for run in runs:
        value = _get(run, path)
        if run.get("rate") is not None and value is not None:
            by_rate.setdefault(float(run["rate"]), {})[run["policy"]] = float(value)
            if run.get("query_latency_s"):
                lists[float(run["rate"]), run["policy"]] = run["query_latency_s"]
    out: dict[float, dict[str, Any]] = {}
    for rate, figures in sorted(by_rate.items()):
        others = {p: v for p, v in figures.items() if p != policy}
        if policy not in figures or not others:
            continue
        best = min(others, key=lambda p: others[p])
        excess = figures[policy] / others[best] - 1.0 if others[best] > 0 else 0.0
        out[rate] = {"best_other": best, "excess": excess}
        mine, theirs = lists.get((rate, policy)), lists.get((rate, best))
        if (path == ("latency_s", "p95") and mine and theirs and len(mine) == len(theirs)
                and resamples > 0):
            interval = paired_interval(mine, theirs, 95.0, resamples=resamples,
                                       seed=seed)
            if interval is not None:
                out[rate]["interval"] = interval
    return out


def paired_interval(mine: Sequence[float | None], theirs: Sequence[float | None], q: float,
                    *, resamples: int = 1000, seed: int = 0, level: float = 0.95,
                    min_values: int = MIN_INTERVAL_VALUES) -> tuple[float, float] | None:
    """A ``level`` paired bootstrap interval of ``percentile(mine, q) / percentile(theirs, q)
    - 1``: both lists hold the same items' values (None: missing, left out of that side's
    percentile), resampled together ``resamples`` times with replacement. None if the lists
    differ in length, a side has fewer than ``min_values`` values (one query is every resample
    of itself: a zero-width interval that would claim certainty), or a resample leaves a side
    empty or its percentile at 0. ValueError for ``q`` outside 0-100, ``level`` outside (0, 1)
    or ``resamples`` < 1.

        >>> a = [float(i) for i in range(1, 201)]
        >>> paired_interval(a, a, 95.0)          # the same values: no difference, ever
        (0.0, 0.0)
        >>> low, high = paired_interval([x * 1.1 for x in a], a, 95.0)
        >>> round(low, 6), round(high, 6)        # every value 10% larger: so is every p95
        (0.1, 0.1)
    """
    import random  # (only here: the module is imported by the CLI at start)

    if not 0.0 <= q <= 100.0 or not 0.0 < level < 1.0 or resamples < 1:
        raise ValueError(f"paired_interval wants 0 <= q <= 100, 0 < level < 1 and resamples "
                         f">= 1, got q={q}, level={level}, resamples={resamples}")
    n = len(mine)
    if n == 0 or n != len(theirs):
        return None
    if min(n - list(mine).count(None), n - list(theirs).count(None)) < max(min_values, 1):
        return None
    rng = random.Random(seed)
    pick = rng.choices
    indices = range(n)
    excesses = []
    for _ in range(resamples):
        drawn = pick(indices, k=n)
        a = percentile([v for i in drawn if (v := mine[i]) is not None], q)
        b = percentile([v for i in drawn if (v := theirs[i]) is not None], q)
        if a is None or b is None or b <= 0.0:
            return None
        excesses.append(a / b - 1.0)
    tail = (1.0 - level) / 2.0 * 100.0
    return percentile(excesses, tail) or 0.0, percentile(excesses, 100.0 - tail) or 0.0


# --------------------------------------------------------------------------- table

def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("queries", ("queries",)), ("completed", ("completed",)), ("failed", ("failed",)),
    ("latency mean (s)", ("latency_s", "mean")), ("latency p50 (s)", ("latency_s", "p50")),
    ("latency p95 (s)", ("latency_s", "p95")), ("latency p99 (s)", ("latency_s", "p99")),
    ("stretch mean", ("stretch", "mean")), ("stretch p50", ("stretch", "p50")),
    ("stretch p95", ("stretch", "p95")),
    ("SLO attainment", ("slo_attainment",)), ("throughput (q/s)", ("throughput_qps",)),
    ("TTFT p50 (s)", ("ttft_s", "p50")), ("TTFT p95 (s)", ("ttft_s", "p95")),
    ("prefix hit rate", ("prefix_hit_rate",)),
    ("GPU cost / query in SLO", ("cost_per_slo_query",)),
)


def _get(run: Run, path: tuple[str, ...]) -> Any:
    value: Any = run
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def format_table(runs: Sequence[Run]) -> str:
    """Runs side by side: one column per run (``policy @ rate``), one row per figure, then
    per-endpoint utilisation."""
    headers = ["", *(f"{r['policy']} @ {_fmt(r.get('rate'))}" for r in runs)]
    rows = [[label, *(_fmt(_get(r, path)) for r in runs)] for label, path in _ROWS]
    endpoints = sorted({e for r in runs for e in (r.get("utilisation") or {})})
    rows += [[f"util {e}", *(_fmt((r.get("utilisation") or {}).get(e)) for r in runs)]
             for e in endpoints]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- plot

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
Points = tuple[tuple[float, float], ...]


def nice_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Round tick values covering ``lo``..``hi``: the smallest step of 1, 2 or 5 times a power of
    ten that needs at most ``max_ticks`` ticks; the first tick <= ``lo``, the last >= ``hi`` (to
    a billionth of a step: float noise adds no tick); ``lo == hi`` is widened upwards.
    ``ValueError`` for a non-finite bound or ``max_ticks < 3`` (-step, 0, step across zero).

    >>> nice_ticks(0, 335)
    [0.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0]
    >>> nice_ticks(0.01, 0.03)
    [0.01, 0.015, 0.02, 0.025, 0.03]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or max_ticks < 3:
        raise ValueError(f"nice_ticks needs finite bounds and max_ticks >= 3, got {lo}, {hi}, {max_ticks}")
    lo, hi = min(lo, hi), max(lo, hi)
    if hi == lo:
        hi = lo + (abs(lo) or 1.0)
    exp = math.floor(math.log10((hi - lo) / (max_ticks - 1)))
    while True:
        for mantissa in (1, 2, 5):
            step = _multiple(1, mantissa, exp)
            first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
            if last - first + 1 <= max_ticks:
                return [_multiple(i, mantissa, exp) for i in range(first, last + 1)]
        exp += 1


def _multiple(i: int, mantissa: int, exp: int) -> float:
    """``i * mantissa * 10**exp`` as an integer over a power of ten: 0.015, not 0.015000000000000002."""
    return float(i * mantissa * 10 ** exp) if exp >= 0 else i * mantissa / 10 ** -exp


def log_ticks(lo: float, hi: float) -> list[float]:
    """Round ticks for a log axis covering ``lo``..``hi`` (both > 0): powers of ten, and 2 and 5
    times them when ``hi / lo`` is at most 100.

    >>> log_ticks(3, 300)
    [2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
    """
    if not (0 < lo <= hi < math.inf):
        raise ValueError(f"log_ticks needs 0 < lo <= hi, got {lo}, {hi}")
    if hi == lo:
        lo, hi = lo / 2, hi * 2
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mantissas = (1, 2, 5) if hi / lo <= 100 else (1,)
    ticks = [m * 10.0 ** e for e in range(first, last + 1) for m in mantissas]
    below = [t for t in ticks if t <= lo * (1 + 1e-9)]
    above = [t for t in ticks if t >= hi * (1 - 1e-9)]
    return [t for t in ticks if below[-1] <= t <= above[0]]


def tick_label(value: float, *, percent: bool = False) -> str:
    """A round tick's label: ``0.015``, ``100``, ``20%`` (``percent``: ``value`` is a fraction)."""
    return f"{value * 100:g}%" if percent else f"{value:g}"


@dataclass(frozen=True, slots=True)
class Panel:
    """One chart of a :class:`Chart`: lines over a numeric x axis, or groups of bars, one group
    per category (policy), one bar per series in each group."""

    title: str
    xlabel: str
    ylabel: str
    lines: Mapping[str, Points] = field(default_factory=dict)   # policy -> (x, y), x ascending
    categories: tuple[str, ...] = ()                            # bar groups, left to right (policies)
    bars: tuple[tuple[str, tuple[float | None, ...]], ...] = ()  # (series, value per category; None: no value)
    percent: bool = False                                       # y values are fractions, shown as %
    fraction_axis: bool = False                                 # y axis spans 0..1 whatever the data
    target: float | None = None                                 # a dashed reference line (the SLO target)
    log_y: bool = False

    def y_ticks(self) -> list[float]:
        """Round ticks of the y axis (also its range: first to last tick)."""
        if self.fraction_axis:
            return nice_ticks(0.0, 1.0)
        values = [y for line in self.lines.values() for _, y in line] + \
            [v for _, vs in self.bars for v in vs if v is not None] or [1.0]
        if self.log_y and min(values) > 0:
            return log_ticks(min(values), max(values))
        return nice_ticks(0.0, max(max(values), 0.0) * (1.08 if self.bars else 1.0))

    def y_range(self) -> tuple[float, float]:
        """The y axis's bottom and top: the first and last tick, with room above a fraction axis
        for a 100% marker (lines) or value label (bars)."""
        ticks = self.y_ticks()
        return ticks[0], (1.12 if self.bars else 1.04) if self.fraction_axis else ticks[-1]

    def missing(self, category: int) -> bool:
        """True if no series has a value for the ``category``-th group (say n/a, draw nothing)."""
        return all(values[category] is None for _, values in self.bars)

    def x_ticks(self) -> list[float]:
        """Round ticks of a line panel's x axis (also its range); ``[]`` for a bar panel."""
        xs = [x for line in self.lines.values() for x, _ in line]
        return nice_ticks(min(xs), max(xs)) if xs and not self.categories else []


@dataclass(frozen=True, slots=True)
class Chart:
    """What :func:`plot` draws, whatever the format: titles, panels, a colour per policy."""

    title: str
    subtitle: str
    colours: Mapping[str, str]   # policy -> colour, legend order
    panels: tuple[Panel, ...]


def _rate_label(rates: Sequence[float]) -> str:
    return (f"rate {_fmt(rates[0])} q/s" if len(rates) == 1
            else f"rates {', '.join(_fmt(r) for r in rates)} q/s")


def caption(report: Mapping[str, Any]) -> tuple[str, str]:
    """(title, subtitle) naming a ``bench scheduler`` report's trace, cluster, rates and SLO scale;
    ``report`` has the keys of ``fleetcall bench scheduler --json`` (missing ones are left out).

    >>> caption({"trace": "trace1", "queries": 40, "gpus": ["A100-80G", "A100-80G", "L40S"],
    ...          "model": "llama-3.1-70b", "slo_scale": 3.0, "runs": [{"rate": 0.02}]})[1]
    'llama-3.1-70b on 2 x A100-80G + L40S | rate 0.02 q/s | SLO scale 3'
    """
    trace = str(report.get("trace", "workload")).replace("\\", "/").rsplit("/", 1)[-1]
    queries = f", {report['queries']} queries" if report.get("queries") else ""
    counts = Counter(report.get("gpus") or ())
    cluster = " + ".join(f"{n} x {gpu}" if n > 1 else gpu for gpu, n in counts.items())
    rates = sorted({float(r["rate"]) for r in report.get("runs", ()) if r.get("rate") is not None})
    parts = []
    if cluster:
        parts.append(f"{report['model']} on {cluster}" if report.get("model") else cluster)
    if rates:
        arrivals = f"{report['arrivals']} arrivals, " if report.get("arrivals") else ""
        parts.append(arrivals + _rate_label(rates))
    if report.get("slo_scale") is not None:
        deadline = f" ({report['deadline']} deadlines)" if report.get("deadline") else ""
        parts.append(f"SLO scale {_fmt(float(report['slo_scale']))}{deadline}")
    return f"Scheduler benchmark: {trace}{queries}", " | ".join(parts)


def chart(runs: Sequence[Run], *, rate: float | None = None, title: str | None = None,
          subtitle: str | None = None) -> Chart:
    """The panels for ``runs``. One rate: p50/p95 latency bars and SLO attainment bars per
    policy, and attainment against deadline scale. A sweep: p95 latency and attainment against
    rate, and attainment against deadline scale at ``rate`` (default: the highest swept)."""
    if not runs:
        raise ValueError("no runs to chart")
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    colours = {p: _COLOURS[i % len(_COLOURS)] for i, p in enumerate(policies)}
    rates = sorted({float(r["rate"]) for r in runs if r.get("rate") is not None})
    chosen = rate if rate is not None else (rates[-1] if rates else None)
    scales = sorted({float(r["slo_scale"]) for r in runs if r.get("slo_scale") is not None})
    at = [r for r in runs if r.get("rate") == chosen]
    curve = Panel(f"SLO attainment vs deadline scale ({_rate_label([chosen])})" if chosen is not None
                  else "SLO attainment vs deadline scale", "deadline scale (x base latency)",
                  "SLO attainment", lines={r["policy"]: tuple((float(s), float(a)) for s, a in r["slo_curve"])
                                           for r in at if r.get("slo_curve")},
                  percent=True, fraction_axis=True, target=SLO_TARGET)
    if len(rates) <= 1:
        latency = Panel("Latency per policy", "", "latency (s)", categories=tuple(r["policy"] for r in at),
                        bars=tuple((q, tuple(_get(r, ("latency_s", q)) for r in at)) for q in ("p50", "p95")))
        scale = f" (scale {_fmt(scales[0])})" if len(scales) == 1 else ""
        attained = Panel(f"SLO attainment{scale}", "", "SLO attainment",
                         categories=latency.categories,
                         bars=(("attainment", tuple(float(r["slo_attainment"]) for r in at)),),
                         percent=True, fraction_axis=True, target=SLO_TARGET)
        panels = (latency, attained, curve)
    else:
        p95 = _by_rate(runs, ("latency_s", "p95"))
        values = [y for line in p95.values() for _, y in line]
        wide = bool(values) and min(values) > 0 and max(values) > 20 * min(values)
        panels = (Panel("p95 latency vs rate", "arrival rate (queries/s)", "p95 latency (s)", lines=p95, log_y=wide),
                  Panel("SLO attainment vs rate", "arrival rate (queries/s)", "SLO attainment",
                        lines=_by_rate(runs, ("slo_attainment",)), percent=True, fraction_axis=True,
                        target=SLO_TARGET),
                  curve)
    said = " | ".join(p for p in (_rate_label(rates) if rates else "",
                                  f"SLO scale {_fmt(scales[0])}" if len(scales) == 1 else "") if p)
    return Chart(title or "Scheduler benchmark", said if subtitle is None else subtitle, colours, panels)


def _by_rate(runs: Sequence[Run], path: tuple[str, ...]) -> dict[str, Points]:
    """policy -> ((rate, figure at ``path``), ...), rates ascending; runs without either left out."""
    out: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        value = _get(run, path)
        if run.get("rate") is not None and value is not None:
            out.setdefault(run["policy"], []).append((float(run["rate"]), float(value)))
    return {policy: tuple(sorted(points)) for policy, points in out.items()}


def _value_label(value: float | None, percent: bool) -> str:
    """A bar's value over it: ``""`` for no value (a group without any value says n/a once)."""
    if value is None:
        return ""
    return f"{value * 100:.3g}%" if percent else _fmt(float(value))


# SVG layout, pixels: one panel; the title block above the panels; the legend below them
_PW, _PH, _HEAD, _FOOT = 400, 300, 64, 34
_TARGET_COLOUR, _TARGET_DASH = "#777777", "5,4"  # the SLO target line


class _Frame:
    """Data -> pixel coordinates of one SVG panel's plot area."""

    def __init__(self, panel: Panel, x0: float) -> None:
        self.left, self.right = x0 + 64, x0 + _PW - 18
        self.top, self.bottom = _HEAD + 46, _HEAD + _PH - 50
        self.ylo, self.yhi = panel.y_range()
        self.log = panel.log_y and self.ylo > 0
        xt = panel.x_ticks()
        self.xlo, self.xhi = (xt[0], xt[-1]) if xt else (0.0, 1.0)

    def sx(self, x: float) -> float:
        return self.left + (x - self.xlo) / (self.xhi - self.xlo) * (self.right - self.left)

    def sy(self, y: float) -> float:
        lo, hi, y = ((math.log10(self.ylo), math.log10(self.yhi), math.log10(max(y, self.ylo))) if self.log
                     else (self.ylo, self.yhi, y))
        return self.bottom - (y - lo) / (hi - lo) * (self.bottom - self.top)


def _svg_text(x: float, y: float, text: str, *, anchor: str = "middle", size: int = 12,
              extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}"{extra}>'
            f"{html.escape(text)}</text>")


def _svg_axes(panel: Panel, f: _Frame, x0: float) -> list[str]:
    """Panel title, axis labels, round ticks with grid lines, the target line."""
    out = [_svg_text(x0 + _PW / 2, _HEAD + 18, panel.title, size=13, extra=' font-weight="bold"'),
           _svg_text((f.left + f.right) / 2, _HEAD + _PH - 10, panel.xlabel),
           _svg_text(x0 + 14, (f.top + f.bottom) / 2, panel.ylabel,
                     extra=f' transform="rotate(-90 {x0 + 14} {(f.top + f.bottom) / 2:.1f})"')]
    for t in panel.y_ticks():
        out.append(f'<line x1="{f.left}" y1="{f.sy(t):.1f}" x2="{f.right}" y2="{f.sy(t):.1f}" stroke="#e4e4e4"/>')
        out.append(_svg_text(f.left - 6, f.sy(t) + 4, tick_label(t, percent=panel.percent), anchor="end", size=11))
    for t in panel.x_ticks():
        out.append(f'<line x1="{f.sx(t):.1f}" y1="{f.top}" x2="{f.sx(t):.1f}" y2="{f.bottom}" stroke="#e4e4e4"/>')
        out.append(_svg_text(f.sx(t), f.bottom + 16, tick_label(t), size=11))
    if panel.target is not None:
        out.append(f'<line x1="{f.left}" y1="{f.sy(panel.target):.1f}" x2="{f.right}" y2="{f.sy(panel.target):.1f}" '
                   f'stroke="{_TARGET_COLOUR}" stroke-dasharray="{_TARGET_DASH}"/>')
    out.append(f'<rect x="{f.left}" y="{f.top}" width="{f.right - f.left}" height="{f.bottom - f.top}" '
               f'fill="none" stroke="#333"/>')
    return out


def _svg_bars(panel: Panel, f: _Frame, x0: float, colours: Mapping[str, str]) -> list[str]:
    """Groups of bars, their value labels, category labels and (several series) a key."""
    out: list[str] = []
    slot = (f.right - f.left) / max(len(panel.categories), 1)
    width = 0.7 * slot / max(len(panel.bars), 1)
    tilt = _tilt(panel.categories, slot / 7)  # about 7 px a character at 11 px
    size = 10 if width >= 25 else 8  # value labels: narrow bars get small ones
    for i, category in enumerate(panel.categories):
        cx = f.left + slot * (i + 0.5)
        out.append(_svg_text(cx, f.bottom + 16, category, anchor="end" if tilt else "middle", size=11,
                             extra=f' transform="rotate(-25 {cx:.1f} {f.bottom + 16})"' if tilt else ""))
        if panel.missing(i):
            out.append(_svg_text(cx, f.bottom - 4, "n/a", size=size))
        for j, (series, values) in enumerate(panel.bars):
            value, x = values[i], cx - 0.35 * slot + width * j
            if value is None:
                continue
            top = f.sy(value)
            out.append(_svg_text(x + width / 2, top - 4, _value_label(value, panel.percent), size=size))
            out.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" height="{f.bottom - top:.1f}" '
                       f'fill="{colours.get(category, "#555555")}" fill-opacity="{_opacity(j, len(panel.bars))}">'
                       f"<title>{html.escape(f'{category} {series}: {_value_label(value, panel.percent)}')}"
                       "</title></rect>")
    if len(panel.bars) > 1:
        for j, (series, _) in enumerate(panel.bars):
            kx = x0 + _PW / 2 + 60 * (j - len(panel.bars) / 2)
            out.append(f'<rect x="{kx:.1f}" y="{_HEAD + 27}" width="12" height="10" fill="#555555" '
                       f'fill-opacity="{_opacity(j, len(panel.bars))}"/>')
            out.append(_svg_text(kx + 16, _HEAD + 36, series, anchor="start", size=11))
    return out


def _tilt(categories: Sequence[str], room: float) -> bool:
    """True if a category label longer than ``room`` characters must be tilted to fit its slot."""
    return max((len(c) for c in categories), default=0) > room - 1


def _opacity(series: int, count: int) -> float:
    """The first of several bar series (p50 before p95) is drawn lighter."""
    return 0.45 if count > 1 and series == 0 else 1.0


def _svg_lines(panel: Panel, f: _Frame, colours: Mapping[str, str]) -> list[str]:
    out = []
    for policy, line in panel.lines.items():
        coords = " ".join(f"{f.sx(x):.1f},{f.sy(y):.1f}" for x, y in line)
        colour = colours.get(policy, "#555555")
        out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2">'
                   f"<title>{html.escape(policy)}</title></polyline>")
        out += [f'<circle cx="{f.sx(x):.1f}" cy="{f.sy(y):.1f}" r="3" fill="{colour}"/>' for x, y in line]
    return out


def _svg_legend(spec: Chart, width: float) -> list[str]:
    entries = [(p, f'stroke="{c}" stroke-width="2"') for p, c in spec.colours.items()]
    if any(p.target is not None for p in spec.panels):
        entries.append((f"SLO target {SLO_TARGET:.0%}", f'stroke="{_TARGET_COLOUR}" stroke-dasharray="{_TARGET_DASH}"'))
    step = min(150.0, (width - 20) / max(len(entries), 1))
    x, y = width / 2 - step * len(entries) / 2, _HEAD + _PH + 18
    out = []
    for i, (name, style) in enumerate(entries):
        out.append(f'<line x1="{x + step * i:.1f}" y1="{y - 4}" x2="{x + step * i + 22:.1f}" y2="{y - 4}" {style}/>')
        out.append(_svg_text(x + step * i + 28, y, name, anchor="start"))
    return out


def render_svg(runs: Sequence[Run], *, rate: float | None = None, title: str | None = None,
               subtitle: str | None = None) -> str:
    """The :func:`chart` of ``runs`` as one self-contained SVG document (no plotting library)."""
    spec = chart(runs, rate=rate, title=title, subtitle=subtitle)
    width = _PW * len(spec.panels) + 10
    body = [_svg_text(width / 2, 26, spec.title, size=17, extra=' font-weight="bold"'),
            _svg_text(width / 2, 48, spec.subtitle, size=13, extra=' fill="#444444"')]
    for i, panel in enumerate(spec.panels):
        frame = _Frame(panel, 5 + i * _PW)
        body += _svg_axes(panel, frame, 5 + i * _PW)
        body += _svg_bars(panel, frame, 5 + i * _PW, spec.colours) if panel.bars else \
            _svg_lines(panel, frame, spec.colours)
    body += _svg_legend(spec, width)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_HEAD + _PH + _FOOT}" '
            f'font-family="sans-serif" font-size="12">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")


def plot(runs: Sequence[Run], path: str | Path, *, rate: float | None = None, title: str | None = None,
         subtitle: str | None = None) -> Path:
    """Write the :func:`chart` of ``runs`` to ``path`` and return the file written. ``title`` and
    ``subtitle`` name what was run (see :func:`caption`); ``rate`` picks the run of the deadline
    scale panel (default: the highest rate).

    ``.png`` (or ``.pdf``) is drawn with matplotlib (the ``plot`` extra); without it the suffix
    becomes ``.svg``. ``.svg`` is written as is and ``.html`` wraps it in a page, with no
    dependency.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".png", ".pdf") and importlib.util.find_spec("matplotlib") is not None:
        figure(runs, rate=rate, title=title, subtitle=subtitle).savefig(path, dpi=120)
        return path
    svg = render_svg(runs, rate=rate, title=title, subtitle=subtitle)
    if suffix == ".html":
        path.write_text(f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>"
                        f"{html.escape(title or 'fleetcall scheduler benchmark')}</title></head>\n<body>\n{svg}"
                        f"</body></html>\n", encoding="utf-8")
        return path
    if suffix != ".svg":
        path = path.with_suffix(".svg")
    path.write_text(svg, encoding="utf-8")
    return path


def figure(runs: Sequence[Run], *, rate: float | None = None, title: str | None = None,
           subtitle: str | None = None) -> Figure:
    """The :func:`chart` of ``runs`` as a matplotlib ``Figure`` (no pyplot, no global state): the
    same panels, ticks and titles as :func:`render_svg`. Needs matplotlib."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    spec = chart(runs, rate=rate, title=title, subtitle=subtitle)
    height = 5.0
    fig = Figure(figsize=(4.8 * len(spec.panels), height))
    for ax, panel in zip(fig.subplots(1, len(spec.panels), squeeze=False)[0], spec.panels):
        _mpl_panel(ax, panel, spec.colours)
    fig.text(0.5, 1 - 0.25 / height, spec.title, ha="center", va="center", fontsize=14, fontweight="bold")
    fig.text(0.5, 1 - 0.55 / height, spec.subtitle, ha="center", va="center", fontsize=10, color="#444444")
    handles = [Line2D([], [], color=c, marker="o", label=p) for p, c in spec.colours.items()]
    if any(p.target is not None for p in spec.panels):
        handles.append(Line2D([], [], color=_TARGET_COLOUR, linestyle="--", label=f"SLO target {SLO_TARGET:.0%}"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1 - 0.75 / height))
    return fig


def _mpl_panel(ax: Axes, panel: Panel, colours: Mapping[str, str]) -> None:
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullLocator

    if panel.log_y:
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())
    for policy, points in panel.lines.items():
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", color=colours.get(policy),
                label=policy, clip_on=False, zorder=3)
    count = len(panel.bars)
    for j, (series, values) in enumerate(panel.bars):
        width = 0.7 / count
        rects = ax.bar([i - 0.35 + width * (j + 0.5) for i in range(len(panel.categories))],
                       [v or 0.0 for v in values], width, label=series, alpha=_opacity(j, count),
                       color=[colours.get(c, "#555555") for c in panel.categories])
        ax.bar_label(rects, [_value_label(v, panel.percent) for v in values], fontsize=8, padding=2)
    for i in range(len(panel.categories) if panel.bars else 0):
        if panel.missing(i):
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8)
    if panel.bars:
        tilt = _tilt(panel.categories, 4.0 * 11 / max(len(panel.categories), 1))  # ~4 in, 11 characters an inch
        ax.set_xticks(range(len(panel.categories)), panel.categories, rotation=25 if tilt else 0,
                      ha="right" if tilt else "center")
        ax.set_xlim(-0.5, len(panel.categories) - 0.5)
    if count > 1:
        ax.legend(handles=[Patch(color="#555555", alpha=_opacity(j, count), label=s)
                           for j, (s, _) in enumerate(panel.bars)],
                  loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=count, frameon=False, fontsize=9)
    xt, yt = panel.x_ticks(), panel.y_ticks()
    if xt:
        ax.set_xticks(xt, [tick_label(t) for t in xt])
        ax.set_xlim(xt[0], xt[-1])
    ax.set_yticks(yt, [tick_label(t, percent=panel.percent) for t in yt])
    ax.set_ylim(*panel.y_range())
    if panel.target is not None:
        ax.axhline(panel.target, color=_TARGET_COLOUR, linestyle="--", linewidth=1)
    ax.set_title(panel.title, fontsize=11, pad=22 if count > 1 else 6)
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
