"""Python functions as tools: :class:`FunctionTool` and the :func:`tool` decorator.

The function's type hints become a pydantic model that checks plan-time arguments and validates
run-time ones; its docstring gives the description (first paragraph) and per-argument help
(Google-style ``Args:``). Async functions are awaited on the loop; sync functions run in a worker
thread (the tool's own bounded threads, ``ctx.threads``, under an orchestrator) so a slow one
never blocks the other tasks of the plan.

>>> @tool(timeout_s=5, retries=1)
... def search(query: str, k: int = 3) -> str:
...     '''Search the web.
...
...     Args:
...         query: what to look for.
...     '''
...     return "..."
>>> search.signature()
'search(query: str, k: int = 3) -> str'
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
import warnings
from collections.abc import Callable
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, Field, create_model

from fleetcall.errors import ConfigError
from fleetcall.tools.base import ToolContext, ToolOptions, check_options
from fleetcall.tools.docstring import arg_descriptions, summary
from fleetcall.tools.schema import SchemaBackedTool
from fleetcall.tools.schema import ArgumentSchema, Param

_MODEL_CONFIG = ConfigDict(arbitrary_types_allowed=True, extra="forbid", protected_namespaces=())
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _is_identifier(name: str) -> bool:
    return isinstance(name, str) and name.isidentifier()


def _callable_name(fn: Callable[..., Any]) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with ``async def __call__``
    return call is not None and inspect.iscoroutinefunction(call)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """Resolved type hints; unresolvable ones (forward references) read as Any."""
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = getattr(target, "__call__", target)  # noqa: B004 - the method, to read its hints
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        raw = getattr(target, "__annotations__", {}) or {}
        return {k: v for k, v in raw.items() if not isinstance(v, str)}


def _is_context(hint: Any) -> bool:
    """True for ``ToolContext`` and ``ToolContext | None``."""
    if hint is ToolContext:
        return True
    args = typing.get_args(hint)
    return bool(args) and ToolContext in args and all(a in (ToolContext, type(None)) for a in args)


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read the signature of {fn!r}: {exc}") from exc


class FunctionTool(SchemaBackedTool):
    """A Python function (sync or async) as a tool.

    ``args_schema``: a pydantic model to use instead of the function's type hints (the function
    takes the model's fields as keyword arguments). A parameter annotated ``ToolContext`` is
    given the run's context and is not part of the schema.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        options: ToolOptions | None = None,
        args_schema: type[BaseModel] | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"a tool needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name if name is not None else _callable_name(fn)
        if not _is_identifier(self.name):
            raise ConfigError(f"tool name must be a Python identifier, got {self.name!r}; pass name=...")
        self.options = check_options(options if options is not None else ToolOptions())
        doc = inspect.getdoc(fn)
        self.description = description if description is not None else summary(doc)
        self._signature = _signature(fn)
        hints = _hints(fn)
        self._return = hints.get("return", Any)
        self._ctx_param = self._find_context(hints)
        self._is_async = _is_async(fn)
        if args_schema is not None:
            self._schema = self._schema_from_model(args_schema)
        else:
            self._schema = self._schema_from_hints(hints, arg_descriptions(doc))

    def _find_context(self, hints: dict[str, Any]) -> str | None:
        found = [n for n in self._signature.parameters if _is_context(hints.get(n))]
        if len(found) > 1:
            raise ConfigError(f"tool {self.name!r}: more than one ToolContext parameter: {found}")
        return found[0] if found else None

    def _schema_from_hints(self, hints: dict[str, Any], docs: dict[str, str]) -> ArgumentSchema:
        fields: dict[str, Any] = {}
        params: list[Param] = []
        for p in self._signature.parameters.values():
            if p.name == self._ctx_param:
                continue
            if p.kind in _VARIADIC:
                raise ConfigError(
                    f"tool {self.name!r}: *args/**kwargs parameters cannot be planned "
                    f"({p}); name each parameter, or pass args_schema="
                )
            if p.name.startswith("_"):
                raise ConfigError(f"tool {self.name!r}: parameter {p.name!r} may not start with '_'")
            hint = hints.get(p.name, Any)
            required = p.default is inspect.Parameter.empty
            default = ... if required else p.default
            doc = docs.get(p.name)  # only when documented: keeps a description from Annotated
            fields[p.name] = (hint, Field(default, description=doc) if doc else default)
            params.append(Param(p.name, hint, required, None if required else p.default,
                                p.kind in _POSITIONAL))
        with warnings.catch_warnings():  # field names shadowing BaseModel attributes are fine
            warnings.simplefilter("ignore")
            model = create_model(f"{self.name}_arguments", __config__=_MODEL_CONFIG, **fields)
        return ArgumentSchema(self.name, model, params)

    def _schema_from_model(self, model: type[BaseModel]) -> ArgumentSchema:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(f"tool {self.name!r}: args_schema must be a pydantic model class, got {model!r}")
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self._signature.parameters.values())
        for p in self._signature.parameters.values():
            if p.name == self._ctx_param or p.kind in _VARIADIC:
                continue
            if p.name not in model.model_fields and p.default is inspect.Parameter.empty:
                raise ConfigError(f"tool {self.name!r}: parameter {p.name!r} is not a field of {model.__name__}")
        if not accepts_any:
            extra = [f for f in model.model_fields if f not in self._signature.parameters]
            if extra:
                raise ConfigError(f"tool {self.name!r}: the function takes no parameter {extra} of {model.__name__}")
        return ArgumentSchema.from_model(self.name, model)

    # --- the Tool protocol -------------------------------------------------------------------

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        call_args, call_kwargs = self._call_arguments(arguments, ctx)
        if self._is_async:
            return await self.fn(*call_args, **call_kwargs)
        if ctx.threads is not None:
            result = await ctx.threads.run(self.fn, *call_args, **call_kwargs)
        else:
            result = await asyncio.to_thread(self.fn, *call_args, **call_kwargs)
        if inspect.isawaitable(result):  # a sync wrapper that returned a coroutine
            result = await result
        return result

    def _call_arguments(self, arguments: dict[str, Any], ctx: ToolContext) -> tuple[list[Any], dict[str, Any]]:
        """Positional-only parameters by position, the rest by keyword; the context injected."""
        values = dict(arguments)
        if self._ctx_param is not None:
            values[self._ctx_param] = ctx
        positional: list[Any] = []
        for p in self._signature.parameters.values():
            if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.name in values:
                positional.append(values.pop(p.name))
        return positional, values

    # --- plain Python use ---------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function directly (the decorated name stays usable in Python)."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<FunctionTool {self.signature()}>"


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    retries: int = 0,
    max_concurrency: int | None = None,
    rate_limit: int | None = None,
    rate_period_s: float = 1.0,
    args_schema: type[BaseModel] | None = None,
    ray: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    retries: int = 0,
    max_concurrency: int | None = None,
    rate_limit: int | None = None,
    rate_period_s: float = 1.0,
    args_schema: type[BaseModel] | None = None,
    ray: dict[str, Any] | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a tool of a function: ``@tool`` or ``@tool(name=..., timeout_s=..., ...)``.

    ``ray``: run the (sync) function as a Ray task with these options: ``@tool(ray=dict(
    num_cpus=2, num_gpus=1, memory=2 * 1024**3))`` makes the same
    :class:`~fleetcall.distributed.tools.RayTool` as ``@ray_tool(num_cpus=2, ...)`` (the key
    ``force_cancel`` is the tool's own, as there). Ray is imported only then; ConfigError if
    the ``[ray]`` extra is not installed, if ``ray`` is not a dict, or if Ray refuses an
    option (an unknown name, a bad value: its message says which).

    >>> @tool(max_concurrency=4, rate_limit=10, rate_period_s=1.0)
    ... async def fetch(url: str) -> str:
    ...     '''Fetch a web page.'''
    ...     return ""
    >>> fetch.name, fetch.options.max_concurrency
    ('fetch', 4)
    """
    options = ToolOptions(timeout_s, retries, max_concurrency, rate_limit, rate_period_s)

    if ray is not None and not isinstance(ray, dict):
        raise ConfigError(f"tool(ray=...) takes a dict of Ray task options, like "
                          f"dict(num_cpus=2); got {type(ray).__name__} {ray!r}")

    def wrap(func: Callable[..., Any]) -> FunctionTool:
        if ray is not None:
            from fleetcall.distributed.tools import RayTool  # Ray only when asked for
            resources = dict(ray)
            force_cancel = resources.pop("force_cancel", True)
            return RayTool(func, resources=resources, force_cancel=bool(force_cancel), name=name,
                           description=description, options=options, args_schema=args_schema)
        return FunctionTool(func, name=name, description=description, options=options,
                            args_schema=args_schema)

    if fn is not None:
        return wrap(fn)
    return wrap
