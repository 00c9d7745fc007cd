"""The one LLM interface used by the planner, the joiner and LLM-backed tools.

Anything that implements :class:`LLM` can serve a run: the scripted LLM of tests and demos, a
single OpenAI-compatible endpoint, or the scheduled pool of endpoints. Every request carries a
:class:`CallContext` (query id, deadline, kind of call, place in the plan) so a scheduler can tell
how urgent it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0      # tokens sent
    completion_tokens: int = 0  # tokens generated
    calls: int = 0              # LLM calls counted in this total

    def add(self, other: "Usage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.calls += other.calls

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is asking, and how urgent it is: read by schedulers, ignored by plain LLMs."""

    query_id: str = ""
    kind: str = "other"              # "planner" | "joiner" | "tool:<name>" | "react" | ...
    deadline: float | None = None    # loop time (s) by which the whole query must be done
    remaining_calls: int = 0         # LLM calls on the longest path of the query after this one
    remaining_work_s: float = 0.0    # predicted seconds of the query's work after this call
    priority: int = 0                # smaller = more important, when no deadline is given
    stage: int = 0                   # depth of this call in the query's DAG (0 = first)


@dataclass(frozen=True, slots=True)
class LLMRequest:
    messages: tuple[Message, ...]
    context: CallContext = field(default_factory=CallContext)
    max_tokens: int | None = None
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    response_format: dict[str, Any] | None = None  # OpenAI-style, e.g. {"type": "json_schema", ...}
    tools: tuple[dict[str, Any], ...] = ()         # OpenAI-style tool definitions
    tool_choice: str | dict[str, Any] | None = None
    # Prompt sharing hints for cache-aware schedulers: hashes of fixed-size prompt blocks.
    prefix_hashes: tuple[int, ...] = ()
    # Extra fields for the request body of an OpenAI-compatible server (vLLM's ``ignore_eos``).
    extra_body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the OpenAI API returns it


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a streamed answer; the last one carries usage (and tool calls, if any)."""

    text: str = ""
    usage: Usage | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    info: dict[str, Any] | None = None  # serving details (endpoint, queue wait, ttft), last chunk


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    info: dict[str, Any] | None = None


@runtime_checkable
class LLM(Protocol):
    """An async model: messages in, a stream of text chunks out, usage on the last chunk."""

    def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        """Yield the answer chunk by chunk; the final chunk carries ``usage``."""
        ...


async def complete(llm: LLM, request: LLMRequest) -> Completion:
    """Collect a whole answer from :meth:`LLM.stream`.

    >>> # completion = await complete(llm, LLMRequest((Message("user", "hi"),)))
    """
    parts: list[str] = []
    usage = Usage()
    tool_calls: tuple[ToolCall, ...] = ()
    info: dict[str, Any] | None = None
    async for chunk in llm.stream(request):
        parts.append(chunk.text)
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.tool_calls:
            tool_calls = chunk.tool_calls
        if chunk.info is not None:
            info = chunk.info
    return Completion("".join(parts), usage, tool_calls, info)


def count_tokens(text: str) -> int:
    """A model-free token estimate (~4 characters a token, at least one per word)."""
    if not text:
        return 0
    return max(len(text.split()), (len(text) + 3) // 4)
