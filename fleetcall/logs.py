"""How fleetcall logs: one convention for every layer.

Loggers, one per layer (children of ``fleetcall``; fleetcall adds no handler and sets no level,
the application does, e.g. ``logging.basicConfig(level=logging.INFO)``):

=====================  ===================================================================
``fleetcall.executor`` runs, plans, replans, tasks and tools (:mod:`fleetcall.executor`)
``fleetcall.router``   endpoints and LLM calls of a pool: cooldowns, breakers, retries
``fleetcall.service``  the HTTP service (runs are logged by the executor, not again here)
=====================  ===================================================================

Every message is one line: an event name, then ``key=value`` fields::

    run.end query_id=3f9c2a7b1e40-1 mode=compiled status=answered latency_s=1.234 plans=2 ...

A value is written as it is when it is a number (seconds with three decimals), a boolean
(``true``/``false``), ``none``, or text of letters, digits and ``_.:/@+-`` only; any other text
is JSON-quoted (newlines and control characters escaped) and cut to :data:`MAX_VALUE_CHARS`
characters, so a model's or a tool's text can neither break a line nor forge a record. Each
record also carries ``record.event`` (the name), ``record.fields`` (a dict of the values) and
``record.where`` (the run and task it concerns, ``key=value`` text, or "") for structured
handlers.

Levels: INFO for what happens once per run (``run.start``, ``run.end``) or only when
something goes wrong (a replan, a retry, a cooldown, a breaker closing); WARNING for failures
someone may have to act on (a rejected plan, a failed tool, a breaker opening, a call that no
endpoint could take, a tool blocking the event loop). Nothing is logged per token, or per task
or LLM call that goes well. Never logged: API keys, the service's token, a query's text.
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.parse
from collections.abc import Mapping

__all__ = ["EXECUTOR", "ROUTER", "SERVICE", "MAX_VALUE_CHARS", "event", "fields", "shown_url", "value"]

EXECUTOR = "fleetcall.executor"
ROUTER = "fleetcall.router"
SERVICE = "fleetcall.service"

MAX_VALUE_CHARS = 300   # a text value longer than this is cut (and says how long it was)

_BARE = re.compile(r"[A-Za-z0-9_.:/@+\-]+")


def value(v: object, limit: int = MAX_VALUE_CHARS) -> str:
    """One field's value as the module docstring says (never raises, never a newline).

    >>> value(1.5), value(True), value(None), value("answered"), value("two words")
    ('1.500', 'true', 'none', 'answered', '"two words"')
    """
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else str(v)
    try:
        text = v if isinstance(v, str) else str(v)
    except Exception as exc:  # noqa: BLE001  # a log line must not fail on a value's __str__
        text = f"<{type(v).__name__}: str() raised {type(exc).__name__}>"
    if _BARE.fullmatch(text) and len(text) <= limit:
        return text
    if len(text) > limit:
        text = f"{text[:limit]}...[{len(text)} chars]"
    quoted = json.dumps(text, ensure_ascii=False)
    # JSON leaves U+2028/U+2029 (line breaks to some viewers) and lone surrogates (unencodable) raw
    quoted = quoted.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return quoted.encode("utf-8", "backslashreplace").decode("utf-8")


def fields(**values: object) -> str:
    """``key=value`` pairs of ``values``, space-separated, in order.

    >>> fields(query_id="q1", round=0, task_id=3)
    'query_id=q1 round=0 task_id=3'
    """
    return " ".join(f"{k}={value(v)}" for k, v in values.items())


def event(logger: logging.Logger, level: int, name: str, where: str = "", /, **values: object) -> None:
    """Log event ``name`` at ``level`` on ``logger``: ``name [where] key=value...``.

    ``where`` is :func:`fields` text naming the run and task concerned (a tool call's label).
    Costs one level check when the level is off.

    >>> event(logging.getLogger("fleetcall.executor"), logging.INFO, "plan.replan", query_id="q1", round=0)
    """
    if not logger.isEnabledFor(level):
        return
    shown: Mapping[str, object] = values
    parts = [name, where, fields(**shown)] if where else [name, fields(**shown)]
    logger.log(level, " ".join(p for p in parts if p),
               extra={"event": name, "fields": dict(shown), "where": where}, stacklevel=2)


_USERINFO = re.compile(r"//[^/?#]*@")


def shown_url(url: object) -> str:
    """``url`` as errors and logs may show it: without its user info, query and fragment, where
    credentials ride (``http://user:pw@host/v1?api_key=...`` -> ``http://host/v1``). Text that
    is not a URL with a host is returned as it is.

    >>> shown_url("https://me:s3cret@mcp.example.com:8443/mcp?token=abc#x")
    'https://mcp.example.com:8443/mcp'
    """
    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname
        port = parts.port
    except ValueError:   # unparsable (a bad port, an unclosed "["): cut what could be secret
        return _USERINFO.sub("//", text).split("?")[0].split("#")[0]
    if not parts.scheme or host is None:
        return text
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port is not None else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
