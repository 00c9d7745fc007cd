"""fleetcall on a Ray cluster (the ``[ray]`` extra): one scheduler shared by many replicas,
tools as Ray tasks, the service on Ray Serve.

Nothing here imports Ray until it is used. The shared scheduler's bookkeeping
(:mod:`~fleetcall.distributed.shared`), its asyncio shell (:mod:`~fleetcall.distributed.server`)
and the replica's core client (:mod:`~fleetcall.distributed.remote`) are plain Python and run
in-process too (the herd benchmark, tests); :mod:`~fleetcall.distributed.actor` puts the server
in a Ray actor, :mod:`~fleetcall.distributed.pool` is the replica-side pool,
:mod:`~fleetcall.distributed.tools` runs tools as Ray tasks and
:mod:`~fleetcall.distributed.serve` deploys the service with Ray Serve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetcall._lazy import lazy_exports

if TYPE_CHECKING:
    from fleetcall.distributed.actor import RayChannel, find_scheduler, start_scheduler
    from fleetcall.distributed.pool import RayPool
    from fleetcall.distributed.remote import LocalChannel, RemoteCore, SchedulerUnreachable
    from fleetcall.distributed.server import SchedulerServer
    from fleetcall.distributed.tools import RayTaskFailed, RayTool, ray_tool

__all__ = ["LocalChannel", "RayChannel", "RayPool", "RayTaskFailed", "RayTool", "RemoteCore", "SchedulerServer",
           "SchedulerUnreachable", "find_scheduler", "ray_tool", "start_scheduler"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "RayChannel": "fleetcall.distributed.actor",
    "find_scheduler": "fleetcall.distributed.actor",
    "start_scheduler": "fleetcall.distributed.actor",
    "RayPool": "fleetcall.distributed.pool",
    "LocalChannel": "fleetcall.distributed.remote",
    "RemoteCore": "fleetcall.distributed.remote",
    "SchedulerUnreachable": "fleetcall.distributed.remote",
    "SchedulerServer": "fleetcall.distributed.server",
    "RayTaskFailed": "fleetcall.distributed.tools",
    "RayTool": "fleetcall.distributed.tools",
    "ray_tool": "fleetcall.distributed.tools",
})
