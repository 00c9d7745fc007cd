"""The ``text2sql`` demo: agentic Text-to-SQL against a real SQLite database the demo creates.

Schema linking reads the real schema; two candidate queries are written in parallel by the model
(through the ``generate_sql`` tool, an LLM call of its own) and both are executed for real. One
candidate uses a column that does not exist, SQLite rejects it, and the joiner asks for a new plan
that revises it with the error and runs it again; the answer is read from the rows, once both
candidates agree.

The model is scripted: every reply is written below and streamed at a realistic pace. The replies
read their prompts (schema, rows, errors), so the answer is what the database really returned.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from fleetcall import ConfigError, LLMRequest, Message, Orchestrator, Tool, ToolContext, complete, tool
from fleetcall.demos import shopdb
from fleetcall.demos.common import (
    LLMFactory, check_pace, errors_in, last_plan, last_user, literals, observation_turns, pause, scripted_model,
    user_text,
)

NAME = "text2sql"
DESCRIPTION = "schema linking, two SQL candidates in parallel on real SQLite, a revision of the failing one"
QUESTION = "Which city's customers spent the most on electronics in 2024, and how much did they spend?"

SCHEMA_LINK_LATENCY_S = 0.2   # an embedding-index lookup of columns and values, in a real system
DB_ROUND_TRIP_S = 0.15        # a database server's round trip (the SQLite call itself takes microseconds)
TTFT_S = 0.12                 # model time to first token
TPOT_S = 0.005                # model time per output token (a fast model: SQL is long)

HINTS = ("join the four tables directly", "aggregate order lines in a subquery first")
CANDIDATE_JOIN = (
    "SELECT c.city, ROUND(SUM(oi.quantity * p.price), 2) AS spent FROM customers AS c "
    "JOIN orders AS o ON o.customer_id = c.id JOIN order_items AS oi ON oi.order_id = o.id "
    "JOIN products AS p ON p.id = oi.product_id WHERE p.category = 'Electronics' "
    "AND o.ordered_on BETWEEN '2024-01-01' AND '2024-12-31' GROUP BY c.city ORDER BY spent DESC"
)
_SUBQUERY = (
    "SELECT city, ROUND(SUM(amount), 2) AS spent FROM (SELECT c.city AS city, oi.quantity * {price} AS amount "
    "FROM order_items AS oi JOIN products AS p ON p.id = oi.product_id JOIN orders AS o ON o.id = oi.order_id "
    "JOIN customers AS c ON c.id = o.customer_id WHERE p.category = 'Electronics' "
    "AND strftime('%Y', o.ordered_on) = '2024') GROUP BY city ORDER BY spent DESC"
)
CANDIDATE_SUBQUERY = _SUBQUERY.format(price="p.unit_price")   # the model's slip: no such column
REVISED_SUBQUERY = _SUBQUERY.format(price="p.price")

GENERATE_SYSTEM = ("You translate a question into one SQLite query. Use only the tables and columns given. "
                   "Answer with the SQL only.")
REVISE_SYSTEM = ("You fix a SQLite query that the database rejected. Use only the columns of the schema. "
                 "Answer with the corrected SQL only.")


# -- the tools -------------------------------------------------------------------------------------
def _sql_only(text: str) -> str:
    """The query in a model's answer, without Markdown fences."""
    fenced = re.search(r"```(?:sql)?\s*(.*?)```", text, re.DOTALL | re.IGNORECASE)
    return (fenced.group(1) if fenced else text).strip().rstrip(";")


async def _ask(ctx: ToolContext, kind: str, system: str, user: str) -> str:
    if ctx.llm is None:
        raise ConfigError(f"{kind} needs the run's model, but this run has none: give the orchestrator an llm")
    request = LLMRequest((Message("system", system), Message("user", user)), ctx.call_context(kind), max_tokens=400)
    return _sql_only((await complete(ctx.llm, request)).text)


def make_tools(db: sqlite3.Connection, pace: float = 1.0) -> list[Tool]:
    """The four Text-to-SQL tools over ``db``."""

    @tool
    async def schema_link(question: str) -> dict[str, Any]:
        """Find the tables, columns, join conditions and values a question needs, from the database's schema."""
        await pause(SCHEMA_LINK_LATENCY_S, pace)
        return shopdb.link_schema(db, question)

    @tool
    async def generate_sql(question: str, schema: dict, hint: str = "", *, ctx: ToolContext) -> str:
        """Write one SQLite query answering the question (asks the model).

        Args:
            question: the user's question.
            schema: the linked schema (the result of schema_link).
            hint: a strategy for the query, so that candidates differ.
        """
        user = f"Question: {question}\nSchema: {json.dumps(schema)}\nHint: {hint or 'none'}"
        return await _ask(ctx, "tool:generate_sql", GENERATE_SYSTEM, user)

    @tool
    async def run_sql(sql: str) -> dict[str, Any]:
        """Execute a read-only SQLite query; returns its columns and rows, or fails with the database's error."""
        await pause(DB_ROUND_TRIP_S, pace)
        return shopdb.run_query(db, sql)

    @tool
    async def revise_sql(sql: str, error: str, *, ctx: ToolContext) -> str:
        """Correct a query the database rejected, given its error message (asks the model).

        Args:
            sql: the rejected query.
            error: the database's error message.
        """
        schema = json.dumps(shopdb.read_schema(db))
        return await _ask(ctx, "tool:revise_sql", REVISE_SYSTEM, f"Query: {sql}\nError: {error}\nSchema: {schema}")

    return [schema_link, generate_sql, run_sql, revise_sql]


