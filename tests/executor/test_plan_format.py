"""``plan_format="auto"``: JSON where the planner's endpoints enforce JSON schemas, else text;
the context budget from the endpoints; prompts kept within it across replans (issue 9)."""

from __future__ import annotations

import pytest

from fleetcall import Orchestrator, RunStatus, ScriptedLLM, tool
from fleetcall.demos import cli, parallelqa
from fleetcall.llm.base import ModelInfo, model_info, prompt_tokens
from fleetcall.router.config import EndpointConfig, PoolConfig, load_pool_config, write_pool_config
from fleetcall.router.pool import EndpointPool
from tests.executor.conftest import vrun


def local_endpoint(name: str, **fields) -> EndpointConfig:
    return EndpointConfig(name=name, base_url="http://127.0.0.1:9/v1", model="SmolLM2-135M-Instruct",
                          tags=["local", "llama.cpp"], **fields)


def test_auto_is_text_for_a_model_that_says_nothing():
    orch = Orchestrator([], ScriptedLLM([]))
    assert (orch.plan_format, orch.joiner_format, orch.context_tokens) == ("text", "text", 8192)
    assert Orchestrator([], ScriptedLLM([]), plan_format="tool_call").plan_format == "tool_call"


def test_auto_is_json_for_a_pool_of_llama_cpp_servers(tmp_path):
    """The pool file `fleetcall local-pool` writes (and one written before it said json_schema:
    its endpoints' llama.cpp tag says it) makes `auto` plan in JSON, and sizes prompts to 2,048."""
    new = PoolConfig(endpoints=[local_endpoint("local-0", json_schema=True, context_tokens=2048)])
    old = PoolConfig(endpoints=[local_endpoint("local-0")])
    for config, context in ((new, 2048), (old, 8192)):
        path = write_pool_config(config, tmp_path / "local.toml")
        pool = EndpointPool.load(path)
        orch = Orchestrator([], pool)
        assert (orch.plan_format, orch.joiner_format, orch.context_tokens) == ("json", "json", context)
        assert isinstance(cli.demo_for_pool(parallelqa, load_pool_config(path)), cli.JsonPlanDemo)
    mixed = EndpointPool([local_endpoint("a"), EndpointConfig(name="b", base_url="http://10.0.0.1/v1", model="m")])
    assert model_info(mixed) == ModelInfo(False, None) and Orchestrator([], mixed).plan_format == "text"
    no = EndpointPool([local_endpoint("a", json_schema=False)])
    assert Orchestrator([], no).plan_format == "text"


def test_a_demo_on_a_json_pool_file_plans_in_json(tmp_path):
    path = write_pool_config(PoolConfig(endpoints=[local_endpoint("local-0", json_schema=True)]),
                             tmp_path / "pool.toml")
    demo = cli._check(cli._parser().parse_args(["parallelqa", "--pool", str(path)]))
    orch = demo.build(lambda responder: EndpointPool.load(path))
    assert orch.plan_format == "json" and orch.joiner_format == "json"


# -- replan prompts stay within the context ------------------------------------------------------
@tool
async def fetch(page: int) -> str:
    """A long page."""
    return f"page {page}: " + "lorem ipsum dolor sit amet " * 150


def replanning_script(rounds: int):
    plan = "\n".join(f"{i}. fetch({i})" for i in range(1, 7)) + "\n7. join()"
    return [plan, "Replan(need more pages)"] * rounds + [plan, "Finish(done)"]


@pytest.mark.parametrize("context", [None, 2048])
def test_replan_prompts_stay_within_the_models_context(context):
    """Six 4,000-character observations a round and four replans: the prompts used to grow until
    they overflowed (a 2,048-token llama.cpp context after one round; 8,192 after three)."""
    llm = ScriptedLLM(replanning_script(4))
    kwargs = {} if context is None else {"context_tokens": context}
    result = vrun(Orchestrator([fetch], llm, max_replans=4, planner_max_tokens=256, **kwargs).run("q"))
    assert result.status is RunStatus.ANSWERED and len(result.replans) == 4
    limit = context or 8192
    for request in llm.requests:
        answer_room = 256 if request.context.kind == "planner" else min(1024, limit // 4)
        assert prompt_tokens(request) <= limit - answer_room, request.context.kind
    last_planner = [r for r in llm.requests if r.context.kind == "planner"][-1].messages[1].content
    assert "need more pages" in last_planner and ("omitted" in last_planner or "more characters" in last_planner)
