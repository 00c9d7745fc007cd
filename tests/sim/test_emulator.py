"""The emulated OpenAI-compatible endpoint: in-process transport, ASGI app and CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetcall.llm.base import Message, ToolCall, count_tokens
from fleetcall.router import prefix
from fleetcall.sim import filler
from fleetcall.cli.emulate import main as emulate_main
from fleetcall.sim.emulator import EmulatedEndpoint, Faults
from fleetcall.sim.fronts import EmulatorTransport, create_app
from fleetcall.sim.responders import LengthsResponder, Reply, ScriptedResponder
from fleetcall.gpumodel.models import get_model
from fleetcall.vclock import run_virtual

PROMPT = filler.filler_text(1200, seed=3)
CHAT = "/v1/chat/completions"


def body(content: str = PROMPT, **extra: Any) -> dict[str, Any]:
    return {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": content}], **extra}


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample of Prometheus ``text``, read with prometheus_client's parser (None if absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def endpoint(**kwargs: Any) -> EmulatedEndpoint:
    return EmulatedEndpoint("A100", "llama-3.1-8b", **kwargs)


def run(ep: EmulatedEndpoint, test: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Run ``test`` with a client of ``ep`` on the virtual clock."""
    async def main() -> Any:
        async with httpx.AsyncClient(transport=EmulatorTransport(ep),
                                     base_url="http://a100.emulated") as client:
            return await test(client)

    return run_virtual(main())


def now() -> float:
    return asyncio.get_running_loop().time()