# -- the scripted model ----------------------------------------------------------------------------
def first_plan() -> str:
    q = repr(QUESTION)
    return "\n".join([
        "Thought: Link the question to the schema, then write two different candidates and run both.",
        f"1. schema_link({q})",
        f"2. generate_sql({q}, $1, hint={HINTS[0]!r})",
        f"3. generate_sql({q}, $1, hint={HINTS[1]!r})",
        "4. run_sql($2)",
        "5. run_sql($3)",
        "6. join()",
        "<END_OF_PLAN>",
    ])


def revision_plan(prompt: str) -> str:
    """The second plan: revise the failed candidate with its error, as the prompt shows them."""
    errors = errors_in(prompt)
    if not errors or CANDIDATE_SUBQUERY not in prompt:
        raise ValueError("the scripted planner expected the failed candidate and its error in its prompt")
    return "\n".join([
        "Thought: Candidate 2 used a column that does not exist; revise it with the error, then run it.",
        f"1. revise_sql({CANDIDATE_SUBQUERY!r}, {errors[0]!r})",
        "2. run_sql($1)",
        "3. join()",
        "<END_OF_PLAN>",
    ])


def answer_from(results: list[dict[str, Any]]) -> str:
    """The answer, read from the rows of the queries that ran (the first one's, checked against the rest)."""
    rows = results[0]["rows"]
    city, spent = rows[0]
    text = f"{city}: its customers spent {spent:,.2f} on electronics in 2024"
    if len(rows) > 1:
        text += f" (next: {rows[1][0]}, {rows[1][1]:,.2f})"
    if len(results) > 1:
        agree = all(r["rows"] == rows for r in results[1:])
        text += "; both candidate queries agree" if agree else "; note: the candidate queries disagree"
    return text


def join_reply(prompt: str) -> str:
    """Replan while the latest plan has a failed query; answer from the rows once none failed."""
    errors = errors_in(last_plan(prompt))
    if errors:
        return ("Thought: One candidate failed, so the two candidates cannot be cross-checked yet.\n"
                f"Action: Replan(A candidate query failed: {errors[0]}. Revise it with that error and run it again.)")
    results = [r for r in literals(prompt, "columns") if r.get("rows")]
    if not results:
        return "Thought: No query returned rows.\nAction: Replan(no candidate query returned any rows)"
    return f"Thought: The candidates returned the totals per city.\nAction: Finish({answer_from(results)})"


def react_step(step: int, request: LLMRequest) -> str:
    """One ReAct step: the same strategy as the plan (two candidates, a revision), one call at a time."""
    q = repr(QUESTION)
    text = user_text(request)
    schema = literals(text, "tables")[-1] if step in (1, 3) else None
    steps = {
        0: f"Thought: Which tables do I need?\nAction: schema_link({q})",
        1: f"Thought: First candidate.\nAction: generate_sql({q}, {schema!r}, hint={HINTS[0]!r})",
        2: f"Thought: Run it.\nAction: run_sql({CANDIDATE_JOIN!r})",
        3: f"Thought: A second candidate, to cross-check.\nAction: generate_sql({q}, {schema!r}, hint={HINTS[1]!r})",
        4: f"Thought: Run it.\nAction: run_sql({CANDIDATE_SUBQUERY!r})",
    }
    if step in steps:
        return steps[step]
    if step == 5:
        error = (errors_in(last_user(request)) or ["unknown error"])[0]
        return f"Thought: It failed; revise it.\nAction: revise_sql({CANDIDATE_SUBQUERY!r}, {error!r})"
    if step == 6:
        return f"Thought: Run the revision.\nAction: run_sql({REVISED_SUBQUERY!r})"
    results = [r for r in literals(text, "columns") if r.get("rows")]
    return f"Thought: Both candidates ran.\nAction: Finish({answer_from(results)})"


def revise_reply(prompt: str) -> str:
    if CANDIDATE_SUBQUERY in prompt and "no such column: p.unit_price" in prompt and "price REAL" in prompt:
        return REVISED_SUBQUERY
    query = re.search(r"^Query: (.*)$", prompt, re.MULTILINE)
    return query.group(1) if query else "SELECT 1"


def respond(request: LLMRequest) -> str:
    """The scripted model: what it answers for each kind of call of this demo."""
    kind = request.context.kind
    prompt = user_text(request)
    if kind == "planner":
        return first_plan() if request.context.stage == 0 else revision_plan(prompt)
    if kind == "joiner":
        return join_reply(prompt)
    if kind == "react":
        return react_step(observation_turns(request), request)
    if kind == "tool:generate_sql":
        return CANDIDATE_SUBQUERY if f"Hint: {HINTS[1]}" in prompt else CANDIDATE_JOIN
    if kind == "tool:revise_sql":
        return revise_reply(prompt)
    raise ValueError(f"the scripted model of the {NAME} demo has no reply for a {kind!r} call")


def model(pace: float = 1.0) -> LLMFactory:
    """The demo's default model: the scripted one, at ``TTFT_S`` / ``TPOT_S`` times ``pace``."""
    return scripted_model(TTFT_S, TPOT_S, pace)


def build(llm_factory: LLMFactory | None = None, *, pace: float = 1.0,
          db: sqlite3.Connection | None = None) -> Orchestrator:
    """A fresh orchestrator over a fresh shop database (or ``db``); ``llm_factory(respond)`` makes its model.

    >>> orch = build()
    >>> # result = await orch.run(QUESTION)
    """
    pace = check_pace(pace)
    llm = (llm_factory or model(pace))(respond)
    return Orchestrator(tools=make_tools(db or shopdb.open_database(), pace), llm=llm)
