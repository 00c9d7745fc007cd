"""The service on Ray Serve: N replicas of the same ASGI app, all placing through one scheduler.

Each Serve replica (a Ray actor process) builds its agent with a
:class:`~fleetcall.distributed.pool.RayPool` on the shared scheduler actor and serves
:func:`fleetcall.service.app.create_app` behind Ray Serve's HTTP proxy (a late-bound
``@serve.ingress`` deployment: the app is built in the replica, on its loop). The app's
lifespan is the service's own (runs cancelled at shutdown), then the orchestrator and the pool
are closed. ``fleetcall serve --ray --replicas N`` is :func:`serve_main`.

    ray start --head --num-cpus 8                                  # or let the command start one
    fleetcall serve --ray --replicas 4 --pool pool.toml --port 8080

A :class:`Recipe` says how a replica builds its agent: the user's ``--app module:attribute``
(its factory makes its own ``RayPool``: with no arguments but the endpoints, it finds the
scheduler this command started), or the parallelqa demo on the endpoints of a pool config.
With ``--pool emulated`` (the demo's default) the command itself serves emulated GPUs over
HTTP on 127.0.0.1 for the replicas (one machine: every replica must reach the same endpoints).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetcall.distributed.actor import DEFAULT_NAME, NAMESPACE, import_ray, start_scheduler
from fleetcall.errors import ConfigError
from fleetcall.ports import free_port
from fleetcall.router.config import EndpointConfig, PoolConfig

__all__ = ["Recipe", "check_scale", "deploy", "hosted_endpoints", "serve_main"]

APP_NAME = "fleetcall"

log = logging.getLogger("fleetcall.distributed")


@dataclass(frozen=True, slots=True)
class Recipe:
    """How each replica builds its agent and app (picklable: it travels to the replicas)."""

    app: str | None = None                     # "module:attribute" (the user's agent), or ...
    pool: PoolConfig | None = None             # ... the demo on these endpoints
    scheduler: str = DEFAULT_NAME              # the shared scheduler actor's name
    namespace: str = NAMESPACE
    token: str | None = None                   # bearer token the service requires
    max_in_flight: int | None = None
    name: str = "fleetcall"                    # the agent's model name (OpenAI facade)
    scheduler_options: dict[str, Any] = field(default_factory=dict)  # RayPool keywords
    log_level: str | None = None               # `fleetcall serve --log-level` (None: info)

    async def build(self) -> tuple[Any, Any]:
        """``(orchestrator, pool)`` of one replica, on its loop. The replica's logging is
        configured first as ``fleetcall serve`` configures its own
        (:func:`fleetcall.cli.serve.configure_logging` at ``log_level``: fleetcall's loggers
        on the replica's stderr, which Ray keeps in the worker's log file), after the
        ``app`` module is imported, so that its own logging setup stands as it does there."""
        from fleetcall.cli.serve import build_app, configure_logging, load_app
        spec = load_app(self.app) if self.app is not None else None
        configure_logging(self.log_level)
        log.debug("Serve replica (pid %d) building its agent: %s, scheduler %r, log level %s",
                  os.getpid(), f"app {self.app}" if self.app is not None else "the demo",
                  self.scheduler, self.log_level or "info")
        if spec is not None:
            return await build_app(spec)
        if self.pool is None:
            raise ConfigError("a Recipe needs app= or pool=")
        from fleetcall.demos import parallelqa
        from fleetcall.distributed.pool import RayPool
        from fleetcall.executor.orchestrator import Orchestrator
        pool = RayPool.from_config(self.pool, scheduler=self.scheduler, namespace=self.namespace,
                                   **self.scheduler_options)
        return Orchestrator(tools=[parallelqa.make_search()], llm=pool), pool

    async def asgi_app(self) -> Any:
        """The service app of one replica; closing its lifespan closes the agent too."""
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from fleetcall.service.app import create_app
        orchestrator, pool = await self.build()
        fleet = create_app(orchestrator, pool=pool, token=self.token,
                           max_in_flight=self.max_in_flight, name=self.name)

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            try:
                async with fleet.router.lifespan_context(fleet):
                    yield
            finally:
                await orchestrator.aclose()
                if pool is not None:
                    await pool.aclose()

        return Starlette(routes=[Mount("/", app=fleet)], lifespan=lifespan)


def check_scale(replicas: int | None, autoscaling: dict[str, Any] | None,
                replica_cpus: float) -> None:
    """ConfigError naming the problem unless exactly one of ``replicas`` (an int >= 1) and
    ``autoscaling`` (Ray Serve's ``autoscaling_config``: a dict of its known options, valid
    for it) is given, and ``replica_cpus`` is a finite number >= 0. Imports Ray Serve's config
    (not Ray's runtime) for ``autoscaling``."""
    if (replicas is None) == (autoscaling is None):
        raise ConfigError("give either replicas or autoscaling (Ray Serve's autoscaling_config)")
    if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, int)
                                 or replicas < 1):
        raise ConfigError(f"--replicas must be an integer >= 1, got {replicas!r}")
    if isinstance(replica_cpus, bool) or not isinstance(replica_cpus, (int, float)) \
            or not math.isfinite(replica_cpus) or replica_cpus < 0:
        raise ConfigError(f"--replica-cpus must be a finite number >= 0, got {replica_cpus!r}")
    if autoscaling is not None:
        _check_autoscaling(autoscaling)


