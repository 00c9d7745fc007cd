"""Timelines: bars from a run, the text Gantt chart, the self-contained HTML page."""

from __future__ import annotations

import re

import pytest

from fleetcall import ConfigError, RunResult, RunStatus, TaskRecord
from fleetcall.demos import replan, timeline
from fleetcall.demos.timeline import Bar
from fleetcall.executor.result import LLMCallRecord
from fleetcall.vclock import run_virtual


def _result() -> RunResult:
    return RunResult(
        query_id="q", query="What <now>?", status=RunStatus.ANSWERED, answer="42", started_at=100.0, finished_at=104.0,
        tasks=[TaskRecord(round=0, id=1, tool="search", status="ok", start=100.0, end=102.0),
               TaskRecord(round=0, id=2, tool="search", status="error", start=102.0, end=104.0),
               TaskRecord(round=0, id=3, tool="math", status="skipped")],
    )


def test_bars_are_relative_and_skip_tasks_that_never_ran() -> None:
    items = timeline.bars(_result())
    assert [(b.group, b.label, b.start, b.end, b.status) for b in items] == [
        ("tool search", "#1 (plan 0)", 0.0, 2.0, "ok"), ("tool search", "#2 (plan 0)", 2.0, 4.0, "error")]


def test_bars_of_a_real_run_group_llm_calls_by_endpoint() -> None:
    result = run_virtual(replan.build().run(replan.QUESTION))
    items = timeline.bars(result)
    groups = list(dict.fromkeys(b.group for b in items))
    assert groups == ["LLM model", "tool directory_lookup", "tool people_search"]
    assert sum(b.is_llm for b in items) == len(result.llm_calls)
    assert [b.status for b in items if b.label == "#1 (plan 0)"] == ["error"]


def test_text_chart_places_bars_by_time() -> None:
    text = timeline.render_text(timeline.bars(_result()), span=4.0, width=20)
    rows = [line for line in text.splitlines() if line.startswith("  #")]
    assert rows[0].split("|")[1] == "█" * 10 + " " * 10
    assert rows[1].split("|")[1] == " " * 10 + "▒" * 10
    assert text.splitlines()[0].rstrip().endswith("4.00s")


def test_html_is_self_contained_and_escaped() -> None:
    page = timeline.render_html([*timeline.bars(_result()), Bar("LLM <x>", "planner", 0.0, 1.0, "ok", True)],
                                title="t & t", subtitle="What <now>?")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert len(re.findall(r"<rect ", page)) == 3
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert "LLM &lt;x&gt;" in page and "What &lt;now&gt;?" in page and "t &amp; t" in page


def test_write_html(tmp_path) -> None:
    path = timeline.write(_result(), tmp_path / "t.html", title="demo")
    assert "<svg" in path.read_text(encoding="utf-8")


def test_unsupported_paths_are_refused_with_advice() -> None:
    with pytest.raises(ConfigError, match=r"\.html"):
        timeline.check_path("timeline.txt")
    if timeline.png_available():
        pytest.skip("matplotlib is installed: .png timelines are supported here")
    with pytest.raises(ConfigError, match=r"matplotlib.*\.html"):
        timeline.check_path("timeline.png")


def test_write_png_when_matplotlib_is_there(tmp_path) -> None:
    if not timeline.png_available():
        pytest.skip("matplotlib is not installed (pip install 'fleetcall[plot]')")
    path = timeline.write(_result(), tmp_path / "t.png", title="demo")
    assert path.read_bytes()[:4] == b"\x89PNG"


def _instant_result() -> RunResult:
    """A tool call that took no time (#2), a cancelled one, an LLM call and no answer."""
    return RunResult(
        query_id="q", query="How dense?", status=RunStatus.FAILED, error="joiner gave up",
        started_at=10.0, finished_at=20.0,
        tasks=[TaskRecord(round=0, id=1, tool="search", status="ok", start=10.0, end=14.0),
               TaskRecord(round=0, id=2, tool="math", status="ok", start=14.0, end=14.0),
               TaskRecord(round=0, id=3, tool="search", status="cancelled", start=15.0, end=None)],
        llm_calls=[LLMCallRecord(round=0, kind="planner", start=10.0, end=12.0, info={"endpoint": "g0"})],
    )


def test_caption_says_the_answer_or_why_there_is_none_and_the_latency() -> None:
    assert timeline.caption(_result()) == ("What <now>?", "42 (answered, 4.00s)")
    assert timeline.caption(_instant_result()) == ("How dense?", "no answer (joiner gave up) (failed, 10.00s)")


def test_png_figure_ticks_instant_tasks_and_has_a_legend_and_the_outcome() -> None:
    pytest.importorskip("matplotlib")
    result = _instant_result()
    items = timeline.bars(result)
    assert [timeline.is_instant(b, result.latency) for b in items] == [False, False, False, True]
    fig = timeline.figure(items, result.latency, title="demo", question="How dense?",
                          outcome=timeline.caption(result)[1])
    (ax,) = fig.axes
    ticks = [line for line in ax.get_lines() if line.get_marker() == "|"]
    assert [(list(t.get_xdata()), list(t.get_ydata())) for t in ticks] == [([4.0], [3])]  # row 3: math #2
    assert len(ax.patches) == 3  # the other bars: LLM call, search ok, search cancelled
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["task ok", "cancelled", "LLM call", "instant (< 40 ms)"]
    texts = [t.get_text() for t in fig.texts]
    assert "demo" in texts and "Q: How dense?" in texts
    assert "A: no answer (joiner gave up) (failed, 10.00s)" in texts


def test_png_figure_without_instant_tasks_has_no_tick_legend_and_wraps_long_answers() -> None:
    pytest.importorskip("matplotlib")
    fig = timeline.figure(timeline.bars(_result()), 4.0, title="t", question="q", outcome="word " * 100)
    assert not [line for line in fig.axes[0].get_lines() if line.get_marker() == "|"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["task ok", "error"]
    answer = [t.get_text() for t in fig.texts if t.get_text().startswith(("A:", "word"))]
    assert len(answer) == 2 and answer[-1].endswith("...") and all(len(line) <= 130 for line in answer)
