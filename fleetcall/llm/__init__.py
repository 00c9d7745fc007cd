"""LLM interface (protocol, request and response types) and the scripted LLM."""

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
        ToolCall,
        Usage,
        complete,
        count_tokens,
    )
    from fleetcall.llm.scripted import ScriptedLLM, split_tokens

__all__ = [
    "LLM", "CallContext", "Chunk", "Completion", "LLMRequest", "Message", "ToolCall", "Usage",
    "complete", "count_tokens", "ScriptedLLM", "split_tokens",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    'LLM': 'fleetcall.llm.base',
    'CallContext': 'fleetcall.llm.base',
    'Chunk': 'fleetcall.llm.base',
    'Completion': 'fleetcall.llm.base',
    'LLMRequest': 'fleetcall.llm.base',
    'Message': 'fleetcall.llm.base',
    'ToolCall': 'fleetcall.llm.base',
    'Usage': 'fleetcall.llm.base',
    'complete': 'fleetcall.llm.base',
    'count_tokens': 'fleetcall.llm.base',
    'ScriptedLLM': 'fleetcall.llm.scripted',
    'split_tokens': 'fleetcall.llm.scripted',
})
