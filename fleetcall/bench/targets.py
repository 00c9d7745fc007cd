"""The targets of a real-clock benchmark: the ways calls reach the same live endpoints.

A :class:`Target` is one of fleetcall's policies (its pool over HTTP, told the GPUs or not), an
external router the benchmark starts (``sglang:POLICY``, ``vllm:POLICY``), a running router
(its URL), or ``direct`` (bare clients in turn: the baseline of the overhead measurement).
:func:`serving` readies one for a run (a fresh router process, stopped afterwards) and
:func:`open_llm` gives the :class:`~fleetcall.llm.base.LLM` its calls go through.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from fleetcall.bench.live import LiveEndpoint, direct_clients, http_pool, router_client
from fleetcall.bench.procs import Child, Children, router_kind, start_router
from fleetcall.errors import ConfigError
from fleetcall.llm.base import LLM
from fleetcall.router.dispatcher import dispatcher_names
from fleetcall.router.pool import EndpointPool

if TYPE_CHECKING:
    from fleetcall.bench.scheduler import Setup

__all__ = ["DIRECT", "Running", "Target", "open_llm", "parse_targets", "serving"]


@dataclass(frozen=True, slots=True)
class Target:
    """One way the calls reach the endpoints."""

    label: str                  # its column in the tables
    kind: str                   # "pool" | "router" (started here) | "url" (running) | "direct"
    policy: str                 # fleetcall policy, or the router's
    gpus_known: bool = True     # pool only: told the endpoints' GPUs
    router: str | None = None   # "sglang" / "vllm" for kind "router"; the URL for kind "url"


def parse_targets(policies: Sequence[str], routers: Sequence[str], pool_gpus: str) -> list[Target]:
    """fleetcall policies x ``pool_gpus`` (known | unknown | both), then the routers:
    ``KIND:POLICY`` (started here) or ``http(s)://...`` (running). ConfigError on a bad one or
    one named twice."""
    unknown = sorted(set(policies) - set(dispatcher_names()))
    if unknown:
        raise ConfigError(f"unknown policy {', '.join(unknown)}; choose from {', '.join(dispatcher_names())}")
    variants = {"known": (True,), "unknown": (False,), "both": (True, False)}[pool_gpus]
    targets = [Target(p if known else f"{p} (gpus unknown)", "pool", p, known)
               for p in policies for known in variants]
    for spec in routers:
        if spec.startswith(("http://", "https://")):
            targets.append(Target(spec, "url", "", router=spec))
            continue
        kind, sep, policy = spec.partition(":")
        if not sep:
            raise ConfigError(f"--router wants KIND:POLICY (e.g. sglang:cache_aware) or a URL, "
                              f"got {spec!r}")
        router_kind(kind, policy)
        targets.append(Target(f"{kind}:{policy}", "router", policy, router=kind))
    labels = [t.label for t in targets]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ConfigError(f"{', '.join(twice)} named twice (--policy / --router): each target runs "
                          "once a rate, in one column")
    return targets


DIRECT = Target("direct", "direct", "")  # bare clients in turn: no router, no pool


@dataclass(slots=True)
class Running:
    """A target ready to take calls: the router process, if one runs for it."""

    target: Target
    router: Child | None = None
    url: str | None = None


@contextmanager
def serving(children: Children, target: Target, endpoints: Sequence[LiveEndpoint]) -> Iterator[Running]:
    """The target for one run: a fresh router if it is one we start (stopped afterwards)."""
    if target.kind != "router":
        yield Running(target, url=target.router if target.kind == "url" else None)
        return
    assert target.router is not None
    child = start_router(children, target.router, target.policy, [e.url for e in endpoints])
    try:
        yield Running(target, child, child.url)
    finally:
        children.stop(child)


def open_llm(running: Running, endpoints: Sequence[LiveEndpoint], setup: Setup,
             http: httpx.AsyncClient, options: dict[str, Any],
             speed: float) -> tuple[LLM, EndpointPool | None]:
    """(the LLM the target's calls go through, what to close after: a pool or None)."""
    target = running.target
    if target.kind == "pool":
        pool = http_pool(endpoints, setup.model, http, policy=target.policy,
                         options=options.get(target.policy), slots=setup.slots,
                         gpus_known=target.gpus_known, speed=speed)
        return pool, pool
    if running.url is None:
        return direct_clients(endpoints, setup.model, http), None
    return router_client(target.label, running.url, setup.model, http), None


