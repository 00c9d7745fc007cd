"""A replica's side of the shared scheduler: a core client that places calls remotely.

:class:`RemoteCore` is an :class:`~fleetcall.router.coreclient.AsyncCoreClient`: give it to
:class:`~fleetcall.router.pool.EndpointPool` (``core=``) and the pool's shell works unchanged
-- it still streams each attempt from the endpoint itself, measures it and reports every event
exactly once -- while placement happens in a :class:`~fleetcall.distributed.server.SchedulerServer`
shared with other replicas, reached through a :class:`SchedulerChannel` (a Ray actor:
:class:`~fleetcall.distributed.actor.RayChannel`; in-process: :class:`LocalChannel`).

**Messages.** Events are queued as they happen and sent in order by one task, a batch per round
trip (whatever accumulated while the previous one was in flight), so the shared scheduler sees
each replica's events in the order they happened. Each reply carries the actions waiting for
this replica; a second task long-polls for actions another replica's event caused (a slot
freed elsewhere). Actions are handed to the pool on its loop.

**Leases.** While the endpoints have room, the server lets the replica hold a few slots ahead
of its calls (:mod:`fleetcall.distributed.lease`): a call submitted then is granted at once, on a
lease, and the server learns it with the next batch; the round trip leaves the call's critical
path. Otherwise (no lease held) a call waits one round trip for its grant.

**Failing over.** When the server cannot be reached (an error, or no answer within
``rpc_timeout_s``), or no longer knows this replica (it restarted, or this replica's lease ran
out), the replica places calls *locally*, with its own :class:`SchedulerCore` (same policy,
same endpoints): every call still waiting for a slot is submitted there at once, and new calls
go there. Calls already streaming go on; what they report is dropped (the scheduler that
granted them is gone), except a failed attempt, whose call is placed again. The task then
retries (backing off from 0.25 s to 5 s) and, when the server answers, *rejoins*: a new
session (the server cancels whatever it held of the old one), and the calls waiting in the
local core move back to the shared one. Both switches are logged on ``fleetcall.distributed``
(a warning, then info). No call is lost either way: a waiting call is always in exactly one
core, and a granted one always ends through the shell.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass, replace
from typing import Any

from fleetcall.distributed.channel import (LocalChannel, SchedulerChannel, SchedulerUnreachable,
                                           cancel_and_wait)
from fleetcall.distributed.lease import LeaseBook
from fleetcall.distributed.server import Reply
from fleetcall.distributed.shared import Event, Hints, LeaseToken
from fleetcall.errors import ConfigError
from fleetcall.router.actions import Action, Grant, Outcome
from fleetcall.router.coreclient import Deliver
from fleetcall.router.core import SchedulerCore
from fleetcall.router.faults import CallId, Fail, Failure
from fleetcall.router.health import EndpointSnapshot
from fleetcall.router.predict import OutputLengths
from fleetcall.router.state import EndpointSpec, EndpointState
from fleetcall.router.views import CallView

__all__ = ["LocalChannel", "RemoteCore", "SchedulerChannel", "SchedulerUnreachable",
           "default_replica_name"]

log = logging.getLogger("fleetcall.distributed")

LOCAL = 0                 # a call's home: the replica's own core (else the session number)
RETRY_FIRST_S = 0.25      # first wait before trying the server again, then doubled ...
RETRY_MAX_S = 5.0         # ... up to this
MAX_IN_FLIGHT = 8         # exchanges awaiting their reply at once
LINGER_S = 0.001          # other events wait this long for one a call waits on, to ride along
_URGENT = frozenset({"submit", "failed"})  # events a call is waiting on (for its grant)


def default_replica_name() -> str:
    """``host:pid:random``: unique per process (and per pool in it)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(slots=True)
class _Track:
    """A live call of this replica."""

    view: CallView          # as the pool submitted it (this loop's times)
    home: int               # LOCAL, or the session whose shared core has it
    granted: bool = False   # holds a slot: granted, not failed since


