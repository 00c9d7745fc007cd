"""The shared scheduler in a Ray actor, and the channel replicas reach it by.

:func:`start_scheduler` starts (or finds) the named actor: a
:class:`~fleetcall.distributed.server.SchedulerServer` made a Ray async actor, restarted by
Ray if it dies (``max_restarts``; its state is lost then, and replicas rejoin it, see
:mod:`fleetcall.distributed.remote`). It needs no CPU of its own (``num_cpus=0``): its work is
bookkeeping between round trips. :class:`RayChannel` is the replicas' side: its requests go
over a direct connection to the actor (:mod:`fleetcall.distributed.wire`: a round trip of a
few tenths of a millisecond, where an actor call costs about one), whose address and secret
it learns by an actor call; if that connection cannot be made, each request is an actor
method call. Any Ray error, or the connection lost, is a
:class:`~fleetcall.distributed.remote.SchedulerUnreachable`.

Ray is imported here only, when one of these is used (the ``[ray]`` extra).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from fleetcall.distributed.remote import SchedulerUnreachable
from fleetcall.distributed.server import DEFAULT_LEASE_S, DEFAULT_LEASE_SLOTS, Reply, SchedulerServer
from fleetcall.distributed.shared import Event
from fleetcall.distributed.wire import WireClient, WireServer
from fleetcall.errors import ConfigError
from fleetcall.router.config import BreakerConfig, RetryConfig
from fleetcall.router.state import EndpointSpec

__all__ = ["DEFAULT_NAME", "NAMESPACE", "RayChannel", "SchedulerActor", "import_ray",
           "start_scheduler"]

log = logging.getLogger("fleetcall.distributed")

DEFAULT_NAME = "fleetcall-scheduler"   # the actor's name ...
NAMESPACE = "fleetcall"                # ... in this Ray namespace (Serve replicas run in their own)
CONNECT_TIMEOUT_S = 1.0   # longest a direct connection may take to open (a LAN's take ms): a
                          # port a firewall drops must not use up the hello's round-trip timeout


def import_ray() -> ModuleType:
    """``ray``, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as exc:  # the [ray] extra is not installed
        raise ConfigError("this needs Ray: pip install 'fleetcall[ray]'") from exc
    return ray


def start_scheduler(policy: str = "slack", policy_options: dict[str, Any] | None = None, *,
                    retry: RetryConfig | None = None, breaker: BreakerConfig | None = None,
                    max_queued_per_slot: int = 64, endpoints: Sequence[EndpointSpec] = (),
                    name: str = DEFAULT_NAME, namespace: str = NAMESPACE,
                    max_restarts: int = -1, detached: bool = False,
                    lease_s: float = DEFAULT_LEASE_S, speed: float = 1.0,
                    lease_slots: int = DEFAULT_LEASE_SLOTS) -> Any:
    """The handle of the shared scheduler actor ``name`` (in ``namespace``), started now with
    these settings unless it is already running (then it is returned as it is).

    max_restarts: how often Ray restarts it when its process dies (-1: always).
    detached: outlive this process (else the actor lives as long as the process that started
        it; stop it with ``ray.kill(handle)``).
    lease_slots: most slots a replica may hold ahead of its calls, to place them without a
        round trip (0: every call waits a round trip for its grant; see
        :mod:`fleetcall.distributed.lease`).
    speed: >1 only for benchmarks on a dilated clock (:mod:`fleetcall.bench.dilation`): the actor
        decides on ``time.time() * speed``; its replicas' :class:`RayChannel` pass the same speed.
    """
    ray = import_ray()
    actor = ray.remote(SchedulerActor)
    return actor.options(name=name, namespace=namespace, get_if_exists=True,
                         lifetime="detached" if detached else None, max_restarts=max_restarts,
                         max_task_retries=0, num_cpus=0).remote(
        policy, policy_options, retry=retry, breaker=breaker,
        max_queued_per_slot=max_queued_per_slot, endpoints=list(endpoints), lease_s=lease_s,
        clock=None if speed == 1.0 else _Dilated(speed), speed=speed, lease_slots=lease_slots)


class SchedulerActor(SchedulerServer):
    """The :class:`SchedulerServer` as the Ray actor runs it: it also answers its replicas'
    requests over a direct connection (:meth:`listen`)."""

    WIRE_METHODS = ("hello", "exchange", "poll")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wire: WireServer | None = None

    async def listen(self) -> tuple[str, str, int, bytes]:
        """Where replicas reach it directly: (its Ray node id, the node's address, the port,
        the token to show); listening from the first call on, on 127.0.0.1 and the node's
        address."""
        ray = import_ray()
        node_ip = ray.util.get_node_ip_address()
        if self._wire is None:
            self._wire = WireServer(self, self.WIRE_METHODS)
        port = await self._wire.start(sorted({"127.0.0.1", node_ip}))
        return ray.get_runtime_context().get_node_id(), node_ip, port, self._wire.token

    def stats(self) -> dict[str, Any]:
        """:meth:`SchedulerServer.stats`, and ``direct_requests``: those of them that came
        over direct connections."""
        return {**super().stats(), "direct_requests": 0 if self._wire is None
                else self._wire.requests}

    async def aclose(self) -> None:
        if self._wire is not None:
            await self._wire.aclose()
            self._wire = None
        await super().aclose()


