"""Task fetching unit, async executor, orchestrator loop and baselines."""

from fleetcall.executor.events import (
    AnswerReady, Event, PlanRejected, Replanning, RunFinished, TaskFailed, TaskFinished,
    TaskPlanned, TaskSkipped, TaskStarted,
)
from fleetcall.executor.orchestrator import MODES, Orchestrator, RunHandle
from fleetcall.executor.result import (
    LLMCallRecord, PlanRecord, ReplanRecord, RunResult, RunStatus, TaskRecord, UsageRecord,
)

__all__ = [
    "AnswerReady", "Event", "PlanRejected", "Replanning", "RunFinished", "TaskFailed", "TaskFinished",
    "TaskPlanned", "TaskSkipped", "TaskStarted", "MODES", "Orchestrator", "RunHandle",
    "LLMCallRecord", "PlanRecord", "ReplanRecord", "RunResult", "RunStatus", "TaskRecord", "UsageRecord",
]
