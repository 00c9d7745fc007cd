"""What every demo shares: the model seam, the pacing, and reading what a scripted model is shown.

A demo's model is a *responder*, ``(LLMRequest) -> str``: the scripted text of every call (planner,
joiner, ReAct step, LLM-backed tool), written in the demo's module. ``build(llm_factory)`` turns it
into an :class:`~fleetcall.LLM` through an ``LLMFactory``: by default a :class:`~fleetcall.ScriptedLLM`
that streams it at a realistic pace, later an emulated endpoint pool that takes the same responder.

The scripted models read their prompts (observations, errors, earlier plans) like a real model
would, so a demo's answer comes from what its tools really returned.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

from fleetcall import LLM, ConfigError, LLMRequest, ScriptedLLM
from fleetcall.router.pool import EndpointPool, script_responder

Responder = Callable[[LLMRequest], str]
LLMFactory = Callable[[Responder], LLM]   # responder -> the model every role of the run uses

_OPENERS = "{[("
_CLOSERS = "}])"


# The embedded default pool of `fleetcall demo` and `fleetcall serve`: emulated in-process.
EMBEDDED_GPUS = ("A100-80G", "A100-80G", "L40S")
EMBEDDED_MODEL = "llama-3.1-8b"


def embedded_pool(responder: Responder) -> EndpointPool:
    """The embedded default: :data:`EMBEDDED_GPUS` serving :data:`EMBEDDED_MODEL` in-process,
    their replies scripted by ``responder`` (the pool sends each call's kind along)."""
    return EndpointPool.emulated(EMBEDDED_GPUS, EMBEDDED_MODEL, responder=script_responder(responder))


def check_pace(pace: float) -> float:
    """``pace`` unchanged if it is a positive factor (1 = realistic, 0.1 = ten times faster)."""
    if isinstance(pace, bool) or not isinstance(pace, (int, float)) or not pace > 0:
        raise ConfigError(f"pace must be a positive number (1.0 = realistic timing), got {pace!r}")
    return float(pace)


def scripted_model(ttft_s: float, tpot_s: float, pace: float = 1.0) -> LLMFactory:
    """A factory of :class:`ScriptedLLM` streaming at ``ttft_s`` / ``tpot_s`` times ``pace``.

    >>> llm = scripted_model(0.25, 0.012)(lambda request: "Finish(42)")
    """
    pace = check_pace(pace)

    def make(responder: Responder) -> LLM:
        return ScriptedLLM(responder, ttft_s=ttft_s * pace, tpot_s=tpot_s * pace)

    return make


async def pause(seconds: float, pace: float) -> None:
    """Spend a tool's simulated latency (``seconds`` times ``pace``) on the running loop's clock."""
    await asyncio.sleep(seconds * pace)


def user_text(request: LLMRequest) -> str:
    """All user messages of a request, joined: the question, observations, earlier plans."""
    return "\n".join(m.content for m in request.messages if m.role == "user")


def observation_turns(request: LLMRequest) -> int:
    """How many observation turns a baseline (ReAct) conversation holds: its step number."""
    return sum(1 for m in request.messages[2:] if m.role == "user")


def last_user(request: LLMRequest) -> str:
    """The latest user message: in a ReAct conversation, the newest observation."""
    return next((m.content for m in reversed(request.messages) if m.role == "user"), "")


def errors_in(text: str) -> list[str]:
    """The error observations shown in a prompt (``ERROR: ...`` as plans and ReAct render them)."""
    return [m.group(1).strip() for m in re.finditer(r"ERROR: (.+)", text)]


def last_plan(text: str) -> str:
    """The part of a joiner or planner prompt about the latest plan (``Plan N:`` blocks)."""
    heads = list(re.finditer(r"^Plan \d+:$", text, re.MULTILINE))
    return text[heads[-1].start():] if heads else text


def literals(text: str, first_key: str) -> list[Any]:
    """Every dict literal in ``text`` whose first key is ``first_key``, evaluated, in order.

    Tool results are shown to models as JSON (a dict as ``{"name": ...}``, by
    :func:`fleetcall.observe.render`); Python literals (``{'name': ...}``) are read too. A
    scripted model thus reads the values back the way a real one would copy them.

    >>> literals('Observation: {"name": "Ada", "age": 36} and {\'name\': \'Bob\'}', "name")
    [{'name': 'Ada', 'age': 36}, {'name': 'Bob'}]
    """
    found: list[tuple[int, Any]] = []
    for marker, parse in (("{" + json.dumps(first_key), json.loads), ("{" + repr(first_key), ast.literal_eval)):
        start = text.find(marker)
        while start != -1:
            end = _literal_end(text, start)
            if end is not None:
                try:
                    found.append((start, parse(text[start:end])))
                except (ValueError, SyntaxError):
                    pass
            start = text.find(marker, start + 1)
    return [value for _, value in sorted(found, key=lambda item: item[0])]


def _literal_end(text: str, start: int) -> int | None:
    """Index just past the bracket that closes the one at ``start`` (quotes respected)."""
    depth, quote, i = 0, "", start
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in _OPENERS:
            depth += 1
        elif c in _CLOSERS:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None
