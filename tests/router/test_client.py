"""EndpointClient over httpx.MockTransport: SSE streaming, tool calls, errors, timeouts, routing.

Everything runs on the virtual clock: the fake servers sleep between events in loop time, so the
measured TTFT/TPOT are exact and a hung server costs no wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from fleetcall.errors import ConfigError, EndpointError, VirtualClockError
from fleetcall.llm.base import Chunk, LLMRequest, Message, ToolCall, ToolCallDelta, complete
from fleetcall.router.client import (
    EndpointClient, RoutingTransport, SSEDecoder, emulated_host, make_http_client, parse_retry_after,
)
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.vclock import run_virtual

T = TypeVar("T")
KEY = "sk-test-0123456789abcdef"
REQUEST = LLMRequest((Message("system", "be brief"), Message("user", "hi")), max_tokens=32)
Handler = Callable[[httpx.Request], Any]


def vrun(coro: Coroutine[Any, Any, T]) -> T:
    return run_virtual(coro)


def config(**overrides: Any) -> EndpointConfig:
    fields: dict[str, Any] = {"name": "ep1", "base_url": "http://gpu-box:8000/v1", "model": "llama"}
    return EndpointConfig(**(fields | overrides))


def delta(content: str | None = None, *, tools: list[dict[str, Any]] | None = None,
          finish: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if content is not None:
        d["content"] = content
    if tools is not None:
        d["tool_calls"] = tools
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


def usage_event(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"object": "chat.completion.chunk", "choices": [], "usage": usage}


def sse(*events: dict[str, Any] | str) -> bytes:
    out = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(out).encode()


def sse_response(body: bytes | AsyncIterator[bytes], status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"content-type": "text/event-stream"})


def make_client(handler: Handler, cfg: EndpointConfig | None = None,
                environ: dict[str, str] | None = None) -> EndpointClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return EndpointClient(cfg or config(), http, environ=environ or {})


async def collect(client: EndpointClient, timeout_s: float = 30.0) -> list[Chunk]:
    return [chunk async for chunk in client.stream(REQUEST, timeout_s=timeout_s)]


async def _collect_request(client: EndpointClient, request: LLMRequest) -> list[Chunk]:
    return [chunk async for chunk in client.stream(request, timeout_s=30.0)]


async def paced(parts: list[tuple[float, bytes]]) -> AsyncIterator[bytes]:
    """Body pieces, each after a pause of loop time."""
    for pause, data in parts:
        await asyncio.sleep(pause)
        yield data


# ----------------------------------------------------------------------------- streaming


def test_stream_text_usage_cached_tokens_and_request_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse_response(sse(delta("Hel"), delta("lo"), delta(finish="stop"),
                                usage_event(12, 2, cached=8), "[DONE]"))

    request = LLMRequest((Message("user", "hi"),), max_tokens=5, temperature=0.3, stop=("\n",),
                         response_format={"type": "json_object"},
                         tools=({"type": "function", "function": {"name": "f", "parameters": {}}},),
                         tool_choice="auto", extra_body={"ignore_eos": True, "temperature": 0.9})

    async def main() -> list[Chunk]:
        client = make_client(handler, config(api_key_env="EP_KEY"), environ={"EP_KEY": KEY})
        return [c async for c in client.stream(request, timeout_s=10)]

    chunks = vrun(main())
    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    final = chunks[-1]
    assert final.usage is not None and (final.usage.prompt_tokens, final.usage.completion_tokens) == (12, 2)
    assert final.info is not None
    assert final.info["endpoint"] == "ep1" and final.info["cached_tokens"] == 8
    assert final.info["finish_reason"] == "stop" and final.info["usage_reported"] is True
    (sent,) = seen
    assert sent.url == "http://gpu-box:8000/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(sent.content)
    assert body["model"] == "llama" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert (body["max_tokens"], body["stop"], body["tool_choice"]) == (5, ["\n"], "auto")
    assert body["response_format"] == {"type": "json_object"} and body["tools"][0]["function"]["name"] == "f"
    assert body["ignore_eos"] is True and body["temperature"] == 0.9  # extra_body merged last


def test_stream_measures_ttft_tpot_total_on_loop_clock() -> None:
    events = [(0.5, sse(delta("a"))), (0.1, sse(delta("b"))), (0.1, sse(delta("c"))),
              (0.1, sse(delta(finish="stop"), usage_event(4, 3))), (0.0, sse("[DONE]"))]

    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(paced(events))

    info = vrun(collect(make_client(handler)))[-1].info
    assert info is not None
    assert info["ttft_s"] == pytest.approx(0.5)
    assert info["tpot_s"] == pytest.approx(0.1)      # (0.7 - 0.5) / (3 - 1)
    assert info["total_s"] == pytest.approx(0.8)
    assert "authorization" not in json.dumps(info)


def test_stream_assembles_interleaved_tool_call_deltas() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(sse(
            delta(tools=[{"index": 0, "id": "call_a", "type": "function",
                          "function": {"name": "search", "arguments": ""}}]),
            delta(tools=[{"index": 0, "function": {"arguments": '{"q": '}}]),
            delta(tools=[{"index": 1, "id": "call_b", "function": {"name": "add", "arguments": '{"x"'}}]),
            delta(tools=[{"index": 0, "function": {"arguments": '"cats"}'}}]),
            delta(tools=[{"index": 1, "function": {"arguments": ": 1}"}}]),
            delta(finish="tool_calls"), usage_event(20, 9), "[DONE]"))

    chunks = vrun(collect(make_client(handler)))
    assert {c.text for c in chunks} == {""}  # no text
    assert chunks[-1].tool_calls == (ToolCall("call_a", "search", '{"q": "cats"}'),
                                     ToolCall("call_b", "add", '{"x": 1}'))
    assert chunks[-1].info is not None and chunks[-1].info["ttft_s"] == 0.0
    assert chunks[-1].finish_reason == "tool_calls"
    # the pieces came out as they streamed, numbered by call
    pieces = [d for c in chunks for d in c.tool_deltas]
    assert [(d.index, d.arguments) for d in pieces] == [(0, ""), (0, '{"q": '), (1, '{"x"'), (0, '"cats"}'), (1, ": 1}")]
    assert pieces[0] == ToolCallDelta(0, "call_a", "search", "")


def test_a_new_id_at_the_same_index_starts_a_new_tool_call() -> None:
    """Servers that number every call 0: three ids at index 0 are three calls, not one call with
    the three argument strings run together; an id repeated on each piece continues its call."""
    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(sse(
            delta(tools=[{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"n": 1}'}}]),
            delta(tools=[{"index": 0, "id": "call_b", "function": {"name": "f", "arguments": '{"n": '}}]),
            delta(tools=[{"index": 0, "id": "call_b", "function": {"arguments": "2}"}}]),
            delta(tools=[{"index": 0, "id": "call_c", "function": {"name": "g", "arguments": "{}"}}]),
            delta(tools=[{"id": "call_d", "function": {"name": "h", "arguments": "{"}}]),   # no index
            delta(tools=[{"function": {"arguments": "}"}}]),
            delta(finish="tool_calls"), "[DONE]"))

    chunks = vrun(collect(make_client(handler)))
    assert chunks[-1].tool_calls == (ToolCall("call_a", "f", '{"n": 1}'), ToolCall("call_b", "f", '{"n": 2}'),
                                     ToolCall("call_c", "g", "{}"), ToolCall("call_d", "h", "{}"))
    assert [d.index for c in chunks for d in c.tool_deltas] == [0, 1, 1, 2, 3, 3]


def test_llama_cpp_timings_stand_in_for_missing_usage() -> None:
    """llama.cpp sends ``timings`` (cached + computed prompt tokens, predicted tokens) even when
    not asked for usage: those are the server's counts, not estimates."""
    timings = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
               "timings": {"cache_n": 26, "prompt_n": 7, "predicted_n": 5}}

    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(sse(delta("a"), delta("b"), timings, "[DONE]"))

    final = vrun(collect(make_client(handler)))[-1]
    assert final.usage is not None and (final.usage.prompt_tokens, final.usage.completion_tokens) == (33, 5)
    assert final.usage.estimated_calls == 0 and final.info is not None and final.info["usage_reported"]
    assert final.finish_reason == "length"


