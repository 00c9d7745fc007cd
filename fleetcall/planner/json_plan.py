"""The JSON plan format, for models with constrained decoding (``response_format``) or tool calls.

    {"tasks": [{"id": 1, "thought": "...", "tool": "search", "args": {"query": "x"}},
               {"id": 2, "thought": "", "tool": "math", "args": {"expr": "$1 * 2"}}]}

A bare list of tasks is accepted too. ``args`` is an object (keyword arguments) or a list
(positional ones). Reference rules for string values: a string that is exactly a reference
(``"$1"``, ``"${1}"``, ``"$1.price"``) is a :class:`Ref` (the value keeps its type); a string with
references inside is an :class:`Interp`, where ``${N}`` always refers and ``$N`` only if N is the
id of a task listed before (as in text plans: ``"costs $5"`` stays text unless task 5 came first).
JSON plans are implicitly joined; a ``join`` task, if written, is ignored.

:class:`JsonPlanParser` reads the plan as it streams and returns each task as soon as its object
is complete (so it can start while the model writes the next one), in an order it can run in: a
task is returned once every task it refers to has been returned. A task may refer to a task
listed after it; it is held until that one arrives. Tasks still held at the end refer to tasks
that never came or depend on each other in a cycle: :func:`validate_plan` names which. The work is
linear in the text, whatever the chunking: each character is scanned once
(:class:`~fleetcall.planner.json_stream.TaskListScanner`), each task parsed once, each reference
released once.

The parser reports the plan's shape (SYNTAX, DUPLICATE_ID); ``Task.line`` and issue lines are the
1-based position of the task in the list. It never raises on model text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fleetcall.planner.json_stream import Element, TaskListScanner
from fleetcall.planner.literals import (
    MAX_ID_DIGITS, BareOk, clean_text, int_too_long, max_int_digits, parse_ref_string, split_refs,
)
from fleetcall.plan import JOIN, IssueKind, Join, Plan, PlanIssue, Task, Value
from fleetcall.tools.base import Tool

PLAN_TOOL_NAME = "make_plan"
# A task's "thought" in the plan schema: long enough to say why, short enough that a small model
# looping inside it ("and Italy being the twentieth, and ...") is stopped by the grammar.
MAX_THOUGHT_CHARS = 200
MAX_DEPTH = 100        # nesting of argument values; deeper is a SYNTAX issue
# A reference written where a non-string value is expected: "$1", "${2}", "$1.items[0].name".
REF_PATTERN = r"^\$\{?[0-9]+\}?(\.[A-Za-z_][A-Za-z0-9_]*|\[[0-9]+\])*$"
_REF_SCHEMA: dict[str, Any] = {"type": "string", "pattern": REF_PATTERN}
_TOOL_KEYS = ("tool", "name", "function")
_ARG_KEYS = ("args", "arguments", "kwargs", "parameters")


class _ShapeError(Exception):
    """Internal: one task element has the wrong shape."""


# -- parsing ------------------------------------------------------------------------------------
Item = Task | Join | PlanIssue


class JsonPlanParser:
    """Parse a JSON plan as it streams; :meth:`feed` returns what each chunk completed.

    Returns :class:`Task` s (each after every task it refers to), :class:`PlanIssue` s, and one
    :class:`Join` when the task list closes (the plan is complete).

    >>> p = JsonPlanParser()
    >>> [type(i).__name__ for i in p.feed('{"tasks": [{"id": 2, "tool": "t", "args": ["$1"]}, ')]
    []
    >>> [(type(i).__name__, getattr(i, "id", None)) for i in p.feed('{"id": 1, "tool": "t"}]}')]
    [('Task', 1), ('Task', 2), ('Join', None)]
    """

    def __init__(self) -> None:
        self._scanner = TaskListScanner()
        self._chunks: list[str] = []           # everything fed, in order (joined lazily by .text)
        self._parsed: list[Task] = []          # every task parsed, in list order
        self._ids: set[int] = set()            # ids of ``_parsed``
        self._emitted: set[int] = set()        # ids of tasks returned
        self._held: dict[int, Task] = {}       # id -> parsed task waiting for tasks it refers to
        self._unmet: dict[int, int] = {}       # held id -> how many referred ids are not returned yet
        self._waiting: dict[int, list[int]] = {}  # id not returned yet -> held ids that refer to it
        self._issues: list[PlanIssue] = []     # every issue returned so far
        self._closed = False

    # -- public surface --------------------------------------------------------------------------
    @property
    def tasks(self) -> tuple[Task, ...]:
        """Every task parsed, in list order (held ones included)."""
        return tuple(self._parsed)

    @property
    def task_count(self) -> int:
        """``len(tasks)``, without copying them."""
        return len(self._parsed)

    @property
    def held(self) -> tuple[Task, ...]:
        """Parsed tasks not returned: they refer to tasks not (yet) returned. In list order."""
        return tuple(t for t in self._parsed if t.id in self._held and self._held[t.id] is t)

    @property
    def issues(self) -> tuple[PlanIssue, ...]:
        return tuple(self._issues)

    @property
    def done(self) -> bool:
        """True once the task list (or the JSON value) closed: the rest of the stream is ignored."""
        return self._scanner.done

    @property
    def complete(self) -> bool:
        """True iff the task list closed: the plan is whole."""
        return self._scanner.list_closed

    @property
    def text(self) -> str:
        if len(self._chunks) > 1:
            self._chunks[:] = ["".join(self._chunks)]
        return self._chunks[0] if self._chunks else ""

    def feed(self, chunk: str) -> list[Item]:
        """Consume ``chunk``; return the tasks, issues and join it completed, in order."""
        out: list[Item] = []
        if self._closed or not chunk or self._scanner.done:
            return out
        self._chunks.append(chunk)
        for element in self._scanner.feed(chunk):
            self._element(element, out)
        if self._scanner.list_closed:
            out.append(Join(self._scanner.elements + 1))
        self._issues.extend(i for i in out if isinstance(i, PlanIssue))
        return out

    def close(self) -> list[Item]:
        """End of the stream: an issue if no complete task list was found. Held tasks stay held."""
        out: list[Item] = []
        if self._closed:
            return out
        self._closed = True
        scanner = self._scanner
        if not scanner.list_closed:
            out.append(self._incomplete())
        self._issues.extend(i for i in out if isinstance(i, PlanIssue))
        return out

    # -- internals -------------------------------------------------------------------------------
    def _incomplete(self) -> PlanIssue:
        scanner = self._scanner
        if not scanner.started:
            return PlanIssue(IssueKind.SYNTAX, 'no JSON plan found (expected {"tasks": [...]})', 1)
        if scanner.done and scanner.error is None:
            return PlanIssue(IssueKind.SYNTAX, 'a JSON plan must be {"tasks": [...]} or a list of tasks', 1)
        _value, issue = _decode(self.text)   # once, at the end: the JSON error with its position
        if issue is not None:
            return issue
        return PlanIssue(IssueKind.SYNTAX, f"invalid JSON: {scanner.error or 'the task list is not closed'}", 1)

    def _element(self, element: Element, out: list[Item]) -> None:
        pos = element.position
        try:
            value = json.loads(element.text)
        except (ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, or an int too long
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or type(exc).__name__
            out.append(PlanIssue(IssueKind.SYNTAX, f"task #{pos}: invalid JSON: {why}: {_short(element.text)}", pos))
            return
        try:
            task_id = _element_id(value, pos)
        except _ShapeError as exc:
            out.append(PlanIssue(IssueKind.SYNTAX, f"task #{pos}: {exc}", pos))
            return
        if _tool_name(value) == JOIN:
            return
        if task_id in self._ids:
            out.append(PlanIssue(IssueKind.DUPLICATE_ID, f"task #{pos}: task id {task_id} is used twice; "
                                 "this one is ignored", pos, task_id))
            return
        try:
            task = _task(value, task_id, pos, lambda n: n in self._ids and n != task_id, element.text)
        except _ShapeError as exc:
            out.append(PlanIssue(IssueKind.SYNTAX, f"task #{pos} (id {task_id}): {exc}", pos, task_id))
            return
        self._parsed.append(task)
        self._ids.add(task.id)
        missing = {d for d in task.deps if d not in self._emitted and d != task.id}
        if not missing:
            self._emit(task, out)
            return
        self._held[task.id] = task
        self._unmet[task.id] = len(missing)
        for d in missing:
            self._waiting.setdefault(d, []).append(task.id)

    def _emit(self, task: Task, out: list[Item]) -> None:
        """Return ``task``, then every held task it was the last missing reference of (a worklist)."""
        todo = [task]
        while todo:
            t = todo.pop()
            out.append(t)
            self._emitted.add(t.id)
            for waiting in self._waiting.pop(t.id, ()):
                self._unmet[waiting] -= 1
                if self._unmet[waiting] == 0:
                    del self._unmet[waiting]
                    todo.append(self._held.pop(waiting))


def parse_json_plan(text: str) -> tuple[Plan, list[PlanIssue]]:
    """Parse a whole JSON plan (a ```json fence and text around the JSON are tolerated): every
    task in list order, and the parser's issues.

    >>> plan, issues = parse_json_plan('{"tasks": [{"id": 1, "tool": "search", "args": ["x"]}]}')
    >>> plan.tasks[0].args, plan.joined, issues
    (('x',), True, [])
    """
    parser = JsonPlanParser()
    parser.feed(text)
    parser.close()
    return Plan(parser.tasks, True, text), list(parser.issues)


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


def _short(text: str, limit: int = 120) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tool_name(element: dict[str, Any]) -> Any:
    return next((element[k] for k in _TOOL_KEYS if k in element), None)


def _element_id(element: Any, pos: int) -> int:
    if not isinstance(element, dict):
        raise _ShapeError(f"a task must be an object, got {type(element).__name__}")
    task_id = element.get("id", pos)
    if isinstance(task_id, str) and task_id.strip().lstrip("$").isdigit() and len(task_id) < 19:
        task_id = int(task_id.strip().lstrip("$"))
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise _ShapeError(f"task id must be an integer, got {_short(repr(task_id), 60)}")
    if abs(task_id) >= 10 ** MAX_ID_DIGITS:
        raise _ShapeError(f"task id too long (more than {MAX_ID_DIGITS} digits)")
    return task_id


def _task(element: dict[str, Any], task_id: int, pos: int, bare_ok: BareOk, source: str) -> Task:
    tool = _tool_name(element)
    if not isinstance(tool, str) or not tool:
        raise _ShapeError('missing "tool" (the tool name as a string)')
    raw_args = next((element[k] for k in _ARG_KEYS if k in element), None)
    if isinstance(raw_args, str):  # some models send the arguments as JSON text
        try:
            raw_args = json.loads(raw_args)
        except (ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, or an int too long
            raise _ShapeError('"args" is a string that is not JSON') from exc
    if raw_args is None:
        args: tuple[Value, ...] = ()
        kwargs: tuple[tuple[str, Value], ...] = ()
    elif isinstance(raw_args, dict):
        args, kwargs = (), tuple((clean_text(str(k)), _value(v, bare_ok, 1)) for k, v in raw_args.items())
    elif isinstance(raw_args, list):
        args, kwargs = tuple(_value(v, bare_ok, 1) for v in raw_args), ()
    else:
        raise _ShapeError('"args" must be an object (by name) or a list (by position)')
    thought = element.get("thought")
    thought = thought.strip() or None if isinstance(thought, str) else None
    return Task(task_id, clean_text(tool), args, kwargs, thought and clean_text(thought), pos, source)


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
        "properties": {"id": {"type": "integer"}, "thought": {"type": "string", "maxLength": MAX_THOUGHT_CHARS},
                       "tool": name, "args": args},
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
