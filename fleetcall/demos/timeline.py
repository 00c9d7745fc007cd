"""A run's timeline: one bar per task (grouped by tool) and per LLM call (grouped by endpoint).

Drawn as text (a Gantt chart in characters, for the terminal), as a self-contained HTML page
(inline SVG: no script, no network) or, when matplotlib is installed, as a PNG (:func:`figure`).
Every picture names the question, the answer (or why there is none) and the latency; a task too
short to see as a bar (a local tool call) is drawn as a tick.
"""

from __future__ import annotations

import html
import importlib.util
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fleetcall import ConfigError, RunResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FILLS = {"ok": "█", "error": "▒", "cancelled": "░"}          # bar status -> text fill
COLORS = {"ok": "#3d9970", "error": "#d1495b", "cancelled": "#aaaaaa", "llm": "#3f7cac"}
FORMATS = (".html", ".htm", ".png")


@dataclass(frozen=True, slots=True)
class Bar:
    group: str        # "tool search" or "LLM <endpoint>"
    label: str        # "#3 (plan 0)" or "planner (plan 1)"
    start: float      # seconds from the run's start
    end: float        # seconds from the run's start
    status: str       # ok | error | cancelled (tasks); ok | error (LLM calls)
    is_llm: bool = False


def bars(result: RunResult) -> list[Bar]:
    """The bars of ``result``, groups ordered by their first start, bars by start within a group."""
    t0, out = result.started_at, []
    for task in result.tasks:
        if task.start is None:
            continue  # skipped or invalid: it never ran
        end = task.end if task.end is not None else result.finished_at
        status = task.status if task.status in ("ok", "error") else "cancelled"
        out.append(Bar(f"tool {task.tool}", f"#{task.id} (plan {task.round})", task.start - t0, end - t0, status))
    for call in result.llm_calls:
        endpoint = (call.info or {}).get("endpoint") or "model"
        out.append(Bar(f"LLM {endpoint}", f"{call.kind} (plan {call.round})", call.start - t0, call.end - t0,
                       "ok", is_llm=True))
    first: dict[str, float] = {}
    for bar in out:
        first[bar.group] = min(first.get(bar.group, math.inf), bar.start)
    return sorted(out, key=lambda b: (first[b.group], b.group, b.start, b.label))


def _span(items: Sequence[Bar], span: float | None) -> float:
    longest = max((b.end for b in items), default=0.0)
    return max(span or 0.0, longest, 1e-9)


# -- text ------------------------------------------------------------------------------------------
def render_text(items: Sequence[Bar], span: float | None = None, width: int = 60) -> str:
    """A Gantt chart in characters: ``width`` columns cover 0..``span`` seconds (default: the last end).

    >>> print(render_text([Bar("tool search", "#1 (plan 0)", 0.0, 1.0, "ok")], span=2.0, width=10).splitlines()[2])
      #1 (plan 0) |█████     |  0.00-1.00s
    """
    total = _span(items, span)
    label_w = max((len(b.label) for b in items), default=8) + 3
    end = f"{total:.2f}s"
    lines = [" " * label_w + " " + "0s".ljust(width - len(end)) + end]
    group = None
    for bar in items:
        if bar.group != group:
            group = bar.group
            lines.append(group)
        lines.append(f"  {bar.label:<{label_w - 2}}|{_cells(bar, total, width)}| {bar.start:5.2f}-{bar.end:.2f}s")
    legend = "  ".join(f"{fill} {status}" for status, fill in FILLS.items())
    return "\n".join([*lines, f"({legend}; one column = {total / width:.3f}s)"])


def _cells(bar: Bar, total: float, width: int) -> str:
    first = min(width - 1, int(bar.start / total * width))
    last = max(first + 1, min(width, math.ceil(bar.end / total * width - 1e-9)))
    return " " * first + FILLS.get(bar.status, "█") * (last - first) + " " * (width - last)