def test_a_lone_surrogate_in_a_prompt_does_not_make_the_request_unsendable() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return sse_response(sse(delta("ok", finish="stop"), usage_event(3, 1), "[DONE]"))

    request = LLMRequest((Message("user", "plan text with \ud800 in it"),))
    chunks = vrun(_collect_request(make_client(handler), request))
    assert "".join(c.text for c in chunks) == "ok"
    assert json.loads(seen[0])["messages"][0]["content"] == "plan text with ? in it"


def test_sse_comments_multiline_crlf_and_missing_final_blank_line() -> None:
    first = json.dumps(delta("x"), indent=1).splitlines()  # one event over several data lines
    body = (": keep-alive\r\n\r\nevent: message\r\nid: 7\r\n"
            + "".join(f"data: {line}\r\n" for line in first) + "\r\n"
            + ":ping\n\n" + f"data:{json.dumps(delta('y', finish='stop'))}\n\n"
            + f"data: {json.dumps(usage_event(3, 2))}\n\ndata: [DONE]").encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(body)

    chunks = vrun(collect(make_client(handler)))
    assert "".join(c.text for c in chunks) == "xy"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


def test_sse_decoder_unit() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("data: a") == [] and decoder.feed("data:b") == []
    assert decoder.feed("") == ["a\nb"]
    assert decoder.feed(": comment") == [] and decoder.feed("retry: 5") == [] and decoder.feed("") == []
    assert decoder.feed("data:  two spaces") == [] and decoder.flush() == [" two spaces"]
    assert decoder.flush() == []


