"""Benchmark reports: summaries of replay records, the side-by-side table, the plot.

:func:`summarize` turns one run's :class:`~fleetcall.bench.replay.QueryRecord` list into a plain
dict (JSON-ready), the unit of ``fleetcall bench scheduler --json``'s ``runs``;
:func:`max_rate_at_95` reads a load sweep; :func:`format_table` prints runs side by side;
:func:`plot` draws SLO attainment against deadline scale and p95 latency against rate.

Percentiles interpolate linearly between order statistics (numpy's default). Latency figures
are over completed queries; SLO attainment is over all queries (a failed query misses).

    >>> summarize([], policy="fcfs", rate=1.0)["queries"]
    0
"""

from __future__ import annotations

import importlib.util

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetcall.bench.replay import QueryRecord

# Deadline scales of the attainment curve, relative to the run's own scale (1.0 = as run).
CURVE_FACTORS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)
SLO_TARGET = 0.95

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
              slo_scale: float | None = None) -> dict[str, Any]:
    """One run's figures, as a JSON-ready dict (see the module doc for the conventions).

    duration_s: the makespan to divide by (default: first arrival to last finish).
    endpoints_busy: endpoint -> busy seconds, reported as ``utilisation`` (busy / makespan).
    slo_scale: the deadline scale the run used; adds ``slo_curve`` (attainment at other scales).
    """
    done = [r for r in records if not r.failed and r.finish is not None]
    makespan = _makespan(records, duration_s)
    ttfts = [c.ttft_s for r in records for c in r.calls if c.ttft_s is not None]
    out: dict[str, Any] = {
        "policy": policy, "rate": rate, "queries": len(records), "completed": len(done),
        "failed": sum(1 for r in records if r.failed),
        "latency_s": _latency_stats([r.latency for r in done if r.latency is not None]),
        "slo_attainment": sum(1 for r in records if r.met) / len(records) if records else 0.0,
        "throughput_qps": len(done) / makespan if makespan else 0.0,
        "makespan_s": makespan,
        "ttft_s": {"p50": percentile(ttfts, 50), "p95": percentile(ttfts, 95)},
        "prefix_hit_rate": _prefix_hit_rate(records),
    }
    tenants = sorted({r.tenant for r in records})
    if len(tenants) > 1:
        out["slo_attainment_by_tenant"] = {
            t: sum(1 for r in records if r.tenant == t and r.met)
            / sum(1 for r in records if r.tenant == t) for t in tenants}
    if endpoints_busy is not None:
        out["utilisation"] = {name: busy / makespan if makespan else 0.0
                              for name, busy in sorted(endpoints_busy.items())}
    if slo_scale is not None:
        out["slo_scale"] = slo_scale
        out["slo_curve"] = slo_curve(records, slo_scale)
    return out


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
    ("SLO attainment", ("slo_attainment",)), ("throughput (q/s)", ("throughput_qps",)),
    ("TTFT p50 (s)", ("ttft_s", "p50")), ("TTFT p95 (s)", ("ttft_s", "p95")),
    ("prefix hit rate", ("prefix_hit_rate",)),
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
_W, _H, _PAD = 460, 320, 52  # one panel, pixels


def _series(runs: Sequence[Run], rate: float | None) -> tuple[dict[str, list[tuple[float, float]]],
                                                            dict[str, list[tuple[float, float]]]]:
    """(policy -> attainment curve at ``rate``, policy -> (rate, p95 latency) points)."""
    chosen = rate if rate is not None else next((r.get("rate") for r in runs), None)
    curves: dict[str, list[tuple[float, float]]] = {}
    p95: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        policy = run["policy"]
        if run.get("rate") == chosen and run.get("slo_curve"):
            curves[policy] = [(float(s), float(a)) for s, a in run["slo_curve"]]
        latency = _get(run, ("latency_s", "p95"))
        if run.get("rate") is not None and latency is not None:
            p95.setdefault(policy, []).append((float(run["rate"]), float(latency)))
    return curves, {p: sorted(points) for p, points in p95.items()}


