"""An ``openai.AsyncOpenAI`` client and a model name behind the fleetcall
:class:`~fleetcall.llm.LLM` protocol: one server (OpenAI, or any OpenAI-compatible one such as
vLLM, SGLang or llama.cpp) without a pool around it.

Every call is a streamed chat completion with ``stream_options={"include_usage": True}``; the
request body is the one the pool's endpoint client sends (:func:`fleetcall.router.client.chat_body`:
messages, temperature, ``max_tokens``, stop, ``response_format``, tools, ``tool_choice``), and
``LLMRequest.extra_body`` goes as the client's ``extra_body``. The stream is folded by the same
code as the endpoint client's, so the last chunk carries usage, streamed tool calls and the same
``info`` (``ttft_s``, ``tpot_s``, ``total_s``, token counts, ``finish_reason``,
``usage_reported``), measured on the loop's clock. The client's own settings (timeout,
``max_retries``, headers) apply as the user set them. Failures (the client's errors, and
whatever its stream raises, such as a ``json.JSONDecodeError`` for a data line that is not JSON)
are raised as :class:`~fleetcall.errors.LLMError` naming the model and the server (its URL
without user info or query: :func:`fleetcall.logs.shown_url`).

>>> import openai
>>> llm = OpenAILLM(openai.AsyncOpenAI(api_key="k", base_url="http://127.0.0.1:8000/v1"), "llama")
>>> llm.name
'llama'
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import openai

from fleetcall.errors import ConfigError, LLMError
from fleetcall.llm.base import Chunk, LLMRequest
from fleetcall.logs import shown_url
# The pool's wire format: one request body and one stream folder for both clients.
from fleetcall.router.client import _Answer, chat_body

__all__ = ["OpenAILLM"]


class OpenAILLM:
    """Chat completions from one ``openai.AsyncOpenAI`` client (see the module doc).

    Args:
        client: the client, used as it is; its owner closes it.
        model: the model name sent with every request.
        name: what ``info["endpoint"]`` and errors call it (default: ``model``).

    Raises:
        ConfigError: ``client`` is not an ``openai.AsyncOpenAI`` (the sync ``OpenAI`` client
            included), or ``model`` is not a non-empty string.
    """

    def __init__(self, client: openai.AsyncOpenAI, model: str, *, name: str | None = None) -> None:
        if not isinstance(client, openai.AsyncOpenAI):
            raise ConfigError(f"OpenAILLM needs an openai.AsyncOpenAI client, got {type(client).__name__}")
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"OpenAILLM needs a model name (a non-empty string), got {model!r}")
        self.client = client
        self.model = model
        self.name = name or model

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        """Stream one chat completion: text chunks, then a last chunk with usage, tool calls, info."""
        loop = asyncio.get_running_loop()
        answer = _Answer(started=loop.time())
        body = chat_body(dataclasses.replace(request, extra_body=None), self.model, stream=True)
        try:
            response = await self.client.chat.completions.create(**body, extra_body=request.extra_body)
            async with response:   # closes the HTTP response however the loop ends
                async for event in response:
                    # warnings=False: a chunk off the schema is folded as well as it can be,
                    # without a pydantic warning per event
                    text, pieces = answer.apply_delta(event.model_dump(warnings=False), loop.time())
                    if text or pieces:
                        yield Chunk(text=text, tool_deltas=pieces)
        except Exception as exc:   # the client's errors, and what its stream raises unwrapped
            # (a data line that is not JSON: json.JSONDecodeError; the connection: httpx errors)
            raise LLMError(f"{self._where()}: {type(exc).__name__}: {exc}") from exc
        if answer.finish_reason is None:
            raise LLMError(f"{self._where()}: the stream ended before the answer was complete")
        usage, info = answer.result(self.name, request, loop.time(), streamed=True)
        yield Chunk(usage=usage, tool_calls=answer.tool_calls(), info=info, finish_reason=answer.finish_reason)

    def _where(self) -> str:   # the server without credentials in its URL (user info, query)
        return f"model {self.model!r} at {shown_url(self.client.base_url)}"

    def __repr__(self) -> str:
        return f"<OpenAILLM {self.model} at {shown_url(self.client.base_url)}>"
