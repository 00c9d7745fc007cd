"""LLM interface (protocol, request and response types) and the scripted LLM."""

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
from fleetcall.llm.scripted import ScriptedLLM, split_tokens

__all__ = [
    "LLM", "CallContext", "Chunk", "Completion", "LLMRequest", "Message", "ModelInfo", "ToolCall", "ToolCallDelta",
    "Usage", "complete", "count_tokens", "estimate_usage", "model_info", "prompt_tokens", "ScriptedLLM", "split_tokens",
]
