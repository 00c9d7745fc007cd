"""LLM interface (protocol, request and response types), the scripted LLM, and :func:`as_llm`
(LangChain chat models and OpenAI clients as LLMs)."""

from fleetcall.llm.adapters import as_llm
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
    "complete", "count_tokens", "ScriptedLLM", "split_tokens", "as_llm",
]