async def stream_chunks(client: httpx.AsyncClient, payload: dict[str, Any]) -> list[tuple[float, str]]:
    """(seconds since the request, data) of every SSE event."""
    start, out = now(), []
    async with client.stream("POST", CHAT, json={**payload, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line:
                assert line.startswith("data: ")
                out.append((now() - start, line[6:]))
    return out


def text_of(chunks: list[tuple[float, str]]) -> str:
    return "".join(json.loads(d)["choices"][0]["delta"].get("content", "")
                   for _, d in chunks if d != "[DONE]" and json.loads(d)["choices"])


# ---- completions ----------------------------------------------------------------------------


def test_a_plain_completion_takes_the_predicted_time_and_reports_usage() -> None:
    ep = endpoint(responder=LengthsResponder())

    async def test(client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
        response = await client.post(CHAT, json=body(max_tokens=80))
        return response, now()

    response, elapsed = run(ep, test)
    data = response.json()
    prompt = count_tokens(prefix.prompt_text([Message("user", PROMPT)]))
    assert data["object"] == "chat.completion" and data["model"] == "llama-3.1-8b"
    assert data["usage"] == {"prompt_tokens": prompt, "completion_tokens": 80,
                             "total_tokens": prompt + 80,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    choice = data["choices"][0]
    assert choice["finish_reason"] == "length" and count_tokens(choice["message"]["content"]) == 80
    assert elapsed == pytest.approx(ep.deployment.single_request_latency(prompt, 80).total_s)


def test_streaming_shows_the_emulated_ttft_and_openai_chunks() -> None:
    ep = endpoint(responder=ScriptedResponder(["The answer is forty-two, as computed. " * 10]))
    chunks = run(ep, lambda client: stream_chunks(client, body()))
    prompt = count_tokens(PROMPT)
    output = count_tokens("The answer is forty-two, as computed. " * 10)
    expected = ep.deployment.single_request_latency(prompt, output)
    first_content = next(t for t, d in chunks if d != "[DONE]"
                         and json.loads(d)["choices"] and json.loads(d)["choices"][0]["delta"].get("content"))
    assert first_content == pytest.approx(expected.ttft_s, rel=0.01)
    assert chunks[-1] == (pytest.approx(expected.total_s, rel=0.01), "[DONE]")
    first = json.loads(chunks[0][1])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(chunks) > 5  # text arrives in pieces as tokens come out
    assert text_of(chunks) == "The answer is forty-two, as computed. " * 10
    usage = json.loads(chunks[-2][1])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == output
    assert json.loads(chunks[-3][1])["choices"][0]["finish_reason"] == "stop"


def test_repeated_prompts_hit_the_prefix_cache() -> None:
    ep = endpoint()

    async def test(client: httpx.AsyncClient) -> list[tuple[float, dict]]:
        out = []
        for _ in range(2):
            chunks = await stream_chunks(client, body(max_tokens=5))
            out.append((chunks[1][0], json.loads(chunks[-2][1])["usage"]))
        return out

    (cold_ttft, cold), (warm_ttft, warm) = run(ep, test)
    assert cold["prompt_tokens_details"]["cached_tokens"] == 0
    assert warm["prompt_tokens_details"]["cached_tokens"] == (1200 - 1) // 16 * 16
    assert warm_ttft < 0.5 * cold_ttft
    assert metric(ep.metrics_text(), "vllm:prefix_cache_hits_total", model_name="llama-3.1-8b") == 1184


@pytest.mark.parametrize("extra, tokens, reason", [
    ({"max_tokens": 3}, 3, "length"),
    ({"max_completion_tokens": 4, "max_tokens": 100}, 4, "length"),
    ({"min_tokens": 40, "max_tokens": 100}, 40, "stop"),
    ({"ignore_eos": True, "max_tokens": 64}, 64, "length"),
    ({}, 11, "stop"),  # count_tokens: 44 characters
])
def test_token_limits(extra: dict[str, Any], tokens: int, reason: str) -> None:
    ep = endpoint(responder=ScriptedResponder(lambda _: "one two three four five six seven eight nine"))
    data = run(ep, lambda client: client.post(CHAT, json=body("hi", **extra))).json()
    assert data["usage"]["completion_tokens"] == tokens
    assert data["choices"][0]["finish_reason"] == reason
    assert count_tokens(data["choices"][0]["message"]["content"]) == pytest.approx(tokens, abs=1)


def test_the_responder_sees_the_request_and_can_call_tools() -> None:
    seen: list[dict[str, Any]] = []

    def respond(request: dict[str, Any]) -> Reply:
        seen.append(request)
        return Reply(tool_calls=[ToolCall("call_a", "search", '{"q": "x"}'),
                                 {"function": {"name": "add", "arguments": "{}"}}])

    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    ep = endpoint(responder=ScriptedResponder(respond))

    async def test(client: httpx.AsyncClient) -> tuple[dict, list]:
        plain = (await client.post(CHAT, json=body(tools=tools, tool_choice="auto",
                                                   response_format=fmt))).json()
        return plain, await stream_chunks(client, body(tools=tools))

    plain, chunks = run(ep, test)
    assert seen[0]["tools"] == tools and seen[0]["response_format"] == fmt
    assert seen[0]["tool_choice"] == "auto"
    message = plain["choices"][0]["message"]
    assert plain["choices"][0]["finish_reason"] == "tool_calls" and message["content"] is None
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["search", "add"]
    assert message["tool_calls"][0]["id"] == "call_a" and message["tool_calls"][1]["id"]
    deltas = [json.loads(d)["choices"][0]["delta"] for _, d in chunks[:-2]]
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d][0]
    assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "search"), (1, "add")]


def test_the_default_responder_is_short_and_deterministic() -> None:
    async def test(client: httpx.AsyncClient) -> list[dict]:
        return [(await client.post(CHAT, json=body("what is up", **extra))).json()
                for extra in ({}, {}, {"tools": [{"type": "function", "function": {"name": "f"}}],
                                       "tool_choice": "required"})]

    a, b, tool = run(endpoint(), test)
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert "what is up" in a["choices"][0]["message"]["content"]
    assert tool["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"


def test_scripted_responder_runs_out_with_a_server_error() -> None:
    async def test(client: httpx.AsyncClient) -> list[int]:
        return [(await client.post(CHAT, json=body("x"))).status_code for _ in range(2)]

    assert run(endpoint(responder=ScriptedResponder(["only one"])), test) == [200, 500]


# ---- other routes and errors ------------------------------------------------------------------


def test_models_health_and_metrics() -> None:
    ep = endpoint(faults=Faults(error_rate=1.0))

    async def test(client: httpx.AsyncClient) -> tuple[httpx.Response, ...]:
        await client.post(CHAT, json=body("x"))
        return (await client.get("/v1/models"), await client.get("/health"),
                await client.get("/metrics"))

    models, health, metrics = run(ep, test)
    assert models.json()["data"][0]["id"] == "llama-3.1-8b"
    assert health.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
                 "vllm:prefix_cache_hits_total", "vllm:request_success_total",
                 "vllm:generation_tokens_total", "vllm:prefix_cache_queries_total"):
        assert metric(text, name, model_name="llama-3.1-8b") is not None, name
    assert metric(text, "fleetcall_emulator_faults_injected_total", model_name="llama-3.1-8b", kind="error") == 1
    assert metric(text, "fleetcall_emulator_http_requests_total", model_name="llama-3.1-8b", code="500") == 1


def test_metrics_escape_label_values() -> None:
    """A model name from a pool file may hold any character: a quote, a backslash or a newline
    must not break the exposition (the hand-written text did not escape them)."""
    weird = 'we"ird\\model\nv2'
    shape = dataclasses.replace(get_model("llama-3.2-1b"), name=weird, aliases=())
    ep = EmulatedEndpoint("A100", shape)
    text = ep.metrics_text()
    families = list(text_string_to_metric_families(text))   # parses: nothing broken
    assert {f.name for f in families} >= {"vllm:num_requests_running", "vllm:request_success"}
    assert metric(text, "vllm:num_requests_running", model_name=weird) == 0
    assert metric(text, "vllm:kv_cache_usage_perc", model_name=weird) == 0
    for family in families:
        for s in family.samples:
            assert s.labels["model_name"] == weird


@pytest.mark.parametrize("payload, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"messages": []}).encode(), 400, "messages"),
    (json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode(), 400, "messages.0.role"),
    (json.dumps(body(max_tokens=0)).encode(), 400, "max_tokens"),
    (json.dumps(body(min_tokens=50, max_tokens=10)).encode(), 400, "min_tokens"),
    (json.dumps(body(stream="maybe")).encode(), 400, "stream"),
    (json.dumps({**body(), "model": "gpt-9"}).encode(), 404, "gpt-9"),
    (json.dumps(body(filler.filler_text(460_000))).encode(), 400, "KV cache"),
], ids=["json", "not-object", "no-messages", "role", "max-tokens", "min-tokens", "stream",
        "model", "too-long"])
