"""``emulated://GPU/model?tp=N`` endpoints for the pool: the simulator's side of the backend seam.

Registered as the ``emulated`` entry point of the ``fleetcall.backends`` group (pyproject.toml),
so :class:`~fleetcall.router.pool.EndpointPool` finds it by URL scheme without importing the
simulator (see :mod:`fleetcall.router.backend`). The pool's backend options configure it:

``responder``          what answers say (:mod:`fleetcall.sim.responders`; default: echo)
``faults``             :class:`~fleetcall.sim.emulator.Faults` injected at every endpoint
``seed``               fault draws of the endpoint at index ``i`` use ``seed * 1000 + i``
``stream_interval_s``  engine seconds between streamed chunks (coarser simulates faster)
``direct``             False: calls go through the HTTP transport too, SSE and all (default
                       True: streamed calls take the in-process path, :mod:`fleetcall.sim.direct`)
"""

from __future__ import annotations

import httpx

from fleetcall.errors import ConfigError
from fleetcall.router.backend import BackendSpec
from fleetcall.router.client import EndpointClient
from fleetcall.router.config import EndpointConfig, parse_emulated_url
from fleetcall.sim.direct import DirectClient
from fleetcall.sim.emulator import EmulatedEndpoint, Faults
from fleetcall.sim.engine import DEFAULT_STREAM_INTERVAL_S, EngineStats
from fleetcall.sim.fronts import EmulatorTransport

__all__ = ["EmulatedBackend"]

_OPTIONS = ("responder", "faults", "seed", "stream_interval_s", "direct")


class EmulatedBackend:
    """One in-process emulated GPU endpoint behind the pool's transport seam."""

    call_metadata = True  # script responders read the call context from the body's metadata

    def __init__(self, spec: BackendSpec) -> None:
        unknown = sorted(set(spec.options) - set(_OPTIONS))
        if unknown:
            raise ConfigError(f"emulated endpoints take the options {', '.join(_OPTIONS)}; "
                              f"unknown: {', '.join(unknown)}")
        config, options = spec.config, spec.options
        target = parse_emulated_url(config.base_url)
        faults = options.get("faults")
        if faults is not None and not isinstance(faults, Faults):
            raise ConfigError(f"faults must be a fleetcall.sim.emulator.Faults, got "
                              f"{type(faults).__name__}")
        interval = options.get("stream_interval_s")
        self.endpoint = EmulatedEndpoint(
            target.gpu, target.model, tp=config.tp, name=config.name,
            responder=options.get("responder"), faults=faults,
            seed=int(options.get("seed") or 0) * 1000 + spec.index,
            block_tokens=spec.block_tokens,
            stream_interval_s=DEFAULT_STREAM_INTERVAL_S if interval is None else float(interval))
        self.transport = EmulatorTransport(self.endpoint)
        self.gpu, self.model, self.tp = target.gpu, target.model, config.tp
        self.capacity_tokens: int | None = self.endpoint.deployment.kv_capacity_tokens()
        self.direct = bool(options.get("direct", True))

    def make_client(self, config: EndpointConfig, http: httpx.AsyncClient, *,
                    timeout_s: float) -> EndpointClient:
        """The pool's client for this endpoint: in-process (:class:`DirectClient`) unless the
        ``direct`` option is False."""
        if self.direct:
            return DirectClient(config, http, self.endpoint, timeout_s=timeout_s)
        return EndpointClient(config, http, timeout_s=timeout_s)

    def stats(self) -> EngineStats:
        return self.endpoint.engine.stats()

    async def aclose(self) -> None:
        await self.endpoint.aclose()
