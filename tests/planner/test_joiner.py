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


def _never_closes_early(text: str) -> bool:
    """No prefix of ``text`` has more ')' than '(' (so it cannot close an enclosing Finish()."""
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return True


@settings(max_examples=100, deadline=None)
@given(st.text().filter(lambda s: s.strip() == s and s[:1] not in "\"'" and "action" not in s.lower()
                        and _never_closes_early(s)),
       st.sampled_from(["", "\n(Source: task 1.)", "\nThanks (really).", " (see above)"]))
def test_finish_keeps_any_answer_whole_and_nothing_after_it(answer: str, after: str) -> None:
    """Parentheses inside the answer are counted, so it ends where Finish( closes; what follows
    the decision is not part of it."""
    decision = parse_joiner(f"Thought: ok\nAction: Finish({answer}){after}")
    if answer.count("(") == answer.count(")") or not after:
        assert decision == Finish(answer, "ok")
    else:  # an answer that never closes is taken up to the last ')' of the text
        assert isinstance(decision, Finish) and decision.answer.startswith(answer)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Finish(21C in Tokyo)\n(Source: task 1.)", Finish("21C in Tokyo")),
        ("Thought: t\nAction: Finish(Star Wars (1977 film)) (from task 2)", Finish("Star Wars (1977 film)", "t")),
        ('Finish("an answer with ) inside")\n(note)', Finish("an answer with ) inside")),
        ("Replan(need (more) data)\n(Source: none)", Replan("need (more) data")),
    ],
)
def test_the_answer_ends_at_the_parenthesis_that_closes_the_decision(text: str, expected: Finish | Replan) -> None:
    assert parse_joiner(text) == expected


def test_a_finish_cut_off_at_max_tokens_is_not_an_answer() -> None:
    cut = parse_joiner("Thought: known.\nAction: Finish(The answer is 21C in To", truncated=True)
    assert isinstance(cut, Replan) and "cut off at max_tokens" in cut.reason and "21C in To" in cut.reason
    # closed before the cut: an answer all the same
    assert parse_joiner("Finish(21C)\nThought: and also", truncated=True) == Finish("21C")
    assert parse_joiner("Finish(21C in To") == Finish("21C in To")   # not cut: the model stopped there
    json_cut = parse_joiner_json('{"thought": "x", "action": "finish", "answer": "21', truncated=True)
    assert isinstance(json_cut, Replan) and "cut off at max_tokens" in json_cut.reason


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


def test_reading_the_decision_is_linear() -> None:
    """Four times the answer, at most ~eight times the work, for hostile answers."""
    import time

    def cpu(text: str) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            parse_joiner(text)
            parse_joiner(text, truncated=True)
            parse_joiner_json(text)
            best = min(best, time.process_time() - start)
        return best

    for make in (lambda n: "Finish(" + "(" * n, lambda n: "Action: " * n + "Finish(x)",
                 lambda n: "Finish(\"" + "\\\"" * n, lambda n: "\n".join(["Thought: a"] * n) + "\nFinish(" + ")" * n,
                 lambda n: '{"action": "finish", "answer": "' + "\\\\" * n):
        small, large = cpu(make(50_000)), cpu(make(200_000))
        assert large < 8 * max(small, 1e-3), (small, large)
