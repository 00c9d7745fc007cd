"""What a real-clock benchmark needs from live endpoints over HTTP, and the LLMs it drives.

- :class:`LiveEndpoint` -- one OpenAI-compatible server the benchmark sends calls to (started
  by it, or given), with the GPU it emulates; :func:`settle` waits until every endpoint is idle
  and empties its prefix cache (vLLM's ``POST /reset_prefix_cache``), so each run starts cold;
  :func:`busy_seconds` and :func:`check_speed` read ``/metrics``.
- The three ways a call reaches the endpoints, each an :class:`~fleetcall.llm.base.LLM`:
  :func:`direct_clients` (bare clients in turn, no scheduling: the baseline of the overhead),
  :func:`router_client` (one client of an external router), :func:`http_pool` (fleetcall's
  pool over HTTP, with or without the GPUs' profiles).
- :class:`CallerTimed` -- measures each call's time to first token where the caller sits (send
  to first text), the same way whatever serves it: a pool's own ``ttft_s`` starts when it
  grants the slot, not when the call was made, so a call held in the pool would look faster
  than one queued in a router.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fleetcall.errors import ConfigError, FleetcallError
from fleetcall.llm.base import LLM, Chunk, LLMRequest, closing
from fleetcall.router.client import EndpointClient, RoutingTransport, http_transport
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.router.pool import EndpointPool
from fleetcall.router.predict import UNKNOWN

__all__ = ["CallerTimed", "LiveEndpoint", "busy_seconds", "check_speed", "direct_clients",
           "http_client", "http_pool", "router_client", "settle"]

# Long generations on a loaded cluster take minutes: attempts are not cut short (queries are
# bounded by the replay's timeout instead). Loop seconds.
ATTEMPT_TIMEOUT_S = 3600.0
CONNECT_TIMEOUT_WALL_S = 30.0   # a TCP connect on a busy machine, wall seconds
SETTLE_TIMEOUT_WALL_S = 60.0    # for the endpoints to finish what an earlier run left, wall s
_SETTLE_POLL_WALL_S = 0.05
# Calls in flight are not limited by the client's connection pool (httpx keeps 100 by default).
_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=256)


@dataclass(frozen=True, slots=True)
class LiveEndpoint:
    """A server reached over HTTP: ``url`` is its root (``http://127.0.0.1:8001``, no ``/v1``)."""

    name: str
    url: str
    gpu: str        # the GPU it serves as (catalog name), told to a pool that knows profiles
    tp: int = 1


def http_client(speed: float) -> httpx.AsyncClient:
    """One client for every call of a run, without a connection limit. Timeouts are in loop
    seconds (the connect timeout is scaled so it stays 30 wall seconds at any speed)."""
    transport = RoutingTransport(lambda: http_transport(limits=_LIMITS))
    timeout = httpx.Timeout(ATTEMPT_TIMEOUT_S, connect=CONNECT_TIMEOUT_WALL_S * speed)
    return httpx.AsyncClient(transport=transport, timeout=timeout)


# ---- the LLMs a benchmark drives ----------------------------------------------------------------


class _InTurn:
    """Bare clients, one call each in turn: the same HTTP work as a router without one."""

    def __init__(self, clients: Sequence[EndpointClient]) -> None:
        self._clients, self._next = list(clients), 0

    def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        client = self._clients[self._next % len(self._clients)]
        self._next += 1
        return client.stream(request)


def _config(name: str, url: str, model: str, gpu: str = UNKNOWN, tp: int = 1,
            slots: int = 16) -> EndpointConfig:
    return EndpointConfig(name=name, base_url=f"{url}/v1", model=model, gpu=gpu, tp=tp,
                          slots=slots)


def direct_clients(endpoints: Sequence[LiveEndpoint], model: str, http: httpx.AsyncClient) -> LLM:
    """Calls straight to the endpoints, in turn (round robin without a router)."""
    return _InTurn([EndpointClient(_config(e.name, e.url, model), http,
                                   timeout_s=ATTEMPT_TIMEOUT_S) for e in endpoints])


def router_client(name: str, url: str, model: str, http: httpx.AsyncClient) -> LLM:
    """Calls to an external OpenAI-compatible router at ``url`` (root or ``.../v1``)."""
    root = url.rstrip("/").removesuffix("/v1")
    return EndpointClient(_config(name, root, model), http, timeout_s=ATTEMPT_TIMEOUT_S)


def http_pool(endpoints: Sequence[LiveEndpoint], model: str, http: httpx.AsyncClient, *,
              policy: str, options: dict[str, object] | None = None, slots: int = 16,
              gpus_known: bool = True, speed: float = 1.0) -> EndpointPool:
    """fleetcall's pool over HTTP to ``endpoints``; ``gpus_known=False`` tells it no GPU (it
    learns each endpoint's speed from measurements only, as an external router must)."""
    configs = [_config(e.name, e.url, model, e.gpu if gpus_known else UNKNOWN, e.tp, slots)
               for e in endpoints]
    retry = RetryConfig(attempt_timeout_s=ATTEMPT_TIMEOUT_S,
                        connect_timeout_s=CONNECT_TIMEOUT_WALL_S * speed)
    return EndpointPool(configs, policy=policy, policy_options=dict(options or {}), retry=retry,
                        http=http)


class CallerTimed:
    """Wraps an LLM: the final chunk's ``info["ttft_s"]`` becomes the caller's time from the call
    to its first text (loop seconds), ``info["total_s"]`` to its end; what the serving side
    measured stays as ``endpoint_ttft_s``."""

    def __init__(self, llm: LLM) -> None:
        self._llm = llm

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        start, first = loop.time(), None
        async with closing(self._llm.stream(request)) as chunks:
            async for chunk in chunks:
                if first is None and chunk.text:
                    first = loop.time() - start
                if chunk.info is not None:
                    now = loop.time() - start
                    info = dict(chunk.info)
                    info["endpoint_ttft_s"] = info.get("ttft_s")
                    info["ttft_s"] = now if first is None else first
                    info["total_s"] = now
                    chunk = replace(chunk, info=info)
                yield chunk


# ---- endpoint metrics --------------------------------------------------------------------------


async def _metrics(http: httpx.AsyncClient, endpoint: LiveEndpoint) -> dict[str, float]:
    """Sample name -> value (summed over labels) of the endpoint's ``/metrics``; {} if it has
    none."""
    try:
        response = await http.get(f"{endpoint.url}/metrics")
    except httpx.HTTPError as exc:
        raise FleetcallError(f"endpoint {endpoint.name} ({endpoint.url}): /metrics failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


async def busy_seconds(http: httpx.AsyncClient,
                       endpoints: Sequence[LiveEndpoint]) -> dict[str, float] | None:
    """Endpoint name -> emulated-GPU seconds its engine has had work so far; None unless every
    endpoint reports it (a fleetcall emulator does)."""
    out = {}
    for endpoint in endpoints:
        value = (await _metrics(http, endpoint)).get("fleetcall_emulator_busy_seconds_total")
        if value is None:
            return None
        out[endpoint.name] = value
    return out


async def check_speed(http: httpx.AsyncClient, endpoints: Sequence[LiveEndpoint],
                      speed: float) -> None:
    """ConfigError if an endpoint reports a speed other than ``speed`` (one that reports none,
    not a fleetcall emulator, is taken at its word)."""
    for endpoint in endpoints:
        reported = (await _metrics(http, endpoint)).get("fleetcall_emulator_speed")
        if reported is not None and abs(reported - speed) > 1e-9 * speed:
            raise ConfigError(f"endpoint {endpoint.name} ({endpoint.url}) runs at speed "
                              f"{reported:g} but the benchmark's --speed is {speed:g}: its "
                              "figures would be scaled wrongly")


async def settle(http: httpx.AsyncClient, endpoints: Sequence[LiveEndpoint],
                 speed: float) -> bool:
    """Wait until no endpoint runs or queues a request, then empty their prefix caches.
    Returns whether every cache was reset (an endpoint without the route is left as it is);
    FleetcallError if they are still busy after 60 wall seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT_WALL_S * speed
    for endpoint in endpoints:
        while True:
            metrics = await _metrics(http, endpoint)
            busy = (metrics.get("vllm:num_requests_running", 0.0)
                    + metrics.get("vllm:num_requests_waiting", 0.0))
            if busy == 0:
                break
            if loop.time() > deadline:
                raise FleetcallError(f"endpoint {endpoint.name} still has {busy:g} requests "
                                     f"{SETTLE_TIMEOUT_WALL_S:g} s after the last run")
            await asyncio.sleep(_SETTLE_POLL_WALL_S * speed)
    reset = True
    for endpoint in endpoints:
        response = await http.post(f"{endpoint.url}/reset_prefix_cache")
        reset = reset and response.status_code == 200
    return reset
