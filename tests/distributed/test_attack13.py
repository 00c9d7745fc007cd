"""Attacks on the Ray scale-out (issue 13): bad input to ``fleetcall serve --ray`` is a clear
error before any cluster starts; the direct connection to the scheduler actor survives hostile
or broken peers (no Ray: both ends in this process, over 127.0.0.1)."""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from fleetcall.cli.serve import main as serve_main
from fleetcall.distributed.channel import LocalChannel
from fleetcall.distributed.remote import RETRY_MAX_S, RemoteCore
from fleetcall.distributed.server import SchedulerServer
from fleetcall.errors import ConfigError
from fleetcall.llm.base import complete
from fleetcall.router.core import SchedulerCore
from fleetcall.router.pool import EndpointPool
from fleetcall.distributed import wire
from fleetcall.distributed.wire import TOKEN_BYTES, WireClient, WireServer

from tests.router.helpers import MODEL, ask, vrun

ray = pytest.importorskip("ray")

LIMIT_S = 20.0   # generous: nothing here should take more than a fraction of a second


# -- fleetcall serve --ray: bad scale ----------------------------------------------------------
@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster start is a failure here: bad arguments must be refused before it."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("ray.init reached: the bad argument was not refused")
    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.parametrize(("argv", "says"), [
    (["--replicas", "0"], "--replicas must be an integer >= 1, got 0"),
    (["--replicas", "-3"], "--replicas must be an integer >= 1, got -3"),
    (["--autoscaling", '{"min_replicas": -1}'], "min_replicas"),
    (["--autoscaling", '{"min_replicas": "x"}'], "min_replicas"),
    (["--autoscaling", '{"min_replicas": 3, "max_replicas": 1}'], "max_replicas"),
    (["--autoscaling", '{"max_replica": 4}'], "unknown option(s) 'max_replica'"),
    (["--replica-cpus", "nan"], "--replica-cpus must be a finite number >= 0"),
    (["--replica-cpus", "inf"], "--replica-cpus must be a finite number >= 0"),
    (["--replica-cpus", "-1"], "--replica-cpus must be a finite number >= 0"),
])
def test_serve_ray_bad_scale_is_a_clear_error_exit_2_before_any_cluster(
        argv: list[str], says: str, no_cluster: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(["--ray", "--port", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fleetcall serve: error: --"), err
    assert says in err, err
    assert "Traceback" not in err


def test_deployment_refuses_a_bad_scale_given_through_the_api() -> None:
    from fleetcall.distributed.serve import Recipe, deployment
    recipe = Recipe(app="x:y")
    with pytest.raises(ConfigError, match="replicas"):
        deployment(recipe, replicas=0)
    with pytest.raises(ConfigError, match="unknown option"):
        deployment(recipe, autoscaling={"min_replica": 1})


@pytest.mark.parametrize(("argv", "says"), [
    (["--core-calls", "0", "--no-ray"], "--core-calls must be >= 1, got 0"),
    (["--endpoints", "0", "--no-ray"], "--endpoints must be >= 1, got 0"),
    (["--slots", "0", "--no-ray"], "--slots must be >= 1, got 0"),
    (["--calls", "0"], "--calls must be >= 1, got 0"),
    (["--trips", "-1"], "--trips must be >= 1, got -1"),
    (["--drivers", "0"], "--drivers must be >= 1, got 0"),
    (["--window", "0"], "--window must be >= 1, got 0"),
    (["--queued", "-1"], "--queued must be >= 0, got -1"),
    (["--lease-slots", "-1"], "--lease-slots must be >= 0, got -1"),
    (["--seconds", "nan"], "--seconds must be a finite number > 0, got nan"),
])
def test_bench_ray_overhead_bad_options_are_named_exit_2_before_any_cluster(
        argv: list[str], says: str, no_cluster: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a ZeroDivisionError / IndexError / ValueError traceback (or, with Ray, a
    cluster started first)."""
    from fleetcall.bench.cli import main as bench_main
    with pytest.raises(SystemExit) as exited:
        bench_main(["ray-overhead", *argv])
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"fleetcall bench ray-overhead: {says}\n"


# -- the direct connection: hostile or broken peers ---------------------------------------------
class Target:
    """An echo, and a wait until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def echo(self, *args: Any) -> tuple[Any, ...]:
        return args

    async def wait(self) -> str:
        await self.release.wait()
        return "released"


@asynccontextmanager
async def served() -> AsyncIterator[tuple[WireServer, list[str]]]:
    """A server, and what reaches the loop's exception handler meanwhile (must stay empty)."""
    loop = asyncio.get_running_loop()
    unhandled: list[str] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(
        f"{context.get('message')}: {context.get('exception')!r}"))
    server = WireServer(Target(), ("echo", "wait"))
    await server.start(["127.0.0.1"])
    try:
        yield server, unhandled
    finally:
        await server.aclose()


def _frame(obj: object) -> bytes:
    payload = pickle.dumps(obj)
    return struct.pack("!I", len(payload)) + payload


@pytest.mark.parametrize("request_", [
    (0, ["unhashable"], ()),          # a method name that is no string
    (0, "echo", 5),                   # arguments that are no tuple
    ("zero", "echo", ()),             # an id that is no int
    [0, "echo", ()],                  # a list, not a tuple
])
def test_a_malformed_request_after_the_token_closes_that_connection_only(request_: object) -> None:
    async def main() -> None:
        async with served() as (server, unhandled):
            assert server.port is not None
            good = await WireClient.connect("127.0.0.1", server.port, server.token)
            try:
                waiting = asyncio.ensure_future(good.call("wait"))
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(server.token + _frame(request_))
                assert await reader.read() == b""        # closed, nothing answered
                writer.close()
                assert await good.call("echo", 1) == (1,)  # the replica's connection is fine
                assert not waiting.done()
                server.target.release.set()              # type: ignore[attr-defined]
                assert await waiting == "released"
            finally:
                await good.aclose()
            assert unhandled == []                       # no crash of the connection's handler
    asyncio.run(asyncio.wait_for(main(), LIMIT_S))


def test_silent_connections_cannot_hold_the_actors_sockets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections that never show the token are closed oldest first past a cap (not only at
    the auth timeout, made long here), and a replica still gets in and is served."""
    monkeypatch.setattr(wire, "AUTH_TIMEOUT_S", 3600.0)
    extra = 20

    async def main() -> None:
        async with served() as (server, unhandled):
            assert server.port is not None
            silent = [await asyncio.open_connection("127.0.0.1", server.port)
                      for _ in range(wire.MAX_UNAUTHENTICATED + extra)]
            # the oldest `extra` are closed by the server, the rest held (at most the cap)
            for reader, _ in silent[:extra]:
                assert await reader.read() == b""
            assert server.evicted == extra
            good = await WireClient.connect("127.0.0.1", server.port, server.token)
            try:
                assert await good.call("echo", "hi") == ("hi",)
            finally:
                await good.aclose()
            assert len(server._unauthenticated) <= wire.MAX_UNAUTHENTICATED
            for _, writer in silent:
                writer.close()
            while server._unauthenticated:             # the server sees them go
                await asyncio.sleep(0.01)
            # a wrong token is closed at once, and is no eviction
            evicted = server.evicted   # (the replica's own connection made room too: 21)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(bytes(TOKEN_BYTES))
            assert await reader.read() == b""
            writer.close()
            assert server.evicted == evicted
            assert unhandled == []
    asyncio.run(asyncio.wait_for(main(), LIMIT_S))


@pytest.mark.parametrize(("address", "says"), [
    ("not-an-address", "Invalid address format"),
    ("127.0.0.1:notaport", "Unable to parse port number"),
])
def test_serve_ray_bad_address_is_a_clear_error_exit_2(
        address: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: Ray's ValueError as a traceback, exit 1 (no cluster is reached: these fail
    while the address is parsed)."""
    assert serve_main(["--ray", "--ray-address", address, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fleetcall serve: error: --ray-address '{address}': "), err
    assert says in err and "Traceback" not in err


def test_serve_ray_no_cluster_at_the_address_is_a_clear_error_exit_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``--ray-address auto`` with no cluster running: Ray's ConnectionError (stood in for
    here: a real ``auto`` would join any cluster this machine runs)."""
    def no_cluster(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Could not find any running Ray instance. Please specify ...\nmore")
    monkeypatch.setattr(ray, "init", no_cluster)
    assert serve_main(["--ray", "--ray-address", "auto", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err == ("fleetcall serve: error: --ray-address 'auto': Could not find any running "
                   "Ray instance. Please specify ...\n")


# -- a replica whose channel fails other than as a lost scheduler --------------------------------
class BrokenChannel(LocalChannel):
    """A channel with a bug: every request raises AttributeError (as a RayChannel on a handle
    that is no actor handle did), until fixed."""

    def __init__(self, server: SchedulerServer) -> None:
        super().__init__(server)
        self.broken = True

    async def _call(self, method: str, *args: Any) -> Any:
        if self.broken:
            raise AttributeError(f"'object' object has no attribute {method!r}")
        return await super()._call(method, *args)


def test_a_channel_that_raises_a_bug_places_locally_and_no_call_hangs(
        caplog: pytest.LogCaptureFixture) -> None:
    """Before: the replica's send task died of the AttributeError and the call waited for a
    grant for ever (here: the virtual clock's 60 s)."""
    async def main() -> tuple[list[str], int, int]:
        server = SchedulerServer("least-busy", clock=asyncio.get_running_loop().time)
        channel = BrokenChannel(server)
        core = RemoteCore(channel, SchedulerCore("least-busy"), replica="r", rpc_timeout_s=0.5)
        pool = EndpointPool.emulated(["A100-80G"], MODEL, core=core,
                                     responder=lambda body: "hi")
        try:
            done = [await asyncio.wait_for(complete(pool, ask(f"c{i}", query=f"q{i}",
                                                              max_tokens=5)), 60)
                    for i in range(2)]
            channel.broken = False                      # fixed: it rejoins
            await asyncio.sleep(RETRY_MAX_S * 2)
            done.append(await asyncio.wait_for(complete(pool, ask("c2", query="q2",
                                                                  max_tokens=5)), 60))
            return [c.text for c in done], core.switches, core.rejoins
        finally:
            await pool.aclose()
            await server.aclose()

    with caplog.at_level(logging.ERROR, logger="fleetcall.distributed"):
        texts, switches, rejoins = vrun(main())
    assert texts == ["hi", "hi", "hi"]
    assert switches >= 1 and rejoins == 1
    assert "failed unexpectedly" in caplog.text and "AttributeError" in caplog.text


def test_a_ray_pool_on_something_that_is_no_scheduler_is_refused_at_once() -> None:
    from fleetcall.distributed.pool import RayPool
    with pytest.raises(ConfigError, match="scheduler: the shared scheduler actor's name or handle"):
        RayPool.emulated(["A100-80G"], MODEL, scheduler=object(), responder=lambda body: "hi")


# -- a replica on another node whose direct connection a firewall drops ---------------------------
class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        return self.fn(*args)


class FakeActor:
    """An actor handle's face (``.method.remote(...)`` awaited) over an in-process server; it
    says it listens on another node, at an address whose SYNs are dropped."""

    def __init__(self, server: SchedulerServer) -> None:
        self.server = server
        self.hello = _Method(server.hello)
        self.exchange = _Method(server.exchange)
        self.poll = _Method(server.poll)
        self.listen = _Method(self._listen)

    async def _listen(self) -> tuple[str, str, int, bytes]:
        return "another-node", "198.51.100.7", 4321, bytes(TOKEN_BYTES)


def test_a_direct_connection_that_hangs_falls_back_within_the_hello_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the connection attempt waited 5 s, the whole of the replica's round-trip
    timeout, at every hello, so a replica behind a firewall that drops the port never joined
    (it placed locally for ever, the herd back). Now it gives up within a second, goes by
    actor calls, and does not try that address again."""
    from types import SimpleNamespace

    from fleetcall.distributed.actor import RayChannel
    attempts: list[tuple[str, int]] = []

    async def dropped(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        attempts.append((host, port))
        await asyncio.sleep(3600)      # a SYN nobody answers

    monkeypatch.setattr(asyncio, "open_connection", dropped)

    async def main() -> None:
        server = SchedulerServer("least-busy", clock=asyncio.get_running_loop().time)
        channel = RayChannel(FakeActor(server))
        channel._ray = SimpleNamespace(get_runtime_context=lambda: SimpleNamespace(
            get_node_id=lambda: "this-node"), exceptions=channel._ray.exceptions)
        try:
            for session in (1, 2):
                async with asyncio.timeout(5.0):            # RemoteCore's rpc_timeout_s
                    reply = await channel.hello("r", session, [])
                assert reply.known and not channel.wired
        finally:
            await channel.aclose()
            await server.aclose()
        assert attempts == [("198.51.100.7", 4321)]          # tried once, not at every hello
    vrun(main())


# -- tools as Ray tasks: errors that cannot come back as themselves ------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """The module's one local cluster (only the tests that ask for it start it: they come
    last, since it stays up to the module's end and ``fleetcall serve --ray`` starts its own)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


class Weird(Exception):
    """An exception whose ``__init__`` takes two arguments: it does not unpickle."""

    def __init__(self, code: int, where: str) -> None:
        super().__init__(f"code {code}")
        self.lock = threading.Lock()   # nor pickle


def weird(n: int) -> int:
    """Raises an exception that cannot travel back as itself."""
    raise Weird(n, "here")


def interrupted(n: int) -> int:
    """Raises KeyboardInterrupt in the task."""
    raise KeyboardInterrupt


@pytest.mark.ray
def test_a_ray_tool_error_that_cannot_travel_is_a_clean_observation(cluster: None) -> None:
    """Before: the observation was Ray's wrapper, its remote traceback and terminal colour
    codes (``RayTaskError: \\x1b[36mray::weird()\\x1b[39m (pid=..., ip=...) File ...``)."""
    from fleetcall import Orchestrator, ScriptedLLM
    from fleetcall.distributed.tools import ray_tool
    tools = [ray_tool(num_cpus=1)(weird), ray_tool(num_cpus=1)(interrupted)]
    plan = "1. weird(7)\n2. interrupted(1)\n3. join()"
    result = asyncio.run(Orchestrator(tools=tools, llm=ScriptedLLM([plan, "Finish(done)"]))
                         .run("go", deadline=120))
    errors = [task.error for task in result.tasks]
    assert errors[0] == "RayTaskFailed: tests.distributed.test_attack13.Weird: code 7"
    # Ray reports a KeyboardInterrupt raised in a task as a cancelled task
    assert errors[1] is not None and errors[1].startswith("RayTaskFailed: ")
    for error in errors:
        assert error is not None and "\x1b" not in error and "File " not in error
