"""The backend seam: endpoints that are not reached over the network (as httpx's transports).

An ``http(s)://`` endpoint needs nothing but the pool's HTTP client. An endpoint whose URL has
another scheme (``emulated://A100/llama-3.1-8b``) is served in-process by a :class:`Backend`:
an httpx transport the pool routes the endpoint's requests to, plus the facts the scheduler
needs (prefix-cache capacity, GPU, model, tensor parallelism). Backends are found by URL
scheme, first in this process's registry (:func:`register_backend`), then among the installed
packages' ``fleetcall.backends`` entry points, e.g. fleetcall's own::

    [project.entry-points."fleetcall.backends"]
    emulated = "fleetcall.sim.backend:EmulatedBackend"

An entry point names a factory: ``factory(BackendSpec) -> Backend``. The router never imports
the simulator: the emulated endpoint plugs in here.

A backend may also hand the pool the client its calls go through
(:class:`ClientBackend`: ``make_client(config, http, timeout_s=...) -> EndpointClient``, e.g. one
that reaches an in-process server without HTTP); without it the pool uses an
:class:`~fleetcall.router.client.EndpointClient` over the shared HTTP client, and the transport
serves every request. Either way the transport stays registered (health probes use it).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx

from fleetcall.errors import ConfigError
from fleetcall.router.client import EndpointClient
from fleetcall.router.config import EndpointConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "BackendFactory",
    "ClientBackend",
    "BackendSpec",
    "backend_schemes",
    "register_backend",
    "resolve_backend",
    "unregister_backend",
]

ENTRY_POINT_GROUP = "fleetcall.backends"


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """What a backend factory is given for one endpoint."""

    config: EndpointConfig    # the endpoint, as configured (its base_url names the backend)
    index: int                # its position among the pool's endpoints (to derive seeds)
    block_tokens: int         # tokens per prefix-cache block, as the pool hashes prompts
    options: Mapping[str, Any] = field(default_factory=dict)  # the pool's backend options
    # (the emulated backend reads responder, faults, seed, stream_interval_s)


@runtime_checkable
class Backend(Protocol):
    """An endpoint served in-process. ``gpu``/``model`` are catalog names (or "unknown"/None),
    ``capacity_tokens`` the tokens its prefix cache holds (None: unknown)."""

    transport: httpx.AsyncBaseTransport   # serves the endpoint's requests
    gpu: str
    model: str | None
    tp: int
    capacity_tokens: int | None
    call_metadata: bool                   # wants the call context in the body's ``metadata``

    def stats(self) -> object | None:
        """Engine counters for ``EndpointPool.engine_stats()`` (None: none)."""
        ...

    async def aclose(self) -> None:
        """Stop serving (the pool calls it once, when the endpoint is gone or it closes)."""
        ...


@runtime_checkable
class ClientBackend(Backend, Protocol):
    """A backend that also makes the client the pool's calls to it go through."""

    def make_client(self, config: EndpointConfig, http: httpx.AsyncClient, *,
                    timeout_s: float) -> EndpointClient:
        """The endpoint's client (``timeout_s``: its default per-attempt limit, seconds)."""
        ...


BackendFactory = Callable[[BackendSpec], Backend]

_REGISTERED: dict[str, BackendFactory] = {}  # scheme -> factory registered in this process


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Serve ``scheme://`` endpoints with ``factory`` in this process (before entry points)."""
    _REGISTERED[scheme.lower()] = factory


def unregister_backend(scheme: str) -> None:
    _REGISTERED.pop(scheme.lower(), None)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name.lower(): ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_schemes() -> list[str]:
    """Every scheme a backend is known for (registered or installed)."""
    return sorted({*_REGISTERED, *_entry_points()})


def resolve_backend(url: str) -> BackendFactory | None:
    """The backend factory for ``url``'s scheme; None for http(s) (no backend needed).

    Raises ConfigError naming the scheme and the known ones when nothing serves it."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return None
    factory = _REGISTERED.get(scheme)
    if factory is not None:
        return factory
    entry = _entry_points().get(scheme)
    if entry is None:
        raise ConfigError(
            f"no backend serves {scheme}:// endpoints (known: {', '.join(backend_schemes()) or 'none'}); "
            f"install the package that provides it (fleetcall's own: pip install -e . registers "
            f"its '{ENTRY_POINT_GROUP}' entry points), or call register_backend()")
    loaded = entry.load()
    if not callable(loaded):
        raise ConfigError(f"entry point {entry.value!r} for {scheme}:// is not callable")
    return loaded