# -- HTML (inline SVG) -----------------------------------------------------------------------------
def _tick_step(total: float) -> float:
    """A round step giving at most ten ticks over ``total`` seconds."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000):
        if total / step <= 10:
            return step
    return 10 ** math.ceil(math.log10(total))


def render_svg(items: Sequence[Bar], span: float | None = None) -> str:
    """The timeline as one ``<svg>`` element; hovering a bar shows its times (``<title>``)."""
    total = _span(items, span)
    left, chart_w, row_h, top = 220, 760, 20, 30
    rows: list[str] = []
    y, group = top, None
    for bar in items:
        if bar.group != group:
            group = bar.group
            rows.append(f'<text x="4" y="{y + 14}" font-weight="bold">{html.escape(group)}</text>')
            y += row_h
        x = left + bar.start / total * chart_w
        w = max(1.5, (bar.end - bar.start) / total * chart_w)
        color = COLORS["llm"] if bar.is_llm and bar.status == "ok" else COLORS.get(bar.status, COLORS["ok"])
        tip = f"{bar.group} {bar.label}: {bar.start:.2f}-{bar.end:.2f}s ({bar.end - bar.start:.2f}s), {bar.status}"
        rows.append(f'<text x="16" y="{y + 14}">{html.escape(bar.label)}</text>'
                    f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{color}" rx="2">'
                    f"<title>{html.escape(tip)}</title></rect>")
        y += row_h
    step = _tick_step(total)
    ticks = [f'<line x1="{left + t / total * chart_w:.1f}" y1="{top - 6}" x2="{left + t / total * chart_w:.1f}" '
             f'y2="{y}" stroke="#dddddd"/><text x="{left + t / total * chart_w:.1f}" y="{top - 10}" '
             f'text-anchor="middle">{t:g}s</text>'
             for t in (i * step for i in range(int(total / step + 1e-9) + 1))]
    height = y + 10
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + chart_w + 20}" height="{height}" '
            f'font-family="sans-serif" font-size="12">' + "".join(ticks) + "".join(rows) + "</svg>")


def render_html(items: Sequence[Bar], *, title: str, subtitle: str = "", span: float | None = None) -> str:
    """A self-contained HTML page (no script, no external resource) around :func:`render_svg`."""
    legend = " ".join(f'<span style="color:{c}">&#9632;</span> {"LLM call" if k == "llm" else k}'
                      for k, c in COLORS.items())
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title></head>"
            '<body style="font-family:sans-serif">'
            f"<h2>{html.escape(title)}</h2><p>{html.escape(subtitle)}</p>"
            f"{render_svg(items, span)}<p>{legend}</p></body></html>\n")


# -- files -----------------------------------------------------------------------------------------
def png_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def check_path(path: str | Path) -> Path:
    """``path`` if a timeline can be written there; a ``ConfigError`` saying what to do if not."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"cannot write a timeline as {suffix or 'a file without extension'!r}: "
                          "use a .html (or .png) path")
    if suffix == ".png" and not png_available():
        raise ConfigError("a .png timeline needs matplotlib, which is not installed: "
                          "use a .html path (a self-contained page), or pip install matplotlib")
    return path


def caption(result: RunResult) -> tuple[str, str]:
    """(the question, its outcome: the answer or why there is none, the status and the latency)."""
    said = result.answer if result.answer is not None else f"no answer ({result.error or 'no error given'})"
    return result.query, f"{said} ({result.status.value}, {result.latency:.2f}s)"


def write(result: RunResult, path: str | Path, *, title: str) -> Path:
    """Write the timeline of ``result`` to ``path`` (.html or .png, by its suffix)."""
    path = check_path(path)
    items = bars(result)
    question, outcome = caption(result)
    if path.suffix.lower() == ".png":
        fig = figure(items, result.latency, title=title, question=question, outcome=outcome)
        fig.savefig(path, dpi=120)
    else:
        path.write_text(render_html(items, title=title, subtitle=f"{question} -> {outcome}", span=result.latency),
                        encoding="utf-8")
    return path


