"""Report math on hand-made records; table and plot output."""

from __future__ import annotations

import itertools
import json
import math
import xml.etree.ElementTree as ET
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetcall.bench import report
from fleetcall.bench.replay import CallRecord, QueryRecord
from fleetcall.bench.report import (
    format_table, max_rate_at_95, percentile, plot, render_svg, slo_curve, summarize,
)
from fleetcall.cli import main as cli


def _call(prompt: int, cached: int | None, ttft: float | None) -> CallRecord:
    return CallRecord(0, 0, "s", 0.0, 1.0, prompt_tokens=prompt, cached_tokens=cached, ttft_s=ttft)


def _records() -> list[QueryRecord]:
    """Four queries over 0..12 s: three complete (latency 2, 4, 6), one failed."""
    return [
        QueryRecord("a", "gold", 0.0, 3.0, 2.0, calls=[_call(100, 50, 0.5), _call(100, 0, 1.0)]),
        QueryRecord("b", "gold", 2.0, 5.0, 6.0, calls=[_call(200, None, 2.0)]),
        QueryRecord("c", "free", 6.0, 13.0, 12.0, calls=[_call(100, 100, None)]),
        QueryRecord("d", "free", 8.0, 20.0, 9.0, failed=True, error="boom",
                    calls=[_call(100, 0, 4.0)]),
    ]


def test_stretch_is_latency_over_unloaded_latency() -> None:
    """Stretch: latency / the query's unloaded latency on the fastest endpoint, over completed
    queries that have one (a failed query, or one without a reference, has none)."""
    records = _records()
    for record, unloaded in zip(records, (1.0, 2.0, 4.0, 1.0)):
        record.unloaded_s = unloaded
    assert [r.stretch for r in records] == [2.0, 2.0, 1.5, None]
    s = summarize(records, policy="slack", rate=0.5)
    assert s["stretch"]["mean"] == pytest.approx(5.5 / 3)
    assert s["stretch"]["p50"] == 2.0 and s["stretch"]["p95"] == pytest.approx(2.0)
    assert summarize(_records(), policy="slack", rate=0.5)["stretch"] == \
        {"mean": None, "p50": None, "p95": None}
    assert "stretch mean" in format_table([s])


def test_regret_compares_with_the_best_other_policy_per_rate() -> None:
    runs = [{"policy": p, "rate": r, "latency_s": {"p95": v}} for p, r, v in (
        ("slack", 1.0, 110.0), ("hexgen", 1.0, 100.0), ("least-busy", 1.0, 120.0),
        ("slack", 2.0, 150.0), ("hexgen", 2.0, 300.0), ("least-busy", 2.0, 200.0),
        ("slack", 3.0, 1.0))]
    out = report.regret(runs)
    assert set(out) == {1.0, 2.0}  # at 3.0 nobody else ran
    assert out[1.0]["best_other"] == "hexgen" and out[1.0]["excess"] == pytest.approx(0.10)
    assert out[2.0]["best_other"] == "least-busy" and out[2.0]["excess"] == pytest.approx(-0.25)


def test_regret_gives_a_paired_bootstrap_interval_when_runs_carry_their_queries() -> None:
    # Issue 12: a p95 of a few hundred long-tailed latencies moves several percent with one
    # request placed differently; the interval says how far, query by query.
    rng = random.Random(7)
    theirs = [rng.expovariate(0.05) for _ in range(600)]
    mine = [v * rng.uniform(0.95, 1.09) for v in theirs]  # 2% longer on average, noisily
    mine[3] = None  # a failed query: left out of its side's percentile
    runs = [{"policy": "slack", "rate": 1.0, "latency_s": {"p95": percentile(
                [v for v in mine if v is not None], 95)}, "query_latency_s": mine},
            {"policy": "hexgen", "rate": 1.0, "latency_s": {"p95": percentile(theirs, 95)},
             "query_latency_s": theirs},
            {"policy": "slack", "rate": 2.0, "latency_s": {"p95": 10.0}},   # no queries kept
            {"policy": "hexgen", "rate": 2.0, "latency_s": {"p95": 10.0}}]
    out = report.regret(runs)
    low, high = out[1.0]["interval"]
    assert low < out[1.0]["excess"] < high
    assert -0.05 < low < 0.02 < high < 0.10
    assert report.regret(runs)[1.0]["interval"] == (low, high)  # seeded: the same every time
    assert "interval" not in out[2.0]
    # runs of different queries (lengths differ) are not paired
    runs[0] = {**runs[0], "query_latency_s": mine[:-1]}
    assert "interval" not in report.regret(runs)[1.0]
    # the interval is for p95 latency only
    runs = [{**run, "latency_s": {**run["latency_s"], "p50": 1.0}} for run in runs]
    assert "interval" not in report.regret(runs, path=("latency_s", "p50"))[1.0]


