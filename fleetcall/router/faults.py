"""Failures by kind, and the errors a call ends with when it cannot be served.

An attempt at an endpoint fails in one of six ways (:class:`FaultKind`); what the scheduler
does depends only on the kind:

================ ====================================== ========== ======== ==============
kind             what came back                         retried    breaker  endpoint
================ ====================================== ========== ======== ==============
RATE_LIMITED     429, or 503 with a Retry-After header  yes, free  no       cools down
CONNECTION       connect/read error, malformed stream   yes        counts
SERVER_ERROR     5xx (503 without Retry-After)          yes        counts
TIMEOUT          the attempt's time ran out, or 408     yes        counts
CLIENT_ERROR     other 4xx: the request itself is wrong no         no (up)
BROKEN_STREAM    the stream broke after text went out   no         counts
================ ====================================== ========== ======== ==============

A rate-limit error inside a stream whose text already went out (an in-band 429) is a broken
stream for the call, but a rate limit for the endpoint (:attr:`Failure.rate_limit`): it cools
down and its breaker is not charged. A Retry-After that gives no usable number of seconds (an
HTTP date without a Date header, ``soon``, ``nan``) cools the endpoint for
``RetryConfig.rate_limit_s``.

A rate limit is not a fault: the endpoint cools down until its Retry-After (a later one extends
the cooldown, an earlier one never shortens it), the call goes elsewhere at once, and the
attempt does not count against ``RetryConfig.max_attempts``.

:func:`classify` maps the client's :class:`~fleetcall.errors.EndpointError` to a
:class:`Failure` at the boundary; the scheduler core sees only :class:`Failure` (plain data).
When a call cannot be served, the core says why in a :class:`Fail` action, naming every
endpoint and why it was not used; :meth:`Fail.error` builds the exception the caller gets.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import httpx

from fleetcall.errors import EndpointError, LLMError
from fleetcall.router.dispatcher import NoEndpointAvailable
from fleetcall.router.views import CallId

__all__ = ["AttemptsExhausted", "CallId", "Fail", "FailWhy", "Failure", "FaultKind",
           "NoEndpointError", "OverloadedError", "classify", "describe_streak", "in_seconds"]

class FaultKind(enum.Enum):
    """How one attempt failed (see the module docstring)."""

    RATE_LIMITED = "rate-limited"
    CONNECTION = "connection error"
    SERVER_ERROR = "server error"
    TIMEOUT = "timeout"
    CLIENT_ERROR = "client error"
    BROKEN_STREAM = "broken stream"

    @property
    def retryable(self) -> bool:
        """Another attempt (elsewhere) may succeed."""
        return self not in (FaultKind.CLIENT_ERROR, FaultKind.BROKEN_STREAM)

    @property
    def trips_breaker(self) -> bool:
        """Counts toward the endpoint's circuit breaker."""
        return self not in (FaultKind.RATE_LIMITED, FaultKind.CLIENT_ERROR)

    @property
    def plural(self) -> str:
        return "timeouts" if self is FaultKind.TIMEOUT else f"{self.value}s"


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as the scheduler core takes it."""

    kind: FaultKind
    cause: str                          # one line, names no secret
    status: int | None = None           # HTTP status, None if no response came
    retry_after_s: float | None = None  # seconds the endpoint asked to wait (rate limits)
    retry_at: float | None = None       # or the loop time it may be used again, exactly (the
                                        # pool's own rpm/tpm window: when it frees)

    @property
    def rate_limit(self) -> bool:
        """The endpoint said it is rate limiting: it cools down and its breaker is not
        charged, whatever happens to the call (a 429 inside a stream whose text already went
        out is a broken stream for the call, not retried, yet a rate limit for the endpoint)."""
        return self.kind is FaultKind.RATE_LIMITED or self.status == 429

    def describe(self) -> str:
        return f"HTTP {self.status}: {self.cause}" if self.status is not None else self.cause


def classify(exc: EndpointError) -> Failure:
    """The kind of an attempt's failure, from the client's error (see the module table)."""
    status, after = exc.status, exc.retry_after_s
    if exc.first_token_seen:
        kind = FaultKind.BROKEN_STREAM
    elif status == 429 or (status == 503 and (after is not None
                                               or exc.retry_after_header is not None)):
        kind = FaultKind.RATE_LIMITED
    elif status == 408:
        kind = FaultKind.TIMEOUT
    elif status is not None and status >= 500:
        kind = FaultKind.SERVER_ERROR
    elif status is not None:
        kind = FaultKind.CLIENT_ERROR
    elif isinstance(exc.__cause__, (TimeoutError, httpx.TimeoutException)):
        kind = FaultKind.TIMEOUT
    elif isinstance(exc.__cause__, httpx.HTTPError):
        kind = FaultKind.CONNECTION
    else:  # no status, no transport error: a malformed or cut answer, or an in-band error
        kind = FaultKind.SERVER_ERROR if exc.retryable else FaultKind.CLIENT_ERROR
    return Failure(kind, exc.cause, status, after)


def in_seconds(delay: float) -> str:
    """A delay as the error messages show it: ``+28 s``, ``+1.5 s``."""
    if not math.isfinite(delay):
        return "never"
    delay = max(delay, 0.0)
    return f"+{delay:.0f} s" if delay >= 10 else f"+{delay:.1f} s"


def describe_streak(kinds: dict[FaultKind, int]) -> str:
    """``5 connection errors``, or ``5 failures (3 connection errors, 2 timeouts)``."""
    total = sum(kinds.values())
    if len(kinds) == 1:
        kind, n = next(iter(kinds.items()))
        return f"{n} {kind.plural if n != 1 else kind.value}"
    parts = ", ".join(f"{n} {k.plural if n != 1 else k.value}" for k, n in kinds.items())
    return f"{total} failures ({parts})"


class OverloadedError(LLMError):
    """Every endpoint is saturated beyond the pool's admission bound: the query is refused now
    rather than queued without bound."""


class NoEndpointError(NoEndpointAvailable):
    """No endpoint could serve the call in time. ``reasons`` maps each endpoint of the pool to
    why it was not used (``"rate-limited until +28 s (429)"``); the message lists them."""

    def __init__(self, message: str, reasons: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.reasons = dict(reasons)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.args[0], tuple(self.reasons.items())))


class AttemptsExhausted(LLMError):
    """A call failed at the endpoints it was sent to, for good (its attempts ran out, or the
    failure was not retryable). ``reasons``: each endpoint tried and what happened there."""

    def __init__(self, message: str, reasons: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.reasons = dict(reasons)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.args[0], tuple(self.reasons.items())))


class FailWhy(enum.Enum):
    """Why the core ended a call with :class:`Fail`."""

    OVERLOADED = "overloaded"        # refused at admission
    NO_ENDPOINT = "no endpoint"      # waited for an endpoint past its deadline or wait budget
    ATTEMPTS = "attempts"            # failed attempts ran out, or one was not retryable


@dataclass(frozen=True, slots=True)
class Fail:
    """Action: the call ends with an error (picklable data; :meth:`error` builds it)."""

    call_id: CallId
    why: FailWhy
    message: str                            # the whole error message
    reasons: tuple[tuple[str, str], ...] = ()  # (endpoint, why it was not used), pool order

    def error(self) -> LLMError:
        if self.why is FailWhy.OVERLOADED:
            return OverloadedError(self.message)
        if self.why is FailWhy.NO_ENDPOINT:
            return NoEndpointError(self.message, self.reasons)
        return AttemptsExhausted(self.message, self.reasons)