# -- PNG (matplotlib) ------------------------------------------------------------------------------
INSTANT_FRACTION = 0.004  # a bar shorter than this share of the span is drawn as a tick (as in the SVG)
# inches: one row; the title; one caption line; below the axes (tick labels, axis label, legend)
_ROW_IN, _TITLE_IN, _LINE_IN, _BOTTOM_IN = 0.28, 0.4, 0.18, 0.8
_LEGEND = {"ok": "task ok", "error": "error", "cancelled": "cancelled", "llm": "LLM call"}  # COLORS key -> label


def is_instant(bar: Bar, span: float) -> bool:
    """True if ``bar`` would be thinner than a line at ``span`` seconds across: drawn as a tick."""
    return bar.end - bar.start < span * INSTANT_FRACTION


def _color(bar: Bar) -> str:
    return COLORS["llm"] if bar.is_llm and bar.status == "ok" else COLORS.get(bar.status, COLORS["ok"])


def figure(items: Sequence[Bar], span: float | None, *, title: str, question: str = "",
           outcome: str = "") -> Figure:
    """The timeline as a matplotlib ``Figure`` (no pyplot, no global state): one row per bar,
    instant bars as ticks, a legend below the axis, ``title`` with ``question`` and ``outcome``
    (the answer and latency, see :func:`caption`) above it. Needs matplotlib."""
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    total = _span(items, span)
    rows = max(len(items), 1)
    lines = _wrap(f"Q: {question}") + _wrap(f"A: {outcome}")
    top = _TITLE_IN + _LINE_IN * len(lines) + 0.05  # inches above the axes
    height = _ROW_IN * rows + top + _BOTTOM_IN
    fig = Figure(figsize=(10, height))
    ax = fig.add_subplot()
    tick_size = _ROW_IN * 72 * 0.8  # points: a tick as tall as a bar
    for row, bar in enumerate(items):
        if is_instant(bar, total):
            ax.plot([bar.start], [row], marker="|", markersize=tick_size, markeredgewidth=2.5,
                    color=_color(bar), linestyle="none", clip_on=False, gid="instant")
        else:
            ax.barh(row, bar.end - bar.start, left=bar.start, height=0.7, color=_color(bar))
    for row in range(1, len(items)):
        if items[row].group != items[row - 1].group:
            ax.axhline(row - 0.5, color="#cccccc", linewidth=0.8)
    ax.set_yticks(range(len(items)), [f"{b.group}  {b.label}" for b in items], fontsize=8)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlim(0, total)
    ax.set_xlabel("seconds from the question")
    ax.grid(axis="x", alpha=0.3)
    fig.text(0.5, 1 - 0.22 / height, title, ha="center", va="center", fontsize=12, fontweight="bold")
    for i, line in enumerate(lines):
        fig.text(0.5, 1 - (_TITLE_IN + _LINE_IN * (i + 0.5)) / height, line, ha="center", va="center", fontsize=9)
    drawn = {_color(b) for b in items}
    handles: list[Artist] = [Patch(color=COLORS[k], label=_LEGEND[k]) for k in COLORS if COLORS[k] in drawn]
    if any(is_instant(b, total) for b in items):
        handles.append(Line2D([], [], marker="|", markersize=10, markeredgewidth=2.5, linestyle="none",
                              color="#555555", label=f"instant (< {_duration(total * INSTANT_FRACTION)})"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1 - top / height))
    return fig


def _duration(seconds: float) -> str:
    """One significant digit: 0.0098 -> '10 ms', 2.4 -> '2 s'."""
    ms = float(f"{seconds * 1000:.1g}")
    return f"{ms:g} ms" if ms < 1000 else f"{ms / 1000:g} s"


def _wrap(text: str, width: int = 130) -> list[str]:
    return textwrap.wrap(text, width, max_lines=2, placeholder=" ...") or [text]
