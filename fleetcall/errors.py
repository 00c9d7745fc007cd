"""The one exception hierarchy of fleetcall.

Exceptions are for the API caller's mistakes and for failures the caller must see; a task that
fails inside a run is not an exception but an error observation (see ``executor``).

    FleetcallError
    ├── ConfigError          bad configuration (orchestrator, pool, tool registration)
    ├── ToolError            a tool was misused: unknown tool, bad arguments
    │   ├── UnknownToolError
    │   ├── ToolArgumentError
    │   └── ToolServerError  a tool server (MCP) failed: could not connect, went away, or a
    │                        tool on it reported an error
    ├── PlanError            a plan failed to parse or validate; carries every PlanIssue at once
    ├── LLMError             a model call failed (endpoint, attempts and cause in the message)
    │   └── EndpointError    one attempt at one endpoint failed (retryable or not)
    ├── VirtualClockError    something not allowed under the virtual clock (threads, sockets)
    └── ServerStartError     a server a benchmark starts (emulated endpoint, router) did not
                             come up: names it, with the end of its log

    UnknownNameError (a KeyError) is the shared base of UnknownToolError and the catalogs'
    UnknownGPUError and UnknownModelError (both ConfigErrors): the name, and the known names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetcall.plan import PlanIssue


class FleetcallError(Exception):
    """Base of every error fleetcall raises on purpose."""


class ConfigError(FleetcallError, ValueError):
    """Bad configuration: names the field and what is wrong with it."""


class ToolError(FleetcallError):
    """A tool was used wrongly."""


class UnknownNameError(KeyError):
    """A name a registry does not know (a tool, a GPU, a model); the message lists the known
    names. Subclasses set ``kind`` and add their family (``ToolError``, ``ConfigError``)."""

    kind = "name"

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(known) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownToolError(UnknownNameError, ToolError):
    kind = "tool"


class ToolArgumentError(ToolError, ValueError):
    """Arguments that do not fit the tool's schema."""


class ToolServerError(ToolError):
    """A tool server (an MCP server) could not be reached, went away, or reported a tool's
    failure; the message names the server and, for a call, the tool."""


class PlanError(FleetcallError):
    """A plan that cannot be run; ``issues`` lists every problem found, each naming its line."""

    def __init__(self, issues: "list[PlanIssue] | tuple[PlanIssue, ...]") -> None:
        self.issues = tuple(issues)
        super().__init__(self._render())

    def _render(self) -> str:
        if not self.issues:
            return "invalid plan"
        lines = [f"invalid plan ({len(self.issues)} problem{'s' if len(self.issues) != 1 else ''}):"]
        lines += [f"  - {issue}" for issue in self.issues]
        return "\n".join(lines)


class LLMError(FleetcallError):
    """A model call failed for good (after any retries)."""


class VirtualClockError(FleetcallError, RuntimeError):
    """Something that cannot work under the virtual clock, such as a thread or a real socket."""


class WorkloadError(ConfigError):
    """A workload or arrivals file that cannot be replayed: names the file and the bad entry."""


class EndpointError(LLMError):
    """One attempt of a model call at one endpoint failed.

    Carries what a retry decision needs: ``retryable`` is true for connection errors, timeouts,
    5xx, 408, 429 and a stream that broke before anything was yielded to the caller; false for
    other 4xx (the request itself is wrong) and for a stream that broke after text was yielded
    (a retry would repeat it). ``retry_after_s`` is the server's Retry-After (429/503), in
    seconds; ``retry_after_header`` the header as sent, even when it says no number of seconds
    (an HTTP date without a Date header, ``soon``): a 503 with one is a rate limit all the same.
    The message names the endpoint and never contains an API key.
    """

    def __init__(self, endpoint: str, cause: str, *, status: int | None = None,
                 retryable: bool, retry_after_s: float | None = None,
                 first_token_seen: bool = False, retry_after_header: str | None = None) -> None:
        self.endpoint = endpoint                  # EndpointConfig.name
        self.status = status                      # HTTP status, None if no response came
        self.cause = cause                        # what went wrong, one line
        self.retryable = retryable
        self.retry_after_s = retry_after_s        # seconds the server asked to wait, if it did
        self.first_token_seen = first_token_seen  # True iff output was already yielded
        self.retry_after_header = retry_after_header  # the Retry-After header, if one came
        status_text = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"endpoint {endpoint!r}: {status_text}{cause}")


class ServerStartError(FleetcallError):
    """A server process a benchmark starts did not come up in time, or exited: the message names
    the server, its command and the end of its log."""
