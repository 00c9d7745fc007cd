"""What the service accepts: request bodies as pydantic models, and every refusal as :class:`ApiError`.

A body goes through three gates, each answering in the API's JSON error shape
(``{"error": {"type", "message", "param", "code"}}``, plus ``fields`` for a 422):

1. :func:`read_body`: a ``Content-Type`` other than JSON is a 415; more than ``limit`` bytes a 413
   (refused from ``Content-Length`` before reading, else as soon as the stream passes it).
2. :func:`parse_json`: not UTF-8, not JSON, ``NaN``/``Infinity`` literals, nesting deeper than
   pydantic-core's parser takes, numbers out of its range, or a key twice in one object: 400
   ``invalid_json`` (a duplicate key would be read differently by different parsers on the way).
3. :func:`validate`: the model's own rules, strict (no ``"5"`` for 5, no ``true`` for 1): 422
   ``invalid_request`` listing every offending field (``fields``: ``[{"field", "message",
   "kind"}]``, ``param`` the first of them).

Unknown fields: :class:`RunRequest` rejects them (422 naming the field: a misspelt
``deadline`` must not be silently dropped); the OpenAI-compatible request ignores them, as
OpenAI clients send many (``temperature``, ``top_p``, ``user``, ...).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import pydantic_core
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["ApiError", "RunRequest", "MAX_DEADLINE_S", "new_run_id", "check_run_id", "read_body",
           "parse_json", "validate"]

M = TypeVar("M", bound=BaseModel)

MAX_DEADLINE_S = 86_400.0   # the longest deadline a request may set, seconds (a day)
_JSON_TYPES = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)


class ApiError(Exception):
    """A caller's mistake (or a refusal), turned into a JSON error response at the route.

    Args:
        status: the HTTP status (4xx for the caller's mistakes, 5xx for the service's).
        type_: the error's kind (``invalid_request``, ``not_found``, ...).
        message: what went wrong, for a person.
        param: the request field at fault, if one is.
        code: a finer machine-readable reason, if any.
        fields: every offending field of a validation error.
        headers: extra response headers (``Allow``, ``WWW-Authenticate``, ``x-should-retry``).
        extra: more members of the error object (``run_id``).
    """

    def __init__(self, status: int, type_: str, message: str, *, param: str | None = None,
                 code: str | None = None, fields: list[dict[str, str]] | None = None,
                 headers: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.param = param
        self.code = code
        self.fields = fields
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"[, "fields"]}}``: OpenAI's shape, so
        OpenAI clients read it too."""
        error: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param,
                                 "code": self.code}
        if self.fields is not None:
            error["fields"] = self.fields
        return {"error": {**error, **self.extra}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


Query = Annotated[str, AfterValidator(_not_blank)]
Deadline = Annotated[float, Field(gt=0, le=MAX_DEADLINE_S,
                                  description="seconds from now the run must be done by")]
Mode = Literal["compiled", "react", "parallel_calls"]   # fleetcall.executor.orchestrator.MODES


class RunRequest(BaseModel):
    """The body of ``POST /v1/runs``. Unknown fields are refused (422 naming them)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    query: Query                       # the question; not empty or blank
    deadline_s: Deadline | None = None  # budget in seconds from now, in (0, MAX_DEADLINE_S]
    stream: bool = False               # server-sent events instead of one JSON result
    mode: Mode = "compiled"            # the compiled plan, or a baseline on the same tools


# -- run ids -----------------------------------------------------------------------------------
RUN_ID_CHARS = 22   # secrets.token_urlsafe(16): 128 random bits, base64url
_RUN_ID: TypeAdapter[str] = TypeAdapter(
    Annotated[str, StringConstraints(pattern=rf"^[A-Za-z0-9_-]{{{RUN_ID_CHARS}}}$")])


def new_run_id() -> str:
    """A fresh run id: 128 random bits (22 URL-safe characters); it says nothing of other runs."""
    return secrets.token_urlsafe(16)


def check_run_id(text: str) -> str:
    """``text`` if it has the shape of a run id, else a 404 ``not_found`` (code ``malformed_run_id``)."""
    try:
        return _RUN_ID.validate_python(text)
    except ValidationError:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ApiError(404, "not_found", f"{shown!r} is not a run id (run ids are {RUN_ID_CHARS} "
                       "characters of A-Z, a-z, 0-9, '_' and '-')", param="run_id",
                       code="malformed_run_id") from None


# -- body, JSON, model -------------------------------------------------------------------------
def check_content_type(request: Request) -> None:
    """A body's ``Content-Type`` must be JSON (``application/json``, ``application/*+json``), with
    no charset but UTF-8; a missing one is taken as JSON. Anything else is a 415."""
    given = request.headers.get("content-type")
    if given is None:
        return
    media, _, params = given.partition(";")
    charset = next((v.strip().strip('"').lower() for k, _, v in (p.partition("=") for p in params.split(";"))
                    if k.strip().lower() == "charset"), "utf-8")
    if not _JSON_TYPES.fullmatch(media.strip()) or charset not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type",
                       f"the body must be JSON (Content-Type: application/json), got {given[:100]!r}")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes (and 415 if its
    ``Content-Type`` is not JSON)."""
    check_content_type(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"request body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"request body exceeds the limit of {limit} bytes")
    return bytes(body)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise _DuplicateKey(f"key {twice[0]!r} appears more than once in an object")
    return dict(pairs)


class _DuplicateKey(ValueError):
    pass


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; any flaw is a 400 ``invalid_json`` naming it.

    pydantic-core's parser checks syntax, UTF-8, escapes, depth and number range and refuses
    ``NaN``/``Infinity``; a second pass with the standard library (safe on what the first
    accepted) finds keys given twice.
    """
    if not body.strip():
        raise ApiError(400, "invalid_json", "the body is empty; send a JSON object")
    try:
        value = pydantic_core.from_json(body, allow_inf_nan=False)
        json.loads(body, object_pairs_hook=_unique_keys)
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    return value


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(body)"


def validate(model: type[M], data: Any) -> M:
    """``data`` as ``model``; a 422 ``invalid_request`` listing every offending field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [{"field": _field(e["loc"]), "message": e["msg"], "kind": e["type"]}
                  for e in exc.errors(include_url=False, include_input=False, include_context=False)]
        listed = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise ApiError(422, "invalid_request", f"invalid request: {listed}",
                       param=fields[0]["field"] if fields else None, fields=fields) from None


async def read_request(request: Request, model: type[M], limit: int) -> M:
    """A request body read (:func:`read_body`), parsed (:func:`parse_json`), validated (:func:`validate`)."""
    return validate(model, parse_json(await read_body(request, limit)))
