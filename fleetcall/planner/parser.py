"""Incremental parser of LLMCompiler's plan syntax: feed it model output chunk by chunk.

A plan is one action per line, numbered, ending with ``join()`` and ``<END_OF_PLAN>``::

    Thought: find both populations first.
    1. search("population of France")
    2. search(query="population of Germany")
    3. math("$1 + $2")
    4. join()
    <END_OF_PLAN>

Lines that are not action-like (blank, code fences, "Plan:" prose) are ignored; a line that looks
like ``N. name(`` but does not parse is a SYNTAX issue naming the line. A call may wrap over
several lines while its parentheses are open; a string may span lines only if triple-quoted.

Contract with the executor: every emitted :class:`Task` has a new id and refers only to tasks
emitted before it, so the tasks stream in a runnable (topological) order. A task with a duplicate
id or a bad reference is not emitted; a :class:`PlanIssue` says why. Reference rules (see
``literals``): a bare ``$N`` / ``${N}`` argument and ``${N}`` in a string are always references;
``$N`` in a string is one only if task N was already emitted. ``source`` is the whole action as
written (``1. search("x")``), possibly over several lines.

The parser never raises on model text and does O(1) work per character: each physical line is
scanned once to track open brackets and strings, and each action is parsed once, when complete.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from fleetcall.errors import PlanError
from fleetcall.planner.literals import MAX_ID_DIGITS, Call, SyntaxProblem, parse_call
from fleetcall.plan import JOIN, IssueKind, Join, Plan, PlanIssue, Task
from fleetcall.planner.validate import tool_issues, validate_plan
from fleetcall.tools.base import Tool

END_OF_PLAN = "<END_OF_PLAN>"

Item = Task | Join | PlanIssue

# "N. tool(" (also "N) tool(", "- N. tool(") or an unnumbered "join(": the start of an action;
# the tool's name starts as an identifier does, in any script (literals._TOOL_NAME)
_ACTION = re.compile(r"(?:[-*]\s+)?(?:(\d+)\s*[.)]\s*)?([^\W\d][\w.\-]*)\s*\(")
_THOUGHT = re.compile(r"[*_#>\s-]*thought\s*[*_]*\s*:[*_]*\s*(.*)", re.IGNORECASE)
_OUTSIDE = re.compile(r"[()\[\]{}'\"#]")      # characters that matter outside strings
_INSIDE = {q: re.compile(r"[\\" + q + "]") for q in ("'", '"')}


@dataclass(slots=True)
class _Pending:
    """An action whose text is still arriving: brackets open or a triple-quoted string open."""

    line: int                      # line where the action starts
    number: str | None             # its "N" as written (None for an unnumbered join)
    name: str                      # tool name as written
    call_start: int                # offset of the tool name in the joined text
    lines: list[str] = field(default_factory=list)  # physical lines so far (first one stripped)
    depth: int = 1                 # open brackets, counting the call's own '('
    quote: str | None = None       # the open string's quote (', ", ''' or \"\"\"), if any
    closed: bool = False           # True iff the call's own ')' was seen
    broken: str | None = None      # why the action cannot complete (unterminated string)

    def scan(self, text: str, pos: int = 0) -> None:
        """Update bracket/string state with one physical line, from ``pos``."""
        n = len(text)
        while pos < n and not self.closed:
            if self.quote is not None:
                m = _INSIDE[self.quote[0]].search(text, pos)
                if m is None:
                    break
                pos = m.start()
                if text[pos] == "\\":
                    pos += 2
                elif text.startswith(self.quote, pos):
                    pos += len(self.quote)
                    self.quote = None
                else:
                    pos += 1
                continue
            m = _OUTSIDE.search(text, pos)
            if m is None:
                break
            pos = m.start()
            c = text[pos]
            if c == "#":
                break
            if c in "'\"":
                self.quote = c * 3 if text.startswith(c * 3, pos) else c
                pos += len(self.quote)
            elif c in "([{":
                self.depth += 1
                pos += 1
            else:
                self.depth -= 1
                pos += 1
                self.closed = self.depth == 0
        if self.quote is not None and len(self.quote) == 1 and not self.closed:
            self.broken = "unterminated string (only triple-quoted strings may span lines)"

    @property
    def source(self) -> str:
        return "\n".join(self.lines).rstrip()


class PlanParser:
    """Parse a plan as it streams; :meth:`feed` returns what each chunk completed.

    >>> p = PlanParser()
    >>> p.feed('1. search("x")\\n2. join()\\n')
    [Task(id=1, tool='search', args=('x',), kwargs=(), thought=None, line=1, source='1. search("x")'), Join(line=2)]
    >>> p.done
    True
    """

    def __init__(self, *, start_line: int = 1) -> None:
        self._chunks: list[str] = []          # everything fed, in order (joined lazily by .text)
        self._partial: list[str] = []         # pieces of the physical line not yet ended by '\n'
        self._line_no = start_line            # number of the next complete physical line
        self._pending: _Pending | None = None  # an action spanning lines, if any
        self._thought: list[str] = []         # Thought: lines waiting for the next action
        self._tasks: list[Task] = []          # emitted tasks, in order
        self._ids: set[int] = set()           # ids of emitted tasks
        self._rejected: dict[int, str] = {}   # id -> why a task of that id was not emitted
        self._withheld: list[Task] = []       # parsed tasks not emitted (duplicate id, bad refs)
        self._issues: list[PlanIssue] = []    # every issue returned so far
        self._joined = False                  # True iff join() was seen
        self._done = False                    # True iff join() or <END_OF_PLAN> was seen
        self._closed = False                  # True iff close() was called

    # -- public surface --------------------------------------------------------------------------
    @property
    def tasks(self) -> tuple[Task, ...]:
        return tuple(self._tasks)

    @property
    def task_count(self) -> int:
        """``len(tasks)``, without copying them."""
        return len(self._tasks)

    @property
    def issues(self) -> tuple[PlanIssue, ...]:
        return tuple(self._issues)

    @property
    def withheld(self) -> tuple[Task, ...]:
        """Tasks that parsed but were not emitted (their issues say why)."""
        return tuple(self._withheld)

    @property
    def joined(self) -> bool:
        return self._joined

    @property
    def done(self) -> bool:
        """True once join() or <END_OF_PLAN> was seen: the rest of the stream is ignored."""
        return self._done

    @property
    def text(self) -> str:
        if len(self._chunks) > 1:
            self._chunks[:] = ["".join(self._chunks)]
        return self._chunks[0] if self._chunks else ""

    def feed(self, chunk: str) -> list[Item]:
        """Consume ``chunk``; return the tasks, join and issues it completed, in order."""
        out: list[Item] = []
        if self._closed or not chunk:
            return out
        self._chunks.append(chunk)
        start = 0
        while not self._done:
            nl = chunk.find("\n", start)
            if nl < 0:
                if start < len(chunk):
                    self._partial.append(chunk[start:])
                    if ">" in chunk and self._end_marker_in_partial(len(chunk) - start):
                        self._flush_partial(out)
                break
            if self._partial:
                self._partial.append(chunk[start:nl])
                line = "".join(self._partial)
                self._partial.clear()
            else:
                line = chunk[start:nl]
            self._physical_line(line, out)
            start = nl + 1
        self._issues.extend(i for i in out if isinstance(i, PlanIssue))
        return out

    def close(self) -> list[Item]:
        """End of the stream: parse a last line without newline; report an unfinished action."""
        out: list[Item] = []
        if self._closed:
            return out
        if not self._done:
            self._flush_partial(out)
        self._fail_pending(out, "unfinished action at the end of the plan")
        self._closed = True
        self._issues.extend(i for i in out if isinstance(i, PlanIssue))
        return out

    # -- lines -----------------------------------------------------------------------------------
    def _end_marker_in_partial(self, new: int) -> bool:
        """Whether <END_OF_PLAN> ends in the unfinished line's last ``new`` characters."""
        need = new + len(END_OF_PLAN)
        tail: list[str] = []
        size = 0
        for piece in reversed(self._partial):
            tail.append(piece)
            size += len(piece)
            if size >= need:
                break
        return END_OF_PLAN in "".join(reversed(tail))

    def _flush_partial(self, out: list[Item]) -> None:
        if self._partial:
            line = "".join(self._partial)
            self._partial.clear()
            self._physical_line(line, out)

    def _physical_line(self, line: str, out: list[Item]) -> None:
        number = self._line_no
        self._line_no += 1
        if line.endswith("\r"):
            line = line[:-1]
        cut = line.find(END_OF_PLAN)
        if cut >= 0:
            line = line[:cut]
        if self._pending is not None:
            self._continue_action(line, number, out)
        else:
            self._fresh_line(line, number, out)
        if cut >= 0 and not self._done:
            self._fail_pending(out, f"{END_OF_PLAN} inside an unfinished action")
            self._done = True

    def _continue_action(self, line: str, number: int, out: list[Item]) -> None:
        pending = self._pending
        assert pending is not None
        if pending.quote is None and _is_line_start(line.strip()):
            self._fail_pending(out, "unclosed '(': the next action started before it was closed")
            self._fresh_line(line, number, out)
            return
        pending.lines.append(line)
        pending.scan(line)
        self._after_scan(out)

    def _fresh_line(self, line: str, number: int, out: list[Item]) -> None:
        s = line.strip()
        if not s or s.startswith("```"):
            return
        m = _ACTION.match(s)
        if m is None or (m.group(1) is None and m.group(2) != JOIN):
            t = _THOUGHT.match(s)
            if t is not None and t.group(1).strip():
                self._thought.append(t.group(1).strip())
            return
        # kept with its trailing spaces: they may be inside a triple-quoted string that goes on
        first = line.lstrip()
        self._pending = _Pending(number, m.group(1), m.group(2), m.start(2), [first])
        self._pending.scan(first, m.end())
        self._after_scan(out)

    def _after_scan(self, out: list[Item]) -> None:
        pending = self._pending
        assert pending is not None
        if pending.broken is not None:
            self._fail_pending(out, pending.broken)
        elif pending.closed:
            self._pending = None
            self._complete(pending, out)

    def _fail_pending(self, out: list[Item], why: str) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.quote is not None and len(pending.quote) == 3:
            why = f"unclosed {pending.quote} string"
        task_id = _task_id(pending.number)
        self._reject(task_id, "its action failed to parse")
        self._thought.clear()
        out.append(PlanIssue(IssueKind.SYNTAX, f"cannot parse action: {why}: {_short(pending.source)}",
                             pending.line, task_id))

    # -- actions ---------------------------------------------------------------------------------
    def _complete(self, pending: _Pending, out: list[Item]) -> None:
        """Turn a complete action into a Task, a Join or issues."""
        source = pending.source
        thought = "\n".join(self._thought) or None
        self._thought.clear()
        if pending.name == JOIN:
            out.append(Join(pending.line))
            self._joined = self._done = True
            return
        task_id = _task_id(pending.number)
        if task_id is None:
            out.append(PlanIssue(IssueKind.SYNTAX, f"task number too long: {_short(source)}", pending.line))
            return
        try:
            call = parse_call(source[pending.call_start:], lambda n: n in self._ids and n != task_id)
        except SyntaxProblem as exc:
            self._reject(task_id, "its action failed to parse")
            out.append(PlanIssue(IssueKind.SYNTAX, f"cannot parse action {task_id}: {exc.message}: {_short(source)}",
                                 pending.line, task_id))
            return
        except (ValueError, RecursionError, OverflowError) as exc:  # belt and braces: never raise
            out.append(PlanIssue(IssueKind.SYNTAX, f"cannot parse action {task_id}: {exc}", pending.line, task_id))
            return
        task = Task(task_id, call.tool, call.args, call.kwargs, thought, pending.line, source)
        issues = self._task_issues(task, call)
        if issues:
            self._withheld.append(task)
            out.extend(issues)
            return
        self._tasks.append(task)
        self._ids.add(task_id)
        out.append(task)

    def _task_issues(self, task: Task, call: Call) -> list[PlanIssue]:
        if task.id in self._ids:
            return [PlanIssue(IssueKind.DUPLICATE_ID, f"task id {task.id} is used twice; the second "
                              f"{task.tool}(...) is ignored", task.line, task.id)]
        issues: list[PlanIssue] = []
        seen: set[int] = set()
        for ref in call.refs:
            if ref.task in seen:
                continue
            seen.add(ref.task)
            issue = self._ref_issue(task, ref.task)
            if issue is not None:
                issues.append(issue)
        if issues:
            self._reject(task.id, "it has a bad reference")
        return issues

    def _ref_issue(self, task: Task, target: int) -> PlanIssue | None:
        if target == task.id:
            return PlanIssue(IssueKind.SELF_REFERENCE, f"task {task.id} refers to its own result ${target}",
                             task.line, task.id)
        if target in self._ids:
            return None
        if target > task.id:
            return PlanIssue(IssueKind.FORWARD_REFERENCE, f"task {task.id} refers to ${target}, a later task; "
                             "a task may use only the results of earlier tasks", task.line, task.id)
        why = self._rejected.get(target)
        detail = f"task {target} was rejected ({why})" if why else f"there is no task {target}"
        return PlanIssue(IssueKind.MISSING_REFERENCE, f"task {task.id} refers to ${target}, but {detail}",
                         task.line, task.id)

    def _reject(self, task_id: int | None, why: str) -> None:
        if task_id is not None and task_id not in self._ids:
            self._rejected.setdefault(task_id, why)


