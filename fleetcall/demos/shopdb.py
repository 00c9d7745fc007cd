"""The ``text2sql`` demo's database: a small shop in SQLite, and schema linking over it.

Real SQLite (stdlib ``sqlite3``, in memory): the demo's tools read the real schema and run real
queries. SQLite calls run synchronously on the loop: they take microseconds on a dozen rows, and
a worker thread is not allowed under the virtual clock.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import networkx as nx

SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL, joined DATE NOT NULL);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL, price REAL NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
                     ordered_on DATE NOT NULL);
CREATE TABLE order_items (order_id INTEGER NOT NULL REFERENCES orders(id),
                          product_id INTEGER NOT NULL REFERENCES products(id),
                          quantity INTEGER NOT NULL, PRIMARY KEY (order_id, product_id));
"""

CUSTOMERS = [
    (1, "Amelie Roux", "Lyon", "2022-03-14"), (2, "Bruno Costa", "Porto", "2021-11-02"),
    (3, "Chloe Martin", "Lyon", "2023-01-20"), (4, "Dawid Nowak", "Gdansk", "2022-07-09"),
    (5, "Emma Peeters", "Ghent", "2023-05-30"), (6, "Filipe Sousa", "Porto", "2022-09-18"),
    (7, "Greta Lang", "Ghent", "2021-06-11"), (8, "Hugo Lefevre", "Lyon", "2024-02-03"),
    (9, "Ines Almeida", "Porto", "2023-08-22"), (10, "Jakub Wojcik", "Gdansk", "2023-12-01"),
    (11, "Klara Janssens", "Ghent", "2022-04-27"), (12, "Lucas Bernard", "Lyon", "2024-06-15"),
]
PRODUCTS = [
    (1, "Noise-cancelling headphones", "Electronics", 249.0), (2, "E-reader", "Electronics", 129.0),
    (3, "Smart speaker", "Electronics", 89.5), (4, "USB-C dock", "Electronics", 159.0),
    (5, "4K monitor", "Electronics", 379.0), (6, "Garden hose", "Garden", 34.9),
    (7, "Pruning shears", "Garden", 22.5), (8, "Chef knife", "Kitchen", 79.0),
    (9, "Espresso maker", "Kitchen", 189.0), (10, "Cast-iron pan", "Kitchen", 54.0),
    (11, "Field guide to birds", "Books", 24.0), (12, "SQL cookbook", "Books", 42.0),
]
ORDERS = [
    (1, 1, "2023-11-20"), (2, 2, "2024-01-15"), (3, 3, "2024-02-02"), (4, 4, "2024-03-10"),
    (5, 5, "2024-03-28"), (6, 6, "2024-04-04"), (7, 7, "2023-12-30"), (8, 8, "2024-05-19"),
    (9, 9, "2024-06-01"), (10, 10, "2024-07-07"), (11, 11, "2024-08-15"), (12, 12, "2024-09-09"),
    (13, 2, "2024-10-21"), (14, 4, "2025-01-05"),
]
# (order, product, quantity); orders 1, 7 (2023) and 14 (2025) fall outside 2024 on purpose.
ORDER_ITEMS = [
    (1, 5, 2), (1, 11, 1), (2, 1, 1), (2, 12, 1), (3, 2, 1), (3, 9, 1), (4, 5, 1), (4, 3, 2),
    (5, 6, 2), (6, 4, 2), (7, 1, 3), (8, 3, 1), (8, 8, 1), (9, 2, 2), (10, 10, 1), (11, 4, 1),
    (12, 5, 1), (13, 3, 2), (14, 1, 2),
]
MAX_ROWS = 50   # rows a query returns at most (the rest are counted, not shown)


