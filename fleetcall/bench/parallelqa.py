"""The ParallelQA workload of ``fleetcall bench executor``, with a modelled LLM and tools.

Each ParallelQA question (LLMCompiler's benchmark) names ``branch`` entities to compare. Its
work is always the same shape: ``branch`` searches, one arithmetic step on each result, one
comparison, then the answer. The benchmark does not judge a model's wits but the orchestration,
so the model is scripted: it writes the right plan (or the right ReAct step, or the right batch
of parallel calls) for each mode, streamed at a modelled pace; the tools sleep for modelled
latencies and compute for real. Every figure is a field of :class:`LatencyModel`, adjustable
from the command line.

Search latencies are drawn per (question, entity) from a seeded hash, so every mode of one
question sees the same tool latencies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fleetcall.errors import ConfigError
from fleetcall.llm.base import LLMRequest
from fleetcall.llm.scripted import Pace, ScriptedLLM
from fleetcall.tools.arith import evaluate
from fleetcall.tools.base import Tool
from fleetcall.tools.function import FunctionTool

FACTORS = (1.2, 0.8, 1.5, 0.7, 1.1, 0.9, 1.3, 0.6)  # the arithmetic each question asks of its entities


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Modelled latencies, seconds (defaults: a GPT-3.5-class hosted model and web search)."""

    ttft_s: float = 0.35           # model time to first token
    tpot_s: float = 0.02           # model time per output token (50 tokens/s)
    tokens_per_chunk: int = 1      # tokens per streamed chunk
    search_min_s: float = 0.4      # search latency, uniform in [min, max] per (question, entity)
    search_max_s: float = 1.2
    math_s: float = 0.05           # arithmetic tool latency
    thought_words: int = 12        # words of a "Thought:" line (ReAct steps, the plan, the joiner)

    def pace(self) -> Pace:
        return Pace(self.ttft_s, self.tpot_s, self.tokens_per_chunk)

    def search_latency(self, question_id: str, entity: int) -> float:
        digest = hashlib.blake2b(f"{question_id}/{entity}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2**64
        return self.search_min_s + (self.search_max_s - self.search_min_s) * u


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    text: str
    branch: int

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(f"entity{self.id}x{k + 1}" for k in range(self.branch))

    def value(self, k: int) -> int:
        """The figure search returns for entity ``k`` (deterministic, distinct)."""
        digest = hashlib.blake2b(f"value/{self.id}/{k}".encode(), digest_size=4).digest()
        return 100 + int.from_bytes(digest, "big") % 9900

    def scaled(self, k: int) -> float:
        return float(evaluate(f"c0 * {FACTORS[k % len(FACTORS)]}", [self.value(k)]))

    @property
    def answer(self) -> str:
        return self.entities[max(range(self.branch), key=self.scaled)]


def load_parallelqa(path: str | Path | None = None) -> list[Question]:
    """ParallelQA questions from ``path`` (a JSON list of ``{id, question, branch}``), or the
    packaged copy of LLMCompiler's 113 questions."""
    try:
        if path is None:
            text = resources.files("fleetcall.data").joinpath("llmcompiler/parallelqa.json").read_text()
        else:
            text = Path(path).read_text()
        items = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read ParallelQA dataset {path}: {exc}") from exc
    if not isinstance(items, list):
        raise ConfigError(f"ParallelQA dataset {path}: expected a JSON list of questions")
    out = []
    for i, item in enumerate(items):
        try:
            branch = int(item["branch"])
            if branch < 1:
                raise ValueError("branch must be >= 1")
            out.append(Question(str(item.get("id", i + 1)), str(item["question"]), branch))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"ParallelQA dataset {path}: entry {i} is malformed ({exc!r}); "
                              "each needs 'question' and an integer 'branch'") from exc
    return out


def _thought(words: int, about: str) -> str:
    filler = " ".join(["then"] * max(words - len(about.split()), 0))
    return f"Thought: {about} {filler}".rstrip()


