"""An :class:`~fleetcall.Orchestrator` as a LangChain ``Runnable`` (``orch.as_runnable()``), so it
composes with LCEL and is a LangGraph node as it is.

Input: a query string, or a mapping (a LangGraph state) whose ``input_key`` (default ``"query"``)
holds it. Output: ``{output_key: answer, result_key: RunResult}`` (defaults ``"answer"``,
``"result"``), a partial state update for a LangGraph node. The answer is None unless the run
answered; the :class:`~fleetcall.RunResult` says why (a failed run is a value, not an exception).

* ``ainvoke`` / ``abatch`` run on the caller's loop (use them in async code, with pools and MCP
  sessions, which belong to a loop);
* ``invoke`` / ``batch`` run each query with ``asyncio.run`` in a fresh loop (in a worker thread
  when the calling thread already runs one), for models and tools that no loop owns;
* ``astream`` yields ``{"event": event}`` for each of the run's typed events as it happens, then
  the output as its last chunk (chunks are plain dicts: LangChain keeps the last as the output).

Callbacks and tracing see each call as one chain run named ``fleetcall``.

>>> from fleetcall import Orchestrator, ScriptedLLM
>>> runnable = Orchestrator(tools=[], llm=ScriptedLLM(["1. join()", "Finish(4)"])).as_runnable()
>>> runnable.invoke("What is 2 + 2?")["answer"]
'4'
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import Runnable, RunnableConfig

from fleetcall.executor import events as ev
from fleetcall.executor.orchestrator import DEFAULT, MODES, Deadline
from fleetcall.executor.result import RunResult

if TYPE_CHECKING:
    from fleetcall.executor.orchestrator import Mode, Orchestrator

__all__ = ["OrchestratorRunnable"]

RunnableInput = str | Mapping[str, Any]


class OrchestratorRunnable(Runnable[RunnableInput, dict[str, Any]]):
    """The orchestrator as a ``Runnable`` (see the module doc); made by ``Orchestrator.as_runnable``.

    Args:
        orchestrator: runs every query.
        input_key: where a mapping input holds the query.
        output_key, result_key: the output's keys for the answer and the ``RunResult``.
        deadline: each run's budget in seconds (not given: the orchestrator's ``default_deadline``;
            None: no deadline).
        mode: ``compiled`` (default), ``react`` or ``parallel_calls``.

    Raises:
        ValueError: a key that is not a non-empty string, the same output and result key, an
            unknown mode or a deadline that is not positive seconds (here, not at the first call).
    """

    def __init__(self, orchestrator: "Orchestrator", *, input_key: str = "query", output_key: str = "answer",
                 result_key: str = "result", deadline: Deadline = DEFAULT, mode: "Mode" = "compiled") -> None:
        # checked here, not at the first invoke: a bad node fails when the graph is built
        for which, key in (("input_key", input_key), ("output_key", output_key), ("result_key", result_key)):
            if not isinstance(key, str) or not key:
                raise ValueError(f"{which} must be a non-empty string, got {key!r}")
        if output_key == result_key:
            raise ValueError(f"output_key and result_key must differ, both are {output_key!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if deadline is not DEFAULT and deadline is not None and (
                isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not deadline > 0):
            raise ValueError(f"deadline must be a positive number of seconds or None, got {deadline!r}")
        self.orchestrator = orchestrator
        self.input_key = input_key
        self.output_key = output_key
        self.result_key = result_key
        self.deadline = deadline
        self.mode: Mode = mode
        self.name = "fleetcall"

    # -- the query in, the output out ------------------------------------------------------------
    def query_of(self, input: RunnableInput) -> str:
        """The query in ``input``; ValueError naming the expected shapes if there is none."""
        if isinstance(input, str):
            return input
        if isinstance(input, Mapping):
            if self.input_key not in input:
                keys = ", ".join(map(str, input)) or "none"
                raise ValueError(f"the input has no {self.input_key!r} key (keys: {keys}); "
                                 f"pass the query there, or as_runnable(input_key=...)")
            query = input[self.input_key]
            if not isinstance(query, str):
                raise ValueError(f"input[{self.input_key!r}] must be the query as a string, got {type(query).__name__}")
            return query
        raise ValueError(f"input must be a query string or a mapping with a {self.input_key!r} key, "
                         f"got {type(input).__name__}")

    def output_of(self, result: RunResult) -> dict[str, Any]:
        return {self.output_key: result.answer, self.result_key: result}

    # -- Runnable ---------------------------------------------------------------------------------
    async def ainvoke(self, input: RunnableInput, config: RunnableConfig | None = None,
                      **kwargs: Any) -> dict[str, Any]:
        return await self._acall_with_config(self._arun, input, config, **kwargs)

    async def _arun(self, input: RunnableInput) -> dict[str, Any]:
        result = await self.orchestrator.run(self.query_of(input), deadline=self.deadline, mode=self.mode)
        return self.output_of(result)

    def invoke(self, input: RunnableInput, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        coro = self.ainvoke(input, config, **kwargs)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        # This thread runs a loop already (a notebook, a sync call inside async code): a worker
        # thread runs the query in its own loop, and this thread waits for it.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fleetcall-invoke") as pool:
            return pool.submit(asyncio.run, coro).result()

    async def astream(self, input: RunnableInput, config: RunnableConfig | None = None,
                      **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        async def once() -> AsyncIterator[RunnableInput]:
            yield input

        async for chunk in self._atransform_stream_with_config(once(), self._events, config, **kwargs):
            yield chunk

    async def _events(self, inputs: AsyncIterator[RunnableInput]) -> AsyncIterator[dict[str, Any]]:
        query = self.query_of([item async for item in inputs][-1])
        if self.mode != "compiled":   # the baselines have no event stream: their result only
            yield self.output_of(await self.orchestrator.run(query, deadline=self.deadline, mode=self.mode))
            return
        async for event in self.orchestrator.stream(query, deadline=self.deadline):
            yield {"event": event}
            if isinstance(event, ev.RunFinished):
                yield self.output_of(event.result)
