"""A run's timeline: one bar per task (grouped by tool) and per LLM call (grouped by endpoint).

Drawn as text (a Gantt chart in characters, for the terminal), as a self-contained HTML page
(inline SVG: no script, no network) or, when matplotlib is installed, as a PNG.
"""

from __future__ import annotations

import html
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetcall import ConfigError, RunResult

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


def write(result: RunResult, path: str | Path, *, title: str) -> Path:
    """Write the timeline of ``result`` to ``path`` (.html or .png, by its suffix)."""
    path = check_path(path)
    items = bars(result)
    subtitle = f"{result.query} -> {result.answer} ({result.status.value}, {result.latency:.2f}s)"
    if path.suffix.lower() == ".png":
        _write_png(items, result.latency, path, title)
    else:
        path.write_text(render_html(items, title=title, subtitle=subtitle, span=result.latency), encoding="utf-8")
    return path


def _write_png(items: Sequence[Bar], span: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.3 * len(items) + 1.2))
    for row, bar in enumerate(items):
        color = COLORS["llm"] if bar.is_llm and bar.status == "ok" else COLORS.get(bar.status, COLORS["ok"])
        ax.barh(row, bar.end - bar.start, left=bar.start, color=color)
    ax.set_yticks(range(len(items)), [f"{b.group} {b.label}" for b in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, _span(items, span))
    ax.set_xlabel("seconds")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
