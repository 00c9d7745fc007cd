"""Report math on hand-made records; table and plot output."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fleetcall.bench.replay import CallRecord, QueryRecord
from fleetcall.bench.report import (
    format_table, max_rate_at_95, percentile, plot, render_svg, slo_curve, summarize,
)


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
    assert len(lines) == 4  # two panels, one line per policy
    assert {"rr", "slack"} <= {t.text for t in root.iter() if t.tag.endswith("title")}
    page = plot(runs, tmp_path / "out.html")
    assert page.read_text().startswith("<!doctype html>") and "<svg" in page.read_text()
    assert "rate 1 q/s" in render_svg(runs, rate=1.0)


def test_plot_png_with_matplotlib_or_svg_without(tmp_path: Path) -> None:
    import importlib.util
    runs = [_run("rr", 0.5, 0.9, 5.0), _run("slack", 0.5, 1.0, 2.0)]
    written = plot(runs, tmp_path / "out.png")
    if importlib.util.find_spec("matplotlib") is None:
        assert written == tmp_path / "out.svg"
    else:
        assert written == tmp_path / "out.png"
        assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written.stat().st_size > 5000
