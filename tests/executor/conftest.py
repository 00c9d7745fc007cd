"""Shared helpers: tools with virtual-time latency and a way to run coroutines on the virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from fleetcall import tool
from fleetcall.vclock import run_virtual

T = TypeVar("T")


def vrun(coro: Coroutine[Any, Any, T]) -> T:
    """Run on the virtual clock: sleeps take no wall time, results are deterministic."""
    return run_virtual(coro)


@tool
async def search(query: str) -> str:
    """Look a thing up (takes 1 s)."""
    await asyncio.sleep(1.0)
    return f"result of {query}"


@tool
async def profile(name: str) -> dict:
    """A structured record (takes 0.5 s)."""
    await asyncio.sleep(0.5)
    return {"name": name, "price": 12.5, "tags": ["a", "b"]}


@tool
async def boom(x: str) -> str:
    """Always fails."""
    await asyncio.sleep(0.1)
    raise RuntimeError(f"boom on {x}")


@tool
async def echo(value: object) -> object:
    """Returns its argument unchanged (async: threads are not allowed under the virtual clock)."""
    return value


@pytest.fixture
def tools() -> list:
    return [search, profile, boom, echo]
