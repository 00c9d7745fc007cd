"""No model output makes ``run()`` raise: plans, joiner answers and their streams (issue 9).

Each test names the kind of fault it guards; the inputs are those of the issue, and more of the
same kind where the kind is wider than the input.
"""

from __future__ import annotations

import dataclasses
import json

from fleetcall import Orchestrator, RunStatus, ScriptedLLM
from tests.executor.conftest import vrun

HUGE_HEX = "0x" + "f" * 3600           # 14,400 bits: about 4,335 decimal digits
HUGE_DECIMAL = "1" * 5000
PLAN1 = '1. search("weather in Tokyo")\n2. join()'


def _run(tools, script, **kwargs):
    return vrun(Orchestrator(tools, ScriptedLLM(script), max_replans=0, **kwargs).run("q"))


def test_an_integer_too_long_to_print_in_a_text_plan_is_a_plan_issue(tools):
    plan = f'1. math("1", context=[{HUGE_HEX}])\n2. join()'
    result = _run(tools, [plan])
    assert result.status is RunStatus.FAILED
    assert any("integer too large" in issue for issue in result.plans[0].issues), result.plans[0].issues
    decimal = _run(tools, [f'1. echo({HUGE_DECIMAL})\n2. join()'])
    assert decimal.status is RunStatus.FAILED and "number too long" in decimal.plans[0].issues[0]


def test_an_integer_too_long_to_convert_in_a_json_plan_is_a_plan_issue(tools):
    plan = '{"tasks": [{"id": 1, "tool": "echo", "args": {"value": %s}}]}' % HUGE_DECIMAL
    result = _run(tools, [plan], plan_format="json")
    assert result.status is RunStatus.FAILED and result.plans[0].issues


def test_an_integer_too_long_in_the_joiners_json_is_no_decision_not_a_crash(tools):
    answer = '{"thought": "x", "action": "finish", "answer": %s, "reason": ""}' % HUGE_DECIMAL
    result = _run(tools, ['1. echo("a")\n2. join()', answer], joiner_format="json")
    assert result.status is RunStatus.FAILED and "not a JSON object" in result.error


def test_lone_surrogates_in_arguments_are_replaced(tools):
    result = _run(tools, ['1. echo("a\\ud800b")\n2. join()', "Finish(ok)"])
    assert result.tasks[0].observation == "a\ufffdb"
    plan = json.dumps({"tasks": [{"id": 1, "tool": "echo", "args": {"value": "a\ud800b"}}]})
    result = _run(tools, [plan, "Finish(ok)"], plan_format="json")
    assert result.tasks[0].observation == "a\ufffdb"


class CutJoiner:
    """An LLM whose joiner answers end as if cut off at max_tokens (``finish_reason`` "length")."""

    def __init__(self, script):
        self.inner = ScriptedLLM(script)

    async def stream(self, request):
        async for chunk in self.inner.stream(request):
            if chunk.finish_reason is not None and request.context.kind == "joiner":
                chunk = dataclasses.replace(chunk, finish_reason="length")
            yield chunk


def test_text_after_the_joiners_decision_is_not_part_of_the_answer(tools):
    result = _run(tools, [PLAN1, "Thought: known.\nAction: Finish(21C in Tokyo)\n(Source: task 1.)"])
    assert result.answer == "21C in Tokyo"
    result = _run(tools, [PLAN1, "Action: Finish(Star Wars (1977 film))"])
    assert result.answer == "Star Wars (1977 film)"


def test_a_finish_cut_off_at_max_tokens_is_not_a_final_answer(tools):
    llm = CutJoiner([PLAN1, "Thought: known.\nAction: Finish(21C in To", PLAN1, "Finish(21C in Tokyo)"])
    result = vrun(Orchestrator(tools, llm, max_replans=1).run("q"))
    assert result.answer == "21C in Tokyo" and len(result.replans) == 1
    assert "cut off at max_tokens" in result.replans[0].reason


def test_a_lone_surrogate_anywhere_in_model_output_leaves_a_serialisable_result(tools):
    result = _run(tools, ['Thought: \ud800\n1. echo("\ud800")\n2. join()', "Finish(\ud800 answer)"])
    assert result.answer == "\ufffd answer" and "\ud800" not in result.plans[0].text
    result.model_dump_json()


def test_a_reference_cannot_walk_python_internals(tools):
    """``$1.__class__...`` would hand the model's tools (and the joiner's prompt) any object
    reachable from a result, module globals included."""
    result = _run(tools, ['1. search("x")\n2. echo($1.__class__)\n3. echo($1.__class__.__init__.__globals__)\n'
                          '4. profile("p")\n5. echo($1.upper)\n6. echo($4["name"])\n7. join()', "Finish(ok)"])
    by_id = {t.id: t for t in result.tasks}
    assert by_id[2].status == "error" and "private" in by_id[2].error
    assert by_id[3].status == "error" and "private" in by_id[3].error
    assert by_id[6].observation == "p"


def test_a_react_finish_cut_off_at_max_tokens_is_not_the_answer(tools):
    class CutFirst:
        """The first answer ends cut off at max_tokens; the next one whole."""

        def __init__(self):
            self.inner = ScriptedLLM(["Thought: x\nAction: Finish(21C in To", "Action: Finish(21C in Tokyo)"])

        async def stream(self, request):
            first = not self.inner.requests
            async for chunk in self.inner.stream(request):
                if chunk.finish_reason is not None and first:
                    chunk = dataclasses.replace(chunk, finish_reason="length")
                yield chunk

    result = vrun(Orchestrator(tools, CutFirst()).run("q", mode="react"))
    assert result.answer == "21C in Tokyo"