class _Dilated:
    """``time.time() * speed`` (a picklable clock for the actor)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed

    def __call__(self) -> float:
        return time.time() * self.speed


def find_scheduler(name: str = DEFAULT_NAME, namespace: str = NAMESPACE) -> Any:
    """The running scheduler actor's handle; ConfigError if there is none."""
    ray = import_ray()
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError as exc:
        raise ConfigError(f"no shared scheduler named {name!r} in Ray namespace {namespace!r}; "
                          "start one with fleetcall.distributed.start_scheduler()") from exc


class RayChannel:
    """A replica's way to the scheduler actor (see :class:`~fleetcall.distributed.remote.SchedulerChannel`).

    Requests go over a direct connection (:mod:`fleetcall.distributed.wire`) made at each
    ``hello`` unless the one open is still good, or as actor calls if it cannot be made within
    :data:`CONNECT_TIMEOUT_S` (then not tried again at that address: a restarted actor listens
    on another port) (``direct=False``: always actor calls).

    Times: the actor decides on ``time.time()``; this loop's times are converted by the
    offset between the two clocks, read at each conversion. ``speed``: the actor's (see
    :func:`start_scheduler`), for replicas on a dilated loop running as fast."""

    def __init__(self, handle: Any, speed: float = 1.0, *, direct: bool = True) -> None:
        self.handle = handle
        self.speed = speed
        self.direct = direct
        self._ray = import_ray()
        self._errors = self._ray.exceptions.RayError
        self._wire: WireClient | None = None   # the direct connection (None: actor calls)
        self._unreachable: set[tuple[str, int]] = set()  # addresses a connection failed to

    @property
    def wired(self) -> bool:
        """True while requests go over the direct connection."""
        return self._wire is not None and not self._wire.lost

    def clock_offset(self) -> float:
        return time.time() * self.speed - asyncio.get_running_loop().time()

    async def _call(self, method: str, *args: Any) -> Reply:
        try:
            if self._wire is not None:
                wired: Reply = await self._wire.call(method, *args)
                return wired
            reply: Reply = await getattr(self.handle, method).remote(*args)
        except self._errors as exc:
            raise SchedulerUnreachable(f"{type(exc).__name__}: {_first_line(exc)}") from exc
        return reply

    async def _connect(self) -> None:
        """Make the direct connection unless a good one is open on this loop; without one
        requests are actor calls. SchedulerUnreachable if the actor does not answer."""
        loop = asyncio.get_running_loop()
        if self._wire is not None and not self._wire.lost and self._wire.loop is loop:
            return
        if self._wire is not None and self._wire.loop is loop:
            await self._wire.aclose()
        self._wire = None   # (one of another loop went with it)
        if not self.direct:
            return
        try:
            node, node_ip, port, token = await self.handle.listen.remote()
        except self._errors as exc:
            raise SchedulerUnreachable(f"{type(exc).__name__}: {_first_line(exc)}") from exc
        here = self._ray.get_runtime_context().get_node_id()
        host = "127.0.0.1" if node == here else node_ip
        if (host, port) in self._unreachable:
            return   # it failed before: actor calls, without waiting for it again
        try:
            self._wire = await WireClient.connect(host, port, token, timeout_s=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            self._unreachable.add((host, port))
            log.warning("cannot connect to the shared scheduler at %s:%d (%s): placing "
                        "through actor calls (slower)", host, port,
                        str(exc) or "no answer in time")

    async def hello(self, replica: str, session: int, specs: Sequence[EndpointSpec]) -> Reply:
        await self._connect()
        return await self._call("hello", replica, session, list(specs))

    async def exchange(self, replica: str, session: int, seq: int,
                       events: Sequence[Event]) -> Reply:
        return await self._call("exchange", replica, session, seq, list(events))

    async def poll(self, replica: str, session: int, timeout_s: float) -> Reply:
        return await self._call("poll", replica, session, timeout_s)

    async def aclose(self) -> None:
        """Close the direct connection (if it is of this loop)."""
        wire, self._wire = self._wire, None
        if wire is not None and wire.loop is asyncio.get_running_loop():
            await wire.aclose()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
