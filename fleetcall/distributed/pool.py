"""The replica-side pool: an :class:`~fleetcall.router.pool.EndpointPool` placed by the shared
scheduler actor.

``Orchestrator(tools, llm=RayPool.load("pool.toml"))`` is all a replica changes: every
replica with a ``RayPool`` on the same scheduler places its calls from one global view, while
it streams each call from the endpoint itself (tokens never pass through the actor), measures
it and reports the measurements, which teach the shared predictors. If the actor cannot be
reached, the replica places calls locally and rejoins when it is back
(:mod:`fleetcall.distributed.remote`).

    import ray
    from fleetcall import Orchestrator
    from fleetcall.distributed import RayPool, start_scheduler

    ray.init(address="auto")
    start_scheduler(policy="slack")                 # once, from the driver (else the first
    pool = RayPool.load("pool.toml")                # RayPool starts it, owned by its process)
    orch = Orchestrator(tools=[search], llm=pool)

All replicas must name the same endpoints (name, GPU, model, TP, slots): a replica whose
endpoint differs from the scheduler's under the same name is refused (logged; it places its
calls locally). Its endpoints cannot be removed while it runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fleetcall.distributed.actor import (
    DEFAULT_NAME,
    NAMESPACE,
    RayChannel,
    import_ray,
    start_scheduler,
)
from fleetcall.distributed.remote import RemoteCore
from fleetcall.errors import ConfigError
from fleetcall.router.config import BreakerConfig, EndpointConfig, RetryConfig
from fleetcall.router.core import SchedulerCore
from fleetcall.router.pool import EndpointPool

__all__ = ["RayPool"]


class RayPool(EndpointPool):
    """An :class:`EndpointPool` whose calls the shared scheduler actor places.

    scheduler: the actor's handle, or its name (found in ``namespace``, or started with this
        pool's policy, retry, breaker and admission settings if none runs); anything else is a
        ConfigError.
    replica: this replica's name (default: host, pid and a random suffix).
    rpc_timeout_s: a round trip not answered within this is a lost scheduler.
    speed: the scheduler's (:func:`~fleetcall.distributed.actor.start_scheduler`; benchmarks only).
    lease_slots: the scheduler's slot leases per replica, if this pool starts it (0: none;
        see :mod:`fleetcall.distributed.lease`).
    direct: reach the actor over a direct connection (:mod:`fleetcall.distributed.wire`;
        False: every request an actor call, about 1 ms more per call).
    Every other argument is :class:`EndpointPool`'s; ``policy`` and its settings also make
    the local core used while the actor is unreachable.
    """

    def __init__(self, endpoints: Iterable[EndpointConfig | dict[str, Any]], *,
                 scheduler: Any = DEFAULT_NAME, namespace: str = NAMESPACE,
                 replica: str | None = None, rpc_timeout_s: float = 5.0, poll_s: float = 5.0,
                 policy: str = "slack", policy_options: dict[str, Any] | None = None,
                 retry: RetryConfig | None = None, breaker: BreakerConfig | None = None,
                 max_queued_per_slot: int = 64, speed: float = 1.0, lease_slots: int = 0,
                 direct: bool = True, **pool_kwargs: Any) -> None:
        retry, breaker = retry or RetryConfig(), breaker or BreakerConfig()
        if not isinstance(scheduler, str) and not isinstance(scheduler, import_ray().actor.ActorHandle):
            raise ConfigError(f"scheduler: the shared scheduler actor's name or handle "
                              f"(start_scheduler(), find_scheduler()), got {scheduler!r}")
        if isinstance(scheduler, str):
            scheduler = start_scheduler(policy, policy_options, retry=retry, breaker=breaker,
                                        max_queued_per_slot=max_queued_per_slot, name=scheduler,
                                        namespace=namespace, speed=speed,
                                        lease_slots=lease_slots)
        self.scheduler = scheduler
        local = SchedulerCore(policy, policy_options, retry=retry, breaker=breaker,
                              max_queued_per_slot=max_queued_per_slot)
        self.remote = RemoteCore(RayChannel(scheduler, speed, direct=direct), local, replica=replica,
                                 rpc_timeout_s=rpc_timeout_s, poll_s=poll_s)
        super().__init__(endpoints, policy=policy, policy_options=policy_options, retry=retry,
                         breaker=breaker, max_queued_per_slot=max_queued_per_slot,
                         core=self.remote, **pool_kwargs)

    @property
    def replica(self) -> str:
        return self.remote.replica

    async def scheduler_stats(self) -> dict[str, Any]:
        """The shared scheduler's counters (requests, replicas, live calls, its incarnation)."""
        stats: dict[str, Any] = await self.scheduler.stats.remote()
        return stats
