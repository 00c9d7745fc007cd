"""free_port: a port for a server that binds it later, outside the range the system hands to
port-0 listeners (a port taken from there and released could be handed out again before the
server binds it: Ray Serve's proxy failed with "Failed to bind to address" in a test)."""

from __future__ import annotations

import socket

import pytest

import fleetcall.ports as ports
from fleetcall.ports import free_port


def test_a_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    low = ports._ephemeral_low()
    if low <= ports._FREE_PORT_LOW:
        pytest.skip(f"no ephemeral range above {ports._FREE_PORT_LOW} known here ({low})")
    for _ in range(20):
        port = free_port("127.0.0.1")
        assert ports._FREE_PORT_LOW <= port < low
        with socket.create_server(("127.0.0.1", port)):
            pass


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        used = taken.getsockname()[1]
        monkeypatch.setattr(ports, "_ephemeral_low", lambda: 65_000)
        with socket.create_server(("127.0.0.1", 0)) as probe:
            other = probe.getsockname()[1]
        monkeypatch.setattr(ports.random, "sample", lambda population, k: [used, other])
        assert free_port("127.0.0.1") == other


def test_without_a_known_range_the_system_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_EPHEMERAL_RANGE", "/nonexistent/ip_local_port_range")
    assert ports._ephemeral_low() == 0
    port = free_port("127.0.0.1")
    with socket.create_server(("127.0.0.1", port)):
        pass