def test_bad_requests_get_openai_style_errors(payload: bytes, status: int, words: str) -> None:
    response = run(endpoint(), lambda client: client.post(CHAT, content=payload))
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"] and error["code"] == status


def test_unknown_routes_and_methods() -> None:
    async def test(client: httpx.AsyncClient) -> list[int]:
        return [(await client.get("/v2/nothing")).status_code,
                (await client.get(CHAT)).status_code]

    assert run(endpoint(), test) == [404, 405]


def test_model_aliases_and_the_endpoint_name_are_accepted() -> None:
    async def test(client: httpx.AsyncClient) -> list[int]:
        return [(await client.post(CHAT, json={**body("x"), "model": m})).status_code
                for m in ("meta-llama/Llama-3.1-8B-Instruct", "gpu-7", None)]

    assert run(endpoint(name="gpu-7"), test) == [200, 200, 200]


# ---- faults ---------------------------------------------------------------------------------


def test_injected_errors_and_rate_limits() -> None:
    async def test(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(CHAT, json=body("x"))

    error = run(endpoint(faults=Faults(error_rate=1.0, error_status=503)), test)
    assert error.status_code == 503 and error.json()["error"]["code"] == 503
    limited = run(endpoint(faults=Faults(rate_limit_rate=1.0, retry_after_s=2)), test)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"


def test_fault_draws_are_seeded() -> None:
    async def test(client: httpx.AsyncClient) -> list[int]:
        return [(await client.post(CHAT, json=body("x"))).status_code for _ in range(30)]

    def statuses(seed: int) -> list[int]:
        return run(endpoint(faults=Faults(error_rate=0.5), seed=seed), test)

    first = statuses(1)
    assert first == statuses(1) and first != statuses(2)
    assert 5 < first.count(500) < 25 and first.count(200) == 30 - first.count(500)


def test_latency_spikes_delay_the_answer() -> None:
    async def test(client: httpx.AsyncClient) -> float:
        await client.post(CHAT, json=body("x"))
        return now()

    calm = run(endpoint(), test)
    assert run(endpoint(faults=Faults(spike_rate=1.0, spike_s=3.0)), test) == pytest.approx(calm + 3)


def test_a_hang_lasts_until_the_client_gives_up() -> None:
    ep = endpoint(faults=Faults(hang_rate=1.0))

    async def test(client: httpx.AsyncClient) -> float:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(CHAT, json=body("x"), timeout=7.0)
        return now()

    assert run(ep, test) == pytest.approx(7.0)
    assert not ep._hung and ep.engine.stats().arriving == 0


def test_dropped_connections_cut_after_the_first_token() -> None:
    ep = endpoint(faults=Faults(drop_rate=1.0), responder=LengthsResponder())

    async def test(client: httpx.AsyncClient) -> list[str]:
        got: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", CHAT, json=body(stream=True, max_tokens=50)) as r:
                async for line in r.aiter_lines():
                    got.append(line)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(CHAT, json=body(max_tokens=50))
        await asyncio.sleep(0.5)
        assert ep.engine.stats().running == 0
        return got

    got = [line for line in run(ep, test) if line]
    assert got and "[DONE]" not in got[-1]


def test_a_crash_breaks_every_connection() -> None:
    ep = endpoint(faults=Faults(crash_after=2), responder=LengthsResponder())

    async def test(client: httpx.AsyncClient) -> None:
        assert (await client.post(CHAT, json=body("x", max_tokens=5))).status_code == 200

        async def long_stream() -> None:
            async with client.stream("POST", CHAT, json=body(stream=True, max_tokens=500)) as r:
                async for _ in r.aiter_lines():
                    pass

        in_flight = asyncio.create_task(long_stream())
        await asyncio.sleep(1.0)
        with pytest.raises(httpx.ConnectError):
            await client.post(CHAT, json=body("x"))
        with pytest.raises(httpx.RemoteProtocolError):
            await in_flight
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")

    run(ep, test)
    assert ep.crashed


def test_closing_a_stream_early_frees_the_engine() -> None:
    ep = endpoint(responder=LengthsResponder())

    async def test(client: httpx.AsyncClient) -> int:
        async with client.stream("POST", CHAT, json=body(stream=True, max_tokens=2000)) as r:
            async for line in r.aiter_lines():
                if line:
                    break
        await asyncio.sleep(0.2)  # the engine drops it at its next iteration boundary
        return ep.engine.stats().running

    assert run(ep, test) == 0
    assert ep.engine.stats().kv_used_tokens == 0 and ep.engine.stats().requests_done == 0


def test_clients_come_and_go_and_a_closed_endpoint_refuses_connections() -> None:
    ep = endpoint()

    async def main() -> None:
        for _ in range(2):
            async with httpx.AsyncClient(transport=EmulatorTransport(ep),
                                         base_url="http://a100.emulated") as client:
                assert (await client.post(CHAT, json=body("x"))).status_code == 200
        async with ep:
            pass
        async with httpx.AsyncClient(transport=EmulatorTransport(ep),
                                     base_url="http://a100.emulated") as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(CHAT, json=body("x"))

    run_virtual(main())


# ---- the ASGI front ---------------------------------------------------------------------------


def test_the_starlette_app_serves_the_same_handler() -> None:
    ep = endpoint(responder=ScriptedResponder(lambda _: "hello from the app"))

    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(ep))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return (await client.post(CHAT, json=body("x")),
                    await client.post(CHAT, json=body("x", stream=True)),
                    await client.post(CHAT, content=b"nope"))

    plain, streamed, bad = run_virtual(main())
    assert plain.json()["choices"][0]["message"]["content"] == "hello from the app"
    events = [line[6:] for line in streamed.text.splitlines() if line]
    assert events[-1] == "[DONE]"
    assert text_of([(0.0, e) for e in events]) == "hello from the app"
    assert bad.status_code == 400


