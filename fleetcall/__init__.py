"""fleetcall: compile agent queries into parallel function-call DAGs, schedule their LLM calls.

``Orchestrator(tools, llm)`` runs queries; ``EndpointPool`` serves every LLM call of a run from a
pool of model endpoints (real OpenAI-compatible servers or emulated GPUs) under a scheduler.
"""

from fleetcall.errors import (
    ConfigError, FleetcallError, LLMError, PlanError, ToolArgumentError, ToolError, ToolServerError,
    UnknownToolError, VirtualClockError,
)
from fleetcall.llm import (
    LLM, CallContext, Chunk, Completion, LLMRequest, Message, ScriptedLLM, ToolCall, Usage, as_llm, complete,
)
from fleetcall.tools import Tool, ToolContext, ToolOptions, tool
from fleetcall.tools.base import Toolset
from fleetcall.executor import Orchestrator, RunHandle, RunResult, RunStatus, TaskRecord
from fleetcall.executor import events
from fleetcall.errors import EndpointError
from fleetcall.router.config import EndpointConfig, PoolConfig, load_pool_config
from fleetcall.router.pool import EndpointPool, OverloadedError, script_responder

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "FleetcallError", "LLMError", "PlanError", "ToolArgumentError", "ToolError",
    "ToolServerError", "UnknownToolError", "VirtualClockError", "Toolset", "McpToolset", "mcp_tools",
    "LLM", "CallContext", "Chunk", "Completion", "LLMRequest", "Message", "ScriptedLLM", "ToolCall",
    "Usage", "as_llm", "complete", "Tool", "ToolContext", "ToolOptions", "tool", "Orchestrator", "RunHandle", "RunResult", "RunStatus", "TaskRecord", "events", "__version__",
    "EndpointError", "EndpointConfig", "PoolConfig", "load_pool_config", "EndpointPool", "OverloadedError",
    "script_responder",
]


# Names whose module needs an optional extra: imported on first use (PEP 562), so that
# ``import fleetcall`` works without them and the ImportError names the extra to install.
_OPTIONAL = {"McpToolset": "fleetcall.tools.mcp", "mcp_tools": "fleetcall.tools.mcp"}


def __getattr__(name: str) -> object:
    module = _OPTIONAL.get(name)
    if module is None:
        raise AttributeError(f"module 'fleetcall' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