def open_database() -> sqlite3.Connection:
    """A fresh in-memory shop database, filled and then made read-only (``PRAGMA query_only``)."""
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", CUSTOMERS)
    db.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", PRODUCTS)
    db.executemany("INSERT INTO orders VALUES (?, ?, ?)", ORDERS)
    db.executemany("INSERT INTO order_items VALUES (?, ?, ?)", ORDER_ITEMS)
    db.commit()
    db.execute("PRAGMA query_only = ON")
    return db


def run_query(db: sqlite3.Connection, sql: str) -> dict[str, Any]:
    """Execute one read-only query: ``{"columns": [...], "rows": [[...], ...]}``.

    Raises ``ValueError`` with SQLite's own message when the query is rejected, so the tool's
    error observation tells the model what to fix.
    """
    if not re.match(r"\s*(select|with)\b", sql, re.IGNORECASE):
        raise ValueError(f"only SELECT queries are allowed, got: {sql[:60]!r}")
    try:
        cursor = db.execute(sql)
        rows = cursor.fetchmany(MAX_ROWS + 1)
    except sqlite3.Error as exc:
        raise ValueError(f"SQLite rejected the query: {exc}") from exc
    columns = [d[0] for d in cursor.description or ()]
    result: dict[str, Any] = {"columns": columns, "rows": [list(r) for r in rows[:MAX_ROWS]]}
    if len(rows) > MAX_ROWS:
        result["truncated"] = True
    return result


def read_schema(db: sqlite3.Connection) -> dict[str, list[str]]:
    """Table -> its columns as ``"name TYPE"``, from the database itself."""
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
    return {t: [f"{c[1]} {c[2]}" for c in db.execute(f'PRAGMA table_info("{t}")')] for t in tables}


def foreign_keys(db: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    """Every foreign key as (table, column, referenced table, referenced column)."""
    keys = []
    for table in read_schema(db):
        for fk in db.execute(f'PRAGMA foreign_key_list("{table}")'):
            keys.append((table, fk[3], fk[2], fk[4]))
    return keys


def _stem(word: str) -> str:
    word = word.lower().removesuffix("'s")
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _text_values(db: sqlite3.Connection, table: str, column: str) -> list[str]:
    return [r[0] for r in db.execute(f'SELECT DISTINCT "{column}" FROM "{table}" LIMIT 200') if isinstance(r[0], str)]


def link_schema(db: sqlite3.Connection, question: str) -> dict[str, Any]:
    """The tables and columns ``question`` needs: matched by name, by value, then joined up.

    A table is linked when its name or one of its column names appears in the question (singular
    or plural), or when one of its text values does (``electronics`` -> ``products.category``).
    Tables on the shortest foreign-key paths between linked tables are added, so the result is
    enough to write the joins.
    """
    stems = {_stem(w) for w in re.findall(r"[A-Za-z0-9_']+", question)}
    lowered = question.lower()
    schema = read_schema(db)
    linked: set[str] = set()
    values: dict[str, list[str]] = {}
    for table, columns in schema.items():
        names = [c.split()[0] for c in columns]
        if _stem(table) in stems or any(_stem(n) in stems for n in names if n != "id"):
            linked.add(table)
        for column, kind in (c.split() for c in columns):
            if kind != "TEXT":
                continue
            hits = [v for v in _text_values(db, table, column) if re.search(rf"\b{re.escape(v.lower())}\b", lowered)]
            if hits:
                linked.add(table)
                values[f"{table}.{column}"] = hits
    keys = foreign_keys(db)
    graph = nx.Graph()
    graph.add_nodes_from(schema)
    graph.add_edges_from((t, ref) for t, _, ref, _ in keys)
    path_tables = set(linked)
    ordered = sorted(linked)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if nx.has_path(graph, a, b):
                path_tables.update(nx.shortest_path(graph, a, b))
    chosen = [t for t in schema if t in path_tables]
    joins = [f"{t}.{c} = {ref}.{rc}" for t, c, ref, rc in keys if t in path_tables and ref in path_tables]
    return {"tables": {t: schema[t] for t in chosen}, "joins": joins, "values": values}
