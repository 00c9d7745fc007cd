"""Nothing of Ray is imported unless it is used: fleetcall, its pool and the shared scheduler's
pure parts run without the [ray] extra (a subprocess in which ``import ray`` fails)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CODE = textwrap.dedent("""
    import sys
    sys.modules["ray"] = None          # as if the [ray] extra were not installed
    import asyncio
    from fleetcall import ConfigError, EndpointPool, Orchestrator, ScriptedLLM, tool
    from fleetcall.distributed import LocalChannel, RemoteCore, SchedulerServer, ray_tool
    from fleetcall.router.core import SchedulerCore

    @tool
    def double(x: int) -> int:
        '''Twice x.'''
        return 2 * x

    async def main() -> str:
        server = SchedulerServer("least-busy", clock=asyncio.get_running_loop().time)
        core = RemoteCore(LocalChannel(server), SchedulerCore("least-busy"), replica="solo")
        pool = EndpointPool.emulated(["A100-80G"], "llama-3.2-1b", core=core,
                                     responder=lambda body: "Finish(4)")
        async with Orchestrator(tools=[double], llm=ScriptedLLM(["1. double(2)\\n2. join()"]),
                                joiner_llm=pool) as orch:
            result = await orch.run("twice 2?")
        await pool.aclose()
        await server.aclose()
        return f"{result.status.value} {result.answer} via {sorted(server.shared.replicas)}"

    print(asyncio.run(main()))
    def heavy(x: int) -> int:
        '''Heavy.'''
        return x
    try:
        ray_tool(heavy)
    except ConfigError as exc:
        print("refused:", exc)
    try:
        tool(ray=dict(num_cpus=2))(heavy)
    except ConfigError as exc:
        print("refused:", exc)
    try:
        tool(ray=2)
    except ConfigError as exc:
        print("refused:", exc)
    print("plain:", type(tool(heavy)).__name__, "ray" in sys.modules and sys.modules["ray"] is not None)
""")


def test_fleetcall_and_the_shared_scheduler_run_without_ray() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "answered 4 via ['solo']",
        "refused: this needs Ray: pip install 'fleetcall[ray]'",
        "refused: this needs Ray: pip install 'fleetcall[ray]'",
        "refused: tool(ray=...) takes a dict of Ray task options, like dict(num_cpus=2); "
        "got int 2",
        "plain: FunctionTool False",
    ]


def test_using_fleetcall_does_not_import_ray() -> None:
    code = ("import sys, fleetcall, fleetcall.distributed, fleetcall.bench.herd\n"
            "import fleetcall.bench.herd_ray, fleetcall.bench.ray_overhead, fleetcall.cli\n"
            "from fleetcall.distributed import RayPool, ray_tool, start_scheduler\n"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
