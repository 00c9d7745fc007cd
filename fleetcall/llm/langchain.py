"""A LangChain chat model (any ``BaseChatModel``) behind the fleetcall :class:`~fleetcall.llm.LLM`
protocol.

A plain request streams through ``model.astream(messages, stop=...)``: each chunk's text is
yielded as it comes, and the last chunk carries the usage the model reported in
``usage_metadata`` and ``info["model"]`` the model that answered (as the provider names it in
``response_metadata``, else the model it is configured for, else its class name), or an
estimate of the usage (with ``info["usage_reported"] = False`` and
``Usage.estimated_calls = 1``, for models that report none). A model that cannot stream (only
``_generate``) answers in one piece, which LangChain's ``astream`` yields as a whole message; a
``astream`` that yields anything but messages or strings is an ``LLMError`` naming what it
yielded. Requests that ask for structure use the model's own means where it has them:

* a JSON-schema ``response_format`` (the planner's ``plan_format="json"``, the JSON joiner) goes
  through ``model.with_structured_output(schema, include_raw=True)`` and comes back as JSON
  text; a model without structured output gets the request as plain text, and the prompt (which
  asks for JSON) is all that shapes the answer;
* tool definitions (``plan_format="tool_call"``) go through ``model.bind_tools(tools,
  tool_choice=...)``; the calls come back as :class:`~fleetcall.llm.ToolCall` s. A model without
  ``bind_tools`` cannot serve that mode, which :attr:`LangChainLLM.supports_tool_calls` tells the
  orchestrator at construction.

Temperature and ``max_tokens`` are the chat model's own settings (LangChain has no portable
per-call argument for them); ``LLMRequest.temperature`` and ``max_tokens`` are not passed on.
Any failure of the model is raised as :class:`~fleetcall.errors.LLMError` naming the model.

>>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
>>> llm = LangChainLLM(FakeListChatModel(responses=["Finish(42)"]))
>>> llm.name
'FakeListChatModel'
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata, add_usage

from fleetcall.errors import ConfigError, LLMError
from fleetcall.llm.base import Chunk, LLMRequest, Message, ToolCall, Usage, closing, estimate_usage

__all__ = ["LangChainLLM", "to_langchain_messages"]


def to_langchain_messages(messages: Sequence[Message]) -> list[BaseMessage]:
    """fleetcall messages as LangChain ones (``tool`` messages, which carry no call id here,
    become a ``ChatMessage`` with that role)."""
    out: list[BaseMessage] = []
    for m in messages:
        if m.role == "system":
            out.append(SystemMessage(content=m.content))
        elif m.role == "user":
            out.append(HumanMessage(content=m.content))
        elif m.role == "assistant":
            out.append(AIMessage(content=m.content))
        else:
            out.append(ChatMessage(role=m.role, content=m.content))
    return out


def _text(message: BaseMessage) -> str:
    """A message's text, whatever its content shape (a string or content blocks)."""
    text = message.text   # a property (a str subclass) in langchain-core 1.x, a method in 0.3
    return str(text() if callable(text) and not isinstance(text, str) else text)


def _tool_choice(choice: str | dict[str, Any] | None) -> str | None:
    """An OpenAI ``tool_choice`` in the form ``bind_tools`` takes: a forced function is its name."""
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return name if isinstance(name, str) else "any"
    return "any" if choice == "required" else choice


def _overrides(model: BaseChatModel, method: str) -> bool:
    return getattr(type(model), method) is not getattr(BaseChatModel, method)


