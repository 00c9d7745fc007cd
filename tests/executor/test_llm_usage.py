"""Every LLM call's tokens are counted, including a planner stream closed at ``join()`` (issue 9).

The planner stops reading at ``join()`` / ``<END_OF_PLAN>``, before the usage an LLM sends after
its text: the call is then counted from what was sent and read, and marked estimated.
"""

from __future__ import annotations

from fleetcall import Orchestrator, RunStatus, ScriptedLLM
from fleetcall.demos import parallelqa
from fleetcall.demos.common import embedded_pool
from fleetcall.llm.base import count_tokens
from tests.executor.conftest import search, vrun

NINE_LINES = "\n".join(["Thought: look them up at once."] + [f'{i}. search("item {i}")' for i in range(1, 8)]
                       + ["8. join()", "<END_OF_PLAN>", "and some trailing talk the planner never reads"])


def test_a_plan_closed_early_still_counts_its_tokens():
    result = vrun(Orchestrator([search], ScriptedLLM([NINE_LINES, "Finish(x)"])).run("q"))
    assert result.status is RunStatus.ANSWERED
    planner, joiner = result.llm_calls
    assert planner.kind == "planner" and planner.usage_estimated and not joiner.usage_estimated
    read = NINE_LINES[:NINE_LINES.index("<END_OF_PLAN>")]
    assert count_tokens(read) - 5 <= planner.completion_tokens <= count_tokens(NINE_LINES)
    assert planner.prompt_tokens > 200          # the system prompt alone is longer than that
    assert result.usage.prompt_tokens == planner.prompt_tokens + joiner.prompt_tokens
    assert result.usage.completion_tokens == planner.completion_tokens + joiner.completion_tokens
    assert (result.usage.calls, result.usage.estimated_calls) == (2, 1)


def test_the_demos_plan_through_the_pool_counts_its_tokens():
    """The demo's run (parallelqa on the embedded emulated pool) showed 13 tokens: the joiner's;
    the planner's call, closed at join(), counted nothing."""
    async def main():
        pool = embedded_pool(parallelqa.respond)
        async with pool:
            return await parallelqa.build(lambda responder: pool).run(parallelqa.QUESTION)

    result = vrun(main())
    assert result.status is RunStatus.ANSWERED, result.error
    planner = next(c for c in result.llm_calls if c.kind == "planner")
    plan_tokens = count_tokens(result.plans[0].text)
    assert planner.prompt_tokens > 200 and planner.completion_tokens >= plan_tokens // 2
    assert result.usage.completion_tokens >= plan_tokens // 2 + 1