def test_summary_lists_each_querys_latency_in_replay_order() -> None:
    assert "query_latency_s" not in summarize(_records(), policy="slack", rate=0.5)
    s = summarize(_records(), policy="slack", rate=0.5, per_query=True)
    assert len(s["query_latency_s"]) == 4
    assert s["query_latency_s"].count(None) == 1  # the failed one
    done = [v for v in s["query_latency_s"] if v is not None]
    assert s["latency_s"]["p95"] == percentile(done, 95)


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 95) == pytest.approx(3.85)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)


def test_summary_figures() -> None:
    s = summarize(_records(), policy="slack", rate=0.5, endpoints_busy={"g1": 6.0, "g0": 12.0})
    assert (s["policy"], s["rate"], s["queries"], s["completed"], s["failed"]) == \
        ("slack", 0.5, 4, 3, 1)
    assert s["latency_s"]["mean"] == pytest.approx(4.0)
    assert s["latency_s"]["p50"] == 4.0 and s["latency_s"]["p95"] == pytest.approx(5.8)
    assert s["latency_s"]["p99"] == pytest.approx(5.96)
    assert s["slo_attainment"] == 0.5          # a and c met; b late; d failed
    assert s["makespan_s"] == 12.0 and s["throughput_qps"] == pytest.approx(3 / 12)
    assert s["ttft_s"]["p50"] == 1.5 and s["ttft_s"]["p95"] == pytest.approx(3.7)
    assert s["prefix_hit_rate"] == pytest.approx(150 / 400)  # the unreported call is left out
    assert s["utilisation"] == {"g0": 1.0, "g1": 0.5}
    assert s["slo_attainment_by_tenant"] == {"free": 0.5, "gold": 0.5}
    json.dumps(s)  # JSON-ready


def test_duration_overrides_the_makespan_and_empty_runs_are_safe() -> None:
    s = summarize(_records(), policy="p", rate=None, duration_s=30.0)
    assert s["throughput_qps"] == pytest.approx(0.1)
    empty = summarize([], policy="p", rate=1.0)
    assert empty["completed"] == 0 and empty["slo_attainment"] == 0.0
    assert empty["latency_s"]["p95"] is None and empty["prefix_hit_rate"] is None


def test_slo_curve_rescales_each_budget() -> None:
    curve = dict((s, a) for s, a in slo_curve(_records(), 2.0, factors=(0.5, 1.0, 2.0)))
    # budgets 3, 3, 7 (d failed): at half, nobody (2 > 1.5); as run, a and c; doubled, a, b, c
    assert curve == {1.0: 0.0, 2.0: 0.5, 4.0: 0.75}
    assert summarize(_records(), policy="p", rate=1.0, slo_scale=2.0)["slo_curve"][3] == [2.0, 0.5]


def _run(policy: str, rate: float, attainment: float, p95: float = 1.0) -> dict[str, object]:
    return {"policy": policy, "rate": rate, "queries": 10, "completed": 10, "failed": 0,
            "slo_attainment": attainment, "throughput_qps": rate,
            "latency_s": {"mean": p95 / 2, "p50": p95 / 2, "p95": p95, "p99": p95},
            "ttft_s": {"p50": 0.1, "p95": 0.2}, "prefix_hit_rate": None,
            "slo_curve": [[1.0, attainment / 2], [3.0, attainment]], "utilisation": {"g0": 0.5}}


