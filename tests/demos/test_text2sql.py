"""The text2sql demo: real SQL on a real SQLite database, one failing candidate, its revision."""

from __future__ import annotations

import sqlite3

import pytest

from fleetcall.demos import shopdb, text2sql
from fleetcall.demos.runner import run_demo
from fleetcall.vclock import run_virtual

# Written for the test, independently of the demo's candidates.
REFERENCE = """
SELECT customers.city, SUM(order_items.quantity * products.price)
FROM order_items, orders, customers, products
WHERE order_items.order_id = orders.id AND orders.customer_id = customers.id
  AND order_items.product_id = products.id AND products.category = 'Electronics'
  AND orders.ordered_on LIKE '2024-%'
GROUP BY customers.city ORDER BY 2 DESC
"""


def _run(db: sqlite3.Connection | None = None):
    return run_virtual(text2sql.build(db=db).run(text2sql.QUESTION))


def test_answer_matches_a_direct_query() -> None:
    top_city, top_spent = shopdb.open_database().execute(REFERENCE).fetchone()
    result = _run()
    assert result.status.value == "answered"
    assert result.answer.startswith(f"{top_city}: its customers spent {top_spent:,.2f} on electronics in 2024")
    assert "both candidate queries agree" in result.answer


def test_queries_really_run_and_the_failing_candidate_is_revised() -> None:
    result = _run()
    reference = [[city, round(spent, 2)] for city, spent in shopdb.open_database().execute(REFERENCE)]
    tasks = {(t.round, t.id): t for t in result.tasks}
    assert [tasks[(0, i)].tool for i in range(1, 6)] == ["schema_link", "generate_sql", "generate_sql", "run_sql", "run_sql"]
    assert tasks[(0, 4)].observation["rows"] == reference
    assert tasks[(0, 5)].status == "error" and "no such column: p.unit_price" in tasks[(0, 5)].error
    assert len(result.replans) == 1 and "no such column" in result.replans[0].reason
    assert tasks[(1, 1)].tool == "revise_sql" and tasks[(1, 1)].observation == text2sql.REVISED_SUBQUERY
    assert tasks[(1, 2)].tool == "run_sql" and tasks[(1, 2)].observation["rows"] == reference
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        shopdb.open_database().execute(text2sql.CANDIDATE_SUBQUERY)


def test_candidates_are_generated_in_parallel() -> None:
    result = _run()
    first, second = (t for t in result.tasks if t.tool == "generate_sql")
    assert second.start < first.end


def test_the_answer_comes_from_the_rows() -> None:
    db = shopdb.open_database()
    db.execute("PRAGMA query_only = OFF")
    db.execute("UPDATE order_items SET quantity = 20 WHERE order_id = 11")   # Ghent buys 20 docks
    db.execute("PRAGMA query_only = ON")
    result = _run(db)
    assert result.answer.startswith("Ghent: its customers spent 3,180.00")


def test_react_does_the_same_work_one_step_at_a_time() -> None:
    outcome = run_virtual(run_demo(text2sql))
    assert outcome.react.answer == outcome.result.answer
    assert [t.tool for t in outcome.react.tasks].count("run_sql") == 3
    assert outcome.speedup > 1.2


def test_schema_linking_reads_the_real_schema() -> None:
    db = shopdb.open_database()
    linked = shopdb.link_schema(db, "Which books cost more than 30?")
    assert list(linked["tables"]) == ["products"]
    assert linked["values"] == {"products.category": ["Books"]}
    full = shopdb.link_schema(db, text2sql.QUESTION)
    assert set(full["tables"]) == {"customers", "orders", "order_items", "products"}   # joined up by foreign keys
    assert "orders.customer_id = customers.id" in full["joins"]


def test_run_query_is_read_only_and_reports_sqlite_errors() -> None:
    db = shopdb.open_database()
    with pytest.raises(ValueError, match="only SELECT"):
        shopdb.run_query(db, "DELETE FROM orders")
    with pytest.raises(ValueError, match="SQLite rejected the query: no such table: nope"):
        shopdb.run_query(db, "SELECT * FROM nope")
    assert shopdb.run_query(db, "SELECT COUNT(*) AS n FROM customers") == {"columns": ["n"], "rows": [[12]]}
