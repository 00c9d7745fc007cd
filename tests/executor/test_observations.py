"""Whatever a tool returns, the run answers and everything that shows the value works: the
RunResult's JSON, the events' JSON, the joiner's prompt, a ``$1`` formatted into a string."""

from __future__ import annotations

import json
import math

import pytest

from fleetcall import Orchestrator, RunStatus, ScriptedLLM, tool
from fleetcall.service.app import event_json
from tests.executor.conftest import vrun


class Unprintable:
    def __str__(self):
        raise ValueError("no str")

    def __repr__(self):
        raise ValueError("no repr")


class Exits:
    def __str__(self):
        raise SystemExit("from __str__")

    __repr__ = __str__


def recursive_list():
    items: list = [1]
    items.append(items)
    return items


def deep(n: int):
    value: list = []
    for _ in range(n):
        value = [value]
    return value


VALUES = {
    "bytes": b"\xff\xfe not utf-8",
    "bytearray": bytearray(b"\x80"),
    "nan": float("nan"),
    "inf": float("-inf"),
    "set": {3, 1, 2},
    "surrogate": "half a pair: \ud83d",
    "huge_int": 10**5000,
    "unprintable": Unprintable(),
    "exits_in_str": Exits(),
    "recursive": recursive_list(),
    "deep": deep(5000),
    "nested_bytes": {"raw": [b"\x00\xff"], 1: (float("inf"),)},
    "big": list(range(200_000)),
}


@pytest.mark.parametrize("name", list(VALUES))
def test_any_returned_value_serialises_and_reaches_the_joiner(name):
    value = VALUES[name]

    @tool
    async def odd(x: int) -> object:
        """Returns an awkward value."""
        return value

    @tool
    async def text(s: str) -> str:
        """Returns its argument."""
        return s

    events = []
    llm = ScriptedLLM(['1. odd(1)\n2. text("got $1")\n3. join()', "Finish(done)"])

    async def main():
        orch = Orchestrator([odd, text], llm)
        handle = orch.start("q", emit=events.append)
        return await handle.result()

    result = vrun(main())
    assert result.status is RunStatus.ANSWERED, result.error
    assert result.tasks[0].observation is value          # the Python object itself is kept
    data = json.loads(result.model_dump_json())          # and the JSON never fails
    assert data["tasks"][0]["status"] == "ok"
    json.dumps(result.model_dump(mode="json"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    for event in events:                                 # as the service streams them
        event_json(event).encode("utf-8")
    joiner_prompt = "\n".join(m.content for m in llm.requests[-1].messages)
    joiner_prompt.encode("utf-8")
    assert "Observation: " in joiner_prompt and len(joiner_prompt) < 20_000
    assert result.tasks[1].status == "ok" and result.tasks[1].observation.startswith("got ")


def test_the_rule_for_bytes_and_non_finite_floats_in_the_result():
    @tool
    async def odd(x: int) -> object:
        """Bytes and NaN."""
        return {"raw": b"\xff", "ratio": float("nan"), "big": math.inf}

    result = vrun(Orchestrator([odd], ScriptedLLM(["1. odd(1)\n2. join()", "Finish(x)"])).run("q"))
    assert json.loads(result.model_dump_json())["tasks"][0]["observation"] == {
        "raw": {"$bytes_b64": "/w=="}, "ratio": "NaN", "big": "Infinity"}


def test_an_attribute_of_a_result_that_raises_fails_only_its_task():
    class Touchy:
        @property
        def price(self):
            raise SystemExit("do not touch")

    @tool
    async def touchy(x: int) -> object:
        """Returns an object whose attribute raises."""
        return Touchy()

    @tool
    async def text(s: object) -> str:
        """Returns its argument as text."""
        return str(s)

    llm = ScriptedLLM(["1. touchy(1)\n2. text($1.price)\n3. join()", "Finish(x)"])
    result = vrun(Orchestrator([touchy, text], llm).run("q"))
    assert result.status is RunStatus.ANSWERED
    assert result.tasks[1].status == "error" and "SystemExit" in result.tasks[1].error
