"""Workloads: agentic queries as stages of LLM calls with token lengths, loaded from traces.

A :class:`QuerySpec` is a chain of stages; the calls of one stage run in parallel, the stages one
after another (the shape of the HEXGEN-TEXT2SQL workflow). Traces give token lengths, not text:
:func:`to_messages` makes a prompt of exactly the call's length whose prefix is shared with other
calls exactly when the trace says so (Mooncake-style ids of 512-token blocks), so an endpoint's
prefix cache hits where a real one would.

Loaders (each raises :class:`~fleetcall.errors.WorkloadError` naming the file and the entry):

- :func:`load_hexgen_trace` -- the HEXGEN-TEXT2SQL JSON format (builtin ``trace1``, ``trace2``);
- :func:`load_mooncake` -- Mooncake JSONL: one single-call query per line (builtin ``mooncake``);
- :func:`load_agent_sessions` -- ``*_calls.csv`` agent sessions (builtin ``miniswe``, ``magagent``);
- :func:`load_requests_csv` -- ``timestamp_s,input_tokens,output_tokens`` (builtin ``azure-conv``);
- :func:`load_workload` -- any of those, by builtin name or file extension.

A length of 0 in a trace (``magagent_calls.csv`` has calls whose prompt was not recorded) is
replayed as 1 token: an endpoint cannot serve an empty prompt or answer.

    >>> queries = load_workload("trace1")
    >>> len(queries), queries[0].stages[5][0].step, len(queries[0].stages[5])
    (90, 'generate_candidate_llama-agent', 2)
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from fleetcall.errors import WorkloadError
from fleetcall.llm.base import Message
from fleetcall.router.prefix import CHARS_PER_TOKEN
from fleetcall.sim.filler import blocks_text, filler_text

BLOCK_TOKENS = 512  # tokens of one prefix block named by a ``prefix_ids`` entry (Mooncake's size)
# Steps of the HEXGEN-TEXT2SQL workflow whose consecutive calls run as one parallel stage.
HEXGEN_PARALLEL_STEPS = frozenset({"generate_candidate_llama-agent", "evaluate"})
# First block id given to agent sessions: keeps their blocks apart from Mooncake's small ids.
SESSION_BLOCK_ID_BASE = 10**10

# builtin workload name -> file in fleetcall/data/traces
BUILTIN_TRACES: dict[str, str] = {
    "trace1": "trace1.json",
    "trace2": "trace2.json",
    "azure-conv": "azure2023_conv.csv",
    "mooncake": "mooncake_conversation.jsonl",
    "miniswe": "miniswe_calls.csv",
    "magagent": "magagent_calls.csv",
}

Source = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One LLM call of a query: its step name and token lengths."""

    step: str            # the workflow step (sent as CallContext.kind)
    prompt_tokens: int   # prompt length, >= 1
    output_tokens: int   # tokens to generate (replayed with ignore_eos), >= 1
    # Ids of the prompt's leading 512-token blocks, Mooncake style: calls whose leading ids are
    # equal have equal prompt prefixes. The last block may be partial (then it is the leading
    # part of that id's full block), so (len - 1) * 512 < prompt_tokens.
    prefix_ids: tuple[int, ...] = ()
    shared_tokens: int = 0  # prompt tokens the trace says it shares with the session's previous call

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise ValueError(f"call {self.step!r}: prompt_tokens and output_tokens must be >= 1, "
                             f"got {self.prompt_tokens} and {self.output_tokens}")
        if self.prefix_ids and (len(self.prefix_ids) - 1) * BLOCK_TOKENS >= self.prompt_tokens:
            raise ValueError(f"call {self.step!r}: {len(self.prefix_ids)} prefix blocks of "
                             f"{BLOCK_TOKENS} tokens do not fit {self.prompt_tokens} prompt tokens")
        if self.shared_tokens < 0:
            raise ValueError(f"call {self.step!r}: shared_tokens must be >= 0")


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """One query: stages run one after another, the calls of a stage concurrently."""

    query_id: str
    stages: tuple[tuple[CallSpec, ...], ...]  # at least one stage, each of at least one call
    arrival_s: float | None = None            # recorded arrival (s from the trace's start), if any
    tenant: str = "default"                   # class of user, for per-tenant deadlines

    def __post_init__(self) -> None:
        if not self.stages or not all(self.stages):
            raise ValueError(f"query {self.query_id!r}: needs at least one stage, each non-empty")

    @property
    def calls(self) -> tuple[CallSpec, ...]:
        """Every call, stage by stage (the index used by :func:`to_messages`)."""
        return tuple(call for stage in self.stages for call in stage)

    @property
    def n_calls(self) -> int:
        return sum(len(stage) for stage in self.stages)


