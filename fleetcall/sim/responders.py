"""Responders of emulated endpoints: what an answer says (the engine decides how long it takes).

A responder maps an OpenAI chat request body to a :class:`Reply`: text (scripted demos and
tests), a token count only (trace replay by lengths), or tool calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from fleetcall.errors import LLMError

__all__ = ["EchoResponder", "LengthsResponder", "Reply", "Responder", "ScriptedResponder", "content_text"]


# ---- responders --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A responder's answer. ``output_tokens`` None: the text's token count (or ``max_tokens``
    if there is no text either); ``tool_calls`` are OpenAI dicts or :class:`ToolCall` s."""

    text: str | None = None
    output_tokens: int | None = None
    tool_calls: list[Any] | None = None


class Responder(Protocol):
    """Maps an OpenAI chat request body to the answer: a :class:`Reply`, or its text alone."""

    def __call__(self, request_body: dict[str, Any]) -> Reply | str: ...


class LengthsResponder:
    """No text of its own: exactly ``max_tokens`` tokens of filler (trace replay by lengths)."""

    def __call__(self, request_body: dict[str, Any]) -> Reply:
        return Reply()


class ScriptedResponder:
    """Texts replayed in order (an error once exhausted), or a function of the request body
    returning a text or a :class:`Reply`. Output tokens: ``count_tokens(text)``."""

    def __init__(self, script: Callable[[dict[str, Any]], str | Reply] | Iterable[str | Reply]):
        self._fn = script if callable(script) else None
        self._texts = [] if callable(script) else list(script)[::-1]  # popped from the end

    def __call__(self, request_body: dict[str, Any]) -> Reply:
        if self._fn is not None:
            out = self._fn(request_body)
        elif self._texts:
            out = self._texts.pop()
        else:
            raise LLMError("scripted responder has no reply left")
        return out if isinstance(out, Reply) else Reply(text=out)


class EchoResponder:
    """The default: a short deterministic answer naming the last user message, or a call with
    ``{}`` arguments when ``tool_choice`` demands a tool. It does not try to satisfy a
    ``json_schema`` response format (use a :class:`ScriptedResponder` for that)."""

    def __call__(self, request_body: dict[str, Any]) -> Reply:
        choice, tools = request_body.get("tool_choice"), request_body.get("tools") or []
        if isinstance(choice, dict) or (choice == "required" and tools):
            name = (choice.get("function", {}).get("name") if isinstance(choice, dict)
                    else tools[0].get("function", {}).get("name")) or "tool"
            return Reply(tool_calls=[{"type": "function",
                                      "function": {"name": name, "arguments": "{}"}}])
        users = [m for m in request_body.get("messages", []) if m.get("role") == "user"]
        words = content_text(users[-1].get("content")).split()[:12] if users else []
        return Reply(text="Emulated answer to: " + " ".join(words))


def content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
