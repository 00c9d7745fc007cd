"""The one LLM interface used by the planner, the joiner and LLM-backed tools.

Anything that implements :class:`LLM` can serve a run: the scripted LLM of tests and demos, a
single OpenAI-compatible endpoint, or the scheduled pool of endpoints. Every request carries a
:class:`CallContext` (query id, deadline, kind of call, place in the plan) so a scheduler can tell
how urgent it is.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")

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
    estimated_calls: int = 0    # of ``calls``, those whose counts are estimates (:func:`estimate_usage`)

    def add(self, other: "Usage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.calls += other.calls
        self.estimated_calls += other.estimated_calls

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
class ToolCallDelta:
    """A piece of a tool call as it streams (OpenAI's ``delta.tool_calls`` entries, merged)."""

    index: int           # which call of the answer (0 = the first), after merging by id
    id: str = ""         # the call's id, on the piece that starts it (may repeat)
    name: str = ""       # the function's name, on the piece that starts it (may repeat)
    arguments: str = ""  # the next piece of its JSON arguments


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a streamed answer; the last one carries usage (and tool calls, if any).

    ``tool_deltas`` are the pieces of tool calls this chunk carried, as they streamed; the last
    chunk's ``tool_calls`` holds every call whole. ``finish_reason`` is on the last chunk:
    ``"stop"``, ``"length"`` (cut off at ``max_tokens``), ``"tool_calls"``, or None if unknown."""

    text: str = ""
    usage: Usage | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    info: dict[str, Any] | None = None  # serving details (endpoint, queue wait, ttft), last chunk
    tool_deltas: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    info: dict[str, Any] | None = None
    finish_reason: str | None = None   # "stop" | "length" | "tool_calls" | None (not said)

    @property
    def truncated(self) -> bool:
        """True iff the answer was cut off at ``max_tokens`` (``finish_reason == "length"``)."""
        return self.finish_reason == "length"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a run may know about the model behind an LLM: it picks the plan format
    (``plan_format="auto"``) and sizes the prompts. An LLM says it with a ``model_info`` attribute;
    one that does not is taken to know nothing (text plans, the default context)."""

    json_schema: bool = False           # it enforces a JSON-schema ``response_format`` (constrained decoding)
    context_tokens: int | None = None   # tokens of prompt and answer together it takes, if known

    @staticmethod
    def weakest(infos: "Iterable[ModelInfo]") -> "ModelInfo":
        """What holds for every one of several models (a pool may send a call to any of them)."""
        infos = list(infos)
        contexts = [i.context_tokens for i in infos if i.context_tokens is not None]
        return ModelInfo(bool(infos) and all(i.json_schema for i in infos), min(contexts) if contexts else None)


def model_info(llm: object) -> ModelInfo:
    """What ``llm`` says about its model: its ``model_info`` attribute (an endpoint pool gives
    the weakest of its endpoints'), or nothing known.

    >>> model_info(object())
    ModelInfo(json_schema=False, context_tokens=None)
    """
    info = getattr(llm, "model_info", None)
    return info if isinstance(info, ModelInfo) else ModelInfo()


@runtime_checkable
class LLM(Protocol):
    """An async model: messages in, a stream of text chunks out, usage on the last chunk."""

    def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        """Yield the answer chunk by chunk; the final chunk carries ``usage``."""
        ...


@contextlib.asynccontextmanager
async def closing(stream: AsyncIterator[T]) -> AsyncGenerator[AsyncIterator[T], None]:
    """``async with closing(llm.stream(request)) as chunks:``: the stream is closed on leaving,
    however the block ends, if it can be (an async generator's ``aclose``). Unlike
    ``contextlib.aclosing`` it takes any async iterator: the LLM protocol promises no ``aclose``.
    """
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def complete(llm: LLM, request: LLMRequest) -> Completion:
    """Collect a whole answer from :meth:`LLM.stream`.

    >>> # completion = await complete(llm, LLMRequest((Message("user", "hi"),)))
    """
    parts: list[str] = []
    usage = Usage()
    tool_calls: tuple[ToolCall, ...] = ()
    info: dict[str, Any] | None = None
    finish_reason: str | None = None
    async with closing(llm.stream(request)) as chunks:
        async for chunk in chunks:
            parts.append(chunk.text)
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.tool_calls:
                tool_calls = chunk.tool_calls
            if chunk.info is not None:
                info = chunk.info
            if chunk.finish_reason is not None:
                finish_reason = chunk.finish_reason
    return Completion("".join(parts), usage, tool_calls, info, finish_reason)


def count_tokens(text: str) -> int:
    """A model-free token estimate (~4 characters a token, at least one per word)."""
    if not text:
        return 0
    length = (len(text) + 3) // 4
    if not text.isascii():
        return max(len(text.split()), length)
    marks = text.encode("ascii").translate(_WORD_BYTES)
    # Words are at most the separators (+1 if the text does not end with one: every other word
    # is followed by a separator of its own); at most ``length`` of them, and it is the count
    # without counting them (prompts of ~4-character words are counted on both sides).
    if marks.count(b" ") + (not marks.endswith(b" ")) <= length:
        return length
    return max(marks.count(b" x") + marks.startswith(b"x"), length)


# Every byte to b"x", but the ASCII characters ``str.split()`` splits on (\t\n\v\f\r, the
# separators \x1c-\x1f and the space), which go to b" ".
_WORD_BYTES = bytes(32 if b in b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f " else 120 for b in range(256))


def count_words(text: str) -> int:
    """``len(text.split())`` without building the list: for ASCII text, the word starts
    counted in C on a bytes copy (prompts are long, and counted on both sides of an endpoint)."""
    if not text.isascii():
        return len(text.split())
    marks = text.encode("ascii").translate(_WORD_BYTES)
    return marks.count(b" x") + marks.startswith(b"x")


def prompt_tokens(request: LLMRequest) -> int:
    """A model-free estimate of a request's prompt tokens: its messages, and the tool definitions
    and response schema a server puts into the prompt too."""
    total = sum(count_tokens(m.content) for m in request.messages)
    extras = [x for x in (request.tools or None, request.response_format) if x]
    if extras:
        total += count_tokens(json.dumps(extras, default=str))
    return total


def estimate_usage(request: LLMRequest, completion_text: str) -> Usage:
    """Usage counted from what was sent and consumed, for a call whose LLM reported none (a
    stream closed early, a server that sends no usage): one call, marked estimated."""
    return Usage(prompt_tokens(request), count_tokens(completion_text), 1, 1)
