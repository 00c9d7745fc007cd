"""One run of a query: plan (streamed) -> execute -> join, repeated on replans.

The run owns everything it starts: each round's tool tasks live in that round's task group, so a
deadline or a cancellation of the run cancels all of them. Each tool call is contained
(:mod:`fleetcall.executor.containment`): once cancelled it ends within the orchestrator's grace
period whatever the tool does (a sync tool's thread is abandoned at once), so the run returns by
its deadline plus that grace period.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fleetcall.errors import LLMError
from fleetcall.executor import events as ev
from fleetcall.executor.containment import CallWatch
from fleetcall.executor.fetching import TaskFetchingUnit
from fleetcall.executor.plan_stream import ITEM_COST, LoopYielder, PlanReader
from fleetcall.executor.recording import RecordingLLM
from fleetcall.executor.resolve import show_call
from fleetcall.executor.result import (
    LLMCallRecord, PlanRecord, ReplanRecord, RunResult, RunStatus, TaskRecord, UsageRecord,
)
from fleetcall.executor.settings import RunSettings
from fleetcall.executor.runner import Attempted, call_tool
from fleetcall.llm.base import CallContext, LLMRequest, Usage, closing, complete, count_tokens
from fleetcall.logs import EXECUTOR, event, fields
from fleetcall.planner import (
    Finish, Replan, build_joiner_messages, build_planner_messages, check_task, parse_joiner,
    parse_joiner_json, plan_json_schema, plan_tool_definition, validate_plan,
)
from fleetcall.plan import IssueKind, Join, Observation, ObservationStatus, Plan, PlanIssue, Round, Task
from fleetcall.tools.base import ToolContext
from fleetcall.tracing import NO_TRACE, NoTrace, RunTrace


Emit = ev.Emit
PROMPT_MARGIN = 0.9   # share of the context's room a prompt may fill by the model-free token estimate

log = logging.getLogger(EXECUTOR)


@dataclass(slots=True)
class _RoundState:
    number: int
    text: str = ""                                    # the plan as written (set once it is read)
    tasks: list[Task] = field(default_factory=list)
    ids: set[int] = field(default_factory=set)        # ids of ``tasks``, kept in step with it
    issues: list[PlanIssue] = field(default_factory=list)
    joined: bool = False
    over_limit: bool = False                          # True iff the plan has more than max_tasks tasks


class Run:
    """State and logic of one query's run; see :meth:`Orchestrator.run`.

    Logged on ``fleetcall.executor`` (:mod:`fleetcall.logs`): ``run.start`` and ``run.end``
    (INFO), ``plan.rejected`` (WARNING, with the plan's text cut short), ``plan.replan`` (INFO),
    ``task.failed`` (WARNING); traced with OpenTelemetry if configured (:mod:`fleetcall.tracing`).
    """

    mode = "compiled"

    def __init__(self, settings: RunSettings, query: str, query_id: str, deadline: float | None, emit: Emit) -> None:
        self.settings = settings
        self.query = query
        self.query_id = query_id
        self.deadline = deadline                  # absolute loop time, or None
        self.emit = emit
        self.loop = asyncio.get_running_loop()
        self.round = 0                            # number of the current round
        self._state: _RoundState | None = None    # the current round's plan as known so far
        self.records: dict[tuple[int, int], TaskRecord] = {}   # (round, task id) -> record
        self.plans: list[PlanRecord] = []
        self.replans: list[ReplanRecord] = []
        self.calls: list[LLMCallRecord] = []
        self.usage = Usage()
        self.cancel_requested = False             # True iff the run was cancelled through its handle
        self.executing = False                    # True once execute() has begun
        self.task: asyncio.Task[Any] | None = None  # the task execute() runs in, once it has begun
        self._llm_cache: dict[int, RecordingLLM] = {}
        self.trace: RunTrace | NoTrace = NO_TRACE  # the run's spans, once it executes

    def _llm(self, llm: Any) -> RecordingLLM:
        wrapped = self._llm_cache.get(id(llm))
        if wrapped is None:
            wrapped = self._llm_cache[id(llm)] = RecordingLLM(llm, self.calls, self.usage, lambda: self.round,
                                                              self._llm_watch, self.trace)
        return wrapped

    def _llm_watch(self, kind: str) -> CallWatch:
        """How one LLM call of this run is contained (its grace period, its slow-step report)."""
        return CallWatch(kind, fields(query_id=self.query_id, round=self.round), self.settings.slow_step_s,
                         self.settings.grace_s, kind="LLM call")

    def _ctx(self, kind: str) -> CallContext:
        # The planner's call is followed at least by the joiner's; the joiner is the last.
        after = 1 if kind != "joiner" else 0
        return CallContext(query_id=self.query_id, kind=kind, deadline=self.deadline, stage=self.round,
                           remaining_calls=after)

    def _calls_after(self, task: Task) -> tuple[int, int]:
        """(LLM calls on the longest path after ``task``, the joiner included; its depth in the
        plan): what the scheduler needs to rank the LLM calls the task makes. From the tasks of
        the current plan known so far (a streamed plan may still grow). Computed only when the
        task does call the LLM (see :class:`ToolContext`), iteratively: plans may be deep."""
        tasks = {t.id: t for t in self._state.tasks} if self._state is not None else {}
        if task.id not in tasks:
            return 1, 1
        children: dict[int, list[int]] = {}
        for t in tasks.values():
            for dep in t.deps:
                children.setdefault(dep, []).append(t.id)
        parents = {i: [d for d in t.deps if d in tasks] for i, t in tasks.items()}

        def uses_llm(task_id: int) -> int:
            return 1 if getattr(self.settings.tools.get(tasks[task_id].tool), "uses_llm", False) else 0

        after: dict[int, int] = {}   # LLM calls on the longest chain strictly after a task
        for node in _postorder(task.id, children):
            after[node] = max((uses_llm(c) + after[c] for c in children.get(node, ())), default=0)
        depth: dict[int, int] = {}   # 1 for a task with no dependency
        for node in _postorder(task.id, parents):
            depth[node] = 1 + max((depth[p] for p in parents[node]), default=0)
        return 1 + after[task.id], depth[task.id]

    # -- the run as a whole ------------------------------------------------------------------
    async def execute(self) -> RunResult:
        """Run the query to its result (see :meth:`Orchestrator.run`), logged and traced."""
        now = self.loop.time()
        budget = None if self.deadline is None else self.deadline - now
        event(log, logging.INFO, "run.start", query_id=self.query_id, mode=self.mode, deadline_s=budget)
        self.trace = self.settings.tracing.start(self.query_id, self.mode, self.deadline, self.loop)
        try:
            with self.trace.run():
                result = await self._execute()
                self.trace.run_done(result)
        except BaseException as exc:   # cancelled from outside its handle, or a bug: still logged
            status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            event(log, logging.INFO, "run.end", query_id=self.query_id, mode=self.mode, status=status,
                  latency_s=self.loop.time() - now, error=f"{type(exc).__name__}: {exc}")
            raise
        event(log, logging.INFO, "run.end", query_id=self.query_id, mode=self.mode, status=result.status.value,
              latency_s=result.latency, plans=len(result.plans), replans=len(result.replans),
              tasks=len(result.tasks), llm_calls=len(result.llm_calls), prompt_tokens=result.usage.prompt_tokens,
              completion_tokens=result.usage.completion_tokens, **({"error": result.error} if result.error else {}))
        return result

    async def _execute(self) -> RunResult:
        started = self.loop.time()
        self.executing = True
        self.task = asyncio.current_task()   # the run's own: while it is cancelled, so are its tools
        status, answer, error = RunStatus.FAILED, None, None
        try:
            if self.cancel_requested:   # cancelled through its handle before its first step
                raise asyncio.CancelledError
            async with asyncio.timeout_at(self.deadline):
                answer, error = await self._rounds()
            status = RunStatus.ANSWERED if answer is not None else RunStatus.FAILED
        except TimeoutError:
            status, error = RunStatus.TIMED_OUT, f"deadline passed after {self.loop.time() - started:.3f}s"
        except asyncio.CancelledError:
            if not self.cancel_requested:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            status, error = RunStatus.CANCELLED, "run cancelled"
        result = self._result(started, status, answer, error)
        if answer is not None:
            self.emit(ev.AnswerReady(answer, result.finished_at))
        self.emit(ev.RunFinished(result))
        return result

    async def _rounds(self) -> tuple[str | None, str | None]:
        """Plan, execute and join until an answer or the replan limit; returns (answer, error)."""
        history: list[Round] = []
        while True:
            try:
                done = await self._plan_and_execute(history)
                if done.issues:
                    reason = "the plan was invalid:\n" + "\n".join(f"- {i}" for i in done.issues)
                else:
                    decision = await self._join([*history, done])
                    if isinstance(decision, Finish):
                        return decision.answer, None
                    reason = decision.reason
            except LLMError as exc:
                return None, str(exc)
            history.append(replace(done, replan_reason=reason))
            if len(self.replans) >= self.settings.max_replans:
                return None, f"no answer after {len(self.replans)} replan(s); last reason: {reason}"
            now = self.loop.time()
            self.replans.append(ReplanRecord(round=self.round, reason=reason, time=now))
            event(log, logging.INFO, "plan.replan", query_id=self.query_id, round=self.round, reason=reason)
            self.emit(ev.Replanning(self.round, reason, now))
            self.round += 1

    # -- planning and executing one round ------------------------------------------------------
    async def _plan_and_execute(self, history: Sequence[Round]) -> Round:
        """One round: its plan streamed, its tasks run (under the plan's span)."""
        with self.trace.plan(self.round, self.settings.plan_format) as span:
            done = await self._plan_round(history)
            span.done(done)
        return done

    async def _plan_round(self, history: Sequence[Round]) -> Round:
        state = self._state = _RoundState(self.round)
        plan_record = PlanRecord(round=self.round, text="", started_at=self.loop.time())
        self.plans.append(plan_record)
        failure: LLMError | None = None
        async with asyncio.TaskGroup() as group:
            tfu = TaskFetchingUnit(group, self._execute_task, self._on_skip, self._on_unresolved)
            try:
                await self._stream_plan(history, state, tfu)
            except LLMError as exc:
                failure = exc
            finally:   # (also when the deadline or a cancel stops the plan: what was read is kept)
                plan_record.text = state.text
                plan_record.issues = [str(i) for i in state.issues]
            plan_record.finished_at = self.loop.time()
            if state.issues:
                event(log, logging.WARNING, "plan.rejected", query_id=self.query_id, round=self.round,
                      issues=len(state.issues), first=str(state.issues[0]), text=state.text)
                self.emit(ev.PlanRejected(self.round, tuple(state.issues), self.loop.time()))
            await tfu.wait_idle()
        if failure is not None:
            raise failure
        observations = tuple(tfu.results[t.id] for t in state.tasks if t.id in tfu.results)
        return Round(state.text, tuple(state.tasks), observations, tuple(state.issues))

    def _prompt_budget(self, answer_tokens: int | None, extra: str = "") -> int:
        """Tokens a prompt may take: the model's context less room for the answer (and for
        ``extra`` text the server adds to the prompt: tool definitions), with a margin for the
        estimate (:func:`~fleetcall.llm.base.count_tokens` is model-free)."""
        context = self.settings.context_tokens
        room = answer_tokens if answer_tokens is not None else min(1024, context // 4)
        return max(int((context - room) * PROMPT_MARGIN) - count_tokens(extra), 1)

    def _planner_request(self, history: Sequence[Round]) -> LLMRequest:
        orch = self.settings
        json_mode = orch.plan_format != "text"
        extra: dict[str, Any] = {}
        if orch.plan_format == "json":
            extra["response_format"] = plan_json_schema(list(orch.tools.values()), max_tasks=orch.max_tasks)
        elif orch.plan_format == "tool_call":
            definition = plan_tool_definition(list(orch.tools.values()), max_tasks=orch.max_tasks)
            extra["tools"] = (definition,)
            extra["tool_choice"] = {"type": "function", "function": {"name": definition["function"]["name"]}}
        budget = self._prompt_budget(orch.planner_max_tokens, json.dumps(extra["tools"]) if "tools" in extra else "")
        messages = build_planner_messages(
            self.query, list(orch.tools.values()), examples=orch.examples, rounds=history,
            json_mode=json_mode, max_tasks=orch.max_tasks, max_prompt_tokens=budget,
        )
        return LLMRequest(tuple(messages), self._ctx("planner"), max_tokens=orch.planner_max_tokens, **extra)

    async def _stream_plan(self, history: Sequence[Round], state: _RoundState, tfu: TaskFetchingUnit) -> None:
        """Read the plan as it streams, in the run's plan format, starting each task when it is
        complete; then the checks of the whole plan. Linear in the plan's size, and the loop gets
        a turn every so often (:class:`LoopYielder`), so the deadline holds however fast it comes.

        Reading stops once the plan is whole (``join()``, the JSON task list closed): whatever the
        model writes after it would only delay the joiner (the call's usage is then estimated,
        see :class:`RecordingLLM`). It stops too at the first task beyond ``max_tasks`` (the plan
        is rejected; nothing past the limit runs)."""
        request = self._planner_request(history)
        reader = PlanReader(self.settings.plan_format)
        try:
            finish = await self._read_plan(request, reader, state, tfu)
        finally:
            state.text = reader.text
        json_plan = self.settings.plan_format != "text"
        if not state.over_limit:
            cut = finish == "length" and not reader.done
            for item in reader.close():
                if not (cut and isinstance(item, PlanIssue)):   # the cut-off issue says what happened
                    self._take(item, state, tfu)
            ready = set(state.ids)
            for task in reader.held:
                self._hold_back(task, ready, state, tfu)
            if cut:
                self._cut_off(request, reader, state)
        tasks = tuple(state.tasks) if state.over_limit or not json_plan else reader.parser.tasks
        plan = Plan(tasks, json_plan or state.joined or state.over_limit, state.text)
        self._final_checks(plan, state, ordered=not json_plan)

    async def _read_plan(self, request: LLMRequest, reader: PlanReader, state: _RoundState,
                         tfu: TaskFetchingUnit) -> str | None:
        """Feed the planner's stream to ``reader``, taking each item; returns the finish reason."""
        yielder = LoopYielder()
        finish: str | None = None
        async with closing(self._llm(self.settings.planner_llm).stream(request)) as stream:
            async for chunk in stream:
                finish = chunk.finish_reason or finish
                items = reader.feed(chunk)
                for item in items:
                    self._take(item, state, tfu)
                self._check_size(reader, state)
                if reader.done or state.over_limit:
                    break
                read = len(chunk.text) + sum(len(d.arguments) for d in chunk.tool_deltas)
                await yielder.spent(1 + read + ITEM_COST * len(items))
        return finish

    def _check_size(self, reader: PlanReader, state: _RoundState) -> None:
        """A JSON plan's tasks waiting for later ones count too: stop once more than max_tasks are read."""
        limit = self.settings.max_tasks
        if limit is not None and reader.tasks_read > limit and not state.over_limit:
            extra = reader.parser.tasks[limit]
            self._too_many(extra, state)

    def _too_many(self, task: Task, state: _RoundState) -> None:
        state.over_limit = True
        if not any(i.kind is IssueKind.TOO_MANY_TASKS for i in state.issues):
            state.issues.append(PlanIssue(IssueKind.TOO_MANY_TASKS, f"the plan has more than {self.settings.max_tasks} "
                                          "tasks; the rest was not read", task.line, task.id))

    def _hold_back(self, task: Task, ready: set[int], state: _RoundState, tfu: TaskFetchingUnit) -> None:
        """A JSON plan's task that never became ready (``ready``: the ids of the tasks that did): it
        refers to tasks that never came, or that depend on each other in a cycle (the final checks
        say which). It never runs."""
        waits = sorted(d for d in task.deps if d not in ready)
        state.tasks.append(task)
        state.ids.add(task.id)
        self._record_planned(task)
        reason = "waits for " + ", ".join(f"${d}" for d in waits) + ", which never ran"
        tfu.reject(task, reason)
        self.records[(self.round, task.id)].status = "invalid"
        self.records[(self.round, task.id)].error = reason

    def _cut_off(self, request: LLMRequest, reader: PlanReader, state: _RoundState) -> None:
        """The model stopped at max_tokens before the plan was whole: say so, with its text."""
        limit = f"max_tokens={request.max_tokens}" if request.max_tokens is not None else "the server's max_tokens"
        done = len(reader.parser.tasks)
        state.issues.append(PlanIssue(IssueKind.SYNTAX, f"plan cut off at {limit} (finish_reason 'length') after "
                                      f"{done} complete task(s); write fewer or shorter tasks. The model's text: "
                                      f"{_excerpt(reader.text)}", None))
        state.joined = True   # what a missing join() would say, the cut says better

    def _take(self, item: Task | Join | PlanIssue, state: _RoundState, tfu: TaskFetchingUnit) -> None:
        if isinstance(item, PlanIssue):
            state.issues.append(item)
            return
        if isinstance(item, Join):
            state.joined = True
            return
        limit = self.settings.max_tasks
        if limit is not None and len(state.tasks) >= limit:
            self._too_many(item, state)
            return  # later tasks never start
        problems = check_task(item, tools=self.settings.tools, known_ids=state.ids)
        state.tasks.append(item)
        state.ids.add(item.id)
        self._record_planned(item)
        if problems:
            state.issues.extend(problems)
            tfu.reject(item, "; ".join(p.message for p in problems))
            self._mark_invalid(item, state)
            return
        tfu.add(item)

    def _final_checks(self, plan: Plan, state: _RoundState, *, ordered: bool) -> None:
        seen = {(i.kind, i.line, i.message) for i in state.issues}
        once = {i.kind for i in state.issues} & {IssueKind.TOO_MANY_TASKS}
        for issue in validate_plan(plan, self.settings.tools, max_tasks=self.settings.max_tasks, ordered=ordered):
            if (issue.kind, issue.line, issue.message) not in seen and issue.kind not in once:
                seen.add((issue.kind, issue.line, issue.message))
                state.issues.append(issue)

    # -- tasks ---------------------------------------------------------------------------------
    def _record_planned(self, task: Task) -> None:
        now = self.loop.time()
        self.records[(self.round, task.id)] = TaskRecord(
            round=self.round, id=task.id, tool=task.tool,
            args=[_shown(a) for a in task.args], kwargs={k: _shown(v) for k, v in task.kwargs},
            dependencies=sorted(task.deps), thought=task.thought, planned_at=now,
        )
        self.emit(ev.TaskPlanned(self.round, task, now))

    def _mark_invalid(self, task: Task, state: _RoundState) -> None:
        record = self.records[(self.round, task.id)]
        record.status = "invalid"
        record.error = "; ".join(i.message for i in state.issues if i.task == task.id) or "invalid task"

    def _on_skip(self, task: Task, obs: Observation) -> None:
        record = self.records[(self.round, task.id)]
        record.status, record.error = "skipped", obs.error
        self.emit(ev.TaskSkipped(self.round, task.id, obs, self.loop.time()))

    def _on_unresolved(self, task: Task, obs: Observation) -> None:
        """A task that failed without an observation from its tool: a reference could not be
        followed (it never ran), or its task was thrown a ``GeneratorExit`` (see the unit)."""
        record = self.records[(self.round, task.id)]
        record.status, record.error = obs.status.value, obs.error
        self._log_failed(record)
        now = record.end = self.loop.time()
        self.emit(ev.TaskFailed(self.round, task.id, obs, record.start if record.start is not None else now, now))

    def _stopping(self) -> bool:
        """Whether the run is being cancelled (its deadline, a cancel): then so are its tools."""
        return self.cancel_requested or (self.task is not None and self.task.cancelling() > 0)

    async def _execute_task(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Observation:
        """Run one task's tool call (under the task's span); a failure is logged."""
        record = self.records[(self.round, task.id)]
        with self.trace.task(record):
            obs = await self._run_task(task, args, kwargs)
        if obs.status is not ObservationStatus.OK:
            self._log_failed(record)
        return obs

    def _log_failed(self, record: TaskRecord) -> None:
        event(log, logging.WARNING, "task.failed", query_id=self.query_id, round=record.round, task_id=record.id,
              tool=record.tool, attempts=record.attempts, error=record.error)

    async def _run_task(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Observation:
        tool = self.settings.tools[task.tool]
        limits = self.settings.limits_for(tool)
        round_no = self.round
        record = self.records[(round_no, task.id)]
        start = record.start = self.loop.time()
        record.status = "running"
        shown = dict(zip(tool.parameter_names(), args)) | kwargs
        self.emit(ev.TaskStarted(round_no, task.id, task.tool, shown, start))
        watch = self.settings.watch_for(tool, fields(query_id=self.query_id, round=round_no, task_id=task.id))
        watch.owner = self.task
        ctx = ToolContext(self.query_id, task.id, self._llm(self.settings.tool_llm), self.deadline,
                          plan_position=lambda: self._calls_after(task), threads=limits.runner(watch))
        try:
            attempted = await call_tool(tool, task.id, args, kwargs, ctx, limits, watch)
        except asyncio.CancelledError:
            if not self._stopping():   # the tool cancelled its own task: its failure, not the run's end
                attempted = _cancelled_by_the_tool(task)
            else:
                _note_watch(record, watch, self.loop.time())
                record.status = "cancelled"
                if why := watch.why_stopped():
                    record.error = f"cancelled; {why}"
                raise
        obs = replace(attempted.observation, call=show_call(task.tool, attempted.arguments or shown))
        end = self.loop.time()
        _note_watch(record, watch, end)
        record.attempts = attempted.attempts
        record.arguments = attempted.arguments or shown
        record.status = obs.status.value
        if obs.status is ObservationStatus.OK:
            record.observation = obs.value
            self.emit(ev.TaskFinished(round_no, task.id, obs, start, end))
        else:
            record.error = obs.error
            self.emit(ev.TaskFailed(round_no, task.id, obs, start, end))
        return obs

    # -- joining ---------------------------------------------------------------------------------
    async def _join(self, rounds: Sequence[Round]) -> Finish | Replan:
        json_mode = self.settings.joiner_format == "json"
        messages = build_joiner_messages(self.query, rounds, json_mode=json_mode,
                                         max_prompt_tokens=self._prompt_budget(None))
        extra: dict[str, Any] = {}
        if json_mode:
            from fleetcall.planner import joiner_json_schema

            extra["response_format"] = joiner_json_schema()
        request = LLMRequest(tuple(messages), self._ctx("joiner"), **extra)
        completion = await complete(self._llm(self.settings.joiner_llm), request)
        parse = parse_joiner_json if json_mode else parse_joiner
        return parse(completion.text, truncated=completion.truncated)

    # -- the result ------------------------------------------------------------------------------
    def _result(self, started: float, status: RunStatus, answer: str | None, error: str | None) -> RunResult:
        for record in self.records.values():
            if record.status in ("pending", "running"):
                record.status = "cancelled"
        return RunResult(
            query_id=self.query_id, query=self.query, status=status, answer=answer, error=error,
            started_at=started, finished_at=self.loop.time(), deadline=self.deadline,
            plans=self.plans, tasks=list(self.records.values()), replans=self.replans,
            llm_calls=self.calls,
            usage=UsageRecord(prompt_tokens=self.usage.prompt_tokens,
                              completion_tokens=self.usage.completion_tokens, calls=self.usage.calls,
                              estimated_calls=self.usage.estimated_calls),
        )


def _cancelled_by_the_tool(task: Task) -> Attempted:
    """A tool's call whose task was cancelled while the run was not: the tool (or code it called)
    cancelled its own task. The cancellation is taken back; the call failed."""
    current = asyncio.current_task()
    while current is not None and current.cancelling():
        current.uncancel()
    return Attempted(Observation(task.id, task.tool, ObservationStatus.ERROR,
                                 error="the tool's task was cancelled, and not by the run (by the tool itself?)"), 1)


def _note_watch(record: TaskRecord, watch: CallWatch, end: float) -> None:
    """What the task's record should say of how its tool call went (see :class:`CallWatch`)."""
    record.end = end
    if watch.abandoned:           # (set only when true: a pydantic assignment is not free)
        record.abandoned = True
    if watch.loop_blocked_s:
        record.loop_blocked_s = watch.loop_blocked_s


def _shown(value: Any) -> str:
    """``str(value)`` for a record; the parsers bound what a plan holds, this never raises anyway."""
    try:
        return str(value)
    except (ValueError, RecursionError) as exc:
        return f"({type(value).__name__} that cannot be shown: {type(exc).__name__})"


def _excerpt(text: str, head: int = 300, tail: int = 200) -> str:
    """``text`` for an issue: its start and its end, newlines shown as \\n, quoted."""
    if len(text) > head + tail + 20:
        text = f"{text[:head]} [... {len(text) - head - tail} characters ...] {text[-tail:]}"
    return repr(text)


def _postorder(root: int, edges: dict[int, list[int]]) -> list[int]:
    """Nodes reachable from ``root`` along ``edges``, each after all it reaches (no recursion)."""
    order: list[int] = []
    seen = {root}
    stack = [(root, iter(edges.get(root, ())))]
    while stack:
        node, rest = stack[-1]
        nxt = next(rest, None)
        if nxt is None:
            order.append(node)
            stack.pop()
        elif nxt not in seen:
            seen.add(nxt)
            stack.append((nxt, iter(edges.get(nxt, ()))))
    return order
