"""Bring your own model: :func:`as_llm` turns what a user has into a fleetcall :class:`LLM`.

Accepted, checked at construction (never accepted to fail on the first call):

* anything implementing the LLM protocol: ``stream(request)`` is an async generator function
  (``async def`` with ``yield``), or a plain method annotated to return an async iterator
  (``-> AsyncIterator[Chunk]``); ``ScriptedLLM``, ``EndpointPool``, ``EndpointClient`` are;
* a LangChain chat model (any ``langchain_core`` ``BaseChatModel``), through
  :class:`~fleetcall.llm.langchain.LangChainLLM`;
* an ``openai.AsyncOpenAI`` client with a model name (``as_llm(client, model="...")``), through
  :class:`~fleetcall.llm.openai.OpenAILLM` (the ``openai`` extra).

An object with a *sync* ``stream`` method (a LangChain model, a ``Runnable``) or an
``async def stream`` that returns instead of yielding is not the protocol, and a class (``ScriptedLLM``
rather than ``ScriptedLLM([...])``) is not a model: both are refused with a
:class:`~fleetcall.errors.ConfigError` naming what is accepted.

>>> from fleetcall import ScriptedLLM
>>> llm = ScriptedLLM(["hi"])
>>> as_llm(llm) is llm
True
>>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
>>> as_llm(FakeListChatModel(responses=["hi"]))
<LangChainLLM FakeListChatModel>
"""

from __future__ import annotations

import collections.abc
import inspect
import sys
import typing
from typing import Any

from fleetcall.errors import ConfigError
from fleetcall.llm.base import LLM

__all__ = ["ACCEPTED", "as_llm", "protocol_problem", "require_tool_calls"]

ACCEPTED = ("an LLM (an object whose stream(request) is an async generator yielding Chunks, "
            "such as ScriptedLLM or EndpointPool), a LangChain BaseChatModel, or an "
            "openai.AsyncOpenAI client with a model name: as_llm(client, model='...')")

_ASYNC_ITERATORS = (collections.abc.AsyncIterator, collections.abc.AsyncIterable,
                    collections.abc.AsyncGenerator)
_ASYNC_ITERATOR_NAMES = tuple(t.__name__ for t in _ASYNC_ITERATORS)


def as_llm(obj: object, *, model: str | None = None, role: str = "llm") -> LLM:
    """``obj`` as an :class:`LLM` (see the module doc for what is accepted).

    Args:
        obj: the model to use.
        model: the model name, for an ``openai.AsyncOpenAI`` client (and only for one).
        role: how error messages name the argument (``planner_llm``, ...).

    Returns:
        ``obj`` itself when it implements the protocol, else an adapter around it.

    Raises:
        ConfigError: ``obj`` is none of the accepted kinds (the message names them) or a class
            rather than an instance, an OpenAI
            client comes without ``model``, or ``model`` is given for anything else.
    """
    if obj is None:
        raise ConfigError(f"{role} is None: pass {ACCEPTED}")
    if isinstance(obj, type):   # ScriptedLLM, a chat model's class, AsyncOpenAI: not yet a model
        raise ConfigError(f"{role} must be {ACCEPTED}; got the class {obj.__module__}.{obj.__qualname__} "
                          f"itself, not an instance of it: pass {obj.__name__}(...)")
    if _is_chat_model(obj):
        _no_model(model, obj, role)
        from fleetcall.llm.langchain import LangChainLLM

        return LangChainLLM(obj)  # type: ignore[arg-type]  # checked by _is_chat_model
    openai_kind = _openai_kind(obj)
    if openai_kind == "async":
        if model is None:
            raise ConfigError(f"{role}: an openai.AsyncOpenAI client needs a model name: "
                              "as_llm(client, model='...')")
        from fleetcall.llm.openai import OpenAILLM

        return OpenAILLM(obj, model)  # type: ignore[arg-type]  # checked by _openai_kind
    if openai_kind == "sync":
        raise ConfigError(f"{role}: openai.OpenAI is the synchronous client; pass an "
                          "openai.AsyncOpenAI client: as_llm(openai.AsyncOpenAI(...), model='...')")
    if _is_runnable(obj):
        raise ConfigError(f"{role} must be {ACCEPTED}; got {_kind(obj)}, a LangChain Runnable that is "
                          "not a chat model: pass the BaseChatModel itself (fleetcall binds tools and "
                          "structured output per call)")
    problem = protocol_problem(obj)
    if problem is not None:
        raise ConfigError(f"{role} must be {ACCEPTED}; got {_kind(obj)}: {problem}")
    _no_model(model, obj, role)
    return obj  # type: ignore[return-value]  # protocol_problem checked the shape


