"""The JSON plan format: parsing, reference rules, schemas."""

from __future__ import annotations

import json

from fleetcall.planner import (
    Interp, IssueKind, Ref, parse_json_plan, plan_json_schema, plan_tool_definition, validate_plan,
)
from fleetcall.planner.json_plan import REF_PATTERN


def test_parses_object_form() -> None:
    text = json.dumps({"tasks": [
        {"id": 1, "tool": "search", "args": {"query": "x"}, "thought": "find it"},
        {"id": 2, "tool": "math", "args": {"expr": "$1 + ${1} costs $5", "context": ["$1.price", "${1}"]}},
        {"id": 3, "tool": "search", "args": ["$2", {"k": "$1[0]"}], "thought": ""},
    ]})
    plan, issues = parse_json_plan(text)
    assert issues == [] and plan.joined and plan.text == text
    t1, t2, t3 = plan.tasks
    assert (t1.kwargs, t1.thought, t1.line) == ((("query", "x"),), "find it", 1)
    assert t2.kwargs_dict["expr"] == Interp((Ref(1), " + ", Ref(1), " costs $5"))
    assert t2.kwargs_dict["context"] == [Ref(1, ("price",)), Ref(1)]
    assert t3.args == (Ref(2), {"k": Ref(1, (0,))}) and t3.thought is None and t3.deps == {1, 2}


def test_bare_list_fence_and_prose_are_tolerated() -> None:
    text = 'Here is the plan:\n```json\n[{"id": 1, "tool": "search", "args": {"query": "x"}}]\n```\n'
    plan, issues = parse_json_plan(text)
    assert issues == [] and [t.tool for t in plan.tasks] == ["search"]


def test_exact_reference_strings_are_refs_even_to_unknown_ids() -> None:
    plan, _ = parse_json_plan('[{"id": 1, "tool": "t", "args": ["$7", "a $7 b"]}]')
    assert plan.tasks[0].args == (Ref(7), "a $7 b")


def test_bare_dollar_in_text_refers_to_tasks_listed_before() -> None:
    """As in text plans (the JSON plan streams: a later id is not known yet): ``$N`` in text refers
    to a task listed before, ``${N}`` to any."""
    plan, _ = parse_json_plan('[{"id": 1, "tool": "t"}, {"id": 2, "tool": "t", "args": ["after $1, not $2 or $3"]},'
                              ' {"id": 3, "tool": "t", "args": ["${4} is later"]}, {"id": 4, "tool": "t"}]')
    assert plan.tasks[1].args == (Interp(("after ", Ref(1), ", not $2 or $3")),)
    assert plan.tasks[2].args == (Interp((Ref(4), " is later")),)


def test_invalid_json_is_a_syntax_issue_with_position() -> None:
    # a bad task is reported by its position in the list, showing its text; the others stand
    plan, issues = parse_json_plan('{"tasks": [\n  {"id": 1,, }, {"id": 2, "tool": "t"}\n]}')
    assert [t.id for t in plan.tasks] == [2] and [i.kind for i in issues] == [IssueKind.SYNTAX]
    assert issues[0].line == 1 and 'task #1: invalid JSON' in issues[0].message and '{"id": 1,, }' in issues[0].message
    # JSON broken between tasks: the text's line and column
    plan, issues = parse_json_plan('{"tasks": [\n  {"id": 1, "tool": "t"} }\n]}')
    assert [i.kind for i in issues] == [IssueKind.SYNTAX] and "line 2 column" in issues[0].message
    assert parse_json_plan("no json here")[1][0].kind is IssueKind.SYNTAX
    assert parse_json_plan('{"steps": 3}')[1][0].kind is IssueKind.SYNTAX
    assert parse_json_plan("[" * 100_000)[1][0].kind is IssueKind.SYNTAX


def test_shape_problems_and_duplicates() -> None:
    text = json.dumps([
        {"id": 1, "tool": "search", "args": {"query": "x"}},
        {"id": 1, "tool": "search", "args": {"query": "y"}},
        "not an object",
        {"id": True, "tool": "search"},
        {"id": 5, "args": {}},
        {"id": 6, "tool": "search", "args": 3},
        {"id": "7", "tool": "search", "arguments": "{\"query\": \"z\"}"},
        {"tool": "search"},
        {"id": 9, "tool": "join"},
    ])
    plan, issues = parse_json_plan(text)
    assert [(t.id, t.line) for t in plan.tasks] == [(1, 1), (7, 7), (8, 8)]
    assert plan.tasks[1].kwargs == (("query", "z"),)
    assert [(i.kind, i.line) for i in issues] == [
        (IssueKind.DUPLICATE_ID, 2), (IssueKind.SYNTAX, 3), (IssueKind.SYNTAX, 4), (IssueKind.SYNTAX, 5),
        (IssueKind.SYNTAX, 6)]


