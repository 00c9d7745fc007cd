"""Helpers of the shared-scheduler tests: K replica pools over one set of emulated endpoints.

:func:`replicas` builds the endpoints once (in-process transports behind one HTTP client, so
every pool reaches the same engines) and K pools over them: ``shared`` pools place through one
in-process :class:`SchedulerServer` on the loop's clock (each a :class:`RemoteCore` over a
:class:`LocalChannel` the test can take down or point at a new server); otherwise each pool has
its own core, as separate routers do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fleetcall.distributed.remote import LocalChannel, RemoteCore
from fleetcall.distributed.server import SchedulerServer
from fleetcall.router.client import RoutingTransport, make_http_client
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.router.core import SchedulerCore
from fleetcall.router.pool import EndpointPool
from fleetcall.sim.emulator import EmulatedEndpoint
from fleetcall.sim.fronts import EmulatorTransport
from fleetcall.sim.responders import LengthsResponder
from tests.router.helpers import MODEL, NO_BACKOFF, now


@dataclass
class Herd:
    """What :func:`replicas` built."""

    pools: list[EndpointPool]
    endpoints: dict[str, EmulatedEndpoint]
    server: SchedulerServer | None = None
    channels: list[LocalChannel] = field(default_factory=list)

    def new_server(self, **kwargs: Any) -> SchedulerServer:
        """Stand for a restarted scheduler: a fresh server (no state) behind every channel."""
        self.server = make_server(**kwargs)
        for channel in self.channels:
            channel.server = self.server
        return self.server


def make_server(policy: str = "least-busy", clock: Callable[[], float] | None = None,
                **kwargs: Any) -> SchedulerServer:
    return SchedulerServer(policy, retry=NO_BACKOFF, clock=clock or now, **kwargs)


@contextlib.asynccontextmanager
async def replicas(k: int, *, shared: bool, names: tuple[str, ...] = ("a", "b"), slots: int = 1,
                   policy: str = "least-busy", rtt_s: float = 0.0, retry: RetryConfig = NO_BACKOFF,
                   server_clock: Callable[[], float] | None = None,
                   server_options: dict[str, Any] | None = None,
                   **core_kwargs: Any) -> AsyncIterator[Herd]:
    routing = RoutingTransport()
    endpoints = {}
    configs = []
    for name in names:
        endpoints[name] = EmulatedEndpoint("A100-80G", MODEL, name=name, responder=LengthsResponder())
        routing.add(f"{name}.test", EmulatorTransport(endpoints[name]))
        configs.append(EndpointConfig(name=name, base_url=f"http://{name}.test/v1", model=MODEL,
                                      gpu="A100-80G", slots=slots))
    http = make_http_client(routing, retry=retry)
    herd = Herd([], endpoints)
    if shared:
        herd.server = make_server(policy, server_clock, **(server_options or {}))
    for i in range(k):
        core = None
        if shared:
            assert herd.server is not None
            channel = LocalChannel(herd.server, rtt_s=rtt_s)
            herd.channels.append(channel)
            core = RemoteCore(channel, SchedulerCore(policy, retry=retry), replica=f"r{i}",
                              **core_kwargs)
        herd.pools.append(EndpointPool(configs, policy=policy, retry=retry, http=http, core=core))
    try:
        yield herd
    finally:
        for pool in herd.pools:
            await pool.aclose()
        if herd.server is not None:
            await herd.server.aclose()
        await http.aclose()
        for ep in endpoints.values():
            await ep.aclose()
