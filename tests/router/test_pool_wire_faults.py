"""Misbehaving servers on the wire, through the pool on the virtual clock.

Each bad server is an ``httpx.MockTransport`` routed by host next to a healthy emulated
endpoint, so the pool reads real HTTP responses (status, headers, SSE bodies) with no socket:
Retry-After in forms the client cannot turn into seconds, and rate-limit errors inside a
stream. What a user may count on: a server that says "rate limited" (429, or 503 with a
Retry-After header, whatever its value) is cooled down and never trips the breaker; the calls
go to the healthy endpoint at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from fleetcall.errors import LLMError
from fleetcall.llm.base import complete
from fleetcall.router.client import RoutingTransport, make_http_client, parse_retry_after
from fleetcall.router.config import BreakerConfig, EndpointConfig, RetryConfig
from fleetcall.router.pool import EndpointPool
from fleetcall.sim.emulator import EmulatedEndpoint
from fleetcall.sim.fronts import EmulatorTransport
from tests.router.helpers import MODEL, ask, now, snap, vrun

Handler = Callable[[httpx.Request], httpx.Response]


@contextlib.asynccontextmanager
async def _pool(bad: Handler, **kwargs: Any) -> AsyncIterator[tuple[EndpointPool, list[float]]]:
    """``bad`` (a mock server; the loop times it was asked at) listed first, then ``good``."""
    routing, asked = RoutingTransport(), []

    def counted(request: httpx.Request) -> httpx.Response:
        asked.append(now())
        return bad(request)

    good = EmulatedEndpoint("A100-80G", MODEL, name="good")
    routing.add("bad.test", httpx.MockTransport(counted))
    routing.add("good.test", EmulatorTransport(good))
    kwargs.setdefault("retry", RetryConfig(backoff_s=0.0))
    http = make_http_client(routing, retry=kwargs["retry"])
    configs = [EndpointConfig(name=n, base_url=f"http://{n}.test/v1", model=MODEL,
                              gpu="A100-80G", slots=4) for n in ("bad", "good")]
    pool = EndpointPool(configs, http=http, policy="rr-fcfs",
                        breaker=BreakerConfig(failures=1, cooldown_s=60.0), **kwargs)
    try:
        yield pool, asked
    finally:
        await pool.aclose()
        await http.aclose()
        await good.aclose()


def _refuse(status: int, retry_after: str, *, date: bool) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        headers = {"retry-after": retry_after}
        if date:
            headers["date"] = email.utils.formatdate(usegmt=True)
        return httpx.Response(status, headers=headers, json={"error": {"message": "busy"}})
    return handle


RETRY_AFTERS = {
    "HTTP-date, no Date header": (lambda: email.utils.formatdate(usegmt=True), False),
    "not a number": (lambda: "soon", True),
    "nan": (lambda: "nan", True),
    "inf": (lambda: "inf", True),
}


@pytest.mark.parametrize("status", [503, 429])
@pytest.mark.parametrize("form", list(RETRY_AFTERS))
def test_a_rate_limit_with_a_retry_after_of_no_use_is_still_a_rate_limit(status: int,
                                                                         form: str) -> None:
    """The endpoint cools down for ``rate_limit_s`` (the server's value cannot be read), never
    opens its breaker (failures=1 here), and every call is answered by ``good`` at once.
    Before: a 503 whose Retry-After was an HTTP-date without a Date header, or not a number,
    counted as a server error and opened the breaker; "nan" cooled the endpoint for 0.05 s
    only (20 requests a second), "inf" for ever."""
    value, date = RETRY_AFTERS[form]

    async def main() -> tuple[list[str], Any, list[float], float]:
        async with _pool(_refuse(status, value(), date=date),
                         retry=RetryConfig(backoff_s=0.0, rate_limit_s=2.0)) as (pool, asked):
            placed = []
            for i in range(8):  # one call every 0.5 s for 4 s
                placed.append((await complete(pool, ask(query=f"q{i}"))).info["endpoint"])
                await asyncio.sleep(0.5)
            return placed, snap(pool, "bad"), asked, now()

    placed, bad, asked, end = vrun(main())
    assert placed == ["good"] * 8
    assert bad.breaker == "closed" and bad.failures == 0 and bad.rate_limited == len(asked)
    assert 2 <= len(asked) <= 3, f"cooled {2.0} s each time, asked at {asked}"


def test_parse_retry_after_takes_finite_seconds_and_dates_only() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("120") == 120.0
    for bad in ("nan", "-nan", "inf", "Infinity", "soon", "", None):
        assert parse_retry_after(bad) is None, bad


# ---- an in-band rate limit inside a stream ---------------------------------------------------


def _stream(*events: dict[str, Any]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)
    return handle


def _delta(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


RATE_LIMIT_EVENT = {"error": {"message": "Rate limit reached", "code": 429}}


def test_a_rate_limit_inside_a_stream_after_output_cools_the_endpoint_not_its_breaker() -> None:
    """Text already went out, so the call cannot be retried and fails; but the endpoint said
    "rate limited", so it cools down and its breaker (failures=1) stays closed: the next
    calls go to ``good``, and ``bad`` is asked again after its cooldown.
    Before: each counted as a broken stream, a breaker failure."""

    async def main() -> tuple[list[str], Any]:
        async with _pool(_stream(_delta("partial "), RATE_LIMIT_EVENT),
                         retry=RetryConfig(backoff_s=0.0, rate_limit_s=2.0)) as (pool, _):
            outcomes = []
            for i in range(6):
                try:
                    done = await complete(pool, ask(query=f"q{i}"))
                    outcomes.append(done.info["endpoint"])
                except LLMError as exc:
                    outcomes.append("failed: " + str(exc))
                await asyncio.sleep(0.5)
            return outcomes, snap(pool, "bad")

    outcomes, bad = vrun(main())
    failed = [o for o in outcomes if o.startswith("failed")]
    assert 1 <= len(failed) <= 2 and "Rate limit reached" in failed[0], outcomes
    assert outcomes.count("good") == 6 - len(failed)
    assert bad.breaker == "closed" and bad.failures == 0 and bad.rate_limited == len(failed)


def test_a_rate_limit_event_before_any_output_is_retried_elsewhere() -> None:
    async def main() -> tuple[str, Any]:
        async with _pool(_stream(RATE_LIMIT_EVENT)) as (pool, _):
            done = await complete(pool, ask())
            return done.info["endpoint"], snap(pool, "bad")

    endpoint, bad = vrun(main())
    assert endpoint == "good"
    assert bad.breaker == "closed" and bad.rate_limited == 1 and bad.failures == 0


# ---- numbers a server gets wrong -------------------------------------------------------------

BAD_USAGES = {
    "NaN cached tokens": '{"prompt_tokens": 5, "completion_tokens": 3, '
                         '"prompt_tokens_details": {"cached_tokens": NaN}}',
    "negative counts": '{"prompt_tokens": -5, "completion_tokens": -3, '
                       '"prompt_tokens_details": {"cached_tokens": -1}}',
    "booleans and floats": '{"prompt_tokens": true, "completion_tokens": 2.5, '
                           '"prompt_tokens_details": {"cached_tokens": 1e400}}',
    "llama.cpp timings gone wrong": '{}, "timings": {"prompt_n": -4, "cache_n": NaN, '
                                    '"predicted_n": true}',
}


@pytest.mark.parametrize("usage", list(BAD_USAGES))
def test_usage_numbers_a_server_gets_wrong_are_estimated_not_raised(usage: str) -> None:
    """Python's JSON reader takes NaN and Infinity. Before: a NaN ``cached_tokens`` escaped the
    pool as a bare ValueError ("cannot convert float NaN to integer"); negative counts were
    reported (and learned) as they came."""
    def handle(request: httpx.Request) -> httpx.Response:
        body = ("data: " + json.dumps(_delta("hello there")) + "\n\n"
                'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], '
                f'"usage": {BAD_USAGES[usage]}}}\n\n'
                "data: [DONE]\n\n")
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)

    async def main() -> Any:
        async with _pool(handle) as (pool, _):
            done = await complete(pool, ask())
            return done, len(pool.core), pool.core.output_lengths.expect("planner")

    done, live, expected = vrun(main())
    assert done.text == "hello there" and done.info["endpoint"] == "bad"
    usage = done.usage
    assert usage.prompt_tokens >= 0 and usage.completion_tokens >= 1
    assert isinstance(done.info["cached_tokens"], (int, type(None)))
    assert (done.info["cached_tokens"] or 0) >= 0
    assert live == 0 and expected > 0