# --------------------------------------------------------------------------- files

def data_file(name_or_path: Source) -> Traversable:
    """A builtin trace (``"trace1"``, ``"mooncake"``, ...: see :data:`BUILTIN_TRACES`) or a file."""
    text = os.fspath(name_or_path)
    if text in BUILTIN_TRACES:
        return resources.files("fleetcall") / "data" / "traces" / BUILTIN_TRACES[text]
    path = Path(text)
    if not path.is_file():
        raise WorkloadError(f"{text}: no such file (builtin workloads: "
                            f"{', '.join(BUILTIN_TRACES)})")
    return path


def _read(name_or_path: Source) -> tuple[str, str]:
    """(label for error messages, text) of a trace file."""
    source = data_file(name_or_path)
    label = os.fspath(name_or_path)
    try:
        return label, source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"{label}: cannot read ({exc})") from exc


def _stem(label: str) -> str:
    name = Path(label).name
    return name.split(".", 1)[0] or name


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _count(value: Any, where: str, key: str) -> int:
    """A non-negative integer, from a JSON number or CSV text."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WorkloadError(f"{where}: {key!r} must be a non-negative integer, got {_short(value)}")
    return value


def _length(value: Any, where: str, key: str) -> int:
    """A token length; 0 (a length the trace did not record) is replayed as 1."""
    return max(_count(value, where, key), 1)


def _number(value: Any, where: str, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number >= 0.0 or number == float("inf"):
        raise WorkloadError(f"{where}: {key!r} must be a finite number >= 0, got {_short(value)}")
    return number


# --------------------------------------------------------------------------- HEXGEN traces

def group_stages(calls: Iterable[CallSpec],
                 parallel_steps: frozenset[str] = HEXGEN_PARALLEL_STEPS,
                 ) -> tuple[tuple[CallSpec, ...], ...]:
    """Stages of a workflow: a run of consecutive calls of one parallel step is one stage, every
    other call a stage of its own (the HEXGEN-TEXT2SQL rule)."""
    stages: list[list[CallSpec]] = []
    for call in calls:
        if stages and call.step in parallel_steps and stages[-1][-1].step == call.step:
            stages[-1].append(call)
        else:
            stages.append([call])
    return tuple(tuple(stage) for stage in stages)


def load_hexgen_trace(path_or_name: Source, *,
                      parallel_steps: frozenset[str] = HEXGEN_PARALLEL_STEPS) -> list[QuerySpec]:
    """Queries of a HEXGEN-TEXT2SQL trace:
    ``[{"Text2SQLRequest": [{"step", "input_length", "output_length"}, ...]}, ...]``.

    Query ids are ``<file stem>-<index>`` (``trace1-0``); no recorded arrivals.
    """
    label, text = _read(path_or_name)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"{label}: not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not data:
        raise WorkloadError(f"{label}: expected a non-empty JSON list of "
                            f'{{"Text2SQLRequest": [...]}} queries, got {_short(data)}')
    stem = _stem(label)
    return [_hexgen_query(entry, f"{stem}-{i}", f"{label}: query {i}", parallel_steps)
            for i, entry in enumerate(data)]


def _hexgen_query(entry: Any, query_id: str, where: str,
                  parallel_steps: frozenset[str]) -> QuerySpec:
    raw = entry.get("Text2SQLRequest") if isinstance(entry, dict) else None
    if not isinstance(raw, list) or not raw:
        raise WorkloadError(f'{where}: expected {{"Text2SQLRequest": [call, ...]}} with at least '
                            f"one call, got {_short(entry)}")
    calls = [_hexgen_call(call, f"{where}, call {j}") for j, call in enumerate(raw)]
    return QuerySpec(query_id, group_stages(calls, parallel_steps))


def _hexgen_call(call: Any, where: str) -> CallSpec:
    if not isinstance(call, dict):
        raise WorkloadError(f"{where}: expected an object with step, input_length, "
                            f"output_length, got {_short(call)}")
    step = call.get("step")
    if not isinstance(step, str) or not step:
        raise WorkloadError(f"{where}: 'step' must be a non-empty string, got {_short(step)}")
    return CallSpec(step, _length(call.get("input_length"), where, "input_length"),
                    _length(call.get("output_length"), where, "output_length"))


# --------------------------------------------------------------------------- Mooncake

def load_mooncake(path_or_name: Source, *, step: str = "conversation") -> list[QuerySpec]:
    """One single-call query per JSONL line ``{"timestamp" (ms), "input_length",
    "output_length", "hash_ids"}``; ``hash_ids`` become the call's 512-token ``prefix_ids``."""
    label, text = _read(path_or_name)
    stem, queries = _stem(label), list[QuerySpec]()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            queries.append(_mooncake_query(line, f"{stem}-{len(queries)}", step,
                                           f"{label}: line {lineno}"))
    if not queries:
        raise WorkloadError(f"{label}: no requests")
    return queries