def _check_autoscaling(autoscaling: object) -> None:
    if not isinstance(autoscaling, dict):
        raise ConfigError(f"--autoscaling wants a JSON object, got {autoscaling!r}")
    import_ray()
    from pydantic import ValidationError
    from ray.serve.config import AutoscalingConfig

    unknown = sorted(set(autoscaling) - set(AutoscalingConfig.model_fields))
    if unknown:  # Ray Serve ignores them silently: a typo would go unnoticed
        raise ConfigError(f"--autoscaling: unknown option(s) {', '.join(map(repr, unknown))}; "
                          f"Ray Serve knows {', '.join(sorted(AutoscalingConfig.model_fields))}")
    try:
        AutoscalingConfig.model_validate(autoscaling)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'autoscaling'}: {err['msg']}"
            for err in exc.errors())
        raise ConfigError(f"--autoscaling: {problems}") from None


def deployment(recipe: Recipe, *, replicas: int | None = 1,
               autoscaling: dict[str, Any] | None = None, replica_cpus: float = 0.5) -> Any:
    """The Serve application: a deployment of ``replicas`` (or autoscaled) replicas serving
    ``recipe``'s app. Imports Ray Serve. ConfigError for a bad scale (:func:`check_scale`;
    ``autoscaling`` replaces ``replicas``)."""
    check_scale(None if autoscaling is not None else replicas, autoscaling, replica_cpus)
    import_ray()
    from ray import serve

    @serve.ingress()
    class FleetcallService:
        """One replica: its agent and app, built on the replica's loop."""

        def __init__(self, recipe: Recipe) -> None:
            self.recipe = recipe

        async def __serve_build_asgi_app__(self) -> Any:
            return await self.recipe.asgi_app()

    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": replica_cpus},
                               "name": "FleetcallService"}
    if autoscaling is not None:
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = replicas
    return serve.deployment(**options)(FleetcallService).bind(recipe)


def deploy(recipe: Recipe, *, host: str = "127.0.0.1", port: int = 8000,
           replicas: int | None = 1, autoscaling: dict[str, Any] | None = None,
           replica_cpus: float = 0.5) -> None:
    """Start Serve's proxy on ``host:port`` and deploy (blocks until the replicas are up;
    Ray must be initialised)."""
    from ray import serve
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(recipe, replicas=replicas, autoscaling=autoscaling,
                         replica_cpus=replica_cpus), name=APP_NAME, route_prefix="/")