def test_validate_finds_json_cycles_and_missing_refs(tools: dict) -> None:
    plan, issues = parse_json_plan(json.dumps([
        {"id": 1, "tool": "search", "args": {"query": "$2"}},
        {"id": 2, "tool": "search", "args": {"query": "$1"}},
        {"id": 3, "tool": "search", "args": {"query": "$9"}},
    ]))
    assert issues == []
    assert {i.kind for i in validate_plan(plan, tools)} == {IssueKind.CYCLE, IssueKind.MISSING_REFERENCE}


def test_plan_json_schema_shape(tools: dict, fake_tool: type) -> None:
    rf = plan_json_schema(list(tools.values()))
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is False
    schema = rf["json_schema"]["schema"]
    assert "$ref" not in json.dumps(schema) and "$defs" not in json.dumps(schema)
    branches = schema["properties"]["tasks"]["items"]["anyOf"]
    assert [b["properties"]["tool"]["enum"] for b in branches] == [["search"], ["math"], ["scale"]]
    scale = branches[2]["properties"]["args"]["properties"]
    assert scale["x"] == {"anyOf": [{"type": "number"}, {"type": "string", "pattern": REF_PATTERN}]}
    assert branches[0]["properties"]["args"]["properties"]["query"] == {"type": "string"}
    single = plan_json_schema([tools["search"]])["json_schema"]["schema"]["properties"]["tasks"]["items"]
    assert single["properties"]["tool"]["enum"] == ["search"]
    assert plan_json_schema([])["json_schema"]["schema"]["properties"]["tasks"]["items"]["type"] == "object"


def test_ref_pattern_matches_references() -> None:
    import re
    for good in ["$1", "${12}", "$1.price", "$1[0].name"]:
        assert re.match(REF_PATTERN, good)
    for bad in ["1", "$", "$a", "x$1"]:
        assert not re.match(REF_PATTERN, bad)


def test_schema_defs_are_inlined(fake_tool: type) -> None:
    class WithDefs(fake_tool):  # type: ignore[misc, valid-type]
        def json_schema(self):  # noqa: ANN201
            return {"type": "object", "title": "X", "$defs": {"P": {"type": "object", "properties": {"a": {"type": "integer"}}},
                                                              "N": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}},
                    "properties": {"p": {"$ref": "#/$defs/P"}, "n": {"$ref": "#/$defs/N"}}}

    schema = plan_json_schema([WithDefs("w")])["json_schema"]["schema"]
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text
    args = schema["properties"]["tasks"]["items"]["properties"]["args"]
    assert args["properties"]["p"]["anyOf"][0]["properties"]["a"] == {"type": "integer"}


def test_plan_tool_definition(tools: dict) -> None:
    d = plan_tool_definition(list(tools.values()))
    assert d["type"] == "function" and d["function"]["name"] == "make_plan"
    assert d["function"]["parameters"] == plan_json_schema(list(tools.values()))["json_schema"]["schema"]


def test_plan_schema_bounds_each_thought() -> None:
    """SmolLM2-135M looped inside a thought until max_tokens; llama.cpp's grammar honours maxLength."""
    from fleetcall.planner.json_plan import MAX_THOUGHT_CHARS
    from fleetcall.tools.builtins import math_tool
    item = plan_json_schema([math_tool])["json_schema"]["schema"]["properties"]["tasks"]["items"]
    assert item["properties"]["thought"] == {"type": "string", "maxLength": MAX_THOUGHT_CHARS}


def test_plan_schema_bounds_the_number_of_tasks_when_asked() -> None:
    """Constrained decoding closes the list at max_tasks instead of letting a small model repeat
    tasks until its answer is cut off mid-JSON."""
    from fleetcall.planner import plan_json_schema
    from fleetcall.tools.builtins import math_tool
    bounded = plan_json_schema([math_tool], max_tasks=5)["json_schema"]["schema"]["properties"]["tasks"]
    assert bounded["maxItems"] == 5 and bounded["minItems"] == 1
    assert "maxItems" not in plan_json_schema([math_tool])["json_schema"]["schema"]["properties"]["tasks"]
