"""One scheduler core for many replicas: the shared scheduler's state, as plain bookkeeping.

:class:`SharedCore` wraps a :class:`~fleetcall.router.core.SchedulerCore` so that several
replicas (processes, each running its own pool shell) place their calls from one global view:
every call waits in the same local queues, every slot is counted once, every measurement
teaches the same predictors. It adds to the core only what sharing needs:

* **Names.** A replica's call ``n`` is the core's call ``(replica, n)``; each action the core
  returns is routed to the replica whose call it names, with the replica's own id back
  (:meth:`SharedCore.take`). A call's grant may thus come from another replica's event: the
  slot its finished call freed.
* **Sessions.** A replica says :meth:`SharedCore.hello` when it (re)connects: whatever the
  core still held of its earlier session (calls queued or running, undelivered actions) is
  cancelled, and its endpoints are registered (the same spec again is a no-op; a different
  one is refused). Events of an older session are ignored, so a late message cannot act on
  the new one.
* **Expiry.** A replica not heard from for ``lease_s`` is forgotten (:meth:`SharedCore.expired`
  lists them; :meth:`SharedCore.forget` cancels its calls), so a replica that died cannot
  hold slots for ever.
* **Leases.** Slots granted to a replica ahead of any call, so that it places calls without
  a round trip (:mod:`fleetcall.distributed.lease`): a lease is a call of the replica whose id
  is a :class:`LeaseToken`; it is granted at once or refused (a ``Fail``), never queued;
  ``adopt`` makes its slot a call's (events then name the call by the replica's id, and the
  core's actions for it go back under that id); :meth:`lease_size` is a replica's share.
* **Events as data.** :class:`Event` tuples, applied in order by :meth:`SharedCore.apply`. An
  event naming a call the core no longer knows (it ended there first, or the scheduler
  restarted) is ignored and counted, never an error: the replica's view may lag by a message.

No I/O, no clock (every method takes ``now`` on the scheduler's clock), no asyncio:
:class:`~fleetcall.distributed.server.SchedulerServer` is its asyncio shell.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, cast

from fleetcall.errors import ConfigError
from fleetcall.router.actions import Action, Grant, Retired
from fleetcall.router.core import SchedulerCore
from fleetcall.router.dispatcher import predicted_service_s
from fleetcall.router.faults import Fail, FailWhy
from fleetcall.router.health import EndpointSnapshot
from fleetcall.router.state import EndpointSpec
from fleetcall.router.views import CallView

__all__ = ["Event", "Hints", "LeaseToken", "SharedCore"]

log = logging.getLogger("fleetcall.distributed")


class Event(NamedTuple):
    """One event of a replica for the shared core (cheap to pickle).

    ``op`` -> ``subject`` / ``arg``: ``submit`` -> CallView (the replica's own id) / None;
    ``started``, ``first_token``, ``cancelled`` -> call id / None; ``finished`` -> call id /
    :class:`~fleetcall.router.actions.Outcome`; ``failed`` -> call id /
    :class:`~fleetcall.router.faults.Failure`; ``healthy`` -> endpoint name / None;
    ``rate_limited`` -> endpoint name / (until on the scheduler's clock, status);
    ``adopt`` -> :class:`LeaseToken` / CallView (the call now in the lease's slot).
    """

    op: str
    subject: Any
    arg: Any = None


@dataclass(frozen=True, slots=True)
class LeaseToken:
    """The id of a lease of a replica (its ``n``-th): a slot granted ahead of any call."""

    n: int


@dataclass(frozen=True, slots=True)
class Hints:
    """What a replica's shell reads of the shared core between its own calls (refreshed with
    the replies): expected output tokens per kind, the mean call, the endpoints' live state."""

    mean_call_s: float                        # EWMA of calls' service seconds
    output_tokens: tuple[tuple[str, int], ...]  # (call kind, expected output tokens)
    snapshot: tuple[EndpointSnapshot, ...]    # every endpoint, as EndpointPool.snapshot()


class SharedCore:
    """A :class:`SchedulerCore` shared by named replicas (see the module docstring)."""

    def __init__(self, core: SchedulerCore) -> None:
        self.core = core
        self.ignored = 0                                 # events naming calls no longer live
        self._sessions: dict[str, int] = {}              # replica -> its current session
        self._joined: set[str] = set()                   # every replica that ever said hello
        self._live: dict[str, set[Any]] = {}             # replica -> its live calls (own ids)
        self._mail: dict[str, list[Action]] = {}         # replica -> actions not yet taken
        self._seen: dict[str, float] = {}                # replica -> when last heard from
        self._idle: dict[str, set[LeaseToken]] = {}      # replica -> leases granted, unused
        self._alias: dict[str, dict[Any, LeaseToken]] = {}  # replica -> call in a lease -> it
        self._adopted: dict[str, dict[LeaseToken, Any]] = {}  # replica -> lease -> its call
        self._ops: dict[str, Callable[..., list[Action]]] = {"started": core.started, "first_token": core.first_token,
                     "finished": core.finished, "failed": core.failed}

    # -- replicas --------------------------------------------------------------------------
    @property
    def replicas(self) -> list[str]:
        """The replicas it knows now (said hello, not forgotten since)."""
        return list(self._sessions)

    @property
    def replicas_joined(self) -> list[str]:
        """Every replica that ever said hello, forgotten since or not (sorted)."""
        return sorted(self._joined)

    def hello(self, replica: str, session: int, specs: Sequence[EndpointSpec],
              now: float) -> None:
        """``replica`` (re)connects as ``session``: its earlier calls are cancelled, its
        endpoints registered. ConfigError if an endpoint's spec differs from the one the core
        has under that name (nothing is changed then)."""
        known = {name: self.core.endpoint(name).spec for name in self.core.endpoints}
        clash = [f"{s.name!r}" for s in specs if s.name in known and known[s.name] != s]
        if clash:
            raise ConfigError(f"replica {replica}: endpoint(s) {', '.join(clash)} differ from "
                              "those the shared scheduler already has under the same names")
        if replica in self._sessions:
            self.forget(replica, now)
        self._sessions[replica] = session
        self._joined.add(replica)
        self._live[replica] = set()
        self._mail[replica] = []
        self._seen[replica] = now
        self._idle[replica], self._alias[replica], self._adopted[replica] = set(), {}, {}
        for spec in specs:
            if spec.name not in known:
                known[spec.name] = spec
                self._route(self.core.add_endpoint(spec, now))

    def knows(self, replica: str, session: int) -> bool:
        return self._sessions.get(replica) == session

    def forget(self, replica: str, now: float) -> None:
        """Cancel everything ``replica`` still has in the core; drop its mailbox."""
        live = self._live.pop(replica, set())
        self._sessions.pop(replica, None)
        self._mail.pop(replica, None)
        self._seen.pop(replica, None)
        for book in (self._idle, self._alias, self._adopted):
            book.pop(replica, None)
        for call_id in live:
            self._route(self.core.cancelled((replica, call_id), now))
        if live:
            log.info("shared scheduler: replica %s forgotten, %d call(s) of it cancelled",
                     replica, len(live))

    def expired(self, now: float, lease_s: float) -> list[str]:
        """Replicas not heard from for ``lease_s`` seconds (forget them). Compared as
        :meth:`lease_due` computes it, so a timer set for that time finds them expired."""
        return [r for r, seen in self._seen.items() if now >= seen + lease_s]

    def touch(self, replica: str, now: float) -> None:
        if replica in self._seen:
            self._seen[replica] = now

    def lease_due(self, lease_s: float) -> float | None:
        """When the next lease runs out if nobody is heard from (None: no replica)."""
        return min(self._seen.values()) + lease_s if self._seen else None

    # -- events ----------------------------------------------------------------------------
    def apply(self, replica: str, session: int, events: Iterable[Event], now: float) -> bool:
        """Apply ``replica``'s events in order; False (nothing applied) if ``session`` is not
        its current one: the replica must say hello again."""
        if not self.knows(replica, session):
            return False
        self._seen[replica] = now
        live = self._live[replica]
        for event in events:
            op, subject, arg = event
            try:
                if op == "submit":
                    self._submit(replica, subject, now)
                elif op == "adopt":
                    self._adopt(replica, subject, arg, now)
                elif op == "healthy":
                    self._route(self.core.healthy(subject, now))
                elif op == "rate_limited":
                    until, status = arg
                    self._route(self.core.rate_limited(subject, now, until, status))
                else:
                    own = self._alias[replica].get(subject, subject)  # the core's name of it
                    if op in ("finished", "cancelled"):
                        live.discard(own)
                        self._ended(replica, own)
                    if op == "cancelled":
                        self._route(self.core.cancelled((replica, own), now))
                        continue
                    method = self._ops[op]
                    args = (now,) if arg is None else (now, arg)
                    self._route(method((replica, own), *args))
            except (KeyError, ValueError, ConfigError):
                self.ignored += 1   # it ended here first, or the scheduler restarted
        return True

    def _submit(self, replica: str, view: CallView, now: float) -> None:
        """A call (or a lease: granted at once, or refused with a Fail, never queued)."""
        cid = (replica, view.call_id)
        lease = isinstance(view.call_id, LeaseToken)
        if lease and self.waiting():
            self._route([Fail(cid, FailWhy.OVERLOADED, "a call waits for a slot: no lease now")])
            return
        self._live[replica].add(view.call_id)
        actions = self.core.submit(replace(view, call_id=cid), now)
        if isinstance(view.call_id, LeaseToken):
            if any(isinstance(a, Grant) and a.call_id == cid for a in actions):
                self._idle[replica].add(view.call_id)
            elif not any(isinstance(a, Fail) and a.call_id == cid for a in actions):
                self._live[replica].discard(view.call_id)
                actions += self.core.cancelled(cid, now)  # it would wait: a lease never does
                actions.append(Fail(cid, FailWhy.OVERLOADED, "no slot free for a lease now"))
        self._route(actions)

    def _adopt(self, replica: str, token: LeaseToken, view: CallView, now: float) -> None:
        """The replica placed the call ``view`` in its lease ``token``: the slot is the
        call's now (KeyError if the lease is not an idle one of the replica's)."""
        self._idle[replica].remove(token)
        cid = (replica, token)
        self._alias[replica][view.call_id] = token
        self._adopted[replica][token] = view.call_id
        # The core holds the lease as a call: it becomes this call, its view (tokens, query:
        # for the policy, and for what the predictors learn when it finishes) and its slot
        # held again as the call's (its predicted prefill and end, in the prefill gate). The
        # core has no public way to re-describe a running call; this is the one place that does.
        c = self.core._calls[cid]
        c.view = replace(view, call_id=cid)
        assert c.endpoint is not None
        ep = self.core.endpoint(c.endpoint)
        c.service_s = predicted_service_s(c.view, ep.view(now, True))
        ep.release(cid, now)
        ep.hold(c.view, c.service_s, now)

    def _ended(self, replica: str, own: Any) -> None:
        """Forget what tied ``own`` (the core's name of a call of ``replica``) to a lease."""
        self._idle[replica].discard(own)
        call = self._adopted[replica].pop(own, None)
        if call is not None:
            self._alias[replica].pop(call, None)

    def waiting(self) -> bool:
        """Some call waits for a slot (queued or parked) anywhere."""
        running = sum(len(self.core.endpoint(n).running) for n in self.core.endpoints)
        return len(self.core) > running

    def lease_size(self, replica: str, now: float, cap: int) -> int:
        """Leases ``replica`` may hold now: its share (over the replicas) of the idle leases
        and of the slots a lease would be granted now (free, on an available endpoint with
        nothing queued and its prefill gate open), at most ``cap``; none while a call waits
        for want of a slot (parked, or queued where no slot is free: a lease may hold it)."""
        if cap <= 0 or replica not in self._sessions:
            return 0
        gate, chunk = self.core.dispatcher.prefill_slots, self.core.dispatcher.prefill_chunk_tokens
        running = queued = free = 0
        for name in self.core.endpoints:
            ep = self.core.endpoint(name)
            running += len(ep.running)
            queued += len(ep.queue)
            if ep.queue and ep.free_slots() <= 0:
                return 0
            if ep.available(now) and not ep.queue and ep.prefill_gate_open(now, gate, chunk):
                free += max(ep.free_slots(), 0)
        if len(self.core) > running + queued:   # parked calls
            return 0
        idle = sum(len(held) for held in self._idle.values())
        return min(cap, (free + idle) // len(self._sessions))

    def idle_leases(self, replica: str) -> int:
        return len(self._idle.get(replica, ()))

    def advance(self, now: float) -> None:
        self._route(self.core.advance(now))

    def take(self, replica: str) -> list[Action]:
        """The actions waiting for ``replica`` (with its own call ids), oldest first."""
        mail = self._mail.get(replica)
        if not mail:
            return []
        self._mail[replica] = []
        return mail

    def has_mail(self, replica: str) -> bool:
        return bool(self._mail.get(replica))

    def _route(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Retired):
                continue  # endpoints are registered by replicas and never removed here
            owner, own = cast(tuple[str, Any], action.call_id)  # ids are (replica, n) here
            mail = self._mail.get(owner)
            if mail is None:
                continue  # a forgotten replica's call: cancelled with it
            call_id = self._adopted[owner].get(own, own)  # a call in a lease: the call's id
            if isinstance(action, Fail):
                self._live[owner].discard(own)
                self._ended(owner, own)
                mail.append(replace(action, call_id=call_id))
            elif isinstance(action, Grant):
                mail.append(replace(action, call_id=call_id))

    # -- reads -----------------------------------------------------------------------------
    def hints(self, now: float) -> Hints:
        lengths = self.core.output_lengths.kinds()
        return Hints(self.core.mean_call_s, tuple(lengths.items()),
                     tuple(self.core.snapshot(now)))