# ---- the CLI ----------------------------------------------------------------------------------


def test_cli_rejects_unknown_names_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert emulate_main(["--gpu", "V100", "--model", "llama-3.1-8b"]) == 2
    assert "unknown GPU 'V100'" in capsys.readouterr().err
    assert emulate_main(["--gpu", "A100", "--model", "llama-9"]) == 2
    assert emulate_main(["--gpu", "A100", "--model", "llama-3.1-70b", "--tp", "1"]) == 2
    assert emulate_main(["--gpu", "A100", "--model", "llama-3.1-8b", "--error-rate", "2"]) == 2


def test_cli_serves_over_real_http_and_stops_on_sigterm() -> None:
    deadline = time.monotonic() + 20
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetcall.cli", "emulate", "--gpu", "A100", "--model",
         "llama-3.2-1b", "--host", "127.0.0.1", "--port", "0", "--responder", "lengths"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "no start line within 15 s"
        line = proc.stdout.readline()
        assert "tp=1" in line and "KV cache" in line
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line
        with httpx.Client(base_url=url.group(0), timeout=5) as client:
            assert client.get("/health").status_code == 200
            with client.stream("POST", CHAT, json={**body("hello"), "model": "llama-3.2-1b",
                                                   "stream": True, "max_tokens": 10}) as r:
                lines = [x for x in r.iter_lines() if x]
            assert lines[-1] == "data: [DONE]" and len(lines) >= 4
            with pytest.raises(httpx.ReadTimeout):  # a long answer, abandoned
                client.post(CHAT, json={**body("x"), "model": "llama-3.2-1b",
                                        "max_tokens": 4000}, timeout=0.5)
            def running() -> float | None:
                return metric(client.get("/metrics").text, "vllm:num_requests_running",
                              model_name="llama-3.2-1b")
            for _ in range(50):  # the server notices the disconnect and aborts the request
                if running() == 0:
                    break
                time.sleep(0.05)
            assert running() == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- speed --------------------------------------------------------------------------------------


