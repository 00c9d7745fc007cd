"""The shared scheduler's asyncio shell: what the Ray actor runs (and what a test runs in-process).

:class:`SchedulerServer` owns one :class:`~fleetcall.distributed.shared.SharedCore` and answers
three requests of each replica, every answer a :class:`Reply`:

* ``hello(replica, session, specs)``: (re)connect; earlier calls of the replica are cancelled,
  its endpoints registered.
* ``exchange(replica, session, events)``: apply the replica's events in order; the reply holds
  every action waiting for that replica (its grants, including those another replica's event
  caused, and failures).
* ``poll(replica, session, timeout_s)``: wait until an action is waiting for the replica (or
  ``timeout_s`` passes) and return it: how a grant caused by *another* replica's event reaches
  this one without it asking again.

**Clocks.** The server decides on its own clock (``clock``, default ``time.time``): every event
is applied at the server's ``now``, never at a time a replica sent, so events from several
processes are ordered on one clock and the core's time never goes backwards. Replicas convert
their two absolute times (a call's deadline, when it entered the pool) to the server's clock by
an offset they measure (:meth:`~fleetcall.distributed.remote.SchedulerChannel.clock_offset`);
everything else is a duration (measured TTFT/TPOT, Retry-After, queue seconds). Across
processes of one host ``time.time`` is one clock; across hosts it is as close as NTP keeps them
(milliseconds: a skew shifts deadlines by as much, small against LLM calls of seconds). An
in-process server under the virtual clock passes the loop's clock instead.

**Slot leases** (:mod:`fleetcall.distributed.lease`): every reply says how many slots the
replica may hold ahead of its calls (``Reply.lease``, at most ``lease_slots``); when that falls
below the leases it holds idle, its long poll answers to say so.

One timer (``loop.call_at``) wakes the core at its next timed transition and forgets replicas
whose lease (``lease_s`` without a request) ran out.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetcall.distributed.shared import Event, Hints, SharedCore
from fleetcall.errors import ConfigError
from fleetcall.router.actions import Action
from fleetcall.router.config import BreakerConfig, RetryConfig
from fleetcall.router.core import SchedulerCore
from fleetcall.router.state import EndpointSpec

__all__ = ["DEFAULT_LEASE_S", "DEFAULT_LEASE_SLOTS", "Reply", "SchedulerServer"]

log = logging.getLogger("fleetcall.distributed")

DEFAULT_LEASE_S = 30.0      # a replica silent this long (no request) is forgotten
DEFAULT_LEASE_SLOTS = 0     # slots a replica may hold ahead of its calls (0: no leases; off
                            # by default: placing in leases costs SLO, see the README)
DEFAULT_HINT_INTERVAL_S = 1.0  # hints go out to a replica at most this often
GAP_S = 10.0                # longest an exchange waits for the one numbered before it


@dataclass(frozen=True, slots=True)
class Reply:
    """The server's answer to one request of a replica."""

    incarnation: str                 # the server's id; a new one after the actor restarted
    known: bool = True               # False: the session is not the replica's: say hello again
    actions: list[Action] = field(default_factory=list)  # for the replica, its own call ids
    hints: Hints | None = None       # refreshed at most every hint interval
    error: str | None = None         # a refused hello (ConfigError's message)
    lease: int = 0                   # slot leases the replica may hold now


