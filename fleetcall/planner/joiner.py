"""Reading the joiner's decision: ``Finish(answer)`` or ``Replan(reason)``. Pure; never raises.

Text form (LLMCompiler's)::

    Thought: both populations are known.
    Action: Finish(France has more people (68 million))

The answer ends at the parenthesis that closes ``Finish(``: parentheses inside it are counted
(``Finish(Star Wars (1977 film))``), so text after the decision (``(Source: task 1.)`` on the next
line) is not part of it. An answer that is one quoted string is unquoted, and may hold unbalanced
parentheses. A decision that never closes is taken up to the text's last ``)``, unless the answer
was cut off at ``max_tokens`` (``truncated``): a cut-off ``Finish(`` is not a final answer but a
:class:`Replan` saying so. No decision at all is a :class:`Replan` whose reason says so too
(answering with raw text could pass off a half-thought as the answer).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_ACTION_MARK = re.compile(r"^[^\w\n]*action[^\w\n]*:", re.IGNORECASE | re.MULTILINE)
_DECISION = re.compile(r"\b(finish|replan)\s*([(\[])", re.IGNORECASE)
_LINE_DECISION = re.compile(r"^[^\w\n]*(finish|replan)\s*([(\[])", re.IGNORECASE | re.MULTILINE)
_ACTION_LINE = re.compile(r"[^\w\n]*action[^\w\n]*:[^\w\n]*\Z", re.IGNORECASE)
_THOUGHT_MARK = re.compile(r"^[^\w\n]*thought[^\w\n]*:[*_ \t]*", re.IGNORECASE | re.MULTILINE)
_CLOSE = {"(": ")", "[": "]"}


@dataclass(frozen=True, slots=True)
class Finish:
    answer: str                 # the final answer for the user
    thought: str | None = None  # the joiner's reasoning, if it gave any


@dataclass(frozen=True, slots=True)
class Replan:
    reason: str                 # why a new plan is needed, shown to the planner
    thought: str | None = None


def parse_joiner(text: str, *, truncated: bool = False) -> Finish | Replan:
    """The decision in a text joiner answer; ``truncated``: the answer was cut off at max_tokens.

    >>> parse_joiner("Thought: known.\\nAction: Finish(Star Wars (1977 film))\\n(Source: task 1.)")
    Finish(answer='Star Wars (1977 film)', thought='known.')
    """
    m = _find_decision(text)
    if m is None:
        shown = _show(text)
        cut = " (the answer was cut off at max_tokens)" if truncated else ""
        return Replan(f"the joiner gave no decision (no Finish(...) or Replan(...)){cut}: {shown!r}",
                      _thought(text) or None)
    thought = _thought(_without_action_mark(text[: m.start()])) or None
    body = _body(text, m.end(), m.group(2))
    if body is None:
        if truncated:
            return Replan(f"the joiner's answer was cut off at max_tokens before its {m.group(1)}(...) "
                          f"closed: {_show(text[m.start():])!r}", thought)
        end = text.rfind(_CLOSE[m.group(2)])
        body = text[m.end(): end] if end >= m.end() else text[m.end():]
    body = _unquote(body.strip())
    if m.group(1).lower() == "finish":
        return Finish(body, thought)
    return Replan(body or "the joiner asked for a new plan without saying why", thought)


_QUOTED = {'"': re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL), "'": re.compile(r"'(?:[^'\\]|\\.)*'", re.DOTALL)}
_BRACKETS = {"(": re.compile(r"[()]"), "[": re.compile(r"[\[\]]")}


def _body(text: str, start: int, opener: str) -> str | None:
    """The decision's argument: ``text`` from ``start`` (just after the opener) to the closer that
    balances it, or None if none does. A quoted string followed by the closer is taken whole."""
    closer = _CLOSE[opener]
    lead = len(text) - len(text[start:].lstrip())
    quote = text[lead:lead + 1]
    if quote in _QUOTED:
        q = _QUOTED[quote].match(text, lead)
        if q is not None and text[q.end():].lstrip().startswith(closer):
            return text[start:q.end()]
    depth = 1
    for b in _BRACKETS[opener].finditer(text, start):
        depth += 1 if b.group() == opener else -1
        if depth == 0:
            return text[start:b.start()]
    return None


def _show(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def _find_decision(text: str) -> re.Match[str] | None:
    """The decision: the first after the last ``Action:``, else the first at a line start, else any."""
    marks = list(_ACTION_MARK.finditer(text))
    if marks:
        m = _DECISION.search(text, marks[-1].end())
        if m is not None:
            return m
    return _LINE_DECISION.search(text) or _DECISION.search(text)


def _without_action_mark(head: str) -> str:
    """``head`` without a trailing ``Action:`` on its last line."""
    before, nl, last = head.rpartition("\n")
    return before + nl if _ACTION_LINE.match(last) else head


def _thought(text: str) -> str:
    m = None
    for m in _THOUGHT_MARK.finditer(text):  # noqa: B007 - the last match is the one wanted
        pass
    return (text[m.end():] if m is not None else text).strip()


def _unquote(text: str) -> str:
    """``text`` without a pair of quotes that wraps all of it."""
    if len(text) < 2 or text[0] != text[-1] or text[0] not in "\"'":
        return text
    for q in ('"""', "'''"):
        if len(text) >= 6 and text.startswith(q) and text.endswith(q) and q not in text[3:-3]:
            return text[3:-3]
    if text[0] == '"':
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # ValueError: JSONDecodeError, or an int too long
            value = None
        if isinstance(value, str):
            return value
    inner = text[1:-1]
    return inner if text[0] not in inner else text


# -- JSON mode ----------------------------------------------------------------------------------
def joiner_json_schema() -> dict[str, Any]:
    """An OpenAI ``response_format`` for ``{"thought", "action": "finish"|"replan", "answer", "reason"}``.

    Flat on purpose (strict-mode and llama.cpp friendly): all four fields are required; the one
    that does not apply is an empty string.
    """
    schema = {
        "type": "object",
        "properties": {
            "thought": {"type": "string"},
            "action": {"type": "string", "enum": ["finish", "replan"]},
            "answer": {"type": "string"},
            "reason": {"type": "string"},
        },
        "required": ["thought", "action", "answer", "reason"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "joiner_decision", "schema": schema, "strict": True}}


def parse_joiner_json(text: str, *, truncated: bool = False) -> Finish | Replan:
    """The decision in a JSON joiner answer (a ```json fence and text around it are tolerated);
    ``truncated``: the answer was cut off at max_tokens.

    >>> parse_joiner_json('{"thought": "ok", "action": "finish", "answer": "42", "reason": ""}')
    Finish(answer='42', thought='ok')
    """
    start = text.find("{")
    try:
        data, _ = json.JSONDecoder().raw_decode(text, start) if start >= 0 else (None, 0)
    except (ValueError, RecursionError):  # ValueError: JSONDecodeError, or an int too long to read
        data = None
    if not isinstance(data, dict):
        cut = " (it was cut off at max_tokens)" if truncated else ""
        return Replan(f"the joiner's answer is not a JSON object{cut}: {_show(text)!r}")
    thought = _text(data.get("thought")) or None
    action = _text(data.get("action")).lower()
    answer, reason = _text(data.get("answer")), _text(data.get("reason"))
    if action == "finish":
        return Finish(answer or reason, thought)
    if action == "replan":
        return Replan(reason or answer or "the joiner asked for a new plan without saying why", thought)
    return Replan(f"the joiner gave no decision (action {data.get('action')!r})", thought)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):  # nested past the encoder's limit
        return f"({type(value).__name__} too deep to show)"
