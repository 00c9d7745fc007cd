"""The JSON plan format, for models with constrained decoding (``response_format``) or tool calls.

    {"tasks": [{"id": 1, "thought": "...", "tool": "search", "args": {"query": "x"}},
               {"id": 2, "thought": "", "tool": "math", "args": {"expr": "$1 * 2"}}]}

A bare list of tasks is accepted too. ``args`` is an object (keyword arguments) or a list
(positional ones). Reference rules for string values: a string that is exactly a reference
(``"$1"``, ``"${1}"``, ``"$1.price"``) is a :class:`Ref` (the value keeps its type); a string with
references inside is an :class:`Interp`, where ``${N}`` always refers and ``$N`` only if N is the
id of another task of the plan. Tasks may be listed in any order; :func:`validate_plan` checks
references and cycles. JSON plans are implicitly joined; a ``join`` task, if written, is ignored.

This parser reports only the plan's shape (SYNTAX, DUPLICATE_ID); ``Task.line`` and issue lines
are the 1-based position of the task in the list.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fleetcall.planner.literals import clean_text, int_too_long, max_int_digits, parse_ref_string, split_refs
from fleetcall.planner.plan import JOIN, IssueKind, Plan, PlanIssue, Task, Value
from fleetcall.tools.base import Tool

PLAN_TOOL_NAME = "make_plan"
MAX_DEPTH = 100        # nesting of argument values; deeper is a SYNTAX issue
# A reference written where a non-string value is expected: "$1", "${2}", "$1.items[0].name".
REF_PATTERN = r"^\$\{?[0-9]+\}?(\.[A-Za-z_][A-Za-z0-9_]*|\[[0-9]+\])*$"
_REF_SCHEMA: dict[str, Any] = {"type": "string", "pattern": REF_PATTERN}
_TOOL_KEYS = ("tool", "name", "function")
_ARG_KEYS = ("args", "arguments", "kwargs", "parameters")


class _ShapeError(Exception):
    """Internal: one task element has the wrong shape."""


# -- parsing ------------------------------------------------------------------------------------
def parse_json_plan(text: str) -> tuple[Plan, list[PlanIssue]]:
    """Parse a JSON plan (a ```json fence and text around the JSON are tolerated).

    >>> plan, issues = parse_json_plan('{"tasks": [{"id": 1, "tool": "search", "args": ["x"]}]}')
    >>> plan.tasks[0].args, plan.joined, issues
    (('x',), True, [])
    """
    data, issue = _decode(text)
    if issue is not None:
        return Plan((), True, text), [issue]
    elements = data.get("tasks", data.get("plan")) if isinstance(data, dict) else data
    if not isinstance(elements, list):
        return Plan((), True, text), [PlanIssue(IssueKind.SYNTAX, 'a JSON plan must be {"tasks": [...]} '
                                                "or a list of tasks", 1)]
    issues: list[PlanIssue] = []
    raw: list[tuple[int, int, dict[str, Any]]] = []   # (position, id, element)
    for pos, element in enumerate(elements, start=1):
        try:
            task_id = _element_id(element, pos)
        except _ShapeError as exc:
            issues.append(PlanIssue(IssueKind.SYNTAX, f"task #{pos}: {exc}", pos))
            continue
        if _tool_name(element) != JOIN:
            raw.append((pos, task_id, element))
    ids = {task_id for _, task_id, _ in raw}
    tasks: list[Task] = []
    seen: set[int] = set()
    for pos, task_id, element in raw:
        if task_id in seen:
            issues.append(PlanIssue(IssueKind.DUPLICATE_ID, f"task #{pos}: task id {task_id} is used twice; "
                                    "this one is ignored", pos, task_id))
            continue
        try:
            tasks.append(_task(element, task_id, pos, ids))
        except _ShapeError as exc:
            issues.append(PlanIssue(IssueKind.SYNTAX, f"task #{pos} (id {task_id}): {exc}", pos, task_id))
            continue
        seen.add(task_id)
    return Plan(tuple(tasks), True, text), issues


def _decode(text: str) -> tuple[Any, PlanIssue | None]:
    """The JSON value in ``text`` (after any fence or prose), or a SYNTAX issue with line/col."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None, PlanIssue(IssueKind.SYNTAX, "no JSON plan found (expected {\"tasks\": [...]})", 1)
    start = min(starts)
    try:
        value, _end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        return None, PlanIssue(IssueKind.SYNTAX, f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                               f"{exc.msg}", exc.lineno)
    except ValueError as exc:  # an integer too long to convert
        return None, PlanIssue(IssueKind.SYNTAX, f"invalid JSON: {exc}", 1)
    except RecursionError:
        return None, PlanIssue(IssueKind.SYNTAX, "invalid JSON: nested too deeply", 1)
    return value, None


def _tool_name(element: dict[str, Any]) -> Any:
    return next((element[k] for k in _TOOL_KEYS if k in element), None)


def _element_id(element: Any, pos: int) -> int:
    if not isinstance(element, dict):
        raise _ShapeError(f"a task must be an object, got {type(element).__name__}")
    task_id = element.get("id", pos)
    if isinstance(task_id, str) and task_id.strip().lstrip("$").isdigit() and len(task_id) < 19:
        task_id = int(task_id.strip().lstrip("$"))
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise _ShapeError(f"task id must be an integer, got {task_id!r}")
    return task_id


def _task(element: dict[str, Any], task_id: int, pos: int, ids: set[int]) -> Task:
    tool = _tool_name(element)
    if not isinstance(tool, str) or not tool:
        raise _ShapeError('missing "tool" (the tool name as a string)')
    raw_args = next((element[k] for k in _ARG_KEYS if k in element), None)
    if isinstance(raw_args, str):  # some models send the arguments as JSON text
        try:
            raw_args = json.loads(raw_args)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise _ShapeError('"args" is a string that is not JSON') from exc
    bare_ok = lambda n: n in ids and n != task_id  # noqa: E731
    if raw_args is None:
        args: tuple[Value, ...] = ()
        kwargs: tuple[tuple[str, Value], ...] = ()
    elif isinstance(raw_args, dict):
        args, kwargs = (), tuple((str(k), _value(v, bare_ok, 1)) for k, v in raw_args.items())
    elif isinstance(raw_args, list):
        args, kwargs = tuple(_value(v, bare_ok, 1) for v in raw_args), ()
    else:
        raise _ShapeError('"args" must be an object (by name) or a list (by position)')
    thought = element.get("thought")
    thought = thought.strip() or None if isinstance(thought, str) else None
    source = json.dumps(element, ensure_ascii=False)
    return Task(task_id, tool, args, kwargs, thought, pos, source)


def _value(value: Any, bare_ok: Any, depth: int) -> Value:
    """A JSON value with references found in its strings."""
    if depth > MAX_DEPTH:
        raise _ShapeError(f"argument values nested more than {MAX_DEPTH} deep")
    if isinstance(value, str):
        value = clean_text(value)
        return parse_ref_string(value) or split_refs(value, bare_ok)
    if isinstance(value, list):
        return [_value(v, bare_ok, depth + 1) for v in value]
    if isinstance(value, dict):
        return {clean_text(k): _value(v, bare_ok, depth + 1) for k, v in value.items()}
    if isinstance(value, int) and int_too_long(value):
        raise _ShapeError(f"integer too large (more than {max_int_digits()} digits)")
    return value


# -- schemas ------------------------------------------------------------------------------------
def plan_json_schema(tools: Sequence[Tool], *, name: str = "plan", strict: bool = False,
                     max_tasks: int | None = None) -> dict[str, Any]:
    """An OpenAI ``response_format`` constraining the answer to a JSON plan over ``tools``.

    Each task is one of ``anyOf`` branches, one per tool: ``tool`` is that tool's name (an enum)
    and ``args`` that tool's argument schema, where every non-string parameter also accepts a
    reference string (``"$1"``). No ``$ref``/``$defs``, so llama.cpp's grammar converter takes it.
    ``strict`` is passed on as is (OpenAI's strict mode also needs every tool parameter required).
    ``max_tasks`` becomes the list's ``maxItems``: under constrained decoding a small model that
    would repeat tasks until cut off mid-JSON is made to close the list instead.

    >>> # LLMRequest(messages, response_format=plan_json_schema(tools, max_tasks=20))
    """
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": plan_schema(tools, max_tasks=max_tasks), "strict": strict}}


def plan_tool_definition(tools: Sequence[Tool], *, max_tasks: int | None = None) -> dict[str, Any]:
    """An OpenAI tool definition ``make_plan`` whose arguments are the JSON plan, for tool-call mode."""
    return {
        "type": "function",
        "function": {
            "name": PLAN_TOOL_NAME,
            "description": "Submit the plan: the tool calls that answer the question, with $N references "
                           "to the results of other tasks. Independent tasks run in parallel.",
            "parameters": plan_schema(tools, max_tasks=max_tasks),
        },
    }


def plan_schema(tools: Sequence[Tool], *, max_tasks: int | None = None) -> dict[str, Any]:
    """The JSON schema of a plan over ``tools`` (the ``schema`` inside :func:`plan_json_schema`);
    ``max_tasks`` bounds the number of tasks (``maxItems``)."""
    branches = [_task_schema(t.name, _args_schema(t.json_schema())) for t in tools]
    if not branches:
        item = _task_schema(None, {"type": "object"})
    else:
        item = branches[0] if len(branches) == 1 else {"anyOf": branches}
    tasks: dict[str, Any] = {"type": "array", "items": item, "minItems": 1}
    if max_tasks is not None:
        tasks["maxItems"] = max_tasks
    return {
        "type": "object",
        "properties": {"tasks": tasks},
        "required": ["tasks"],
        "additionalProperties": False,
    }


def _task_schema(tool: str | None, args: dict[str, Any]) -> dict[str, Any]:
    name: dict[str, Any] = {"type": "string"} if tool is None else {"type": "string", "enum": [tool]}
    return {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "thought": {"type": "string"}, "tool": name, "args": args},
        "required": ["id", "thought", "tool", "args"],
        "additionalProperties": False,
    }


def _args_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's argument schema, inlined, each non-string parameter also taking a reference."""
    inlined = _inline(schema, schema.get("$defs", schema.get("definitions", {})), 0)
    if not isinstance(inlined, dict):
        return {"type": "object"}
    inlined.pop("title", None)
    props = inlined.get("properties")
    if isinstance(props, dict):
        inlined["properties"] = {k: _or_ref(v) for k, v in props.items()}
    inlined.setdefault("type", "object")
    return inlined


def _or_ref(prop: Any) -> Any:
    """``prop`` widened to accept a reference string, unless any string already fits it."""
    if not isinstance(prop, dict) or not prop:
        return prop
    free_string = prop.get("type") == "string" and not ({"enum", "const", "pattern", "format"} & prop.keys())
    if free_string:
        return prop
    if isinstance(prop.get("anyOf"), list):
        return {**prop, "anyOf": [*prop["anyOf"], _REF_SCHEMA]}
    return {"anyOf": [prop, _REF_SCHEMA]}


def _inline(node: Any, defs: dict[str, Any], depth: int) -> Any:
    """``node`` with local ``$ref``s replaced by their definitions (recursive ones become ``{}``)."""
    if isinstance(node, list):
        return [_inline(v, defs, depth) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if target is None or depth >= 8:
            return {}
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs, depth + 1)
    return {k: _inline(v, defs, depth) for k, v in node.items() if k not in ("$defs", "definitions")}