class SchedulerServer:
    """The shared scheduler (see the module docstring).

    policy, policy_options, retry, breaker, max_queued_per_slot: the core's, as for
        :class:`~fleetcall.router.pool.EndpointPool`.
    endpoints: endpoints known from the start (replicas register theirs with ``hello``).
    clock: seconds, the server's time base (default ``time.time``; see the module docstring).
    lease_s: a replica that makes no request for this long is forgotten, its calls cancelled.
    lease_slots: most slots a replica may hold ahead of its calls (0: none; each call then
        waits a round trip for its grant).
    speed: the server's seconds per second of its own loop (default 1; a benchmark whose
        replicas run on a dilated clock, :mod:`fleetcall.bench.dilation`, passes theirs with a
        ``clock`` that runs as fast); its timers wait ``1/speed`` loop seconds per second.
    """

    def __init__(self, policy: str = "slack", policy_options: dict[str, Any] | None = None, *,
                 retry: RetryConfig | None = None, breaker: BreakerConfig | None = None,
                 max_queued_per_slot: int = 64, endpoints: Sequence[EndpointSpec] = (),
                 clock: Callable[[], float] | None = None, lease_s: float = DEFAULT_LEASE_S,
                 hint_interval_s: float = DEFAULT_HINT_INTERVAL_S, speed: float = 1.0,
                 lease_slots: int = DEFAULT_LEASE_SLOTS) -> None:
        if lease_s <= 0 or hint_interval_s < 0 or not speed > 0 or lease_slots < 0:
            raise ConfigError("lease_s and speed must be > 0, hint_interval_s and lease_slots "
                              ">= 0")
        self.lease_slots = lease_slots
        self.clock = clock or time.time
        self.speed = speed
        self.incarnation = uuid.uuid4().hex[:12]
        self.lease_s = lease_s
        self.hint_interval_s = hint_interval_s
        self.shared = SharedCore(SchedulerCore(policy, policy_options, retry=retry,
                                               breaker=breaker,
                                               max_queued_per_slot=max_queued_per_slot))
        self.requests = 0                                   # requests served
        self._last = self.clock()                           # latest now (never goes back)
        self._waiting: dict[str, asyncio.Event] = {}        # replica -> wakes its poll
        self._next: dict[str, int] = {}                     # replica -> next exchange to apply
        self._turns: dict[str, asyncio.Event] = {}          # replica -> set when _next moves
        self._hinted: dict[str, float] = {}                 # replica -> hints last sent
        self._told: dict[str, int] = {}                     # replica -> lease size last sent
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None                 # server time it fires at
        self._closed = False                                # aclose() was called
        for spec in endpoints:
            self.shared.core.add_endpoint(spec, self._last)

    def now(self) -> float:
        """The server's time: ``clock()``, never earlier than a time already used."""
        self._last = max(self._last, self.clock())
        return self._last

    # -- requests --------------------------------------------------------------------------
    async def hello(self, replica: str, session: int, specs: Sequence[EndpointSpec]) -> Reply:
        now = self.now()
        self.requests += 1
        self._hinted.pop(replica, None)
        for wakes in (self._waiting, self._turns):  # requests of its old session answer now
            if replica in wakes:
                wakes[replica].set()
        try:
            self.shared.hello(replica, session, specs, now)
            self._next[replica] = 0
        except ConfigError as exc:
            log.error("shared scheduler: %s", exc)
            return Reply(self.incarnation, known=False, error=str(exc))
        log.info("shared scheduler: replica %s joined (session %d, %d endpoint(s))", replica,
                 session, len(specs))
        self._after(now)
        return self._reply(replica, now)

    async def exchange(self, replica: str, session: int, seq: int,
                       events: Sequence[Event]) -> Reply:
        """Apply the session's exchange ``seq`` once those before it are applied (a replica
        has several in flight; they may arrive in any order). An exchange whose predecessor
        does not come within ``GAP_S`` (it was lost) answers ``known=False``."""
        self.requests += 1
        if not await self._in_turn(replica, session, seq):
            return Reply(self.incarnation, known=False)
        now = self.now()
        applied = self.shared.apply(replica, session, events, now)
        self._next[replica] = seq + 1
        self._turns[replica].set()
        if not applied:
            return Reply(self.incarnation, known=False)
        self._after(now)
        return self._reply(replica, now)

    async def _in_turn(self, replica: str, session: int, seq: int) -> bool:
        while self.shared.knows(replica, session) and self._next.get(replica, 0) < seq:
            turn = self._turns.setdefault(replica, asyncio.Event())
            turn.clear()
            try:
                async with asyncio.timeout(GAP_S):
                    await turn.wait()
            except TimeoutError:
                return False
        self._turns.setdefault(replica, asyncio.Event())
        return self.shared.knows(replica, session) and self._next.get(replica, 0) == seq

    async def poll(self, replica: str, session: int, timeout_s: float) -> Reply:
        self.requests += 1
        if not self.shared.knows(replica, session):
            return Reply(self.incarnation, known=False)
        self.shared.touch(replica, self.now())
        try:
            async with asyncio.timeout(timeout_s):
                # Woken when mail came for it, but an exchange of the replica may have taken
                # that mail first (its reply carries it): then wait on, rather than answer an
                # empty reply the replica must poll again after (a request per call, for
                # nothing, on the actor's and the replica's CPU).
                while not (self.shared.has_mail(replica) or self._owes(replica, self.now())
                           or self._closed or not self.shared.knows(replica, session)):
                    wake = self._waiting.setdefault(replica, asyncio.Event())
                    wake.clear()
                    await wake.wait()
        except TimeoutError:
            pass
        now = self.now()
        if not self.shared.knows(replica, session):  # said hello again, or forgotten meanwhile
            return Reply(self.incarnation, known=False)
        self.shared.touch(replica, now)
        return self._reply(replica, now)

    def stats(self) -> dict[str, Any]:
        """Counters: requests served, replicas (known now; ``replicas_joined``: every one that
        ever said hello, including those forgotten since: a replica done with its calls is
        forgotten ``lease_s`` after its last request), live calls, events ignored, the
        incarnation, and the CPU seconds of the process serving it (``time.process_time``)."""
        return {"incarnation": self.incarnation, "requests": self.requests,
                "cpu_s": time.process_time(),
                "replicas": self.shared.replicas, "replicas_joined": self.shared.replicas_joined,
                "calls": len(self.shared.core),
                "ignored_events": self.shared.ignored,
                "endpoints": self.shared.core.endpoints}

    def snapshot(self) -> list[Any]:
        return self.shared.core.snapshot(self.now())

    def busy_seconds(self) -> dict[str, float]:
        return self.shared.core.busy_seconds(self.now())

    async def aclose(self) -> None:
        """Stop the timer; wake every poll (they answer at once)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, None
        for wake in self._waiting.values():
            wake.set()

    # -- internals -------------------------------------------------------------------------
    def _reply(self, replica: str, now: float) -> Reply:
        hints = None
        if now - self._hinted.get(replica, -float("inf")) >= self.hint_interval_s:
            self._hinted[replica] = now
            hints = self.shared.hints(now)
        lease = self.shared.lease_size(replica, now, self.lease_slots)
        self._told[replica] = lease
        return Reply(self.incarnation, actions=self.shared.take(replica), hints=hints,
                     lease=lease)

    def _owes(self, replica: str, now: float) -> bool:
        """The replica holds idle leases past its size, and was told a larger one."""
        idle = self.shared.idle_leases(replica)
        if not idle:
            return False
        size = self.shared.lease_size(replica, now, self.lease_slots)
        return idle > size and self._told.get(replica, 0) > size

    def _after(self, now: float) -> None:
        """After a change: wake the polls that have mail (or leases to give back), re-arm
        the timer."""
        for replica, wake in self._waiting.items():
            if self.shared.has_mail(replica) or self._owes(replica, now):
                wake.set()
        self._rearm(now)

    def _rearm(self, now: float) -> None:
        dues = [d for d in (self.shared.core.next_wakeup(), self.shared.lease_due(self.lease_s))
                if d is not None]
        due = min(dues) if dues else None
        if due == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, due
        if due is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + max(due - now, 0.0) / self.speed,
                                       self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        now = self.now()
        self.shared.advance(now)
        for replica in self.shared.expired(now, self.lease_s):
            log.warning("shared scheduler: replica %s silent for over %.0f s: forgotten",
                        replica, self.lease_s)
            self.shared.forget(replica, now)
            self._hinted.pop(replica, None)
            wake = self._waiting.pop(replica, None)
            if wake is not None:
                wake.set()
        self._after(now)
