"""Public results of a run: pydantic models, JSON-serialisable with ``model_dump_json``."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RunStatus(str, enum.Enum):
    ANSWERED = "answered"
    FAILED = "failed"          # no valid plan, replan limit reached, or an LLM error
    TIMED_OUT = "timed_out"    # the deadline passed first
    CANCELLED = "cancelled"    # the caller cancelled the run


class TaskRecord(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    round: int                                  # plan this task belongs to (0 = first)
    id: int                                     # the task's number within its plan
    tool: str
    args: list[str] = Field(default_factory=list)       # positional arguments as planned
    kwargs: dict[str, str] = Field(default_factory=dict)  # keyword arguments as planned
    arguments: dict[str, Any] | None = None     # bound arguments after substitution (None if never started)
    dependencies: list[int] = Field(default_factory=list)
    thought: str | None = None
    status: str = "pending"                     # ok | error | skipped | pending | cancelled
    observation: Any = None                     # the result when ok
    error: str | None = None
    planned_at: float | None = None             # loop time (s) the plan line was complete
    start: float | None = None                  # loop time (s)
    end: float | None = None                    # loop time (s)
    attempts: int = 0


class PlanRecord(BaseModel):
    round: int
    text: str                                   # the plan as the model wrote it
    issues: list[str] = Field(default_factory=list)  # validation problems, each naming its line
    started_at: float
    finished_at: float | None = None            # loop time the plan stream ended


class ReplanRecord(BaseModel):
    round: int                                  # the round that ended in a replan
    reason: str
    time: float


class LLMCallRecord(BaseModel):
    kind: str                                   # planner | joiner | tool:llm | react | ...
    round: int
    start: float
    end: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False               # True iff the LLM gave no counts (stream closed
                                                # early, or none sent): counted from what was sent and read
    finish_reason: str | None = None            # stop | length (cut at max_tokens) | tool_calls | None
    info: dict[str, Any] | None = None          # serving details: endpoint, queue wait, ttft


class UsageRecord(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    estimated_calls: int = 0                    # of ``calls``, those whose counts are estimates


class RunResult(BaseModel):
    """Everything a run produced.

    >>> # result = await orch.run("Which is older, X or Y?")
    >>> # result.status, result.answer, result.tasks[0].observation
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    query_id: str
    query: str
    mode: str = "compiled"                      # compiled | react | parallel_calls
    status: RunStatus
    answer: str | None = None
    error: str | None = None                    # why the run did not answer
    started_at: float                           # loop time (s)
    finished_at: float                          # loop time (s)
    deadline: float | None = None               # loop time (s), if one was set
    plans: list[PlanRecord] = Field(default_factory=list)
    tasks: list[TaskRecord] = Field(default_factory=list)
    replans: list[ReplanRecord] = Field(default_factory=list)
    llm_calls: list[LLMCallRecord] = Field(default_factory=list)
    usage: UsageRecord = Field(default_factory=UsageRecord)

    @property
    def latency(self) -> float:
        return self.finished_at - self.started_at