def _is_line_start(s: str) -> bool:
    """Whether a stripped line starts a new action or thought (ends a wrapped call early)."""
    m = _ACTION.match(s)
    if m is not None and (m.group(1) is not None or m.group(2) == JOIN):
        return True
    return _THOUGHT.match(s) is not None


def _task_id(number: str | None) -> int | None:
    if number is None or len(number) > MAX_ID_DIGITS:
        return None
    return int(number)


def _short(text: str, limit: int = 120) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_plan(text: str, *, start_line: int = 1) -> tuple[Plan, list[PlanIssue]]:
    """Parse a whole text plan: the plan of emitted tasks, and the parser's issues.

    >>> plan, issues = parse_plan('1. search("x")\\njoin()')
    >>> [t.tool for t in plan.tasks], plan.joined, issues
    (['search'], True, [])
    """
    parser = PlanParser(start_line=start_line)
    parser.feed(text)
    parser.close()
    return Plan(parser.tasks, parser.joined, text), list(parser.issues)


def parse_plan_strict(
    text: str, tools: Mapping[str, Tool] | None = None, *, max_tasks: int | None = None
) -> Plan:
    """Parse a text plan and, given ``tools``, validate it; raise PlanError listing every issue.

    Tasks the parser withheld (duplicate id, bad reference) are still checked against ``tools``,
    so one error reports every problem.

    >>> parse_plan_strict('1. search("x")\\njoin()').tasks[0].args
    ('x',)
    """
    parser = PlanParser()
    parser.feed(text)
    parser.close()
    plan = Plan(parser.tasks, parser.joined, text)
    issues = list(parser.issues)
    if tools is not None:
        issues += validate_plan(plan, tools, max_tasks=max_tasks, ordered=True)
        issues += [issue for task in parser.withheld for issue in tool_issues(task, tools)]
    else:
        issues += [i for i in validate_plan(plan, {}, max_tasks=max_tasks) if i.kind in _PLAN_WIDE]
    if issues:
        issues.sort(key=lambda i: i.line if i.line is not None else 0)
        raise PlanError(issues)
    return plan


_PLAN_WIDE = frozenset({IssueKind.EMPTY, IssueKind.NO_JOIN, IssueKind.TOO_MANY_TASKS})