def test_max_rate_at_95_stops_at_the_first_miss() -> None:
    runs = [_run("rr", 0.5, 0.97), _run("rr", 1.0, 0.90), _run("rr", 2.0, 0.96),
            _run("slack", 2.0, 0.95), _run("slack", 1.0, 1.0), _run("slack", 0.5, 1.0),
            _run("fcfs", 0.5, 0.5)]
    assert max_rate_at_95(runs) == {"rr": 0.5, "slack": 2.0, "fcfs": 0.0}


def test_table_shows_runs_side_by_side() -> None:
    text = format_table([_run("rr-fcfs", 1.0, 0.9, 12.5), _run("slack", 1.0, 0.99, 3.25)])
    lines = text.splitlines()
    assert "rr-fcfs @ 1" in lines[0] and "slack @ 1" in lines[0]
    p95 = next(line for line in lines if line.startswith("latency p95"))
    assert p95.split()[-2:] == ["12.5", "3.25"]
    assert any(line.startswith("util g0") for line in lines)


def test_plot_writes_a_self_contained_svg(tmp_path: Path) -> None:
    runs = [_run("rr", 0.5, 0.9, 5.0), _run("rr", 1.0, 0.6, 9.0), _run("slack", 0.5, 1.0, 2.0),
            _run("slack", 1.0, 0.97, 3.0)]
    written = plot(runs, tmp_path / "out.svg")
    assert written == tmp_path / "out.svg"
    root = ET.fromstring(written.read_text())
    lines = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert len(lines) == 6  # a sweep: three line panels, one line per policy
    assert {"rr", "slack"} <= {t.text for t in root.iter() if t.tag.endswith("title")}
    page = plot(runs, tmp_path / "out.html")
    assert page.read_text().startswith("<!doctype html>") and "<svg" in page.read_text()
    assert "rate 1 q/s" in render_svg(runs, rate=1.0)
    assert "rate 0.5 q/s" in render_svg(runs, rate=0.5)


def test_plot_png_with_matplotlib_or_svg_without(tmp_path: Path) -> None:
    import importlib.util
    runs = [_run("rr", 0.5, 0.9, 5.0), _run("slack", 0.5, 1.0, 2.0)]
    written = plot(runs, tmp_path / "out.png")
    if importlib.util.find_spec("matplotlib") is None:
        assert written == tmp_path / "out.svg"
    else:
        assert written == tmp_path / "out.png"
        assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written.stat().st_size > 5000


# --------------------------------------------------------------------------- charts

def _is_round_step(step: float) -> bool:
    """step = 1, 2 or 5 times a power of ten."""
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    return any(mantissa == pytest.approx(m) for m in (1, 2, 5))


def test_nice_ticks_take_round_steps() -> None:
    assert report.nice_ticks(0, 335) == [0, 50, 100, 150, 200, 250, 300, 350]
    assert report.nice_ticks(0.01, 0.03) == [0.01, 0.015, 0.02, 0.025, 0.03]  # exact, no 0.015000000000000001
    assert report.nice_ticks(0.75, 12) == [0, 2, 4, 6, 8, 10, 12]
    assert report.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert report.nice_ticks(0, 0.788, max_ticks=5) == [0, 0.2, 0.4, 0.6, 0.8]
    assert report.nice_ticks(0.02, 0.02) == [0.02, 0.025, 0.03, 0.035, 0.04]  # one value: widened
    with pytest.raises(ValueError):
        report.nice_ticks(0, math.inf)
    with pytest.raises(ValueError):
        report.nice_ticks(-0.5, 0.5, max_ticks=2)  # -1, 0, 1 at least
    assert [report.tick_label(t) for t in report.nice_ticks(0.01, 0.03)] == [
        "0.01", "0.015", "0.02", "0.025", "0.03"]
    assert [report.tick_label(t, percent=True) for t in report.nice_ticks(0, 1)] == [
        "0%", "20%", "40%", "60%", "80%", "100%"]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.floats(-1e6, 1e6), st.floats(1e-6, 1e6), st.integers(3, 12))
