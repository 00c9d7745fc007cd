"""What a run reads of its orchestrator: one frozen object, taken when the run is made.

:class:`RunSettings` is the seam between the orchestrator (which validates its arguments and
owns what runs share: tool limits, thread lanes, the tracer) and a run (:mod:`run`,
:mod:`baselines`), which never sees the orchestrator itself. That keeps the dependency one way
(orchestrator -> run), and a setting changed on the orchestrator while a run is in flight does
not change that run halfway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fleetcall.executor.containment import CallWatch
from fleetcall.executor.runner import ToolLimits
from fleetcall.llm.base import LLM
from fleetcall.tools import ToolRegistry
from fleetcall.tools.base import Tool
from fleetcall.tracing import Tracing

PlanFormat = Literal["auto", "text", "json", "tool_call"]
JoinerFormat = Literal["auto", "text", "json"]


@dataclass(frozen=True, slots=True)
class RunSettings:
    """A run's settings (see :class:`~fleetcall.executor.orchestrator.Orchestrator` for each).

    plan_format, joiner_format: as chosen for the models ("auto" resolved).
    context_tokens: the planner's context window, tokens.
    grace_s: loop seconds a cancelled tool or model call gets before it is stopped.
    slow_step_s: a step holding the loop longer is reported (None: never).
    limits_for: the concurrency and rate limits of a tool, shared by every run of the
        orchestrator.
    """

    tools: ToolRegistry
    planner_llm: LLM
    joiner_llm: LLM
    tool_llm: LLM
    max_replans: int
    max_tasks: int | None
    examples: tuple[str, ...]
    plan_format: PlanFormat
    joiner_format: JoinerFormat
    planner_max_tokens: int | None
    context_tokens: int
    grace_s: float
    slow_step_s: float | None
    tracing: Tracing
    limits_for: Callable[[Tool], ToolLimits]

    def watch_for(self, tool: Tool, label: str) -> CallWatch:
        """A fresh :class:`CallWatch` for one call of ``tool`` under these settings."""
        return CallWatch(tool.name, label, self.slow_step_s, self.grace_s)