def _served_at(speed: float, spike_s: float = 0.0) -> tuple[list[float], str]:
    """Loop seconds to the first and last SSE event and to a whole answer (two concurrent
    requests, one a second later), and /metrics after them, at ``speed``."""
    ep = endpoint(responder=LengthsResponder(), speed=speed,
                  faults=Faults(spike_rate=1.0 if spike_s else 0.0, spike_s=spike_s))

    async def test(client: httpx.AsyncClient) -> tuple[list[float], str]:
        async def whole() -> float:
            await asyncio.sleep(1.0 / speed)
            start = now()
            await client.post(CHAT, json=body("a second prompt " * 40, max_tokens=30))
            return now() - start

        chunks, whole_s = await asyncio.gather(stream_chunks(client, body(max_tokens=120)), whole())
        return [chunks[0][0], chunks[-1][0], whole_s], (await client.get("/metrics")).text

    return run(ep, test)


@pytest.mark.parametrize("speed", [4.0, 0.5, 250.0])
def test_at_speed_k_the_endpoint_answers_k_times_sooner_and_reports_real_gpu_figures(speed: float) -> None:
    """``fleetcall emulate --speed K``: the same requests take 1/K of the loop time; /metrics
    (TTFT, time per output token, latency, busy seconds) reads as at speed 1."""
    slow_times, slow = _served_at(1.0)
    fast_times, fast = _served_at(speed)
    assert fast_times == pytest.approx([t / speed for t in slow_times], rel=1e-9)
    model = {"model_name": "llama-3.1-8b"}
    for name in ("vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count",
                 "vllm:e2e_request_latency_seconds_sum", "vllm:time_per_output_token_seconds_sum",
                 "fleetcall_emulator_busy_seconds_total"):
        assert metric(fast, name, **model) == pytest.approx(metric(slow, name, **model), rel=1e-9), name
    assert metric(slow, "vllm:time_to_first_token_seconds_count", **model) == 2
    assert metric(slow, "vllm:e2e_request_latency_seconds_sum", **model) == pytest.approx(
        slow_times[1] + slow_times[2], rel=1e-6)
    assert metric(slow, "vllm:time_to_first_token_seconds_bucket", le="+Inf", **model) == 2
    assert (metric(slow, "fleetcall_emulator_speed", **model),
            metric(fast, "fleetcall_emulator_speed", **model)) == (1.0, speed)


def test_at_speed_k_a_latency_spike_is_k_times_shorter() -> None:
    calm, _ = _served_at(4.0)
    spiked, _ = _served_at(4.0, spike_s=2.0)
    assert spiked[2] == pytest.approx(calm[2] + 0.5, rel=1e-6)


def test_reset_prefix_cache_makes_the_next_request_cold() -> None:
    async def test(client: httpx.AsyncClient) -> tuple[int, dict, int]:
        await client.post(CHAT, json=body(max_tokens=2))
        warm = (await client.post(CHAT, json=body(max_tokens=2))).json()
        reset = await client.post("/reset_prefix_cache")
        cold = (await client.post(CHAT, json=body(max_tokens=2))).json()
        return (warm["usage"]["prompt_tokens_details"]["cached_tokens"], reset.json(),
                cold["usage"]["prompt_tokens_details"]["cached_tokens"])

    warm, reset, cold = run(endpoint(), test)
    assert warm > 1000 and reset["dropped_tokens"] >= warm and cold == 0


def test_cli_rejects_a_speed_that_is_not_positive(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-2", "nan"):
        assert emulate_main(["--gpu", "A100", "--model", "llama-3.1-8b", "--speed", bad]) == 2
        assert "speed must be a finite number > 0" in capsys.readouterr().err


def test_get_load_reports_running_waiting_and_tokens_as_sglang_does() -> None:
    """sglang-router's power_of_two polls SGLang's /get_load; without it every worker's load
    reads -1 and the policy picks at random."""
    async def test(client: httpx.AsyncClient) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
        idle = (await client.get("/get_load")).json()
        calls = [asyncio.create_task(client.post(CHAT, json=body(max_tokens=200))) for _ in range(3)]
        await asyncio.sleep(0.5)
        busy = (await client.get("/get_load")).json()
        await asyncio.gather(*calls)
        return idle, busy

    idle, busy = run(endpoint(max_batch=2), test)
    assert idle == [{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}]
    assert busy[0]["num_reqs"] == 2 and busy[0]["num_waiting_reqs"] == 1
    assert busy[0]["num_tokens"] > 3 * 1000