def test_missing_usage_is_estimated_and_flagged() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(sse(delta("one"), delta(" two"), delta(finish="stop"), "[DONE]"))

    final = vrun(collect(make_client(handler)))[-1]
    assert final.info is not None and final.info["usage_reported"] is False
    assert final.usage is not None and final.usage.completion_tokens == 2 and final.usage.prompt_tokens > 0
    assert final.info["cached_tokens"] is None


def test_server_that_ignores_stream_true_still_works() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": {"content": "whole"}, "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 5, "completion_tokens": 1}})

    chunks = vrun(collect(make_client(handler)))
    assert [c.text for c in chunks] == ["whole", ""]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 1


def test_client_satisfies_llm_protocol_with_default_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(sse(delta("ok", finish="stop"), "[DONE]"))

    completion = vrun(complete(make_client(handler), REQUEST))
    assert completion.text == "ok" and completion.info is not None and completion.info["endpoint"] == "ep1"


# ----------------------------------------------------------------------------- non-streaming


def test_complete_parses_message_tool_calls_and_usage() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": "c1", "type": "function",
                                "function": {"name": "lookup", "arguments": '{"k": 1}'}}]}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 7,
                      "prompt_tokens_details": {"cached_tokens": 16}}})

    async def main() -> Any:
        return await make_client(handler).complete(REQUEST, timeout_s=5)

    result = vrun(main())
    assert seen[0]["stream"] is False and "stream_options" not in seen[0]
    assert result.text == "" and result.tool_calls == (ToolCall("c1", "lookup", '{"k": 1}'),)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (30, 7)
    assert result.info["cached_tokens"] == 16 and result.info["ttft_s"] is None
    assert result.info["total_s"] == 0.0


def test_complete_rejects_non_json_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>proxy page</html>", headers={"content-type": "text/html"})

    with pytest.raises(EndpointError, match="not a JSON chat completion") as info:
        vrun(make_client(handler).complete(REQUEST, timeout_s=5))
    assert info.value.retryable


# ----------------------------------------------------------------------------- error classification


def _error_for(response: httpx.Response, *, stream: bool = True) -> EndpointError:
    def handler(request: httpx.Request) -> httpx.Response:
        return response

    client = make_client(handler)
    with pytest.raises(EndpointError) as info:
        vrun(collect(client) if stream else client.complete(REQUEST, timeout_s=5))
    return info.value