class ParallelQAModel:
    """The scripted model: what it answers to each kind of call, for each question."""

    def __init__(self, questions: list[Question], latency: LatencyModel) -> None:
        self.by_text = {q.text: q for q in questions}
        self.latency = latency

    def question_of(self, request: LLMRequest) -> Question:
        for m in request.messages:
            for text, q in self.by_text.items():
                if text in m.content:
                    return q
        raise LookupError("request names no known question")

    # -- the texts, one per call kind ------------------------------------------------------
    def plan_text(self, q: Question) -> str:
        b = q.branch
        lines = [_thought(self.latency.thought_words, "search every entity at once, then scale each.")]
        lines += [f'{k + 1}. search("{e}")' for k, e in enumerate(q.entities)]
        lines += [f'{b + k + 1}. math("c0 * {FACTORS[k % len(FACTORS)]}", context=[${k + 1}.value])'
                  for k in range(b)]
        refs = ", ".join(f"${b + k + 1}" for k in range(b))
        expr = "max(" + ", ".join(f"c{k}" for k in range(b)) + ")"
        lines.append(f'{2 * b + 1}. math("{expr}", context=[{refs}])')
        lines += [f"{2 * b + 2}. join()", "<END_OF_PLAN>"]
        return "\n".join(lines)

    def joiner_text(self, q: Question) -> str:
        thought = _thought(self.latency.thought_words, "the largest scaled value decides.")
        return f"{thought}\nAction: Finish({q.answer})"

    def react_text(self, q: Question, step: int) -> str:
        b, words = q.branch, self.latency.thought_words
        if step < b:
            action = f'search("{q.entities[step]}")'
        elif step < 2 * b:
            k = step - b
            action = f'math("c0 * {FACTORS[k % len(FACTORS)]}", context=[{q.value(k)}])'
        elif step == 2 * b:
            values = ", ".join(repr(q.scaled(k)) for k in range(b))
            action = 'math("max(' + ", ".join(f"c{k}" for k in range(b)) + f')", context=[{values}])'
        else:
            action = f"Finish({q.answer})"
        return f"{_thought(words, f'step {step + 1}.')}\nAction: {action}"

    def parallel_text(self, q: Question, turn: int) -> str:
        b = q.branch
        if turn == 0:
            return "\n".join(f'{k + 1}. search("{e}")' for k, e in enumerate(q.entities))
        if turn == 1:
            return "\n".join(f'{k + 1}. math("c0 * {FACTORS[k % len(FACTORS)]}", context=[{q.value(k)}])'
                             for k in range(b))
        if turn == 2:
            values = ", ".join(repr(q.scaled(k)) for k in range(b))
            return '1. math("max(' + ", ".join(f"c{k}" for k in range(b)) + f')", context=[{values}])'
        return f"Finish({q.answer})"

    def reply(self, request: LLMRequest) -> str:
        q = self.question_of(request)
        kind = request.context.kind
        turns = sum(1 for m in request.messages[2:] if m.role == "user")
        if kind == "planner":
            return self.plan_text(q)
        if kind == "joiner":
            return self.joiner_text(q)
        if kind == "react":
            return self.react_text(q, turns)
        if kind == "parallel_calls":
            return self.parallel_text(q, turns)
        raise LookupError(f"the ParallelQA model has no script for {kind!r} calls")

    def llm(self) -> ScriptedLLM:
        lat = self.latency
        return ScriptedLLM(self.reply, ttft_s=lat.ttft_s, tpot_s=lat.tpot_s,
                           tokens_per_chunk=lat.tokens_per_chunk)

    def tools(self) -> list[Tool]:
        """``search`` (modelled latency, returns ``{"entity", "value"}``) and ``math``."""
        entity_of = {e: (q, k) for q in self.by_text.values() for k, e in enumerate(q.entities)}
        latency = self.latency

        async def search(query: str) -> dict[str, object]:
            """Look an entity up: returns its name and its figure as {"entity", "value"}."""
            q, k = entity_of[query.strip()]
            await asyncio.sleep(latency.search_latency(q.id, k))
            return {"entity": query, "value": q.value(k)}

        async def math(expression: str, context: list | None = None) -> float:
            """Arithmetic over context values c0, c1, ... (e.g. "c0 * 1.2")."""
            await asyncio.sleep(latency.math_s)
            return float(evaluate(expression, context))

        return [FunctionTool(search), FunctionTool(math)]
