"""fleetcall: compile agent queries into parallel function-call DAGs, schedule their LLM calls.

``Orchestrator(tools, llm)`` runs queries; ``EndpointPool`` serves every LLM call of a run from a
pool of model endpoints (real OpenAI-compatible servers or emulated GPUs) under a scheduler.
"""

from fleetcall.errors import (
    ConfigError, FleetcallError, LLMError, PlanError, ToolArgumentError, ToolError, UnknownToolError,
    VirtualClockError,
)
from fleetcall.llm import (
    LLM, CallContext, Chunk, Completion, LLMRequest, Message, ScriptedLLM, ToolCall, Usage, as_llm, complete,
)
from fleetcall.tools import Tool, ToolContext, ToolOptions, tool
from fleetcall.executor import Orchestrator, RunHandle, RunResult, RunStatus, TaskRecord
from fleetcall.executor import events
from fleetcall.errors import EndpointError
from fleetcall.router.config import EndpointConfig, PoolConfig, load_pool_config
from fleetcall.router.pool import EndpointPool, OverloadedError, script_responder

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "FleetcallError", "LLMError", "PlanError", "ToolArgumentError", "ToolError",
    "UnknownToolError", "VirtualClockError",
    "LLM", "CallContext", "Chunk", "Completion", "LLMRequest", "Message", "ScriptedLLM", "ToolCall",
    "Usage", "as_llm", "complete", "Tool", "ToolContext", "ToolOptions", "tool", "Orchestrator", "RunHandle", "RunResult", "RunStatus", "TaskRecord", "events", "__version__",
    "EndpointError", "EndpointConfig", "PoolConfig", "load_pool_config", "EndpointPool", "OverloadedError",
    "script_responder",
]