def protocol_problem(obj: object) -> str | None:
    """Why ``obj`` does not implement the LLM protocol, or None if it does.

    ``stream`` must be an async generator function, or a plain callable annotated to return an
    async iterator: those are the shapes whose result can be iterated with ``async for``
    without calling them (which would start a request).
    """
    stream = getattr(obj, "stream", None)
    if stream is None:
        return "it has no stream method"
    if not callable(stream):
        return "its stream attribute is not callable"
    fn = inspect.unwrap(stream)
    if inspect.isasyncgenfunction(fn):
        return None
    if inspect.iscoroutinefunction(fn):
        return ("its stream is an async function that returns instead of yielding; the protocol's "
                "stream(request) is an async iterator of Chunks (async def with yield)")
    if inspect.isgeneratorfunction(fn):
        return ("its stream is a synchronous generator; the protocol's stream(request) is an async "
                "iterator of Chunks")
    returns = _return_hint(fn)
    if returns is None:
        return ("its stream is a plain function without a return annotation, so nothing says it "
                "returns an async iterator: make it an async generator (async def with yield) or "
                "annotate it -> AsyncIterator[Chunk]")
    if typing.get_origin(returns) in _ASYNC_ITERATORS or returns in _ASYNC_ITERATORS:
        return None
    if isinstance(returns, str) and returns.split("[")[0].rsplit(".", 1)[-1] in _ASYNC_ITERATOR_NAMES:
        return None   # an annotation left unresolved (a forward reference)
    return f"its stream returns {returns!r}, not an async iterator of Chunks"


def require_tool_calls(llm: LLM, role: str) -> None:
    """Raise ConfigError if ``llm`` is known to be unable to make tool calls (a LangChain model
    without ``bind_tools``); the ``tool_call`` plan format needs them."""
    if getattr(llm, "supports_tool_calls", True) is False:
        raise ConfigError(f"plan_format='tool_call' needs a model that makes tool calls, and {role} "
                          f"({llm!r}) cannot (no bind_tools); use plan_format='json' or 'text'")


# -- recognising the foreign kinds without importing their libraries ----------------------------
def _is_chat_model(obj: object) -> bool:
    module = sys.modules.get("langchain_core.language_models")
    return module is not None and isinstance(obj, module.BaseChatModel)


def _is_runnable(obj: object) -> bool:
    module = sys.modules.get("langchain_core.runnables")
    return module is not None and isinstance(obj, module.Runnable)


def _openai_kind(obj: object) -> str | None:
    """"async" for an ``openai.AsyncOpenAI`` (or Azure) client, "sync" for a sync one, else None."""
    module = sys.modules.get("openai")
    if module is None:
        return None
    if isinstance(obj, module.AsyncOpenAI):
        return "async"
    if isinstance(obj, module.OpenAI):
        return "sync"
    return None


def _no_model(model: str | None, obj: object, role: str) -> None:
    if model is not None:
        raise ConfigError(f"{role}: model= names the model of an openai.AsyncOpenAI client; "
                          f"{_kind(obj)} has its own")


def _return_hint(fn: Any) -> Any:
    """The resolved return annotation of ``fn`` (or of its ``__call__``), None if there is none."""
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", fn)  # noqa: B004 - the method itself, to read its hints
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: read the raw annotation
        hints = dict(getattr(target, "__annotations__", {}) or {})
    return hints.get("return")


def _kind(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"
