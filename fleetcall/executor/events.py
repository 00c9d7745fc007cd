"""Typed events of a run, as ``Orchestrator.stream`` yields them (in the order they happen)."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from fleetcall.plan import Observation, PlanIssue, Task

if TYPE_CHECKING:
    from fleetcall.executor.result import RunResult


@dataclass(frozen=True, slots=True)
class TaskPlanned:
    round: int          # 0 for the first plan, +1 per replan
    task: Task
    time: float         # loop time (s) the planner's line was complete


@dataclass(frozen=True, slots=True)
class TaskStarted:
    round: int
    task_id: int
    tool: str
    arguments: dict[str, Any]   # bound arguments, references substituted
    time: float


@dataclass(frozen=True, slots=True)
class TaskFinished:
    round: int
    task_id: int
    observation: Observation    # status ok
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class TaskFailed:
    round: int
    task_id: int
    observation: Observation    # status error: raised, timed out or bad arguments
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class TaskSkipped:
    round: int
    task_id: int
    observation: Observation    # status skipped; error names the failed or invalid task
    time: float


@dataclass(frozen=True, slots=True)
class PlanRejected:
    round: int
    issues: tuple[PlanIssue, ...]
    time: float


@dataclass(frozen=True, slots=True)
class Replanning:
    round: int                  # the round that is ending
    reason: str
    time: float


@dataclass(frozen=True, slots=True)
class AnswerReady:
    answer: str
    time: float


@dataclass(frozen=True, slots=True)
class RunFinished:
    result: "RunResult"


Event: TypeAlias = (
    TaskPlanned | TaskStarted | TaskFinished | TaskFailed | TaskSkipped | PlanRejected | Replanning
    | AnswerReady | RunFinished
)

Emit: TypeAlias = Callable[[Event], None]
