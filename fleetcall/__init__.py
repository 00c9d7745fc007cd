"""fleetcall: compile agent queries into parallel function-call DAGs, schedule their LLM calls.

``Orchestrator(tools, llm)`` runs queries; ``EndpointPool`` serves every LLM call of a run from a
pool of model endpoints (real OpenAI-compatible servers or emulated GPUs) under a scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetcall._lazy import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fleetcall.errors import (
        ConfigError, FleetcallError, LLMError, PlanError, ToolArgumentError, ToolError, ToolServerError,
        UnknownToolError, VirtualClockError,
    )
    from fleetcall.llm import (
        LLM, CallContext, Chunk, Completion, LLMRequest, Message, ScriptedLLM, ToolCall, Usage, as_llm, complete,
    )
    from fleetcall.tools import Tool, ToolContext, ToolOptions, tool
    from fleetcall.tools.base import Toolset
    from fleetcall.tools.mcp import McpToolset, mcp_tools  # the [mcp] extra
    from fleetcall.executor import Orchestrator, RunHandle, RunResult, RunStatus, TaskRecord
    from fleetcall.executor import events
    from fleetcall.errors import EndpointError
    from fleetcall.router.config import EndpointConfig, PoolConfig, load_pool_config
    from fleetcall.router.pool import EndpointPool, OverloadedError, script_responder

__all__ = [
    "ConfigError", "FleetcallError", "LLMError", "PlanError", "ToolArgumentError", "ToolError",
    "ToolServerError", "UnknownToolError", "VirtualClockError", "Toolset", "McpToolset", "mcp_tools",
    "LLM", "CallContext", "Chunk", "Completion", "LLMRequest", "Message", "ScriptedLLM", "ToolCall",
    "Usage", "as_llm", "complete", "Tool", "ToolContext", "ToolOptions", "tool", "Orchestrator", "RunHandle",
    "RunResult", "RunStatus", "TaskRecord", "events", "__version__",
    "EndpointError", "EndpointConfig", "PoolConfig", "load_pool_config", "EndpointPool", "OverloadedError",
    "script_responder",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    'ConfigError': 'fleetcall.errors',
    'FleetcallError': 'fleetcall.errors',
    'LLMError': 'fleetcall.errors',
    'PlanError': 'fleetcall.errors',
    'ToolArgumentError': 'fleetcall.errors',
    'ToolError': 'fleetcall.errors',
    'ToolServerError': 'fleetcall.errors',
    'UnknownToolError': 'fleetcall.errors',
    'VirtualClockError': 'fleetcall.errors',
    'LLM': 'fleetcall.llm',
    'CallContext': 'fleetcall.llm',
    'Chunk': 'fleetcall.llm',
    'Completion': 'fleetcall.llm',
    'LLMRequest': 'fleetcall.llm',
    'Message': 'fleetcall.llm',
    'ScriptedLLM': 'fleetcall.llm',
    'ToolCall': 'fleetcall.llm',
    'Usage': 'fleetcall.llm',
    'as_llm': 'fleetcall.llm',
    'complete': 'fleetcall.llm',
    'Tool': 'fleetcall.tools',
    'ToolContext': 'fleetcall.tools',
    'ToolOptions': 'fleetcall.tools',
    'tool': 'fleetcall.tools',
    'Toolset': 'fleetcall.tools.base',
    # the [mcp] extra: imported on first use, so import fleetcall works without it
    'McpToolset': 'fleetcall.tools.mcp',
    'mcp_tools': 'fleetcall.tools.mcp',
    'Orchestrator': 'fleetcall.executor',
    'RunHandle': 'fleetcall.executor',
    'RunResult': 'fleetcall.executor',
    'RunStatus': 'fleetcall.executor',
    'TaskRecord': 'fleetcall.executor',
    'events': 'fleetcall.executor.events',
    'EndpointError': 'fleetcall.errors',
    'EndpointConfig': 'fleetcall.router.config',
    'PoolConfig': 'fleetcall.router.config',
    'load_pool_config': 'fleetcall.router.config',
    'EndpointPool': 'fleetcall.router.pool',
    'OverloadedError': 'fleetcall.router.pool',
    'script_responder': 'fleetcall.router.pool',
})
