"""The joiner's decision, in text and JSON form."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetcall.planner import Finish, Replan, joiner_json_schema, parse_joiner, parse_joiner_json


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thought: I know it.\nAction: Finish(Star Wars (1977 film))", Finish("Star Wars (1977 film)", "I know it.")),
        ("Finish(Star Wars (1977 film))", Finish("Star Wars (1977 film)")),
        ("Finish(  42  )", Finish("42")),
        ('Finish("quoted answer")', Finish("quoted answer")),
        ("Finish('single')", Finish("single")),
        ('Finish("He said \\"hi\\"")', Finish('He said "hi"')),
        ('Finish("a" and "b")', Finish('"a" and "b"')),
        ("Finish(line one\nline (two)\n)", Finish("line one\nline (two)")),
        ("Finish(it's (a) \"mix\", of, things)", Finish("it's (a) \"mix\", of, things")),
        ("Thought: missing data\nAction: Replan(need the 2020 figure)", Replan("need the 2020 figure", "missing data")),
        ("**Thought:** hmm\n**Action:** Replan(x)", Replan("x", "hmm")),
        ("Thought: I will finish (soon).\nFinish(done)", Finish("done", "I will finish (soon).")),
        ("Action: Finish[an [answer]]", Finish("an [answer]")),
        ("Finish(cut off by the stop token", Finish("cut off by the stop token")),
        ("Finish()", Finish("")),
    ],
)
def test_parse_joiner(text: str, expected: Finish | Replan) -> None:
    assert parse_joiner(text) == expected


def test_no_decision_is_a_replan_that_says_so() -> None:
    decision = parse_joiner("Thought: I am not sure what to do")
    assert isinstance(decision, Replan) and "no decision" in decision.reason
    assert decision.thought == "I am not sure what to do"
    assert isinstance(parse_joiner(""), Replan)
    assert len(parse_joiner("x" * 10_000).reason) < 300


def test_empty_replan_gets_a_reason() -> None:
    decision = parse_joiner("Replan()")
    assert isinstance(decision, Replan) and decision.reason


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parse_joiner_never_raises(text: str) -> None:
    assert isinstance(parse_joiner(text), (Finish, Replan))
    assert isinstance(parse_joiner_json(text), (Finish, Replan))


@settings(max_examples=100, deadline=None)
@given(st.text().filter(lambda s: s.strip() == s and s[:1] not in "\"'" and "action" not in s.lower()))
def test_finish_keeps_any_answer_whole(answer: str) -> None:
    assert parse_joiner(f"Thought: ok\nAction: Finish({answer})") == Finish(answer, "ok")


def test_joiner_json() -> None:
    ok = {"thought": "t", "action": "finish", "answer": "42", "reason": ""}
    assert parse_joiner_json(json.dumps(ok)) == Finish("42", "t")
    assert parse_joiner_json("```json\n" + json.dumps({**ok, "action": "REPLAN", "reason": "r"}) + "\n```") == Replan("r", "t")
    assert parse_joiner_json(json.dumps({"action": "finish", "answer": {"n": 1}})) == Finish('{"n": 1}')
    bad = parse_joiner_json('{"action": "maybe"}')
    assert isinstance(bad, Replan) and "maybe" in bad.reason
    assert isinstance(parse_joiner_json("not json"), Replan)


def test_joiner_json_schema() -> None:
    rf = joiner_json_schema()
    schema = rf["json_schema"]["schema"]
    assert rf["type"] == "json_schema" and schema["properties"]["action"]["enum"] == ["finish", "replan"]
    assert set(schema["required"]) == set(schema["properties"])
