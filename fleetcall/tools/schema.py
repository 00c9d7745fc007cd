"""Tool arguments described by a pydantic model: plan-time checks, binding, schema and signature.

Both :class:`~fleetcall.tools.FunctionTool` and :class:`~fleetcall.tools.LangChainTool` keep one
:class:`ArgumentSchema`, so a Python function and a LangChain tool are checked the same way:

* :meth:`ArgumentSchema.check` runs at plan time, when some values are still placeholders
  (``Ref`` / ``Interp``) for results not known yet; it returns problems as strings;
* :meth:`ArgumentSchema.bind` runs when the task is ready, on concrete values; it returns the
  validated keyword arguments or raises :class:`~fleetcall.errors.ToolArgumentError`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticUndefined, core_schema

from fleetcall.errors import ToolArgumentError
from fleetcall.plan import Interp, Ref, iter_refs

_ARBITRARY = ConfigDict(arbitrary_types_allowed=True)


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter as the planner sees it."""

    name: str
    annotation: Any = Any          # Python type shown in the signature (Any: shown bare)
    required: bool = True
    default: Any = None            # meaningful only when not required
    positional: bool = True        # may be given positionally in a plan


class _LenientJsonSchema(GenerateJsonSchema):
    """Emit ``{}`` (any value) for types JSON schema cannot express, instead of failing."""

    def handle_invalid_for_json_schema(
        self, schema: core_schema.CoreSchema, error_info: str
    ) -> JsonSchemaValue:
        return {}


def type_name(tp: Any) -> str | None:
    """How a signature shows a type: ``str``, ``list[int]``, ``int | None``; ``None`` for Any."""
    if tp is Any:
        return None
    if tp is type(None) or tp is None:
        return "None"
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return type_name(typing.get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return " | ".join(type_name(a) or "Any" for a in typing.get_args(tp))
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in typing.get_args(tp)) + "]"
    if origin is not None:
        base = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        inner = ", ".join(type_name(a) or "Any" for a in typing.get_args(tp))
        return f"{base}[{inner}]" if inner else base
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def render_params(params: Iterable[Param]) -> str:
    """``query: str, k: int = 3`` (the inside of a signature's parentheses)."""
    parts = []
    for p in params:
        shown = type_name(p.annotation)
        text = p.name if shown is None else f"{p.name}: {shown}"
        if not p.required:
            text += f" = {p.default!r}" if p.default is not PydanticUndefined else " = ..."
        parts.append(text)
    return ", ".join(parts)


