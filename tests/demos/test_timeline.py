"""Timelines: bars from a run, the text Gantt chart, the self-contained HTML page."""

from __future__ import annotations

import re

import pytest

from fleetcall import ConfigError, RunResult, RunStatus, TaskRecord
from fleetcall.demos import replan, timeline
from fleetcall.demos.timeline import Bar
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