def _mooncake_query(line: str, query_id: str, step: str, where: str) -> QuerySpec:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(row, dict):
        raise WorkloadError(f"{where}: expected a JSON object, got {_short(row)}")
    prompt = _length(row.get("input_length"), where, "input_length")
    output = _length(row.get("output_length"), where, "output_length")
    ids = row.get("hash_ids", [])
    if not isinstance(ids, list) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in ids):
        raise WorkloadError(f"{where}: 'hash_ids' must be a list of non-negative integers, "
                            f"got {_short(ids)}")
    if ids and (len(ids) - 1) * BLOCK_TOKENS >= prompt:
        raise WorkloadError(f"{where}: {len(ids)} hash_ids of {BLOCK_TOKENS}-token blocks for "
                            f"only {prompt} input tokens")
    arrival = _number(row.get("timestamp"), where, "timestamp") / 1000.0
    return QuerySpec(query_id, ((CallSpec(step, prompt, output, tuple(ids)),),), arrival_s=arrival)


# --------------------------------------------------------------------------- CSV traces

_SESSION_COLUMNS = ("timestamp_s", "session_id", "call_idx", "input_tokens", "output_tokens",
                    "shared_prefix_tokens_with_prev_call")
_REQUEST_COLUMNS = ("timestamp_s", "input_tokens", "output_tokens")