def _panel(x0: float, title: str, xlabel: str, ylabel: str,
           lines: Mapping[str, list[tuple[float, float]]], colours: Mapping[str, str]) -> str:
    """One SVG line chart at horizontal offset ``x0``."""
    points = [p for line in lines.values() for p in line]
    xs, ys = [p[0] for p in points] or [0.0, 1.0], [p[1] for p in points] or [0.0, 1.0]
    xlo, xhi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1.0
    ylo, yhi = 0.0, max(ys) * 1.05 if max(ys) > 0 else 1.0

    def sx(x: float) -> float:
        return x0 + _PAD + (x - xlo) / (xhi - xlo) * (_W - 1.5 * _PAD)

    def sy(y: float) -> float:
        return _H - _PAD - (y - ylo) / (yhi - ylo) * (_H - 1.8 * _PAD)

    out = [f'<text x="{x0 + _W / 2}" y="20" text-anchor="middle" font-weight="bold">'
           f"{html.escape(title)}</text>",
           f'<line x1="{sx(xlo)}" y1="{sy(ylo)}" x2="{sx(xhi)}" y2="{sy(ylo)}" stroke="#333"/>',
           f'<line x1="{sx(xlo)}" y1="{sy(ylo)}" x2="{sx(xlo)}" y2="{sy(yhi)}" stroke="#333"/>',
           f'<text x="{x0 + _W / 2}" y="{_H - 12}" text-anchor="middle">{html.escape(xlabel)}</text>',
           f'<text x="{x0 + 14}" y="{_H / 2}" text-anchor="middle" '
           f'transform="rotate(-90 {x0 + 14} {_H / 2})">{html.escape(ylabel)}</text>']
    for i in range(5):
        xv, yv = xlo + (xhi - xlo) * i / 4, ylo + (yhi - ylo) * i / 4
        out.append(f'<text x="{sx(xv):.1f}" y="{sy(ylo) + 16:.1f}" text-anchor="middle" '
                   f'font-size="11">{_fmt(xv)}</text>')
        out.append(f'<text x="{sx(xlo) - 6:.1f}" y="{sy(yv) + 4:.1f}" text-anchor="end" '
                   f'font-size="11">{_fmt(yv)}</text>')
    for policy, line in lines.items():
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        colour = colours[policy]
        out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2">'
                   f"<title>{html.escape(policy)}</title></polyline>")
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>'
                for x, y in line]
    return "\n".join(out)


def render_svg(runs: Sequence[Run], *, rate: float | None = None) -> str:
    """The two panels as one self-contained SVG document (no plotting library needed)."""
    curves, p95 = _series(runs, rate)
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    colours = {p: _COLOURS[i % len(_COLOURS)] for i, p in enumerate(policies)}
    chosen = rate if rate is not None else next((r.get("rate") for r in runs), None)
    legend = [f'<rect x="{_PAD + 150 * i}" y="{_H + 6}" width="14" height="4" '
              f'fill="{colours[p]}"/><text x="{_PAD + 150 * i + 20}" y="{_H + 12}" '
              f'font-size="12">{html.escape(p)}</text>' for i, p in enumerate(policies)]
    body = "\n".join([
        _panel(0, f"SLO attainment vs deadline scale (rate {_fmt(chosen)} q/s)",
               "deadline scale", "SLO attainment", curves, colours),
        _panel(_W, "p95 latency vs rate", "rate (queries/s)", "p95 latency (s)", p95, colours),
        *legend])
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * _W}" height="{_H + 24}" '
            f'font-family="sans-serif" font-size="13">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')


def plot(runs: Sequence[Run], path: str | Path, *, rate: float | None = None) -> Path:
    """Write the plot (SLO attainment vs deadline scale at ``rate``, default the first run's;
    p95 latency vs rate), one line per policy, and return the file written.

    ``.png`` (or ``.pdf``) is drawn with matplotlib (the ``plot`` extra); without it the suffix
    becomes ``.svg``. ``.svg`` is written as is and ``.html`` wraps it in a page, with no
    dependency.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".png", ".pdf") and importlib.util.find_spec("matplotlib") is not None:
        return _plot_matplotlib(runs, path, rate)
    svg = render_svg(runs, rate=rate)
    if suffix == ".html":
        path.write_text(f"<!doctype html>\n<html><head><meta charset=\"utf-8\">"
                        f"<title>fleetcall scheduler benchmark</title></head>\n<body>\n{svg}"
                        f"</body></html>\n", encoding="utf-8")
        return path
    if suffix != ".svg":
        path = path.with_suffix(".svg")
    path.write_text(svg, encoding="utf-8")
    return path


def _plot_matplotlib(runs: Sequence[Run], path: Path, rate: float | None) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # files only: no display, no GUI event loop
    import matplotlib.pyplot as plt

    curves, p95 = _series(runs, rate)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for policy, points in curves.items():
        left.plot(*zip(*points), marker="o", label=policy)
    left.set(title="SLO attainment vs deadline scale", xlabel="deadline scale (x base latency)",
             ylabel="SLO attainment", ylim=(0, 1.02))
    for policy, points in p95.items():
        right.plot(*zip(*points), marker="o", label=policy)
    right.set(title="p95 latency vs arrival rate", xlabel="arrival rate (queries/s)",
              ylabel="p95 latency (s)")
    if p95 and max(v for pts in p95.values() for _, v in pts) > 20 * min(v for pts in p95.values() for _, v in pts):
        right.set_yscale("log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
