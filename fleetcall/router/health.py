"""Endpoint health: a circuit breaker, live per-endpoint statistics, and an active probe.

:class:`CircuitBreaker` and :class:`EndpointStats` are pure state machines: every method takes
the current loop time (or the measured values) as an argument and none reads a clock, so the
pool's tests drive them by hand. :func:`probe` is the only I/O here: one health check; the pool
owns the loop that repeats it.

Breaker states::

    closed ──(failures in a row)──► open ──(cooldown_s passes)──► half-open: one probe call
       ▲                              ▲                                   │
       └──────── probe succeeds ──────┼───────────── probe fails ─────────┘
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import SecretStr

from fleetcall.errors import ConfigError

__all__ = ["BreakerState", "CircuitBreaker", "EndpointSnapshot", "EndpointStats", "probe"]

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Stops sending calls to an endpoint that keeps failing, then tries it again.

    Opens after ``failures`` consecutive failures. Once ``cooldown_s`` has passed, :meth:`allow`
    lets exactly one probe call through (half-open); its success closes the breaker, its
    failure re-opens it for another cool-down. A probe that never reports (cancelled) expires
    after one more cool-down, so the breaker cannot stick half-open.

    Reports that arrive while open come from calls admitted before it opened; they are ignored.

        >>> b = CircuitBreaker(failures=2, cooldown_s=5.0)
        >>> b.record_failure(0.0); b.record_failure(1.0); b.state(1.0)
        'open'
        >>> b.allow(3.0), b.allow(6.0), b.allow(6.5)
        (False, True, False)
        >>> b.record_success(7.0); b.state(7.0)
        'closed'
    """

    __slots__ = ("failures", "cooldown_s", "_streak", "_opened_at", "_probe_at")

    def __init__(self, failures: int = 5, cooldown_s: float = 10.0) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ConfigError("circuit breaker needs failures >= 1 and cooldown_s > 0")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._streak = 0                       # consecutive failures while closed
        self._opened_at: float | None = None   # loop time it (re-)opened; None iff closed
        self._probe_at: float | None = None    # loop time the half-open probe was let through

    @property
    def consecutive_failures(self) -> int:
        return self._streak

    def state(self, now: float) -> BreakerState:
        """``open`` until the cool-down ends, then ``half-open`` (a probe may go, or is out)."""
        if self._opened_at is None:
            return "closed"
        if self._probe_at is None and now < self._opened_at + self.cooldown_s:
            return "open"
        return "half-open"

    def probe_at(self) -> float | None:
        """Loop time at which the next probe may go (None when closed): when to wake the pool."""
        if self._opened_at is None:
            return None
        return (self._probe_at if self._probe_at is not None else self._opened_at) + self.cooldown_s

    def allow(self, now: float) -> bool:
        """May a call go now? Half-open answers True once (that call is the probe)."""
        if self._opened_at is None:
            return True
        ready_at = self.probe_at()
        if ready_at is not None and now >= ready_at:
            self._probe_at = now
            return True
        return False

    def can_allow(self, now: float) -> bool:
        """Would :meth:`allow` say yes now? (Asks without letting the probe go.)"""
        ready_at = self.probe_at()
        return self._opened_at is None or (ready_at is not None and now >= ready_at)

    def probe_abandoned(self, now: float) -> None:
        """The probe call was cancelled before it reported: the next call may probe at once."""
        if self._opened_at is not None and self._probe_at is not None:
            self._probe_at = None
            self._opened_at = now - self.cooldown_s  # its cooldown just ended: half-open

    def reset(self) -> None:
        """Close the breaker: an active health check found the endpoint up again."""
        self._opened_at = self._probe_at = None
        self._streak = 0

    def record_success(self, now: float) -> None:
        if self._opened_at is None:
            self._streak = 0
        elif self._probe_at is not None:  # the probe came back well
            self._opened_at = self._probe_at = None
            self._streak = 0

    def record_failure(self, now: float) -> None:
        if self._opened_at is None:
            self._streak += 1
            if self._streak >= self.failures:
                self._opened_at = now
        elif self._probe_at is not None:  # the probe failed: another cool-down
            self._opened_at = now
            self._probe_at = None


@dataclass(frozen=True, slots=True)
class EndpointSnapshot:
    """A consistent read of one endpoint's live state, for the pool's users and policies."""

    name: str
    in_flight: int            # calls running at the endpoint
    queued: int               # calls waiting in its local queue
    calls: int                # finished attempts, successful or not
    failures: int             # failed attempts
    ttft_s: float | None      # EWMA time to first token, seconds (None until measured)
    tpot_s: float | None      # EWMA time per output token after the first, seconds
    error_rate: float         # EWMA of failed attempts (0 = none fail, 1 = all fail)
    breaker: BreakerState
    last_error: str | None    # cause of the latest failure
    rate_limited: int = 0     # attempts answered with a rate limit (429, 503 + Retry-After)
    cooling_s: float = 0.0    # seconds until its rate-limit cooldown ends (0: not cooling)
    cooldowns: int = 0        # cooldowns begun (a rate limit while not cooling; extending one
                              # is not a new one)
    breaker_trips: int = 0    # times its breaker opened (from closed, or again after a failed probe)


