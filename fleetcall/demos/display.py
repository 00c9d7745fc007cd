"""The two ways a demo shows its run: a live rich view on a terminal, plain log lines elsewhere.

Both are sinks of the run's events (:data:`~fleetcall.demos.view.Sink`): each event updates the
:class:`~fleetcall.demos.view.RunState`, then the live view redraws once (``auto_refresh`` is
off: no refresh thread, no polling; the redraw happens because something happened) or the plain
display prints the event's line.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fleetcall.demos.view import RunState, ViewEvent, describe, event_time, short

STATE_STYLES = {  # task or call state -> rich style
    "planned": "dim", "running": "bold yellow", "done": "green", "failed": "bold red",
    "skipped": "magenta", "invalid": "red",
}


class PlainDisplay:
    """Prints one line per event (for pipes, CI and tests)."""

    def __init__(self, state: RunState, out: TextIO | None = None) -> None:
        self.state = state
        self._out = out

    def __enter__(self) -> "PlainDisplay":
        print(f"{self.state.title}: {self.state.question}\n", file=self._stream(), flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _stream(self) -> TextIO:
        return self._out if self._out is not None else sys.stdout

    def handle(self, event: ViewEvent) -> None:
        self.state.apply(event)
        line = describe(event, self.state.t0)
        if line is not None:
            print(line, file=self._stream(), flush=True)


class LiveDisplay:
    """A rich :class:`~rich.live.Live` view redrawn on every event (and only then)."""

    def __init__(self, state: RunState, console: Console | None = None) -> None:
        self.state = state
        self.console = console or Console()
        self._live: Live | None = None
        self._now = state.t0   # loop time (s) of the latest event: the view's "now"

    def __enter__(self) -> "LiveDisplay":
        self._live = Live(render_state(self.state, self._now), console=self.console, auto_refresh=False,
                          redirect_stdout=False, redirect_stderr=False)
        self._live.start(refresh=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.update(render_state(self.state, self._now), refresh=True)
            self._live.stop()
            self._live = None

    def handle(self, event: ViewEvent) -> None:
        self.state.apply(event)
        self._now = max(self._now, event_time(event))
        if self._live is not None:
            self._live.update(render_state(self.state, self._now), refresh=True)


def render_state(state: RunState, now: float) -> RenderableType:
    """The whole view at loop time ``now``: header, tasks, replans, LLM calls, answer."""
    parts: list[RenderableType] = [
        Text.assemble((state.title, "bold cyan"), "  ", (state.question, "italic"),
                      "  ", (f"t = {now - state.t0:.2f}s", "bold")),
    ]
    if state.tasks:
        parts.append(_task_table(state, now))
    for round_no, issues in state.rejected:
        parts.append(Text(f"plan {round_no} rejected: {short(issues, 200)}", style="red"))
    for round_no, reason, at in state.replans:
        parts.append(Text(f"replan after plan {round_no} at {at - state.t0:.2f}s: {short(reason, 200)}",
                          style="bold magenta"))
    if state.calls:
        parts.append(_call_table(state, now))
    if state.answer is not None:
        parts.append(Text.assemble(("Answer: ", "bold green"), state.answer))
    return Group(*parts)


def _state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _task_table(state: RunState, now: float) -> Table:
    table = Table(title="tasks", title_justify="left", expand=False, pad_edge=False)
    for name, kw in (("plan", {"justify": "right"}), ("#", {"justify": "right"}),
                     ("action", {"max_width": 60, "no_wrap": True, "overflow": "ellipsis"}),
                     ("state", {}), ("time", {"justify": "right"}),
                     ("result", {"max_width": 50, "no_wrap": True, "overflow": "ellipsis"})):
        table.add_column(name, **kw)
    for (round_no, task_id), row in sorted(state.tasks.items()):
        table.add_row(str(round_no), str(task_id), row.action, _state_text(row.state),
                      _seconds(row.duration(now)), row.detail)
    return table


def _call_table(state: RunState, now: float) -> Table:
    table = Table(title="LLM calls", title_justify="left", expand=False, pad_edge=False)
    for name in ("#", "kind", "round", "state", "time", "tokens", "endpoint", "queued"):
        table.add_column(name, justify="right" if name in ("#", "round", "time", "tokens", "queued") else "left")
    for number, row in sorted(state.calls.items()):
        status = "running" if row.end is None else ("failed" if row.error else "done")
        table.add_row(str(number), row.kind, str(row.round), _state_text(status), _seconds(row.duration(now)),
                      str(row.tokens) if row.end is not None else "", row.endpoint or "-",
                      _seconds(row.queue_wait_s))
    return table
