"""The OpenAI-compatible facade, used by the official ``openai`` client (no mocks): in process
through httpx's ASGI transport and over real HTTP under uvicorn on 127.0.0.1.

The openai client runs a thread (``asyncio.to_thread``) once per client, so its tests run on a
real loop, with the demo paced fast (a run takes well under a second) and generous timeouts;
the facade's refusals are also checked with plain httpx on the virtual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette

from fleetcall import Orchestrator, ScriptedLLM
from fleetcall.demos import parallelqa
from fleetcall.service.app import create_app
from fleetcall.vclock import run_virtual

from tests.service.helpers import client, demo_app, serving

openai = pytest.importorskip("openai")   # the `openai` extra; CI installs it

T = TypeVar("T")
ANSWER = parallelqa.expected_answer()
TOKEN = "openai-facade-token"
NAME = "parallelqa"
USER = {"role": "user", "content": parallelqa.QUESTION}


def real(coro: Coroutine[Any, Any, T]) -> T:
    """Run on a real loop, bounded: nothing here should take more than seconds."""
    async def bounded() -> T:
        async with asyncio.timeout(60):
            return await coro
    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def openai_client(app: Starlette, api_key: str = TOKEN) -> AsyncIterator[Any]:
    """The official AsyncOpenAI client talking to ``app`` in process, inside its lifespan."""
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app), timeout=30)
        async with openai.AsyncOpenAI(base_url="http://fleet/v1", api_key=api_key, http_client=http) as c:
            yield c


def started(app: Starlette) -> float | None:
    return app.state.registry.metrics.value("fleetcall_runs_started_total")


def facade_app(**kwargs: Any) -> Starlette:
    return demo_app(token=TOKEN, name=NAME, **kwargs)


# -- answers ---------------------------------------------------------------------------------------
def test_the_openai_client_gets_the_agents_answer_and_usage() -> None:
    async def main() -> None:
        app = facade_app()
        async with openai_client(app) as c:
            messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "an older question"},
                        {"role": "assistant", "content": "an older answer"}, USER]
            reply = await c.chat.completions.create(model=NAME, messages=messages, temperature=0.2,
                                                    max_tokens=5, user="someone")
            assert reply.object == "chat.completion" and reply.model == NAME
            (choice,) = reply.choices
            assert choice.message.role == "assistant" and choice.message.content == ANSWER
            assert choice.finish_reason == "stop"   # max_tokens is ignored: the answer is whole
            run_id = reply.id.removeprefix("chatcmpl-")
            kept = app.state.registry.finished[run_id]
            assert kept.query == parallelqa.QUESTION   # the last user message was the query
            assert reply.usage.prompt_tokens == kept.usage.prompt_tokens > 0
            assert reply.usage.completion_tokens == kept.usage.completion_tokens > 0
            assert reply.usage.total_tokens == kept.usage.prompt_tokens + kept.usage.completion_tokens
            assert reply.model_extra["fleetcall"]["status"] == "answered"
            parts = [{"type": "text", "text": parallelqa.QUESTION}]
            again = await c.chat.completions.create(model=NAME, messages=[{"role": "user", "content": parts}])
            assert again.choices[0].message.content == ANSWER

    real(main())


def test_the_openai_client_streams_the_answer_with_usage() -> None:
    async def main() -> None:
        async with openai_client(facade_app()) as c:
            stream = await c.chat.completions.create(model=NAME, messages=[USER], stream=True,
                                                     stream_options={"include_usage": True})
            chunks = [chunk async for chunk in stream]
        assert all(ch.object == "chat.completion.chunk" and ch.model == NAME for ch in chunks)
        assert len({ch.id for ch in chunks}) == 1
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == ANSWER
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
        assert all(ch.usage is None for ch in chunks[:-1])
        assert not any("fleetcall" in (ch.model_extra or {}) for ch in chunks)   # progress is opt-in

    real(main())


def test_streamed_progress_rides_in_extra_fields_standard_clients_ignore() -> None:
    async def main() -> None:
        async with openai_client(facade_app()) as c:
            stream = await c.chat.completions.create(model=NAME, messages=[USER], stream=True,
                                                     extra_body={"progress": True})
            chunks = [chunk async for chunk in stream]
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == ANSWER
        events = [ch.model_extra["fleetcall"] for ch in chunks if "fleetcall" in (ch.model_extra or {})]
        names = [e["event"] for e in events]
        assert names.count("TaskPlanned") == names.count("TaskStarted") == names.count("TaskFinished") == 9
        assert names[-1] == "AnswerReady" and events[-1]["data"]["answer"] == ANSWER
        assert all(not ch.choices[0].delta.content for ch in chunks if "fleetcall" in (ch.model_extra or {}))

    real(main())


def test_models_lists_the_agent_and_an_unknown_model_is_a_404_in_openais_shape() -> None:
    async def main() -> None:
        app = facade_app()
        async with openai_client(app) as c:
            models = await c.models.list()
            assert [(m.id, m.object, m.owned_by) for m in models.data] == [(NAME, "model", "fleetcall")]
            model = await c.models.retrieve(NAME)     # GET /v1/models/{model}: was a 404
            assert (model.id, model.object, model.owned_by) == (NAME, "model", "fleetcall")
            for other in ("gpt-4o", "org/some-model"):
                with pytest.raises(openai.NotFoundError) as missing:
                    await c.models.retrieve(other)
                assert missing.value.code == "model_not_found" and other in missing.value.message
            with pytest.raises(openai.NotFoundError) as caught:
                await c.chat.completions.create(model="gpt-4o", messages=[USER])
            assert caught.value.code == "model_not_found" and caught.value.param == "model"
            assert set(caught.value.body) == {"message", "type", "param", "code"}
            assert "gpt-4o" in caught.value.message
        async with openai_client(app, api_key="wrong") as c:
            with pytest.raises(openai.AuthenticationError):
                await c.models.list()
            with pytest.raises(openai.AuthenticationError):
                await c.chat.completions.create(model=NAME, messages=[USER])
        assert started(app) == 0

    real(main())


@pytest.mark.parametrize(("messages", "extra", "param"), [
    ([], {}, "messages"),
    ([{"role": "system", "content": "no question"}], {}, "messages"),
    ([{"role": "user", "content": "   "}], {}, "messages"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                                   {"type": "text", "text": "what is this?"}]}], {}, "messages"),
    ([{"role": "robot", "content": "hi"}], {}, "messages.0.role"),
    ([USER], {"n": 2}, "n"),
    ([USER], {"extra_body": {"deadline_s": 1e9}}, "deadline_s"),
    ([USER], {"extra_body": {"mode": "fastest"}}, "mode"),
])
def test_a_bad_chat_request_is_a_422_the_client_raises(messages: list[dict[str, Any]], extra: dict[str, Any],
                                                       param: str) -> None:
    async def main() -> None:
        app = facade_app()
        async with openai_client(app) as c:
            with pytest.raises(openai.UnprocessableEntityError) as caught:
                await c.chat.completions.create(model=NAME, messages=messages, **extra)
        assert caught.value.param == param and caught.value.body["type"] == "invalid_request_error"
        assert started(app) == 0

    real(main())


# -- runs that do not answer ------------------------------------------------------------------------
def failing_app() -> Starlette:
    """An agent whose model never writes a valid plan: every run fails (after its replans)."""
    orchestrator = Orchestrator(tools=[parallelqa.make_search()], llm=ScriptedLLM(lambda request: "no plan here"))
    return create_app(orchestrator, token=TOKEN, name=NAME)


def test_a_failed_or_timed_out_run_is_an_error_the_client_raises_once() -> None:
    async def main() -> None:
        app = failing_app()
        async with openai_client(app) as c:   # the client's default max_retries=2 stands
            with pytest.raises(openai.InternalServerError) as caught:
                await c.chat.completions.create(model=NAME, messages=[USER])
            assert caught.value.status_code == 500 and caught.value.code == "run_failed"
            assert caught.value.body["run_id"] in app.state.registry.finished
            assert caught.value.response.headers["x-should-retry"] == "false"
            assert started(app) == 1   # not retried: the agent ran once
        slow = facade_app(pace=1.0)    # searches take 0.6 s
        async with openai_client(slow) as c:
            with pytest.raises(openai.InternalServerError) as caught:
                await c.chat.completions.create(model=NAME, messages=[USER], extra_body={"deadline_s": 0.2})
            assert caught.value.status_code == 504 and caught.value.code == "run_timed_out"
            assert started(slow) == 1

    real(main())


def test_a_streamed_run_that_does_not_answer_ends_with_an_error_event() -> None:
    async def main() -> None:
        app = failing_app()
        async with openai_client(app) as c:
            stream = await c.chat.completions.create(model=NAME, messages=[USER], stream=True)
            seen = []
            with pytest.raises(openai.APIError) as caught:
                async for chunk in stream:
                    seen.append(chunk)
            assert caught.value.code == "run_failed" and "failed" in caught.value.message
            assert [ch.choices[0].delta.role for ch in seen] == ["assistant"]   # no answer content
            assert started(app) == 1

    real(main())


# -- the facade's refusals, on the virtual clock -----------------------------------------------------
CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(("body", "status", "param"), [
    (b"{not json", 400, None),
    (b'{"model": "parallelqa", "model": "other", "messages": []}', 400, None),
    (b'{"model": "parallelqa", "messages": [{"role": "user", "content": "\\ud800"}]}', 400, None),
    (b"[]", 422, "(body)"),
    (b'{"messages": [{"role": "user", "content": "q"}]}', 422, "model"),
    (b'{"model": "parallelqa", "messages": {"role": "user"}}', 422, "messages"),
    (b'{"model": "parallelqa", "messages": [{"role": "user", "content": 7}]}', 422, "messages.0.content.str"),
    (b'{"model": "parallelqa", "messages": [{"role": "user", "content": "q"}], "stream": "yes"}', 422, "stream"),
    (b'{"model": "parallelqa", "messages": [{"role": "user", "content": "q"}], "deadline_s": '
     + b"9" * 400 + b"}", 422, "deadline_s"),
    (b'{"model": "parallelqa", "messages": [{"role": "user", "content": "q"}], "stream_options": 1}', 422,
     "stream_options"),
])
def test_bad_chat_bodies_are_json_4xx_in_openais_shape(body: bytes, status: int, param: str | None) -> None:
    async def main() -> None:
        app = facade_app()
        async with client(app, token=TOKEN) as c:
            r = await c.post(CHAT, content=body)
            assert r.status_code == status, r.text
            error = r.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"]
            assert error["param"] == param
            assert started(app) == 0

    run_virtual(main())


def test_unknown_chat_fields_are_ignored_and_the_content_type_must_be_json() -> None:
    async def main() -> None:
        async with client(facade_app(), token=TOKEN) as c:
            body = {"model": NAME, "messages": [USER], "temperature": 0.1, "top_p": 0.5, "seed": 3,
                    "tools": [], "frequency_penalty": 0, "metadata": {"k": "v"}, "brand_new_field": [1]}
            r = await c.post(CHAT, json=body)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ANSWER
            r = await c.post(CHAT, content=json.dumps(body), headers={"content-type": "text/plain"})
            assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
            r = await c.get("/v1/models", headers={"authorization": "Bearer nope"})
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"

    run_virtual(main())


# -- over real HTTP ------------------------------------------------------------------------------
def test_the_openai_client_over_http_under_uvicorn() -> None:
    async def ask(c: Any, stream: bool) -> str:
        if not stream:
            return (await c.chat.completions.create(model=NAME, messages=[USER])).choices[0].message.content
        chunks = await c.chat.completions.create(model=NAME, messages=[USER], stream=True)
        return "".join([ch.choices[0].delta.content or "" async for ch in chunks])

    async def main() -> None:
        app = facade_app()
        async with serving(app, TOKEN) as http:
            async with openai.AsyncOpenAI(base_url=f"{str(http.base_url).rstrip('/')}/v1", api_key=TOKEN, timeout=30) as c:
                assert [m.id for m in (await c.models.list()).data] == [NAME]
                answers = await asyncio.gather(*(ask(c, stream=i % 2 == 1) for i in range(8)))
                assert answers == [ANSWER] * 8
                with pytest.raises(openai.NotFoundError):
                    await c.chat.completions.create(model="nope", messages=[USER])
        assert started(app) == 8

    real(main())


def test_a_chat_stream_whose_client_leaves_cancels_its_run() -> None:
    async def main() -> None:
        app = facade_app(pace=100.0)   # searches take 60 s: the run outlives its client
        async with serving(app, TOKEN) as http:
            body = {"model": NAME, "messages": [USER], "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    assert line.startswith("data: ") and '"role":"assistant"' in line
                    break
            handle = app.state.registry.running[r.headers["x-run-id"]]
            result = await app.state.registry.outcome(handle)   # settles once the server sees the close
            assert result.status.value == "cancelled"

    real(main())


def test_a_long_conversation_is_answered_and_only_a_huge_body_is_a_413() -> None:
    # before: the facade had /v1/runs' 64 kB limit, so a chat UI or an agent framework sending a
    # conversation of more than about 16k tokens (the agent reads only its last user message) got
    # a 413 on every later turn
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "x" * 2_000}
               for i in range(150)]

    async def main() -> None:
        app = facade_app()
        async with client(app, token=TOKEN) as c:
            r = await c.post(CHAT, json={"model": NAME, "messages": [*history, USER]})
            assert len(r.request.content) > 300_000
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == ANSWER
            huge = [{"role": "user", "content": "x" * 1_100_000}, USER]
            r = await c.post(CHAT, json={"model": NAME, "messages": huge})
            assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
            r = await c.post("/v1/runs", json={"query": "x" * 70_000})   # the run API's limit stands
            assert r.status_code == 413
        with pytest.raises(ValueError, match="max_chat_body_bytes"):
            facade_app(max_chat_body_bytes=0)

    run_virtual(main())
