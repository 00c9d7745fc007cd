"""A user's own agent for ``fleetcall serve --app tests.service.served_app:make_app`` (the CLI tests).

Its tool and model are not the demo's, so an answer from it proves the server ran this agent.
"""

from __future__ import annotations

import re

from fleetcall import LLMRequest, Orchestrator, tool
from fleetcall.demos.common import user_text
from fleetcall.router.pool import EndpointPool, script_responder

QUESTION = "Spell 'fleetcall' backwards."
ANSWER = "llacteelf"
GPUS = ("L40S",)   # the user's pool: one emulated L40S (the demo's has three GPUs)


@tool
async def reverse(text: str) -> str:
    """Reverse a string."""
    return text[::-1]


def respond(request: LLMRequest) -> str:
    """The scripted model: plan one reverse() call, then answer with its observation."""
    if request.context.kind == "planner":
        word = re.search(r"'(\w+)'", user_text(request))
        return f'1. reverse("{word.group(1) if word else "nothing"}")\n2. join()<END_OF_PLAN>'
    seen = re.findall(r"Observation: (\w+)", user_text(request))
    return f"Finish({seen[-1] if seen else 'no observation'})"


def make_app() -> tuple[Orchestrator, EndpointPool]:
    """The factory `--app` calls on the serving loop: an orchestrator and the pool it runs on."""
    pool = EndpointPool.emulated(GPUS, "llama-3.2-1b", responder=script_responder(respond))
    return Orchestrator(tools=[reverse], llm=pool), pool


async def make_app_async() -> Orchestrator:
    """An async factory returning only an orchestrator (no pool)."""
    from fleetcall import ScriptedLLM
    return Orchestrator(tools=[reverse], llm=ScriptedLLM(respond))


NOT_AN_APP = 42


def returns_junk() -> str:
    return "not an orchestrator"


def raises() -> Orchestrator:
    """A factory with a bug."""
    raise RuntimeError("the user's factory failed")


async def raises_async() -> Orchestrator:
    raise LookupError("no such model")


async def hangs() -> Orchestrator:
    """A factory that never returns (a model that never loads): says so, then waits forever."""
    import asyncio

    print("factory started", flush=True)
    await asyncio.Event().wait()
    raise AssertionError("unreachable")
