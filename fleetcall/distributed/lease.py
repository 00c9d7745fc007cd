"""Slot leases: how a replica places a call without a round trip to the shared scheduler.

A round trip to the scheduler actor costs a few tenths of a millisecond over the replica's
direct connection (:mod:`fleetcall.distributed.wire`; 1-2 ms as a Ray actor call); a call that
waits for its grant pays it on its critical path. With ``lease_slots`` > 0 (off by default),
while the endpoints have room the shared scheduler lets each replica hold a few **leases**:
slots granted ahead of any call, by the same core, policy and global state as every grant. A
lease is, to the core, a call of the replica (its id a :class:`LeaseToken`, kind ``"lease"``)
that holds a slot.

**The price, measured.** The lease's slot is chosen by the global view, but which of its calls
takes which lease is the replica's choice, on its own view: as the replicas grow in number that
is independent placement again (trace1, 500 queries at 0.04 q/s, 4 leases a replica: shared
p95 187-188 s without leases at K = 1, 2, 4; with them 214, 247, 276 s and SLO 98.2, 95.0,
91.0%, worse than independent replicas from K = 2). Hence off by default: a call then waits one
round trip for its grant, and placement stays global.

* **Size.** Every reply of the server says how many leases the replica may hold
  (:attr:`~fleetcall.distributed.server.Reply.lease`): its share of the free slots (free slots
  and idle leases of all replicas, over the replicas), at most the server's ``lease_slots``;
  none while a call waits for want of a slot (a waiting call gets a slot before a lease).
* **Asking.** The replica submits tokens up to that size with its other events. A token the
  core cannot grant at once is cancelled there and answered with a ``Fail`` (a lease never
  queues, so it never stands in a call's way); the replica then asks for none for
  :data:`QUIET_S`.
* **Using.** A call submitted while the replica holds a granted lease is granted at once, by the
  replica, on the lease's endpoint (of the endpoints it holds leases on, the one the pool's
  policy picks for the call on the replica's own view);
  the replica reports it (``adopt``: the token and the call's view) with its next batch, and
  the server makes the lease's slot that call's (its view, so the predictors learn from the
  call's own tokens). From then on the call is the replica's like any other (its events name
  it by the replica's id; a retry is placed by the shared core).
* **Returning.** A replica gives back idle leases past its size (a ``cancelled`` event): the
  server asks for them by answering a smaller size, waking the replica's long poll to say so
  if it has nothing else to tell. Only the replica ends its leases, so a lease is never both
  used and taken back; a replica that leaves (a new session, a lapsed lease of its own) loses
  them with its other calls.

A call that came to the scheduler while leases held the free slots waits in a queue until they
are given back (a round trip); the freed slot then takes it if the policy moves queued calls to
idle endpoints (``slack`` does; the baselines ``least-busy`` and ``rr-fcfs`` never do, and it
waits where it was queued).

This module is the replica's side: :class:`LeaseBook`. The server's is in
:class:`~fleetcall.distributed.shared.SharedCore`.
"""

from __future__ import annotations

from collections import Counter

from fleetcall.distributed.shared import Event, LeaseToken
from fleetcall.router.views import CallView

__all__ = ["LeaseBook", "LeaseToken"]

QUIET_S = 0.05             # after a lease was refused, ask for none for this long
LEASE_PRIORITY = 1 << 30   # a lease is the least urgent of calls (it never waits, but if it did)


class LeaseBook:
    """A replica's leases in one session: tokens asked for, granted, and the size allowed."""

    def __init__(self) -> None:
        self.size = 0                                # leases the server lets it hold now
        self._asked: set[LeaseToken] = set()         # submitted, not answered yet
        self._held: dict[LeaseToken, str] = {}       # granted and idle: token -> endpoint
        self._next = 0
        self._quiet_until = -float("inf")            # no asking before (server time)

    @property
    def held(self) -> int:
        return len(self._held)

    def clear(self) -> None:
        """The session ended: its leases went with it (the server cancels them)."""
        self._asked.clear()
        self._held.clear()
        self.size = 0

    def endpoints(self) -> set[str]:
        """The endpoints it holds an idle lease on."""
        return set(self._held.values())

    def take(self, endpoint: str | None = None) -> tuple[LeaseToken, str] | None:
        """An idle lease for a call, on ``endpoint`` (None: where it holds most), or None."""
        if not self._held:
            return None
        if endpoint is None:
            endpoint = Counter(self._held.values()).most_common(1)[0][0]
        token = next((t for t, ep in self._held.items() if ep == endpoint), None)
        if token is None:
            return None
        del self._held[token]
        return token, endpoint

    def granted(self, token: LeaseToken, endpoint: str) -> bool:
        """The server granted ``token`` on ``endpoint``; False if it is no longer wanted."""
        if token not in self._asked:
            return False
        self._asked.discard(token)
        self._held[token] = endpoint
        return True

    def refused(self, token: LeaseToken, now_server: float) -> None:
        """The server could not grant ``token``: ask for none for :data:`QUIET_S`."""
        self._asked.discard(token)
        self._quiet_until = now_server + QUIET_S

    def plan(self, now_server: float) -> list[Event]:
        """Events bringing the leases to :attr:`size`: submits of new tokens, or cancels of
        idle ones past it. A lease is a call of no prompt and one output token to the core:
        the least it can hold of the prefill gate, a slot that frees soon to the policy's eye
        (a call that takes it is held again as itself)."""
        events: list[Event] = []
        while len(self._asked) + len(self._held) < self.size and now_server >= self._quiet_until:
            token = LeaseToken(self._next)
            self._next += 1
            self._asked.add(token)
            events.append(Event("submit", CallView(token, "", "lease", 0, 1, None, 0.0,
                                                   LEASE_PRIORITY, now_server, ())))
        while self._held and len(self._asked) + len(self._held) > self.size:
            token = next(iter(self._held))
            del self._held[token]
            events.append(Event("cancelled", token))
        return events

    def release_all(self) -> list[Event]:
        """Cancels of every lease held or asked for (the pool is closing)."""
        events = [Event("cancelled", t) for t in (*self._asked, *self._held)]
        self._asked.clear()
        self._held.clear()
        self.size = 0
        return events
