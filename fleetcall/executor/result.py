"""Public results of a run: pydantic models, JSON-serialisable with ``model_dump_json``; their
``model_dump()`` holds plain JSON types only (what a LangGraph checkpointer stores), while a
task's ``observation`` attribute keeps the tool's own Python object."""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from fleetcall.observe import safe_repr, to_jsonable

# Whatever a tool returned (or a model reported), kept as the Python object on the record; in
# every dump, JSON or Python, shown by fleetcall.observe's rule (bytes as base64, NaN as "NaN",
# unrenderable objects by a placeholder), so that no serializer fails because of a tool:
# model_dump_json(), and model_dump() as LangGraph's checkpointers call it (msgpack).
_AS_JSON = PlainSerializer(to_jsonable, when_used="always")
ToolValue = Annotated[Any, _AS_JSON]


class RunStatus(str, enum.Enum):
    ANSWERED = "answered"
    FAILED = "failed"          # no valid plan, replan limit reached, or an LLM error
    TIMED_OUT = "timed_out"    # the deadline passed first
    CANCELLED = "cancelled"    # the caller cancelled the run


class TaskRecord(BaseModel):  # type: ignore[no-redef]  # pydantic plugin: a field named kwargs
    model_config = ConfigDict(arbitrary_types_allowed=True)

    round: int                                  # plan this task belongs to (0 = first)
    id: int                                     # the task's number within its plan
    tool: str
    args: list[str] = Field(default_factory=list)       # positional arguments as planned
    kwargs: dict[str, str] = Field(default_factory=dict)  # keyword arguments as planned
    arguments: Annotated[dict[str, Any] | None, _AS_JSON] = None
                                                # bound arguments after substitution (None if never started)
    dependencies: list[int] = Field(default_factory=list)
    thought: str | None = None
    status: str = "pending"                     # ok | error | skipped | invalid | pending | running | cancelled
    observation: ToolValue = None               # the result when ok (the tool's own Python object)
    error: str | None = None
    abandoned: bool = False                     # the run stopped waiting before the tool ended: its
                                                # thread still ran (sync), or it ignored its
                                                # cancellation past the grace period (async)
    loop_blocked_s: float | None = None         # longest step (wall s) the tool held the event loop,
                                                # if one reached the orchestrator's slow_step_s
    planned_at: float | None = None             # loop time (s) the plan line was complete
    start: float | None = None                  # loop time (s)
    end: float | None = None                    # loop time (s)
    attempts: int = 0

    def __repr_args__(self) -> Any:
        """As pydantic's, with the tool's values shown safely (their own repr may raise)."""
        for name, value in super().__repr_args__():
            yield name, (_Shown(value) if name in ("observation", "arguments") else value)


class _Shown:
    """Reprs as ``safe_repr(value)``: at most 500 characters, never raising."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return safe_repr(self.value, 500)


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
    info: Annotated[dict[str, Any] | None, _AS_JSON] = None
                                                # serving details: endpoint, queue wait, ttft
    abandoned: bool = False                     # True iff its stream ignored its cancellation (or
                                                # its close) past the grace period and was stopped


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