def test_nice_ticks_cover_the_range_in_equal_round_steps(lo: float, width: float, max_ticks: int) -> None:
    hi = lo + width
    ticks = report.nice_ticks(lo, hi, max_ticks)
    step = float(f"{(ticks[-1] - ticks[0]) / (len(ticks) - 1):.2g}")  # the nominal step, less float noise
    assert _is_round_step(step) and 2 <= len(ticks) <= max_ticks
    ulp = math.ulp(max(abs(lo), abs(hi)))  # float resolution at these values
    assert ticks[0] <= lo + 1e-6 * step + 2 * ulp and ticks[-1] >= hi - 1e-6 * step - 2 * ulp  # noise adds no tick
    assert all(b - a == pytest.approx(step, rel=1e-6, abs=4 * ulp) for a, b in itertools.pairwise(ticks))
    assert all(t / step == pytest.approx(round(t / step), rel=1e-9, abs=1e-6) for t in ticks)  # multiples


def test_log_ticks_are_decades_or_1_2_5() -> None:
    assert report.log_ticks(3, 300) == [2, 5, 10, 20, 50, 100, 200, 500]
    assert report.log_ticks(0.5, 5000) == [0.1, 1, 10, 100, 1000, 10000]
    with pytest.raises(ValueError):
        report.log_ticks(0, 10)


def _sweep() -> list[dict[str, object]]:
    return [_run("rr", 0.5, 0.9, 5.0), _run("rr", 1.0, 0.6, 90.0), _run("slack", 0.5, 1.0, 2.0),
            _run("slack", 1.0, 0.97, 3.0)]


def test_one_rate_is_charted_as_bars_per_policy() -> None:
    runs = [_run("rr", 0.5, 0.9, 5.0), _run("slack", 0.5, 1.0, 2.0), _run("hexgen", 0.5, 0.4, 12.0)]
    latency, attained, curve = report.chart(runs).panels
    assert latency.categories == attained.categories == ("rr", "slack", "hexgen")
    assert latency.bars == (("p50", (2.5, 1.0, 6.0)), ("p95", (5.0, 2.0, 12.0)))
    assert attained.bars == (("attainment", (0.9, 1.0, 0.4)),) and attained.target == 0.95
    assert set(curve.lines) == {"rr", "slack", "hexgen"} and not curve.bars
    assert latency.y_ticks() == [0, 2, 4, 6, 8, 10, 12, 14]
    root = ET.fromstring(render_svg(runs))
    bars = [e for e in root.iter() if e.tag.endswith("rect") and any(c.tag.endswith("title") for c in e)]
    assert len(bars) == 9  # p50 and p95 per policy, then attainment per policy
    assert len([e for e in root.iter() if e.tag.endswith("polyline")]) == 3  # only the deadline curve
    y_labels = [e.text for e in root.iter() if e.tag.endswith("text") and e.get("text-anchor") == "end"]
    percent = ["0%", "20%", "40%", "60%", "80%", "100%"]
    assert y_labels == ["0", "2", "4", "6", "8", "10", "12", "14", *percent, *percent]  # round, in every panel


def test_one_rate_png_figure_has_bars_per_policy_and_round_ticks() -> None:
    pytest.importorskip("matplotlib")
    runs = [_run("rr", 0.5, 0.9, 5.0), _run("slack", 0.5, 1.0, 2.0), _run("hexgen", 0.5, 0.4, 12.0)]
    fig = report.figure(runs, title="T", subtitle="S")
    latency, attained, curve = fig.axes[:3]
    assert len(latency.patches) == 6 and len(attained.patches) == 3
    assert [t.get_text() for t in latency.get_xticklabels()] == ["rr", "slack", "hexgen"]
    assert [t.get_text() for t in latency.get_yticklabels()] == ["0", "2", "4", "6", "8", "10", "12", "14"]
    assert [t.get_text() for t in attained.get_yticklabels()] == ["0%", "20%", "40%", "60%", "80%", "100%"]
    assert [t.get_text() for t in curve.get_xticklabels()] == ["1", "1.5", "2", "2.5", "3"]
    assert {"12", "6", "90%", "40%"} <= {t.get_text() for ax in (latency, attained) for t in ax.texts}
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["rr", "slack", "hexgen", "SLO target 95%"]