def test_500_is_retryable_and_names_endpoint() -> None:
    err = _error_for(httpx.Response(500, json={"error": {"message": "engine died"}}))
    assert err.retryable and err.status == 500 and err.endpoint == "ep1"
    assert "ep1" in str(err) and "engine died" in str(err) and "500" in str(err)


def test_429_retry_after_seconds_and_http_date() -> None:
    err = _error_for(httpx.Response(429, headers={"retry-after": "3"}, text="slow down"))
    assert err.retryable and err.retry_after_s == 3.0 and "slow down" in str(err)
    err = _error_for(httpx.Response(503, headers={"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT",
                                                  "date": "Wed, 21 Oct 2015 07:28:00 GMT"}), stream=False)
    assert err.retryable and err.retry_after_s == 10.0


def test_400_is_not_retryable_and_quotes_server_message() -> None:
    err = _error_for(httpx.Response(400, json={"object": "error", "message": "max_tokens is too large",
                                               "code": 400}))
    assert not err.retryable and err.status == 400 and "max_tokens is too large" in str(err)
    assert not _error_for(httpx.Response(404, json={"detail": "Not Found"})).retryable
    assert _error_for(httpx.Response(408, text="")).retryable


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None and parse_retry_after("") is None
    assert parse_retry_after(" 7 ") == 7.0 and parse_retry_after("-4") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None  # no Date: no clock to use
    assert parse_retry_after("soon", date="Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", date="Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_connection_error_is_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(EndpointError, match="ConnectError: connection refused") as info:
        vrun(collect(make_client(handler)))
    assert info.value.retryable and info.value.status is None and not info.value.first_token_seen


async def _broken_after(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise httpx.ReadError("connection reset by peer")


def test_stream_broken_before_first_token_is_retryable() -> None:
    # Nothing was yielded: a retry is still invisible to the caller.
    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(_broken_after([b": hello\n\n", sse(delta(""))]))

    with pytest.raises(EndpointError, match="ReadError") as info:
        vrun(collect(make_client(handler)))
    assert info.value.retryable and not info.value.first_token_seen


def test_stream_broken_after_a_tool_call_piece_is_not_retryable() -> None:
    # Tool-call pieces go out as they stream (a JSON plan starts running from them): a retry
    # would send them twice.
    partial = sse(delta(tools=[{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{"}}]))

    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(_broken_after([b": hello\n\n", partial]))

    with pytest.raises(EndpointError, match="ReadError") as info:
        vrun(collect(make_client(handler)))
    assert not info.value.retryable and info.value.first_token_seen


def test_stream_broken_after_tokens_is_not_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(_broken_after([sse(delta("partial answer"))]))

    got: list[str] = []

    async def main() -> None:
        async for chunk in make_client(handler).stream(REQUEST, timeout_s=5):
            got.append(chunk.text)

    with pytest.raises(EndpointError, match="after output was yielded") as info:
        vrun(main())
    assert got == ["partial answer"]
    assert not info.value.retryable and info.value.first_token_seen


def test_stream_ending_without_done_or_finish_reason_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(sse(delta("cut")))

    with pytest.raises(EndpointError, match="ended before the answer was complete") as info:
        vrun(collect(make_client(handler)))
    assert info.value.first_token_seen and not info.value.retryable


def test_in_band_error_event_and_malformed_event() -> None:
    def error_event(request: httpx.Request) -> httpx.Response:
        return sse_response(sse({"error": {"message": "out of KV cache", "code": 503}}))

    with pytest.raises(EndpointError, match="out of KV cache") as info:
        vrun(collect(make_client(error_event)))
    assert info.value.retryable and info.value.status == 503

    def garbage(request: httpx.Request) -> httpx.Response:
        return sse_response(sse(delta("a")) + b"data: {not json\n\n")

    with pytest.raises(EndpointError, match="malformed stream event") as info:
        vrun(collect(make_client(garbage)))
    assert not info.value.retryable  # "a" was already yielded


# ----------------------------------------------------------------------------- timeouts


def test_timeout_of_a_server_that_never_answers() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()  # hangs forever
        raise AssertionError("unreachable")

    async def main() -> tuple[EndpointError, float]:
        client = make_client(handler)
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(EndpointError) as info:
            await collect(client, timeout_s=5.0)
        return info.value, asyncio.get_running_loop().time() - t0

    err, waited = vrun(main())
    assert waited == pytest.approx(5.0)
    assert err.retryable and "timed out after 5 s" in str(err) and not err.first_token_seen


def test_timeout_mid_stream_after_tokens() -> None:
    async def stall() -> AsyncIterator[bytes]:
        yield sse(delta("first"))
        await asyncio.sleep(3600)
        yield sse("[DONE]")

    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(stall())

    async def main() -> tuple[EndpointError, float]:
        with pytest.raises(EndpointError) as info:
            await collect(make_client(handler), timeout_s=2.0)
        return info.value, asyncio.get_running_loop().time()

    err, now = vrun(main())
    assert now == pytest.approx(2.0) and err.first_token_seen and not err.retryable


def test_complete_times_out_on_slow_body() -> None:
    async def slow() -> AsyncIterator[bytes]:
        await asyncio.sleep(100)
        yield b"{}"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=slow(), headers={"content-type": "application/json"})

    with pytest.raises(EndpointError, match="timed out"):
        vrun(make_client(handler).complete(REQUEST, timeout_s=1.0))


# ----------------------------------------------------------------------------- API key hygiene


def test_api_key_never_in_error_text_even_when_server_echoes_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        sent = request.headers["authorization"].removeprefix("Bearer ")
        return httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {sent}"}})

    client = make_client(handler, config(api_key_env="EP_KEY"), environ={"EP_KEY": KEY})
    with pytest.raises(EndpointError) as info:
        vrun(collect(client))
    err = info.value
    assert KEY not in str(err) and KEY not in repr(err) and "[redacted]" in str(err)
    assert not err.retryable and err.status == 401
    assert KEY not in repr(client.config)


def test_missing_key_variable_is_config_error_naming_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request should be sent")

    client = make_client(handler, config(api_key_env="MISSING_KEY_VAR"), environ={})
    with pytest.raises(ConfigError, match="MISSING_KEY_VAR"):
        vrun(collect(client))


# ----------------------------------------------------------------------------- early close


def test_consumer_closing_early_closes_the_response() -> None:
    closed: list[bool] = []

    async def body() -> AsyncIterator[bytes]:
        try:
            yield sse(delta("a"))
            await asyncio.sleep(10)
            yield sse(delta("b"))
        finally:
            closed.append(True)

    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(body())

    async def main() -> str:
        gen = make_client(handler).stream(REQUEST, timeout_s=30)
        async with contextlib.aclosing(gen):
            first = await anext(gen)
        return first.text

    assert vrun(main()) == "a" and closed == [True]


# ----------------------------------------------------------------------------- routing


class _Recorder(httpx.AsyncBaseTransport):
    def __init__(self, label: str) -> None:
        self.label = label
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=self.label)

    async def aclose(self) -> None:
        self.closed = True


def test_routing_transport_routes_by_host_and_closes_all() -> None:
    a, b, default = _Recorder("a"), _Recorder("b"), _Recorder("default")
    built: list[int] = []

    def factory() -> httpx.AsyncBaseTransport:
        built.append(1)
        return default

    async def main() -> list[str]:
        routing = RoutingTransport(default_factory=factory)
        routing.add("Host-A", a)
        routing.add("host-b", b)
        assert routing.hosts() == ["host-a", "host-b"] and built == []  # default built lazily
        async with httpx.AsyncClient(transport=routing) as http:
            texts = [(await http.get(url)).text for url in
                     ("http://host-a/x", "http://HOST-B:9/y", "https://elsewhere/z")]
            assert routing.remove("host-b") is b and not b.closed
            texts.append((await http.get("http://host-b/y")).text)
        return texts

    assert asyncio.run(main()) == ["a", "b", "default", "default"]
    # one real-HTTP transport per origin (elsewhere:443, host-b:80), each closed
    assert built == [1, 1] and a.closed and default.closed and not b.closed


def test_routing_refuses_real_http_under_virtual_clock() -> None:
    async def main() -> None:
        async with httpx.AsyncClient(transport=RoutingTransport()) as http:
            await http.get("http://10.0.0.1:8000/v1/models")

    with pytest.raises(VirtualClockError, match="10.0.0.1"):
        vrun(main())


def test_emulated_endpoint_reached_through_routing() -> None:
    cfg = EndpointConfig(name="sim", base_url="emulated://A100/llama-3.1-8b?tp=4")
    seen: list[httpx.Request] = []

    def emulator(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse_response(sse(delta("hi", finish="stop"), "[DONE]"))

    async def main() -> str:
        routing = RoutingTransport()
        routing.add(emulated_host("sim"), httpx.MockTransport(emulator))
        async with make_http_client(routing, retry=RetryConfig(connect_timeout_s=2)) as http:
            assert http.timeout.connect == 2 and http.timeout.read == 60
            client = EndpointClient(cfg, http)
            return "".join([c.text async for c in client.stream(REQUEST, timeout_s=5)])

    assert vrun(main()) == "hi"
    assert seen[0].url.host == emulated_host("sim")
    assert json.loads(seen[0].content)["model"] == "llama-3.1-8b"


def test_emulated_host_is_a_distinct_valid_hostname() -> None:
    hosts = {emulated_host(n) for n in ("a_b", "a-b", "A B", "a b", "x" * 100, "")}
    assert len(hosts) == 6
    for host in hosts:
        assert all(0 < len(label) <= 63 for label in host.split("."))
        assert httpx.URL(f"http://{host}/v1").host == host


def test_the_pool_client_keeps_cookies_a_server_sets() -> None:
    """make_http_client's cookie jar skips its work on answers without Set-Cookie, and still
    keeps and sends back the cookies a server (a sticky load balancer) does set."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        headers = {"content-type": "text/event-stream"}
        if len(seen) == 1:
            headers["set-cookie"] = "route=gpu-7; Path=/"
        return httpx.Response(200, content=sse(delta("ok", finish="stop"), "[DONE]"), headers=headers)

    async def main() -> None:
        routing = RoutingTransport()
        routing.add("gpu-box", httpx.MockTransport(handler))
        async with make_http_client(routing) as http:
            client = EndpointClient(config(), http, environ={})
            for _ in range(3):
                await complete(client, REQUEST)
            assert http.cookies.get("route") == "gpu-7"
            http.cookies = {"other": "1"}
            await complete(client, REQUEST)

    vrun(main())
    assert seen == [None, "route=gpu-7", "route=gpu-7", "other=1"]


def test_lines_split_across_chunks_stream_the_same_answer() -> None:
    """The client reads a chunk at a time and splits lines itself: events cut anywhere (even
    between a CR and its LF) read the same."""
    body = sse(delta("one"), delta(" two"), delta(finish="stop"), usage_event(3, 2), "[DONE]")
    body = body.replace(b"\n", b"\r\n")

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 7):
            yield body[i:i + 7]

    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(pieces())

    chunks = vrun(collect(make_client(handler)))
    assert "".join(c.text for c in chunks) == "one two"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


@pytest.mark.parametrize("content_type, body, text", [
    # UTF-8 (what SSE is), a character split between two reads, a bad byte replaced
    ("text/event-stream", sse(delta("héllo €"), delta(finish="stop"), "[DONE]")
     .replace(b"\\u00e9", "é".encode()).replace(b"\\u20ac", "€".encode()), "héllo €"),
    ("text/event-stream", sse(delta("a"), "[DONE]").replace(b'"a"', b'"a\xff"'), "a\ufffd"),
    # a declared charset is honoured, as httpx decodes it
    ("text/event-stream; charset=latin-1", sse(delta("caf\u00e9"), "[DONE]").replace(b"\\u00e9", b"\xe9"),
     "caf\u00e9"),
])
def test_streamed_text_is_decoded_across_reads(content_type: str, body: bytes, text: str) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(len(body)):  # one byte a read: multi-byte characters are cut
            yield body[i:i + 1]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=pieces(), headers={"content-type": content_type})

    chunks = vrun(collect(make_client(handler)))
    assert "".join(c.text for c in chunks) == text
