"""Circuit breaker transitions, live endpoint statistics, and the active health probe."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import SecretStr

from fleetcall.errors import ConfigError
from fleetcall.router.health import CircuitBreaker, EndpointStats, probe
from fleetcall.vclock import run_virtual

# ----------------------------------------------------------------------------- circuit breaker


def test_opens_after_consecutive_failures_only() -> None:
    b = CircuitBreaker(failures=3, cooldown_s=10.0)
    b.record_failure(0.0)
    b.record_failure(1.0)
    b.record_success(2.0)  # breaks the streak
    b.record_failure(3.0)
    b.record_failure(4.0)
    assert b.state(4.0) == "closed" and b.allow(4.0) and b.consecutive_failures == 2
    b.record_failure(5.0)
    assert b.state(5.0) == "open" and not b.allow(5.0) and not b.allow(14.9)
    assert b.probe_at() == 15.0


def test_half_open_lets_exactly_one_probe_and_closes_on_success() -> None:
    b = CircuitBreaker(failures=1, cooldown_s=10.0)
    b.record_failure(0.0)
    assert b.state(10.0) == "half-open"
    assert b.allow(10.0) is True
    assert [b.allow(t) for t in (10.0, 11.0, 19.9)] == [False, False, False]
    assert b.state(12.0) == "half-open"
    b.record_success(12.0)
    assert b.state(12.0) == "closed" and b.allow(12.0) and b.probe_at() is None
    assert b.consecutive_failures == 0


def test_failed_probe_reopens_for_a_new_cooldown() -> None:
    b = CircuitBreaker(failures=2, cooldown_s=5.0)
    b.record_failure(0.0)
    b.record_failure(0.0)
    assert b.allow(6.0)
    b.record_failure(7.0)
    assert b.state(7.0) == "open" and not b.allow(11.9) and b.probe_at() == 12.0
    assert b.allow(12.0)


def test_reports_while_open_are_stale_and_ignored() -> None:
    b = CircuitBreaker(failures=1, cooldown_s=5.0)
    b.record_failure(0.0)
    b.record_success(1.0)   # a call admitted before the breaker opened
    b.record_failure(2.0)   # likewise: must not push the cool-down back
    assert b.state(1.0) == "open" and b.probe_at() == 5.0


def test_lost_probe_expires_after_another_cooldown() -> None:
    b = CircuitBreaker(failures=1, cooldown_s=5.0)
    b.record_failure(0.0)
    assert b.allow(5.0) and not b.allow(9.0)
    assert b.allow(10.0)  # the first probe never reported (cancelled): a second one may go


def test_breaker_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError):
        CircuitBreaker(failures=0)
    with pytest.raises(ConfigError):
        CircuitBreaker(cooldown_s=0.0)


# ----------------------------------------------------------------------------- endpoint stats


def test_stats_track_flight_ewma_and_errors() -> None:
    stats = EndpointStats("ep", CircuitBreaker(failures=2, cooldown_s=1.0), alpha=0.5)
    stats.started()
    stats.started()
    stats.queued = 4
    snap = stats.snapshot(0.0)
    assert (snap.in_flight, snap.queued, snap.calls, snap.ttft_s, snap.breaker) == (2, 4, 0, None, "closed")
    stats.succeeded(1.0, ttft_s=0.2, tpot_s=0.02)
    stats.succeeded(2.0, ttft_s=0.4, tpot_s=None)
    snap = stats.snapshot(2.0)
    assert snap.in_flight == 0 and snap.calls == 2 and snap.failures == 0
    assert snap.ttft_s == pytest.approx(0.3) and snap.tpot_s == pytest.approx(0.02)
    assert snap.error_rate == 0.0

    for t in (3.0, 4.0):
        stats.started()
        stats.failed(t, "HTTP 500: boom")
    snap = stats.snapshot(4.0)
    assert snap.failures == 2 and snap.error_rate == pytest.approx(0.75)
    assert snap.breaker == "open" and snap.last_error == "HTTP 500: boom"


def test_caller_errors_do_not_trip_the_breaker() -> None:
    stats = EndpointStats("ep", CircuitBreaker(failures=1, cooldown_s=1.0))
    stats.started()
    stats.failed(0.0, "HTTP 400: bad request", endpoint_fault=False)
    assert stats.snapshot(0.0).breaker == "closed" and stats.failures == 1
    stats.started()
    stats.abandoned()
    assert stats.in_flight == 0 and stats.calls == 1


def test_stats_reject_bad_alpha() -> None:
    with pytest.raises(ConfigError):
        EndpointStats("ep", alpha=0.0)


# ----------------------------------------------------------------------------- probe


def _probe_with(transport: httpx.MockTransport, api_key: SecretStr | None = None) -> bool:
    async def main() -> bool:
        async with httpx.AsyncClient(transport=transport) as http:
            return await probe(http, "http://gpu:8000/v1/", timeout_s=2.0, api_key=api_key)
    return run_virtual(main())


def test_probe_models_ok_and_sends_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": []})

    assert _probe_with(httpx.MockTransport(handler), api_key=SecretStr("k1"))
    assert [str(r.url) for r in seen] == ["http://gpu:8000/v1/models"]
    assert seen[0].headers["authorization"] == "Bearer k1"


def test_probe_falls_back_to_root_health() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200 if request.url.path == "/health" else 404)

    assert _probe_with(httpx.MockTransport(handler))
    assert paths == ["/v1/models", "/health"]


def test_probe_false_on_errors_and_connection_failure() -> None:
    assert not _probe_with(httpx.MockTransport(lambda request: httpx.Response(503)))

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert not _probe_with(httpx.MockTransport(refuse))


def test_probe_times_out_on_a_hung_server() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def main() -> tuple[bool, float]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http:
            up = await probe(http, "http://gpu:8000/v1", timeout_s=2.0)
        return up, asyncio.get_running_loop().time()

    assert run_virtual(main()) == (False, 2.0)
