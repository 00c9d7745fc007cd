"""No model output makes ``run()`` raise (issue 9): arbitrary planner and joiner answers, in every
plan format, cut anywhere into chunks, finished or cut off at max_tokens, end in a RunResult."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetcall import Orchestrator, RunResult, RunStatus
from fleetcall.llm.base import Chunk, ToolCallDelta, Usage
from tests.executor.conftest import echo, search, vrun
from tests.planner.test_json_plan_properties import FRAGMENTS as JSON_FRAGMENTS
from tests.planner.test_parser_properties import FRAGMENTS as TEXT_FRAGMENTS

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTILE = ["0x" + "f" * 3600, "9" * 5000, "[" * 3000, "1e999999", "\ud800", "\x00", '"\\ud800"',
           "Finish(", "Finish(a) (b)", "Replan(", ")" * 50, "$" + "9" * 30, "${" + "9" * 30 + "}"]
GOOD = ['1. search("a")\n2. echo($1)\n3. join()\n<END_OF_PLAN>',
        '{"tasks": [{"id": 1, "tool": "search", "args": {"query": "a"}}, {"id": 2, "tool": "echo", "args": ["$1"]}]}',
        "Thought: ok\nAction: Finish(done (really))\n(Source: task 1.)",
        '{"thought": "ok", "action": "finish", "answer": "done", "reason": ""}']
pieces = st.one_of(st.sampled_from(TEXT_FRAGMENTS + JSON_FRAGMENTS + HOSTILE + GOOD), st.text(max_size=6))
answers = st.lists(pieces, max_size=25).map("".join)


class ChunkedLLM:
    """Replays each answer cut at the given places, as text or as tool-call argument pieces, then
    a last chunk with usage and a finish reason (or none: a stream closed without one)."""

    def __init__(self, script: list[tuple[str, list[int], bool, str | None]]) -> None:
        self.script = list(script)

    async def stream(self, request):
        if not self.script:
            yield Chunk("Finish(no more script)")
            return
        text, cuts, as_tool_call, finish = self.script.pop(0)
        last = 0
        for cut in [*sorted(set(c for c in cuts if 0 < c < len(text))), len(text)]:
            piece = text[last:cut]
            last = cut
            if as_tool_call and request.context.kind == "planner":
                yield Chunk(tool_deltas=(ToolCallDelta(0, "call_0", "make_plan", piece),))
            else:
                yield Chunk(piece)
        if finish is not None:
            yield Chunk(usage=Usage(10, len(text) // 4 + 1, 1), finish_reason=finish)


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[str, list[int], bool, str | None]]:
    out = []
    for _ in range(draw(st.integers(1, 6))):
        text = draw(answers)
        cuts = draw(st.lists(st.integers(0, max(len(text), 1)), max_size=12))
        out.append((text, cuts, draw(st.booleans()), draw(st.sampled_from(["stop", "length", None]))))
    return out


@SETTINGS
@given(scripts(), st.sampled_from(["text", "json", "tool_call"]), st.sampled_from(["text", "json"]),
       st.sampled_from([None, 3]), st.sampled_from([None, 300]),
       st.sampled_from(["compiled", "compiled", "react", "parallel_calls"]))
def test_no_model_output_makes_run_raise(script, plan_format, joiner_format, max_tasks, context, mode) -> None:
    orch = Orchestrator([search, echo], ChunkedLLM(script), plan_format=plan_format, joiner_format=joiner_format,
                        max_tasks=max_tasks, max_replans=2, context_tokens=context and 2048, max_steps=4)
    result = vrun(orch.run("What is it?", deadline=1000.0, mode=mode))
    assert isinstance(result, RunResult)
    assert result.status in (RunStatus.ANSWERED, RunStatus.FAILED)
    result.model_dump_json()                  # the whole record can be serialised
    assert result.usage.calls == len(result.llm_calls) > 0