def strip_titles(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's generated ``title`` keys (top level and per property): noise in prompts."""
    out = {k: v for k, v in schema.items() if k != "title"}
    props = out.get("properties")
    if isinstance(props, dict):
        out["properties"] = {
            name: {k: v for k, v in prop.items() if k != "title"} if isinstance(prop, dict) else prop
            for name, prop in props.items()
        }
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _interp_sample(value: Interp) -> str | None:
    """The text an ``Interp`` stands for, each reference read as ``0``; None if only references.

    An ``Interp`` is a string at run time. Reading each unknown result as ``0`` lets a field of
    type ``int`` accept ``"${1}"`` (it may well be a number) while rejecting ``"about $1"``.
    """
    texts = [p for p in value.parts if isinstance(p, str)]
    if not "".join(texts).strip():
        return None
    return "".join(p if isinstance(p, str) else "0" for p in value.parts)


def _error_text(err: Any) -> str:
    """One pydantic error as ``argument 'k': <msg> (got 'x')``."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    if not loc:
        return f"{err.get('msg', 'invalid arguments')}"
    name, rest = loc[0], loc[1:]
    if kind == "missing" and not rest:
        return f"missing required argument {name!r}"
    if kind == "extra_forbidden" and not rest:
        return f"unknown argument {name!r}"
    where = "".join(f"[{p!r}]" for p in rest)
    return f"argument {name!r}{where}: {err.get('msg', 'invalid')} (got {_short(err.get('input'))})"


class ArgumentSchema:
    """The arguments of one tool: parameter order plus the pydantic model that validates them.

    ``exclude_unset``: when True, :meth:`bind` returns only the arguments that were given (the
    callee applies its own defaults, as LangChain tools do); otherwise every field is returned.
    """

    def __init__(
        self,
        tool_name: str,
        model: type[BaseModel],
        params: list[Param],
        *,
        exclude_unset: bool = False,
        json_schema: dict[str, Any] | None = None,
    ) -> None:
        self.tool_name = tool_name
        self.model = model
        self.params = params                       # in positional order
        self.exclude_unset = exclude_unset
        self._json_schema = json_schema            # given schema, shown as is (else from model)
        self._by_name = {p.name: p for p in params}
        self._adapters: dict[str, TypeAdapter[Any]] = {}   # field name -> its validator

    @classmethod
    def from_model(
        cls, tool_name: str, model: type[BaseModel], **kwargs: Any
    ) -> "ArgumentSchema":
        """Parameters taken from the model's fields, in definition order."""
        params = [
            Param(name, f.annotation if f.annotation is not None else Any, f.is_required(),
                  _field_default(f))
            for name, f in model.model_fields.items()
        ]
        return cls(tool_name, model, params, **kwargs)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def json_schema(self) -> dict[str, Any]:
        if self._json_schema is not None:
            return dict(self._json_schema)
        schema = self.model.model_json_schema(schema_generator=_LenientJsonSchema)
        schema = strip_titles(schema)
        schema.pop("description", None)   # the tool's description is shown separately
        schema.setdefault("properties", {})
        return schema

    def _assign(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Map positional and keyword arguments to names; structural problems as strings."""
        problems: list[str] = []
        positional = [p for p in self.params if p.positional]
        values: dict[str, Any] = {}
        if len(args) > len(positional):
            problems.append(
                f"{self.tool_name}() takes at most {len(positional)} positional argument"
                f"{'s' if len(positional) != 1 else ''} ({len(args)} given)"
            )
        for p, value in zip(positional, args):
            values[p.name] = value
        for name, value in kwargs.items():
            if name not in self._by_name:
                known = ", ".join(self.names) or "(none)"
                problems.append(f"unknown argument {name!r} (arguments: {known})")
            elif name in values:
                problems.append(f"argument {name!r} given twice (positionally and by keyword)")
            else:
                values[name] = value
        for p in self.params:
            if p.required and p.name not in values and p.name not in kwargs:
                problems.append(f"missing required argument {p.name!r}")
        return values, problems

    def _adapter(self, name: str) -> TypeAdapter[Any]:
        adapter = self._adapters.get(name)
        if adapter is None:
            field = self.model.model_fields[name]
            tp: Any = field.annotation if field.annotation is not None else Any
            if field.metadata:
                tp = Annotated[(tp, *field.metadata)]
            try:
                adapter = TypeAdapter(tp, config=_ARBITRARY)
            except Exception:  # a type pydantic cannot validate alone: accept anything
                adapter = TypeAdapter(Any)
            self._adapters[name] = adapter
        return adapter

    def _check_value(self, name: str, value: Any) -> str | None:
        """A problem with one concrete (or placeholder) value, or None."""
        if name not in self.model.model_fields:
            return None
        if isinstance(value, Interp):
            sample = _interp_sample(value)
            if sample is None:
                return None
            value = sample
        elif isinstance(value, Ref) or next(iter_refs(value), None) is not None:
            return None
        try:
            self._adapter(name).validate_python(value, strict=False)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"[{p!r}]" for p in first.get("loc", ()))
            return f"argument {name!r}{where}: {first['msg']} (got {_short(value)})"
        return None

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        """Plan-time problems; ``Ref`` fits any type, ``Interp`` is a string (see module doc)."""
        values, problems = self._assign(args, kwargs)
        for name, value in values.items():
            problem = self._check_value(name, value)
            if problem is not None:
                problems.append(problem)
        return problems

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Validated keyword arguments; raises ToolArgumentError naming every problem."""
        values, problems = self._assign(args, kwargs)
        known = {k: v for k, v in values.items() if k in self.model.model_fields}
        instance: BaseModel | None = None
        try:
            instance = self.model.model_validate(known, strict=False)
        except ValidationError as exc:
            for err in exc.errors():
                text = _error_text(err)
                if text not in problems:
                    problems.append(text)
        if problems or instance is None:
            raise ToolArgumentError(self._problem_text(problems))
        names = instance.model_fields_set if self.exclude_unset else self.model.model_fields
        return {name: getattr(instance, name) for name in self.model.model_fields if name in names}

    def _problem_text(self, problems: list[str]) -> str:
        head = f"{self.tool_name}({render_params(self.params)})"
        if len(problems) == 1:
            return f"{head}: {problems[0]}"
        return f"{head}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


def _field_default(field: FieldInfo) -> Any:
    if field.is_required():
        return None
    if field.default is not PydanticUndefined:
        return field.default
    return PydanticUndefined  # default_factory: rendered as ``= ...``


# --- JSON schema dict -> pydantic model (LangChain tools whose args_schema is a dict) -----------

_JSON_TYPES: dict[str, Any] = {
    "string": str, "integer": int, "number": float, "boolean": bool, "null": type(None),
}


def json_type(schema: Any) -> Any:
    """The Python type a (simple) JSON schema describes; ``Any`` for what it cannot express."""
    if not isinstance(schema, dict):
        return Any
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return Literal[tuple(schema["enum"])]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return Union[tuple(json_type(s) for s in schema[key])]
    kind = schema.get("type")
    if isinstance(kind, list) and kind:
        return Union[tuple(json_type({**schema, "type": k}) for k in kind)]
    if kind in _JSON_TYPES:
        return _JSON_TYPES[kind]
    if kind == "array":
        return list[json_type(schema.get("items"))] if schema.get("items") else list  # type: ignore[misc]  # a type built at run time
    if kind == "object":
        return dict[str, Any]
    return Any


def model_from_json_schema(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model validating the (simple) object schema; unknown shapes accept anything."""
    props = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    fields: dict[str, Any] = {}
    for prop, sub in props.items():
        tp = json_type(sub)
        desc = sub.get("description") if isinstance(sub, dict) else None
        if prop in required:
            fields[prop] = (tp, Field(description=desc))
        else:
            default = sub.get("default") if isinstance(sub, dict) else None
            fields[prop] = (Optional[tp] if tp is not Any else Any, Field(default=default, description=desc))
    safe = "".join(c if c.isalnum() else "_" for c in name) or "Arguments"
    return create_model(safe, __config__=ConfigDict(extra="forbid"), **fields)


class SchemaBackedTool:
    """The Tool-protocol methods shared by tools whose arguments an :class:`ArgumentSchema` describes.

    Subclasses set ``name``, ``_schema`` (ArgumentSchema) and ``_return`` (return annotation).
    """

    name: str
    _schema: ArgumentSchema
    _return: Any

    def json_schema(self) -> dict[str, Any]:
        return self._schema.json_schema()

    def signature(self) -> str:
        shown = type_name(self._return)
        tail = f" -> {shown}" if shown is not None else ""
        return f"{self.name}({render_params(self._schema.params)}){tail}"

    def parameter_names(self) -> list[str]:
        return self._schema.names

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        return self._schema.check(args, kwargs)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._schema.bind(args, kwargs)