class LangChainLLM:
    """A LangChain ``BaseChatModel`` serving fleetcall's LLM calls (see the module doc).

    Args:
        model: the chat model, used as it is (its own temperature, token limit, retries).
        name: what errors and ``info["model"]`` call it (default: the model's class name).

    Raises:
        ConfigError: ``model`` is not a ``BaseChatModel``.
    """

    def __init__(self, model: BaseChatModel, *, name: str | None = None) -> None:
        if not isinstance(model, BaseChatModel):
            raise ConfigError(f"LangChainLLM needs a langchain_core BaseChatModel, got {type(model).__name__}")
        self.model = model
        self.name = name or type(model).__name__
        # what info["model"] says when the provider names no model in its answer: the model the
        # chat model is configured to ask for (ChatOpenAI(model="gpt-4o")), else the name
        configured = next((v for a in ("model_name", "model") if isinstance(v := getattr(model, a, None), str) and v),
                          None)
        self.model_id = configured or self.name
        # True iff the model implements bind_tools (the base class only raises NotImplementedError)
        self.supports_tool_calls = _overrides(model, "bind_tools")
        # True iff with_structured_output can work: its own, or the base one built on bind_tools
        self.supports_structured_output = (self.supports_tool_calls
                                           or _overrides(model, "with_structured_output"))

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        """Yield the answer's text as the model streams it; the last chunk has usage and info."""
        messages = to_langchain_messages(request.messages)
        try:
            if request.tools:
                yield await self._tool_call(messages, request)
                return
            schema = _json_schema(request.response_format)
            if schema is not None and self.supports_structured_output:
                yield await self._structured(messages, request, schema)
                return
            async for chunk in self._stream_text(messages, request):
                yield chunk
        except (LLMError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise LLMError(f"LangChain model {self.name}: {type(exc).__name__}: {exc}") from exc

    async def _stream_text(self, messages: list[BaseMessage], request: LLMRequest) -> AsyncIterator[Chunk]:
        kwargs: dict[str, Any] = {"stop": list(request.stop)} if request.stop else {}
        usage: UsageMetadata | None = None
        served: str | None = None
        produced: list[str] = []
        # aclosing: a caller that stops early (the planner at <END_OF_PLAN>) closes the model's stream now
        async with closing(self.model.astream(messages, **kwargs)) as pieces:
            async for piece in pieces:
                if isinstance(piece, BaseMessage):
                    # chunks as they stream; a whole AIMessage from a model that cannot stream
                    # (BaseChatModel.astream falls back to ainvoke for a model with only _generate)
                    reported = getattr(piece, "usage_metadata", None)
                    if reported:
                        usage = reported if usage is None else add_usage(usage, reported)
                    served = _served_model(piece) or served
                    text = _text(piece)
                elif isinstance(piece, str):  # a model whose stream yields plain strings
                    text = piece
                else:
                    raise LLMError(f"LangChain model {self.name}: its astream yielded a "
                                   f"{type(piece).__module__}.{type(piece).__qualname__}, not a "
                                   "message chunk or a string")
                if text:
                    produced.append(text)
                    yield Chunk(text=text)
        yield self._last_chunk(request, usage, "".join(produced), served=served)

    async def _structured(self, messages: list[BaseMessage], request: LLMRequest,
                          schema: dict[str, Any]) -> Chunk:
        runnable = self.model.with_structured_output(schema, include_raw=True)
        out = await runnable.ainvoke(messages)
        if isinstance(out, dict) and {"raw", "parsed"} <= out.keys():
            raw, parsed = out["raw"], out["parsed"]
        else:                                            # a model that ignored include_raw: no usage
            raw, parsed = None, out
        if parsed is not None:
            value = parsed.model_dump() if hasattr(parsed, "model_dump") else parsed
            text = json.dumps(value, ensure_ascii=False)
        elif isinstance(raw, AIMessage):
            # unparsable: hand the model's own words on, so the plan's parser names the problem
            calls = raw.tool_calls
            text = json.dumps(calls[0]["args"], ensure_ascii=False) if calls else _text(raw)
        else:
            text = ""
        usage = raw.usage_metadata if isinstance(raw, AIMessage) else None
        served = _served_model(raw) if isinstance(raw, AIMessage) else None
        return self._last_chunk(request, usage, text, text=text, served=served)

    async def _tool_call(self, messages: list[BaseMessage], request: LLMRequest) -> Chunk:
        if not self.supports_tool_calls:
            raise LLMError(f"LangChain model {self.name} has no bind_tools: it cannot make tool calls")
        bound = self.model.bind_tools(list(request.tools), tool_choice=_tool_choice(request.tool_choice))
        message = await bound.ainvoke(messages)
        if not isinstance(message, AIMessage):
            raise LLMError(f"LangChain model {self.name} answered a tool call with a "
                           f"{type(message).__name__}, not an AIMessage")
        calls = tuple(ToolCall(c.get("id") or f"call_{i}", c["name"], json.dumps(c["args"], ensure_ascii=False))
                      for i, c in enumerate(message.tool_calls))
        # calls LangChain could not parse keep the model's own arguments, so that the plan's
        # parser names what is wrong with them (rather than "no JSON plan found")
        calls += tuple(ToolCall(c.get("id") or f"invalid_{i}", c.get("name") or "", c.get("args") or "")
                       for i, c in enumerate(message.invalid_tool_calls))
        text = _text(message)
        produced = text + "".join(c.arguments for c in calls)
        last = self._last_chunk(request, message.usage_metadata, produced, text=text,
                                served=_served_model(message))
        return Chunk(text=last.text, usage=last.usage, tool_calls=calls, info=last.info)

    def _last_chunk(self, request: LLMRequest, usage: UsageMetadata | None, produced: str,
                    *, text: str = "", served: str | None = None) -> Chunk:
        """The final chunk: the model's usage if it reported any, else an estimate."""
        if usage:
            counted = Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)), 1)
        else:   # counted from what was sent and produced, and marked estimated (usage_estimated)
            counted = estimate_usage(request, produced)
        info = {"model": served or self.model_id, "prompt_tokens": counted.prompt_tokens,
                "completion_tokens": counted.completion_tokens, "usage_reported": bool(usage)}
        return Chunk(text=text, usage=counted, info=info)

    def __repr__(self) -> str:
        return f"<LangChainLLM {self.name}>"


def _served_model(message: BaseMessage) -> str | None:
    """The model that answered, as the provider named it in the message's metadata
    (``model_name`` for OpenAI's and most integrations, ``model`` for some), else None."""
    metadata = getattr(message, "response_metadata", None) or {}
    for key in ("model_name", "model"):
        name = metadata.get(key)
        if isinstance(name, str) and name:
            return name
    return None


def _json_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema of an OpenAI ``json_schema`` response format, titled as LangChain wants
    (``with_structured_output`` names the schema by its ``title``); None for anything else."""
    if not response_format or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        return None
    titled = {"title": spec.get("name") or "response", **schema}
    if spec.get("description"):
        titled.setdefault("description", spec["description"])
    return titled