class _Refused(Exception):
    """The server refused this replica's hello (its endpoints clash)."""


class RemoteCore:
    """The pool's core client for a shared scheduler (see the module docstring).

    channel: how to reach the server. local: the core used while it cannot be reached (same
        policy and limits as the shared one, normally); its endpoints are this pool's.
    replica: this replica's name (default: host, pid and a random suffix).
    rpc_timeout_s: a request not answered within this is a lost server; poll_s: longest a poll
        waits at the server for an action.
    """

    def __init__(self, channel: SchedulerChannel, local: SchedulerCore, *,
                 replica: str | None = None, rpc_timeout_s: float = 5.0,
                 poll_s: float = 10.0) -> None:
        if rpc_timeout_s <= 0 or poll_s <= 0:
            raise ConfigError("rpc_timeout_s and poll_s must be > 0")
        self.channel = channel
        self.local = local
        self.replica = replica or default_replica_name()
        self.rpc_timeout_s = rpc_timeout_s
        self.poll_s = poll_s
        self.dispatcher = local.dispatcher
        self.switches = 0                          # times it failed over to local placement
        self.rejoins = 0                           # times it (re)joined the shared scheduler
        self._deliver: Deliver | None = None
        self._specs: dict[str, EndpointSpec] = {}  # this pool's endpoints, by name
        self._calls: dict[CallId, _Track] = {}     # live calls, by the pool's ids
        self._session = 1                          # the session events are sent under
        self._up = True                            # True: place through the server
        self._hello_due = True                     # the session's hello is still to send
        self._retry_now = False                    # rejoin at once (the server is up)
        self._backoff = RETRY_FIRST_S
        self._outbox: list[Event] = []             # events not yet sent, in order
        self._urgent = False                       # the outbox holds an event a call waits on
        self._seq = 0                              # the session's next exchange number
        self._inflight = 0                         # exchanges sent, not yet answered
        self._wake: asyncio.Event | None = None    # set when the send loop has work
        self._joined: asyncio.Event | None = None  # set while a session is established
        self._tasks: list[asyncio.Task[None]] = []
        self._hints: Hints | None = None
        self._lengths = local.output_lengths       # what output_lengths gives (hinted or local)
        self._leases = LeaseBook()                 # slots held ahead of calls (this session)
        self._closing = False                      # aclose() began: no more leases

    # -- lifecycle (AsyncCoreClient) -------------------------------------------------------
    def connect(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def start(self) -> None:
        """Start the two tasks on the running loop (again on a new loop, as a new session:
        the pool moved to it and cancelled the old loop's calls)."""
        loop = asyncio.get_running_loop()
        if self._tasks and self._tasks[0].get_loop() is loop:
            return
        if self._tasks:  # the old loop's tasks went with it
            self._tasks, self._outbox = [], []
            self._session += 1
            self._up, self._hello_due, self._retry_now = True, True, False
            self._seq, self._inflight, self._urgent = 0, 0, False
            self._leases.clear()
        self._closing = False
        self._wake, self._joined = asyncio.Event(), asyncio.Event()
        self._wake.set()  # the first hello goes out now
        self._tasks = [loop.create_task(self._send_loop(), name=f"scheduler-send {self.replica}"),
                       loop.create_task(self._poll_loop(), name=f"scheduler-poll {self.replica}")]

    async def aclose(self) -> None:
        """Send what is queued (the cancellations of a closing pool, bounded by
        ``rpc_timeout_s``), then stop the tasks."""
        if self._tasks and self._tasks[0].get_loop() is asyncio.get_running_loop() \
                and self._up and not self._hello_due:
            self._closing = True  # no more leases asked for
            for event in self._leases.release_all():  # its slots are others' again at once
                self._send(event)
            self._urgent = True
            assert self._wake is not None
            self._wake.set()
            try:
                async with asyncio.timeout(self.rpc_timeout_s):
                    while (self._outbox or self._inflight) and self._up:
                        await asyncio.sleep(0.001)
            except TimeoutError:
                pass  # the server forgets this replica when its lease runs out
        loop = asyncio.get_running_loop()
        # (another loop's tasks are gone with it)
        await cancel_and_wait([t for t in self._tasks if t.get_loop() is loop])
        self._tasks = []
        await self.channel.aclose()

    # -- reads (CoreClient) ----------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while calls are placed by the shared scheduler."""
        return self._up and not self._hello_due

    @property
    def endpoints(self) -> list[str]:
        return self.local.endpoints

    @property
    def clock(self) -> float:
        return self.local.clock

    def endpoint(self, name: str) -> EndpointState:
        return self.local.endpoint(name)

    def name_taken(self, name: str) -> str:
        return self.local.name_taken(name)

    @property
    def output_lengths(self) -> OutputLengths:
        return self._lengths if self._up else self.local.output_lengths

    @property
    def mean_call_s(self) -> float:
        if self._up and self._hints is not None:
            return self._hints.mean_call_s
        return self.local.mean_call_s

    def snapshot(self, now: float) -> list[EndpointSnapshot]:
        if self._up and self._hints is not None:
            return list(self._hints.snapshot)
        return self.local.snapshot(now)

    def busy_seconds(self, now: float) -> dict[str, float]:
        return self.local.busy_seconds(now)

    def where(self, call_id: CallId) -> tuple[str, str | None] | None:
        t = self._calls.get(call_id)
        if t is None:
            return None
        if t.home == LOCAL:
            return self.local.where(call_id)
        return ("running", None) if t.granted else ("queued", None)

    def next_wakeup(self) -> float | None:
        return self.local.next_wakeup()

    # -- endpoint events -------------------------------------------------------------------
    def add_endpoint(self, spec: EndpointSpec, now: float) -> list[Action]:
        actions = self._tracked(self.local.add_endpoint(spec, now))
        self._specs[spec.name] = spec
        if self._tasks and self._up and not self._hello_due:
            self._send(Event("endpoint", spec))
        return actions

    def remove_endpoint(self, name: str, now: float) -> list[Action]:
        raise ConfigError(f"cannot remove {name!r}: the endpoints of a pool on a shared "
                          "scheduler are the scheduler's (restart it with the new set)")

    def healthy(self, name: str, now: float) -> list[Action]:
        if self._up:
            self._send(Event("healthy", name))
        return self._tracked(self.local.healthy(name, now))

    def rate_limited(self, name: str, now: float, until: float,
                     status: int | str | None = 429) -> list[Action]:
        """The endpoint is rate-limited until ``until`` (this loop's time): both cores learn it
        (the shared one on its own clock)."""
        if self._up:
            self._send(Event("rate_limited", name, (until + self.channel.clock_offset(), status)))
        return self._tracked(self.local.rate_limited(name, now, until, status))

    def advance(self, now: float) -> list[Action]:
        return self._tracked(self.local.advance(now))

    # -- call events -----------------------------------------------------------------------
    def submit(self, call: CallView, now: float) -> list[Action]:
        """Granted at once in a lease this replica holds (reported to the server after), or
        placed where calls go now: the shared core (granted in a reply), or the local one."""
        if call.call_id in self._calls:
            raise ValueError(f"call {call.call_id!r} was already submitted")
        if self.connected and self._leases.held:
            taken = self._leases.take(self._choose(call, self._leases.endpoints(), now))
            if taken is not None:
                token, endpoint = taken
                self._calls[call.call_id] = _Track(call, self._session, granted=True)
                self._send(Event("adopt", token, self._wire(call)), urgent=False)
                self._top_up()
                return [Grant(call.call_id, endpoint, 1, 0.0)]
        track = _Track(call, LOCAL)
        self._calls[call.call_id] = track
        return self._place(track, now)

    def started(self, call_id: CallId, now: float) -> list[Action]:
        return self._report("started", call_id, now)

    def first_token(self, call_id: CallId, now: float) -> list[Action]:
        return self._report("first_token", call_id, now)

    def finished(self, call_id: CallId, now: float, outcome: Outcome) -> list[Action]:
        return self._report("finished", call_id, now, outcome)

    def failed(self, call_id: CallId, now: float, failure: Failure) -> list[Action]:
        track = self._calls.get(call_id)
        if track is None:
            return []
        track.granted = False
        if track.home == LOCAL:
            return self._report("failed", call_id, now, failure)
        if self._current(track):
            if failure.retry_at is not None:  # an absolute time: on the server's clock
                failure = replace(failure, retry_at=failure.retry_at + self.channel.clock_offset())
            return self._report("failed", call_id, now, failure)
        return self._place(track, now)  # the scheduler that granted it is gone: place anew

    def cancelled(self, call_id: CallId, now: float) -> list[Action]:
        track = self._calls.pop(call_id, None)
        if track is None:
            return []
        if track.home == LOCAL:
            try:
                return self._tracked(self.local.cancelled(call_id, now))
            except KeyError:
                return []
        if self._current(track):
            self._send(Event("cancelled", call_id))
        return []

    def _report(self, op: str, call_id: CallId, now: float, arg: Any = None) -> list[Action]:
        track = self._calls.get(call_id)
        if track is None:
            return []
        if op == "finished":
            del self._calls[call_id]
        if track.home == LOCAL:
            method = getattr(self.local, op)
            try:
                return self._tracked(method(call_id, now) if arg is None
                                     else method(call_id, now, arg))
            except KeyError:
                return []
        if self._current(track):
            self._send(Event(op, call_id, arg))
        return []  # granted by a scheduler this replica has lost: nothing to tell

    def _current(self, track: _Track) -> bool:
        return self._up and track.home == self._session

    def _place(self, track: _Track, now: float) -> list[Action]:
        """Submit a waiting call where calls go now: the shared core, or the local one."""
        if self._up:
            track.home = self._session
            self._send(Event("submit", self._wire(track.view)))
            return []
        track.home = LOCAL
        return self._tracked(self.local.submit(track.view, now))

    def _wire(self, view: CallView) -> CallView:
        """The view with its absolute times on the server's clock."""
        offset = self.channel.clock_offset()
        deadline = None if view.deadline is None else view.deadline + offset
        return replace(view, deadline=deadline, enqueued_at=view.enqueued_at + offset)

    # -- actions ---------------------------------------------------------------------------
    def _tracked(self, actions: list[Action]) -> list[Action]:
        """Note what actions do to calls (a grant, an end) before the pool carries them out."""
        for action in actions:
            if isinstance(action, Grant):
                track = self._calls.get(action.call_id)
                if track is not None:
                    track.granted = True
            elif isinstance(action, Fail):
                self._calls.pop(action.call_id, None)
        return actions

    def _receive(self, session: int, reply: Reply) -> None:
        """A reply of the server, for ``session``: hand its actions to the pool."""
        if session != self._session or not self._up:
            return  # an answer to a session this replica has left: its calls moved
        if not reply.known:
            self._retry_now = True
            self._go_local("it no longer knows this replica (restarted, or the lease ran out)")
            return
        if reply.hints is not None:
            self._hint(reply.hints)
        self._leases.size = reply.lease
        fresh = []
        for action in reply.actions:
            token = getattr(action, "call_id", None)
            if isinstance(token, LeaseToken):
                if isinstance(action, Grant):
                    self._leases.granted(token, action.endpoint)
                else:
                    self._leases.refused(token, asyncio.get_running_loop().time()
                                         + self.channel.clock_offset())
            elif self._for_session(action, session):
                fresh.append(action)
        self._top_up()
        if fresh and self._deliver is not None:
            self._deliver(self._tracked(fresh))

    def _choose(self, call: CallView, leased: set[str], now: float) -> str | None:
        """The endpoint the policy picks for ``call`` among ``leased`` (its view: the local
        core's endpoints, their predictors), or None if it cannot."""
        views = [self.local.endpoint(name).view(now, name in leased)
                 for name in self.local.endpoints]
        try:
            return self.dispatcher.choose(call, views, now)
        except (ValueError, KeyError):
            return None

    def _top_up(self) -> None:
        """Ask for leases up to the size the server allows, or give back idle ones past it."""
        if not self.connected or self._closing:
            return
        events = self._leases.plan(asyncio.get_running_loop().time() + self.channel.clock_offset())
        for event in events:
            self._send(event, urgent=event.op == "cancelled")  # given back: others may wait

    def _for_session(self, action: Action, session: int) -> bool:
        track = self._calls.get(getattr(action, "call_id", None))
        return track is not None and track.home == session

    def _hint(self, hints: Hints) -> None:
        self._hints = hints
        lengths = OutputLengths(self.local.output_lengths.default)
        for kind, tokens in hints.output_tokens:
            lengths.observe(kind, tokens)  # a first observation is the mean
        self._lengths = lengths

    # -- switching -------------------------------------------------------------------------
    def _go_local(self, why: object) -> None:
        """The server is lost: place every waiting call locally, and new ones."""
        if not self._up:
            return
        self._up = False
        self.switches += 1
        self._outbox.clear()
        self._leases.clear()  # (the server cancels them with the session)
        assert self._joined is not None and self._wake is not None
        self._joined.clear()
        self._wake.set()  # the send loop starts retrying
        waiting = [t for t in self._calls.values() if t.home != LOCAL and not t.granted]
        log.warning("replica %s: the shared scheduler is unreachable (%s); placing calls "
                    "locally (%d waiting moved) until it is back", self.replica, why, len(waiting))
        now = asyncio.get_running_loop().time()
        actions: list[Action] = []
        for track in waiting:
            actions += self._place(track, now)
        if actions and self._deliver is not None:
            self._deliver(actions)

    def _rejoin(self, session: int) -> None:
        """The server answered a hello as ``session``: waiting local calls move back to it."""
        self._session, self._up, self._hello_due = session, True, False
        self._seq, self._inflight = 0, 0  # (exchanges of the old session no longer count)
        self._retry_now, self._backoff = False, RETRY_FIRST_S
        self._leases.clear()
        self.rejoins += 1
        assert self._joined is not None
        self._joined.set()
        now = asyncio.get_running_loop().time()
        waiting = [(cid, t) for cid, t in self._calls.items() if t.home == LOCAL and not t.granted]
        actions: list[Action] = []
        for call_id, track in waiting:
            try:
                actions += self.local.cancelled(call_id, now)
            except KeyError:
                pass
            self._place(track, now)
        if self.rejoins > 1 or waiting:
            log.info("replica %s: rejoined the shared scheduler (session %d; %d waiting call(s) "
                     "moved back)", self.replica, session, len(waiting))
        if actions and self._deliver is not None:
            self._deliver(self._tracked(actions))

    def _send(self, event: Event, urgent: bool | None = None) -> None:
        """Queue ``event``; ``urgent`` (default: a submit or a failure, which a call waits
        on) sends the batch at once."""
        self._outbox.append(event)
        self._urgent = self._urgent or (event.op in _URGENT if urgent is None else urgent)
        if self._wake is not None:
            self._wake.set()

    # -- the two tasks ---------------------------------------------------------------------
    async def _send_loop(self) -> None:
        """Hello, retries, and the exchanges: each batch is sent as soon as an event a call
        waits on (a submit, a failure) is queued, or when nothing is in flight and the other
        events have waited :data:`LINGER_S` (the next call's submit often comes meanwhile: one
        round trip instead of two); up to :data:`MAX_IN_FLIGHT` at once, numbered, so the
        server applies them in order whatever order they arrive in."""
        assert self._wake is not None
        async with asyncio.TaskGroup() as exchanges:  # owns the exchanges in flight
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self._up:
                    await self._retry()
                elif self._hello_due:
                    await self._join(self._session)
                elif self._outbox and not self._urgent and self._inflight == 0:
                    await self._linger()
                while self._up and not self._hello_due and self._outbox \
                        and (self._inflight == 0 or self._urgent) \
                        and self._inflight < MAX_IN_FLIGHT:
                    batch, self._outbox, self._urgent = self._outbox, [], False
                    seq, self._seq = self._seq, self._seq + 1
                    self._inflight += 1
                    exchanges.create_task(self._exchange(self._session, seq, batch))

    async def _linger(self) -> None:
        """Wait up to :data:`LINGER_S` for an urgent event (or a switch)."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + LINGER_S
        while not self._urgent and self._up and not self._hello_due:
            left = end - loop.time()
            if left <= 0:
                break
            self._wake.clear()
            try:
                async with asyncio.timeout(left):
                    await self._wake.wait()
            except TimeoutError:
                break
        self._wake.set()  # whatever woke it is looked at by the send loop

    async def _exchange(self, session: int, seq: int, batch: list[Event]) -> None:
        try:
            async with asyncio.timeout(self.rpc_timeout_s):
                reply = await self.channel.exchange(self.replica, session, seq, batch)
        except Exception as exc:   # unreachable, no answer in time, or the channel's own bug
            _unexpected(exc)
            if session == self._session:
                self._go_local(_why(exc))
            reply = None
        finally:
            if session == self._session:
                self._inflight -= 1
            assert self._wake is not None
            self._wake.set()
        if reply is not None:
            self._receive(session, reply)

    async def _join(self, session: int) -> bool:
        """Say hello as ``session``; True once joined. Failing, stays (or goes) local."""
        specs = list(self._specs.values())
        try:
            async with asyncio.timeout(self.rpc_timeout_s):
                reply = await self.channel.hello(self.replica, session, specs)
            if reply.error is not None:
                raise _Refused(reply.error)
        except Exception as exc:   # unreachable, no answer, refused, or the channel's own bug
            _unexpected(exc)
            self._hello_due = False
            self._go_local(_why(exc))
            return False
        pending, self._outbox = self._outbox, []
        self._rejoin(session)
        self._outbox[:0] = pending  # events queued while the hello was out (first session)
        if reply.hints is not None:
            self._hint(reply.hints)
        self._leases.size = reply.lease
        self._top_up()
        assert self._wake is not None
        self._wake.set()
        return True

    async def _retry(self) -> None:
        assert self._wake is not None
        if not self._retry_now:
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, RETRY_MAX_S)
        self._retry_now = False
        if not await self._join(self._session + 1):
            self._wake.set()  # keep trying

    async def _poll_loop(self) -> None:
        assert self._joined is not None
        while True:
            await self._joined.wait()
            session = self._session
            try:
                async with asyncio.timeout(self.poll_s + self.rpc_timeout_s):
                    reply = await self.channel.poll(self.replica, session, self.poll_s)
            except Exception as exc:   # as for an exchange
                _unexpected(exc)
                if session == self._session:
                    self._go_local(_why(exc))
                continue
            self._receive(session, reply)


def _unexpected(exc: Exception) -> None:
    """Log a channel's failure that is no lost scheduler (a bug, a bad handle): the replica
    treats it as one (places locally, retries) rather than leave its calls waiting."""
    if not isinstance(exc, (SchedulerUnreachable, TimeoutError, _Refused)):
        log.error("the channel to the shared scheduler failed unexpectedly", exc_info=exc)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"
