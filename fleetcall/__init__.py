"""fleetcall: compile agent queries into parallel function-call DAGs, schedule their LLM calls.

The public surface grows as parts land; the orchestrator (``fleetcall.executor``) is exported
once the planner it needs is complete.
"""

from fleetcall.errors import (
    ConfigError, FleetcallError, LLMError, PlanError, ToolArgumentError, ToolError, UnknownToolError,
    VirtualClockError,
)
from fleetcall.llm import (
    LLM, CallContext, Chunk, Completion, LLMRequest, Message, ScriptedLLM, ToolCall, Usage, complete,
)
from fleetcall.tools import Tool, ToolContext, ToolOptions, tool
from fleetcall.executor import Orchestrator, RunHandle, RunResult, RunStatus, TaskRecord
from fleetcall.executor import events

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "FleetcallError", "LLMError", "PlanError", "ToolArgumentError", "ToolError",
    "UnknownToolError", "VirtualClockError",
    "LLM", "CallContext", "Chunk", "Completion", "LLMRequest", "Message", "ScriptedLLM", "ToolCall",
    "Usage", "complete", "Tool", "ToolContext", "ToolOptions", "tool", "Orchestrator", "RunHandle", "RunResult", "RunStatus", "TaskRecord", "events", "__version__",
]