class EndpointStats:
    """Live counters of one endpoint; the pool updates them, users read :meth:`snapshot`.

    Averages are exponentially weighted (weight ``alpha`` on the newest value; the first value
    is taken as is). Failures that are the endpoint's fault feed its :class:`CircuitBreaker`;
    the caller's own mistakes (a 400) count as errors but tell the breaker the endpoint is up.
    """

    __slots__ = ("name", "breaker", "alpha", "in_flight", "queued", "calls", "failures",
                 "ttft_s", "tpot_s", "error_rate", "last_error", "rate_limits", "cooldowns",
                 "breaker_trips")

    def __init__(self, name: str, breaker: CircuitBreaker | None = None, *,
                 alpha: float = 0.2) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"EWMA alpha must be in (0, 1], got {alpha}")
        self.name = name
        self.breaker = breaker or CircuitBreaker()
        self.alpha = alpha
        self.in_flight = 0                  # attempts started and not finished
        self.queued = 0                     # set by the pool from its local queue
        self.calls = 0                      # attempts finished
        self.failures = 0                   # attempts failed
        self.ttft_s: float | None = None    # EWMA, seconds
        self.tpot_s: float | None = None    # EWMA, seconds per token
        self.error_rate = 0.0               # EWMA of 0 (success) / 1 (failure)
        self.last_error: str | None = None
        self.rate_limits = 0                # attempts answered with a rate limit
        self.cooldowns = 0                  # cooldowns begun (the core counts them)
        self.breaker_trips = 0              # breaker openings (the core counts them)

    def _ewma(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.alpha * (new - old)

    def started(self) -> None:
        self.in_flight += 1

    def succeeded(self, now: float, *, ttft_s: float | None = None,
                  tpot_s: float | None = None) -> None:
        """An attempt finished well; ttft/tpot are its measurements (None if not measured)."""
        self._finish()
        if ttft_s is not None:
            self.ttft_s = self._ewma(self.ttft_s, ttft_s)
        if tpot_s is not None:
            self.tpot_s = self._ewma(self.tpot_s, tpot_s)
        self.error_rate = self._ewma(self.error_rate, 0.0)
        self.breaker.record_success(now)

    def failed(self, now: float, cause: str, *, endpoint_fault: bool = True) -> None:
        """An attempt failed; ``endpoint_fault=False`` for errors of the request itself (4xx)."""
        self._finish()
        self.failures += 1
        self.last_error = cause
        self.error_rate = self._ewma(self.error_rate, 1.0)
        if endpoint_fault:
            self.breaker.record_failure(now)
        else:
            self.breaker.record_success(now)

    def rate_limited(self, cause: str) -> None:
        """An attempt was refused with a rate limit: not a fault, no verdict for the breaker."""
        self._finish()
        self.rate_limits += 1
        self.last_error = cause

    def abandoned(self) -> None:
        """An attempt was cancelled by its caller: no verdict on the endpoint."""
        self.in_flight = max(0, self.in_flight - 1)

    def _finish(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.calls += 1

    def snapshot(self, now: float, *, cooling_s: float = 0.0) -> EndpointSnapshot:
        return EndpointSnapshot(self.name, self.in_flight, self.queued, self.calls, self.failures,
                                self.ttft_s, self.tpot_s, self.error_rate,
                                self.breaker.state(now), self.last_error, self.rate_limits,
                                cooling_s, self.cooldowns, self.breaker_trips)


def _root_health_url(base_url: str) -> str:
    """``http://h:8000/v1`` -> ``http://h:8000/health`` (vLLM, SGLang, llama.cpp serve it there)."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/health", "", ""))


async def probe(http: httpx.AsyncClient, base_url: str, *, timeout_s: float,
                api_key: SecretStr | str | None = None) -> bool:
    """Is the endpoint at ``base_url`` up? GET ``{base}/models``, else the root's ``/health``.

    True on a 2xx from either. Never raises for network trouble (that is a False); the whole
    check is bounded by ``timeout_s`` of loop time.

        >>> # up = await probe(http, "http://127.0.0.1:8000/v1", timeout_s=2.0)
    """
    secret = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    base = base_url.rstrip("/")
    try:
        async with asyncio.timeout(timeout_s):
            for url in (f"{base}/models", _root_health_url(base)):
                try:
                    response = await http.get(url, headers=headers)
                except httpx.HTTPError:
                    continue
                if response.is_success:
                    return True
    except TimeoutError:
        return False
    return False
