"""fleetcall's log convention (fleetcall/logs.py), and what it must never log: an endpoint's API
key (from ``api_key_env``) or the service's bearer token, whatever a server or a request does."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from fleetcall import Orchestrator, tool
from fleetcall import logs
from fleetcall.logs import MAX_VALUE_CHARS, event, fields, value
from fleetcall.router.client import RoutingTransport, make_http_client
from fleetcall.router.config import BreakerConfig, EndpointConfig, RetryConfig
from fleetcall.router.pool import EndpointPool
from fleetcall.service.app import create_app
from fleetcall.sim.emulator import EmulatedEndpoint, Faults
from fleetcall.sim.fronts import EmulatorTransport
from fleetcall.vclock import run_virtual
from tests.service.helpers import client

KEY = "sk-live-0123456789abcdef"        # the endpoints' API key, in $FLEETCALL_LOG_TEST_KEY
TOKEN = "svc-t0ken-0123456789abcdef"    # the service's bearer token


@pytest.mark.parametrize(("given", "shown"), [
    (None, "none"), (True, "true"), (False, "false"), (3, "3"), (0.5, "0.500"), (float("inf"), "inf"),
    ("answered", "answered"), ("q-1/0", "q-1/0"), ("", '""'), ("two words", '"two words"'),
    ('say "hi"\n', '"say \\"hi\\"\\n"'), ("k=v", '"k=v"'), ("é", '"é"'), ("a\u2028b", '"a\\u2028b"'),
    ("\ud800", '"\\ud800"'),
])
def test_values_are_bare_or_quoted_and_never_break_a_line(given: object, shown: str) -> None:
    assert value(given) == shown


def test_long_values_are_cut_saying_how_long_they_were() -> None:
    shown = value("x" * 1000)
    assert shown == '"' + "x" * MAX_VALUE_CHARS + '...[1000 chars]"'


def test_a_value_whose_str_raises_is_shown_not_raised() -> None:
    class Bad:
        def __str__(self) -> str:
            raise ValueError("no")

    assert value(Bad()) == '"<Bad: str() raised ValueError>"'


def test_an_event_is_one_line_with_structured_attributes(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("fleetcall.test")
    where = fields(query_id="q1", round=0, task_id=3)
    with caplog.at_level(logging.INFO, logger="fleetcall"):
        event(log, logging.INFO, "task.retry", where, tool="t", error="100% broken\nreally")
        event(log, logging.DEBUG, "never.shown", x=1)   # below the level: not even formatted
    (record,) = caplog.records
    assert record.getMessage() == 'task.retry query_id=q1 round=0 task_id=3 tool=t error="100% broken\\nreally"'
    assert (record.event, record.fields, record.where) == ("task.retry", {"tool": "t", "error": "100% broken\nreally"},
                                                           where)
    assert record.funcName == "test_an_event_is_one_line_with_structured_attributes"   # the caller's line


# ---- secrets -------------------------------------------------------------------------------------


def _plan_or_finish(body: dict[str, Any]) -> str:
    if "Replan(" in body["messages"][0]["content"]:   # the joiner's prompt
        return "Thought: done.\nAction: Finish(2)"
    return '1. fails("x")\n2. math("1 + 1")\n3. join()\n<END_OF_PLAN>'


@tool(retries=1)
async def fails(x: str) -> str:
    """Always fails."""
    raise RuntimeError(f"no {x}")


def test_no_record_holds_the_api_key_or_the_service_token(caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Endpoints that echo the request's Authorization header back in their errors (500, 429),
    a breaker opening, retries, a call that fails for good, a run that fails, a failing tool,
    requests with the wrong token: every record at every level, of every logger, is searched."""
    monkeypatch.setenv("FLEETCALL_LOG_TEST_KEY", KEY)
    echoed: list[str] = []

    def echo(status: int) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            echoed.append(request.headers.get("authorization", ""))
            headers = {"retry-after": "1000"} if status == 429 else {}
            return httpx.Response(status, headers=headers, json={"error": {"message": f"bad key: {echoed[-1]}"}})
        return httpx.MockTransport(answer)

    def config(name: str) -> EndpointConfig:
        return EndpointConfig(name=name, base_url=f"http://{name}.test/v1", model="llama-3.2-1b", gpu="A100-80G",
                              slots=2, api_key_env="FLEETCALL_LOG_TEST_KEY")

    async def main() -> list[str]:
        routing = RoutingTransport()
        good = EmulatedEndpoint("A100-80G", "llama-3.2-1b", name="good", responder=_plan_or_finish,
                                faults=Faults())
        routing.add("good.test", EmulatorTransport(good))
        routing.add("broken.test", echo(500))
        routing.add("limited.test", echo(429))
        http = make_http_client(routing, retry=RetryConfig(backoff_s=0.0))
        pool = EndpointPool([config("broken"), config("limited"), config("good")], http=http, policy="rr-fcfs",
                            breaker=BreakerConfig(failures=1, cooldown_s=1000.0), retry=RetryConfig(backoff_s=0.0))
        lone = EndpointPool([config("broken")], http=http, retry=RetryConfig(max_attempts=1))
        statuses = []
        try:
            app = create_app(Orchestrator(tools=[fails], llm=pool), pool=pool, token=TOKEN)
            async with client(app, token=TOKEN) as c:
                await c.get("/metrics", headers={"authorization": f"Bearer {TOKEN[:-1]}"})   # a near miss
                await c.get("/metrics", headers={"authorization": "Bearer " + TOKEN + "x"})
                for _ in range(2):
                    statuses.append((await c.post("/v1/runs", json={"query": "1 + 1?"})).json()["status"])
            statuses.append((await Orchestrator(llm=lone).run("1 + 1?")).status.value)
        finally:
            await pool.aclose()
            await lone.aclose()
            await http.aclose()
            await good.aclose()
        return statuses

    with caplog.at_level(logging.DEBUG):
        statuses = run_virtual(main())
    assert statuses == ["answered", "answered", "failed"]
    assert echoed and all(a == f"Bearer {KEY}" for a in echoed)   # the key did reach the servers
    events = {getattr(r, "event", None) for r in caplog.records}
    assert {"call.retry", "call.failed", "endpoint.breaker_open", "endpoint.cooldown", "task.retry",
            "task.failed", "run.end"} <= events
    for record in caplog.records:
        shown = f"{record.getMessage()} {vars(record)!r} {record.exc_text or ''}"
        for secret in (KEY, TOKEN, TOKEN[:-1]):
            assert secret not in shown, f"{record.name}: {record.getMessage()}"


@pytest.mark.parametrize("url, shown", [
    ("https://me:s3cret@mcp.example.com:8443/mcp?token=s3cret#s3cret", "https://mcp.example.com:8443/mcp"),
    ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1/"),
    ("http://[::1]:9/v1?key=s3cret", "http://[::1]:9/v1"),
    ("http://me:s3cret@host:99999/v1?k=s3cret", "http://host:99999/v1"),   # unparsable port
    ("stdio: python server.py", "stdio: python server.py"),                 # not a URL: as it is
])
def test_shown_urls_carry_no_credentials(url, shown):
    assert logs.shown_url(url) == shown
