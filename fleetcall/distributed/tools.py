"""Tools that run as Ray tasks, with their resource needs: heavy sync work on the cluster.

    from fleetcall.distributed import ray_tool

    @ray_tool(num_cpus=2, memory=2 * 1024**3)
    def render(scene: str) -> bytes:
        '''Render a scene (CPU-heavy).'''
        ...

    orch = Orchestrator(tools=[render, search], llm=pool)

A :class:`RayTool` is a :class:`~fleetcall.tools.function.FunctionTool` (same schema from the
type hints and docstring, same ``timeout_s``, ``retries``, ``max_concurrency``, ``rate_limit``)
whose call is ``ray.remote(fn).options(**resources).remote(**arguments)``, awaited on the run's
loop: the executor's containment, deadlines and timeouts apply as to any async tool.

* **Cancelling** the call (the run's deadline, ``timeout_s``, ``handle.cancel()``) cancels the
  Ray task (``ray.cancel``): a task still waiting for resources never starts; a running one
  has its worker process killed (``force_cancel=True``, the default; Ray starts a fresh worker
  for later tasks) -- the answer to sync work that cannot be interrupted in a thread: unlike
  an abandoned thread, it stops using the machine at once. With ``force_cancel=False`` Ray
  raises ``KeyboardInterrupt`` in the task instead, which Python sees only between bytecodes:
  a pure-Python loop stops, a blocking call (``time.sleep``, a C extension, a socket read)
  runs on to its end.
* **Results and errors** come back as observations: the task's return value (pickled by Ray),
  or the exception it raised, as itself (``ValueError: ...``, not Ray's wrapper); one that
  cannot travel back as itself (it does not pickle, e.g. an exception class whose
  ``__init__`` takes other arguments than its message) is a :class:`RayTaskFailed` with the
  task's last traceback line (``RayTaskFailed: Weird: 1``: no terminal colours, no remote
  traceback); a worker that died is a failed task naming Ray's error.
* The function must be sync (an async one already runs on the loop) and take no
  ``ToolContext`` (the run's context does not travel). Ray retries of the task are off
  (``max_retries=0``) unless given: the tool's own ``retries`` is the retry policy.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, overload

from pydantic import BaseModel

from fleetcall.distributed.actor import import_ray
from fleetcall.errors import ConfigError
from fleetcall.tools.base import ToolContext, ToolOptions
from fleetcall.tools.function import FunctionTool

__all__ = ["RayTaskFailed", "RayTool", "ray_tool"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")   # Ray colours the task's name in its errors


class RayTaskFailed(RuntimeError):
    """The Ray task raised an exception that could not come back as itself; the message is
    its last traceback line (``"Weird: 1"``)."""


class RayTool(FunctionTool):
    """A sync function run as a Ray task (see the module docstring).

    resources: options of the task (``num_cpus``, ``num_gpus``, ``memory`` in bytes,
        ``resources``, ``accelerator_type``, ``runtime_env``, ...; Ray checks them here).
    force_cancel: on cancellation, kill the worker process running the task (default), or
        (False) raise KeyboardInterrupt in it.
    """

    def __init__(self, fn: Callable[..., Any], *, resources: dict[str, Any] | None = None,
                 force_cancel: bool = True, name: str | None = None,
                 description: str | None = None, options: ToolOptions | None = None,
                 args_schema: type[BaseModel] | None = None) -> None:
        super().__init__(fn, name=name, description=description, options=options,
                         args_schema=args_schema)
        if self._is_async:
            raise ConfigError(f"tool {self.name!r}: a Ray tool runs a sync function (an async "
                              "one already runs on the event loop)")
        if self._ctx_param is not None:
            raise ConfigError(f"tool {self.name!r}: a Ray tool cannot take a ToolContext "
                              f"(parameter {self._ctx_param!r}): the run's context stays here")
        self._ray = import_ray()
        self.resources = {"max_retries": 0, **(resources or {})}
        self.force_cancel = force_cancel
        try:
            self._task = self._ray.remote(fn).options(**self.resources)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"tool {self.name!r}: bad Ray options {self.resources}: {exc}") from exc

    @classmethod
    def of(cls, tool: FunctionTool, **kwargs: Any) -> RayTool:
        """``tool`` (a sync :class:`FunctionTool`) as a Ray task, its schema kept."""
        made = cls(tool.fn, name=tool.name, description=tool.description, options=tool.options,
                   **kwargs)
        made._schema = tool._schema  # the same arguments, whether from hints or args_schema
        return made

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        args, kwargs = self._call_arguments(arguments, ctx)
        ref = self._task.remote(*args, **kwargs)
        try:
            return await ref
        except asyncio.CancelledError:
            self._ray.cancel(ref, force=self.force_cancel)
            raise
        except self._ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, BaseException) and not isinstance(cause, self._ray.exceptions.RayError):
                raise cause from None  # the tool's own exception, as itself
            raise RayTaskFailed(_last_line(exc)) from None

    def __repr__(self) -> str:
        return f"<RayTool {self.signature()} {self.resources}>"


def _last_line(exc: BaseException) -> str:
    """The last line of a Ray task error's traceback (the exception as the task saw it),
    without terminal colours."""
    text = _ANSI.sub("", str(getattr(exc, "traceback_str", "") or exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


@overload
def ray_tool(fn: Callable[..., Any] | FunctionTool, /) -> RayTool: ...


@overload
def ray_tool(fn: None = None, /, *, force_cancel: bool = True, name: str | None = None,
             description: str | None = None, timeout_s: float | None = None, retries: int = 0,
             max_concurrency: int | None = None, **resources: Any
             ) -> Callable[[Callable[..., Any] | FunctionTool], RayTool]: ...


def ray_tool(fn: Callable[..., Any] | FunctionTool | None = None, /, *, force_cancel: bool = True,
             name: str | None = None, description: str | None = None,
             timeout_s: float | None = None, retries: int = 0,
             max_concurrency: int | None = None,
             **resources: Any) -> RayTool | Callable[[Callable[..., Any] | FunctionTool], RayTool]:
    """A sync function (or an ``@tool``) as a tool run as a Ray task; keyword arguments other
    than the tool's own are the task's resources: ``@ray_tool(num_cpus=2, num_gpus=1)``."""
    options = ToolOptions(timeout_s, retries, max_concurrency)

    def wrap(target: Callable[..., Any] | FunctionTool) -> RayTool:
        if isinstance(target, FunctionTool):
            return RayTool.of(target, resources=resources, force_cancel=force_cancel)
        return RayTool(target, resources=resources, force_cancel=force_cancel, name=name,
                       description=description, options=options)

    return wrap(fn) if fn is not None else wrap