def test_a_sweep_is_charted_against_rate() -> None:
    p95, attained, curve = report.chart(_sweep()).panels
    assert p95.lines == {"rr": ((0.5, 5.0), (1.0, 90.0)), "slack": ((0.5, 2.0), (1.0, 3.0))}
    assert p95.log_y and p95.y_ticks() == [2, 5, 10, 20, 50, 100]  # 45x apart: a log axis
    assert attained.lines == {"rr": ((0.5, 0.9), (1.0, 0.6)), "slack": ((0.5, 1.0), (1.0, 0.97))}
    assert "rate 1 q/s" in curve.title  # the deadline curve at the highest rate by default
    assert p95.x_ticks() == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert "rate 0.5 q/s" in report.chart(_sweep(), rate=0.5).panels[2].title


def test_charts_are_titled_with_what_was_run(tmp_path: Path) -> None:
    spec = report.chart(_sweep())
    assert spec.subtitle == "rates 0.5, 1 q/s"  # without a caption: what the runs say
    svg = render_svg(_sweep(), title="Scheduler benchmark: trace1", subtitle="8b on 2 x L40S")
    texts = {t.text for t in ET.fromstring(svg).iter() if t.tag.endswith("text")}
    assert {"Scheduler benchmark: trace1", "8b on 2 x L40S"} <= texts
    page = plot(_sweep(), tmp_path / "p.html", title="Scheduler benchmark: trace1")
    assert "<title>Scheduler benchmark: trace1</title>" in page.read_text()
    with pytest.raises(ValueError, match="no runs"):
        report.chart([])
    pytest.importorskip("matplotlib")
    fig = report.figure(_sweep(), title="Scheduler benchmark: trace1", subtitle="8b on 2 x L40S")
    assert {"Scheduler benchmark: trace1", "8b on 2 x L40S"} <= {t.get_text() for t in fig.texts}


def test_caption_names_the_trace_cluster_rates_and_slo_scale() -> None:
    title, subtitle = report.caption({
        "trace": "/data/traces/trace2.jsonl", "queries": 40, "gpus": ["A100-80G", "A100-80G", "A6000", "L40S"],
        "model": "llama-3.1-70b", "slo_scale": 3.0, "deadline": "unloaded", "arrivals": "poisson",
        "runs": [{"rate": 0.03}, {"rate": 0.01}, {"rate": 0.01}]})
    assert title == "Scheduler benchmark: trace2.jsonl, 40 queries"
    assert subtitle == ("llama-3.1-70b on 2 x A100-80G + A6000 + L40S | poisson arrivals, rates 0.01, 0.03 q/s"
                        " | SLO scale 3 (unloaded deadlines)")


def test_bench_scheduler_plot_names_the_trace_and_cluster(tmp_path: Path) -> None:
    out = tmp_path / "s.svg"
    assert cli(["bench", "scheduler", "--queries", "3", "--rate", "0.02", "--policy", "rr-fcfs",
                "--policy", "slack", "--gpus", "A100-80G,L40S", "--plot", str(out)]) == 0
    root = ET.fromstring(out.read_text())
    texts = [t.text or "" for t in root.iter() if t.tag.endswith("text")]
    assert texts[0] == "Scheduler benchmark: trace1, 3 queries"
    assert texts[1].startswith("llama-3.1-70b on A100-80G + L40S | poisson arrivals, rate 0.02 q/s | SLO scale 3")
    bars = [e for e in root.iter() if e.tag.endswith("rect") and any(c.tag.endswith("title") for c in e)]
    assert len(bars) == 6  # p50, p95 and attainment for each of the two policies
