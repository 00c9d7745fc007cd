"""LLM interface (protocol, request and response types), the scripted LLM, and :func:`as_llm`
(LangChain chat models and OpenAI clients as LLMs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetcall._lazy import lazy_exports

if TYPE_CHECKING:
    from fleetcall.llm.base import (
        LLM,
        CallContext,
        Chunk,
        Completion,
        LLMRequest,
        Message,
        ModelInfo,
        ToolCall,
        ToolCallDelta,
        Usage,
        complete,
        count_tokens,
        estimate_usage,
        model_info,
        prompt_tokens,
    )
    from fleetcall.llm.adapters import as_llm
    from fleetcall.llm.scripted import ScriptedLLM, split_tokens

__all__ = [
    "LLM", "CallContext", "Chunk", "Completion", "LLMRequest", "Message", "ModelInfo", "ToolCall", "ToolCallDelta",
    "Usage", "complete", "count_tokens", "estimate_usage", "model_info", "prompt_tokens", "ScriptedLLM", "split_tokens",
    "as_llm",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    'LLM': 'fleetcall.llm.base',
    'CallContext': 'fleetcall.llm.base',
    'Chunk': 'fleetcall.llm.base',
    'Completion': 'fleetcall.llm.base',
    'LLMRequest': 'fleetcall.llm.base',
    'Message': 'fleetcall.llm.base',
    'ModelInfo': 'fleetcall.llm.base',
    'ToolCall': 'fleetcall.llm.base',
    'ToolCallDelta': 'fleetcall.llm.base',
    'Usage': 'fleetcall.llm.base',
    'complete': 'fleetcall.llm.base',
    'count_tokens': 'fleetcall.llm.base',
    'estimate_usage': 'fleetcall.llm.base',
    'model_info': 'fleetcall.llm.base',
    'prompt_tokens': 'fleetcall.llm.base',
    'as_llm': 'fleetcall.llm.adapters',
    'ScriptedLLM': 'fleetcall.llm.scripted',
    'split_tokens': 'fleetcall.llm.scripted',
})