def _csv_rows(label: str, text: str, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file, after checking its header has ``required`` columns."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or ())]
    if missing:
        raise WorkloadError(f"{label}: missing column(s) {', '.join(missing)} "
                            f"(header: {', '.join(reader.fieldnames or ()) or 'none'})")
    rows = [(reader.line_num, row) for row in reader]
    if not rows:
        raise WorkloadError(f"{label}: no rows")
    return rows


def load_agent_sessions(path_or_name: Source, *, step: str = "agent") -> list[QuerySpec]:
    """One query per session of a ``*_calls.csv`` trace, one call per stage, in ``call_idx`` order.

    Each call re-sends the growing context: its ``prefix_ids`` (one per full 512-token block of its
    prompt) start with the previous call's first ``shared_prefix_tokens_with_prev_call // 512``
    ids, and continue with fresh ids, so the next call can share them in turn. Sharing is thus
    realised to the 512-token block (up to 511 shared tokens a call are replayed as unshared);
    ``shared_tokens`` keeps the trace's exact figure. ``arrival_s`` is the session's first call.
    """
    label, text = _read(path_or_name)
    sessions: dict[str, list[_SessionRow]] = {}
    for lineno, row in _csv_rows(label, text, _SESSION_COLUMNS):
        where = f"{label}: line {lineno}"
        sessions.setdefault(row["session_id"], []).append(_SessionRow(
            index=_count(row["call_idx"], where, "call_idx"),
            timestamp=_number(row["timestamp_s"], where, "timestamp_s"),
            prompt=_length(row["input_tokens"], where, "input_tokens"),
            output=_length(row["output_tokens"], where, "output_tokens"),
            shared=_count(row["shared_prefix_tokens_with_prev_call"], where,
                          "shared_prefix_tokens_with_prev_call")))
    fresh = itertools.count(SESSION_BLOCK_ID_BASE)
    stem = _stem(label)
    return [_session_query(f"{stem}-{sid}", sorted(rows, key=lambda r: r.index), step, fresh)
            for sid, rows in sessions.items()]


@dataclass(frozen=True, slots=True)
class _SessionRow:
    index: int        # call_idx within the session
    timestamp: float  # s
    prompt: int       # tokens
    output: int       # tokens
    shared: int       # prompt tokens shared with the session's previous call


def _session_query(query_id: str, rows: list[_SessionRow], step: str,
                   fresh: Iterator[int]) -> QuerySpec:
    prev_ids: tuple[int, ...] = ()
    calls = []
    for row in rows:
        full = row.prompt // BLOCK_TOKENS
        keep = min(row.shared // BLOCK_TOKENS, len(prev_ids), full)
        own = prev_ids[:keep] + tuple(next(fresh) for _ in range(full - keep))
        calls.append(CallSpec(step, row.prompt, row.output, own, shared_tokens=row.shared))
        prev_ids = own
    return QuerySpec(query_id, tuple((call,) for call in calls),
                     arrival_s=min(r.timestamp for r in rows))


def load_requests_csv(path_or_name: Source, *, step: str = "request") -> list[QuerySpec]:
    """One single-call query per row of ``timestamp_s,input_tokens,output_tokens`` (Azure trace);
    no shared prefixes."""
    label, text = _read(path_or_name)
    stem, queries = _stem(label), list[QuerySpec]()
    for lineno, row in _csv_rows(label, text, _REQUEST_COLUMNS):
        where = f"{label}: line {lineno}"
        call = CallSpec(step, _length(row["input_tokens"], where, "input_tokens"),
                        _length(row["output_tokens"], where, "output_tokens"))
        queries.append(QuerySpec(f"{stem}-{len(queries)}", ((call,),),
                                 arrival_s=_number(row["timestamp_s"], where, "timestamp_s")))
    return queries


def _load_csv(path_or_name: Source) -> list[QuerySpec]:
    """Sessions if the header has ``session_id``, else single requests."""
    with data_file(path_or_name).open("r", encoding="utf-8") as file:
        header = next(csv.reader([file.readline()]), [])
    if "session_id" in header:
        return load_agent_sessions(path_or_name)
    return load_requests_csv(path_or_name)


# file extension -> loader
_LOADERS: dict[str, Callable[[Source], list[QuerySpec]]] = {
    ".json": load_hexgen_trace,
    ".jsonl": load_mooncake,
    ".csv": _load_csv,
}


def load_workload(spec: Source) -> list[QuerySpec]:
    """Queries of a builtin workload name or a trace file, by extension: ``.json`` HEXGEN,
    ``.jsonl`` Mooncake, ``.csv`` agent sessions (with ``session_id``) or single requests."""
    text = os.fspath(spec)
    suffix = Path(BUILTIN_TRACES.get(text, text)).suffix.lower()
    loader = _LOADERS.get(suffix)
    if loader is None:
        raise WorkloadError(f"{text}: unknown workload (builtin names: "
                            f"{', '.join(BUILTIN_TRACES)}; files: {', '.join(_LOADERS)})")
    return loader(spec)


def repeat_queries(queries: Sequence[QuerySpec], n: int) -> list[QuerySpec]:
    """The first ``n`` queries of ``queries`` cycled in order; the k-th repeat of a query gets the
    id ``<id>~k`` so every replayed query (and its prompts) is distinct."""
    if not queries:
        raise WorkloadError("no queries to repeat")
    out = []
    for i in range(n):
        base = queries[i % len(queries)]
        rep = i // len(queries)
        out.append(base if rep == 0 else QuerySpec(f"{base.query_id}~{rep}", base.stages,
                                                   base.arrival_s, base.tenant))
    return out


# --------------------------------------------------------------------------- prompt text

def _key_digest(key: str) -> str:
    return hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()


def call_text(call: CallSpec, key: str) -> str:
    """The prompt of ``call``: exactly ``call.prompt_tokens`` tokens (``count_tokens``).

    With ``prefix_ids``: their blocks, then an unshared tail (a partial last block is the
    leading part of its id's block). Without: a 4-token head unique to ``key`` (hex of a hash),
    then filler. The head matters: filler_text has only 17,576 distinct starts, so seeds alone
    would give thousands of unrelated calls identical prompts, and false prefix-cache hits.
    """
    chars = call.prompt_tokens * CHARS_PER_TOKEN
    digest = _key_digest(key)
    if call.prefix_ids:
        tail = max(0, call.prompt_tokens - BLOCK_TOKENS * len(call.prefix_ids))
        return blocks_text(call.prefix_ids, BLOCK_TOKENS, tail, int(digest, 16))[:chars]
    head = digest[:CHARS_PER_TOKEN * 4 - 1] + " "
    body = filler_text(max(0, call.prompt_tokens - 4), seed=int(digest, 16))
    return (head + body)[:chars]


def to_messages(call: CallSpec, query_id: str, index: int) -> tuple[Message, ...]:
    """The prompt of the ``index``-th call (see :attr:`QuerySpec.calls`) of query ``query_id``,
    as one user message; unrelated calls never share a prefix, calls with equal leading
    ``prefix_ids`` do."""
    return (Message("user", call_text(call, f"{query_id}/{index}")),)


def independent_calls(queries: Sequence[QuerySpec]) -> list[QuerySpec]:
    """Every call of ``queries`` as a query of its own (one stage of one call), in order: the
    traces' call lengths without their workflows, as a router serving single requests sees
    them. Ids are ``<query id>/<index in QuerySpec.calls>``; the tenant is kept, recorded
    arrivals are not (a call has none of its own).

        >>> calls = independent_calls(load_workload("trace1"))
        >>> len(calls), calls[0].query_id, calls[0].n_calls
        (1732, 'trace1-0/0', 1)
    """
    return [QuerySpec(f"{query.query_id}/{i}", ((call,),), tenant=query.tenant)
            for query in queries for i, call in enumerate(query.calls)]
