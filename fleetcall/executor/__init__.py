"""Task fetching unit, async executor, orchestrator loop and baselines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetcall._lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(__name__, {
    'AnswerReady': 'fleetcall.executor.events',
    'Event': 'fleetcall.executor.events',
    'PlanRejected': 'fleetcall.executor.events',
    'Replanning': 'fleetcall.executor.events',
    'RunFinished': 'fleetcall.executor.events',
    'TaskFailed': 'fleetcall.executor.events',
    'TaskFinished': 'fleetcall.executor.events',
    'TaskPlanned': 'fleetcall.executor.events',
    'TaskSkipped': 'fleetcall.executor.events',
    'TaskStarted': 'fleetcall.executor.events',
    'MODES': 'fleetcall.executor.orchestrator',
    'Orchestrator': 'fleetcall.executor.orchestrator',
    'RunHandle': 'fleetcall.executor.orchestrator',
    'LLMCallRecord': 'fleetcall.executor.result',
    'PlanRecord': 'fleetcall.executor.result',
    'ReplanRecord': 'fleetcall.executor.result',
    'RunResult': 'fleetcall.executor.result',
    'RunStatus': 'fleetcall.executor.result',
    'TaskRecord': 'fleetcall.executor.result',
    'UsageRecord': 'fleetcall.executor.result',
})