@contextlib.asynccontextmanager
async def hosted_endpoints(gpus: Sequence[str], model: str, responder: Any, *,
                           host: str = "127.0.0.1", slots: int = 8
                           ) -> AsyncIterator[list[EndpointConfig]]:
    """Emulated GPUs served over HTTP by this process (uvicorn on its loop), one per GPU named,
    answering with ``responder``; yields their endpoint configs (tagged ``call-metadata``, so
    a script responder learns each call's kind)."""
    import uvicorn

    from fleetcall.sim.emulator import EmulatedEndpoint
    from fleetcall.sim.fronts import create_app

    class QuietServer(uvicorn.Server):
        """Leaves SIGINT/SIGTERM to the caller (the command's own stop handlers)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    endpoints, servers, tasks, configs = [], [], [], []
    try:
        for i, gpu in enumerate(gpus):
            endpoint = EmulatedEndpoint(gpu, model, name=f"{gpu}-{i}", responder=responder)
            endpoints.append(endpoint)
            sock = socket.create_server((host, 0))
            port = sock.getsockname()[1]
            server = QuietServer(uvicorn.Config(create_app(endpoint), log_level="warning",
                                                lifespan="off"))
            servers.append(server)
            tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
            configs.append(EndpointConfig(
                name=endpoint.name, base_url=f"http://{host}:{port}/v1", model=endpoint.model_name,
                gpu=gpu, tp=endpoint.deployment.tp, slots=slots, tags=["call-metadata"]))
        for server in servers:
            while not server.started:
                await asyncio.sleep(0.01)
        yield configs
    finally:
        for server in servers:
            server.should_exit = True
        for task in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        for endpoint in endpoints:
            await endpoint.aclose()




async def serve_main(recipe: Recipe, *, host: str, port: int, replicas: int | None,
                     autoscaling: dict[str, Any] | None, replica_cpus: float,
                     demo_gpus: Sequence[str] = (), demo_model: str = "",
                     ready: Any = print) -> None:
    """``fleetcall serve --ray``: (host the demo's emulated GPUs,) start the shared scheduler,
    deploy, serve until SIGINT/SIGTERM, then delete the deployment and stop the scheduler.
    Ray must be initialised."""
    ray = import_ray()
    from ray import serve
    async with contextlib.AsyncExitStack() as stack:
        if demo_gpus:
            from fleetcall.demos import parallelqa
            from fleetcall.router.pool import script_responder
            configs = await stack.enter_async_context(hosted_endpoints(
                demo_gpus, demo_model, script_responder(parallelqa.respond), host="127.0.0.1"))
            recipe = _with_endpoints(recipe, configs)
        pool = recipe.pool or PoolConfig(endpoints=[])
        scheduler = start_scheduler(pool.policy, pool.policy_options, retry=pool.retry,
                                    breaker=pool.breaker,
                                    max_queued_per_slot=pool.max_queued_per_slot,
                                    name=recipe.scheduler, namespace=recipe.namespace)
        stack.callback(ray.kill, scheduler)
        port = port or free_port(host)
        stack.push_async_callback(asyncio.to_thread, serve.shutdown)
        await asyncio.to_thread(deploy, recipe, host=host, port=port, replicas=replicas,
                                autoscaling=autoscaling, replica_cpus=replica_cpus)
        ready(f"fleetcall serve: on Ray Serve ({_scale(replicas, autoscaling)}, one shared "
              f"scheduler) at http://{host}:{port}")
        await _until_stopped()


def _with_endpoints(recipe: Recipe, configs: list[EndpointConfig]) -> Recipe:
    from dataclasses import replace
    base = recipe.pool or PoolConfig(endpoints=[])
    return replace(recipe, pool=base.model_copy(update={"endpoints": configs}))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _scale(replicas: int | None, autoscaling: dict[str, Any] | None) -> str:
    return f"autoscaling {autoscaling}" if autoscaling is not None else f"{replicas} replica(s)"


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_cli(args: Any, token: str | None) -> int:
    """``fleetcall serve --ray ...`` (arguments already checked by ``fleetcall serve``, but
    those of Ray); exit code 0 after a stop signal, 2 for bad arguments."""
    import json
    import sys

    from fleetcall.demos.common import EMBEDDED_GPUS, EMBEDDED_MODEL
    from fleetcall.router.config import load_pool_config
    try:
        if not args.ray:
            raise ConfigError("--replicas and --autoscaling need --ray")
        autoscaling = json.loads(args.autoscaling) if args.autoscaling is not None else None
        if autoscaling is not None and (not isinstance(autoscaling, dict) or args.replicas is not None):
            raise ConfigError("--autoscaling wants a JSON object, and replaces --replicas")
        replicas = None if autoscaling is not None else (
            1 if args.replicas is None else args.replicas)   # (0 is no replica, not the default)
        check_scale(replicas, autoscaling, args.replica_cpus)   # before a cluster starts
        ray = import_ray()
    except (ConfigError, json.JSONDecodeError) as exc:
        print(f"fleetcall serve: error: {exc}", file=sys.stderr)
        return 2
    demo = args.app is None and args.pool in (None, "emulated")
    pool = None if args.app is not None or demo else load_pool_config(args.pool)
    inside = [e.name for e in (pool.endpoints if pool is not None else []) if e.emulated]
    if inside:
        print(f"fleetcall serve: error: with --ray every replica must reach the same endpoints, "
              f"and emulated:// ones ({', '.join(inside)}) live inside each process; use http "
              "endpoints (e.g. fleetcall emulate), or --pool emulated (served over HTTP by this "
              "command)", file=sys.stderr)
        return 2
    recipe = Recipe(app=args.app, pool=pool, token=token, max_in_flight=args.max_in_flight,
                    name=args.name, log_level=args.log_level)
    try:
        ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError) as exc:   # no cluster there, or no address at all
        print(f"fleetcall serve: error: --ray-address {args.ray_address!r}: {_first_line(exc)}",
              file=sys.stderr)
        return 2
    try:
        asyncio.run(serve_main(recipe, host=args.host, port=args.port, replicas=replicas,
                               autoscaling=autoscaling, replica_cpus=args.replica_cpus,
                               demo_gpus=EMBEDDED_GPUS if demo else (),
                               demo_model=EMBEDDED_MODEL,
                               ready=lambda text: print(text, flush=True)))
    finally:
        ray.shutdown()
    print("fleetcall serve: stopped", flush=True)
    return 0
