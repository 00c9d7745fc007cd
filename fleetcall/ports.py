"""Ports for servers that cannot be given port 0 (Ray Serve's proxy, sglang-router): chosen
here, bound by them later."""

from __future__ import annotations

import random
import socket

__all__ = ["free_port"]

# Where free_port draws from: above the well-known and common service ports, below the system's
# ephemeral range (Linux: /proc/sys/net/ipv4/ip_local_port_range; 32768 there by default).
_FREE_PORT_LOW = 10_000
_EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def free_port(host: str) -> int:
    """A port on ``host`` that nothing listens on now, for a server that binds it later
    (Ray Serve's proxy, seconds later, after Ray has started processes of its own).

    Drawn below the system's ephemeral range: a port the system hands out for a port-0
    listener (Ray's workers, the scheduler actor's direct connection) and takes back could
    be handed out again before the proxy binds it ("Failed to bind to address", seen in a
    test). Without a known range, or if no port there is free, the system picks one."""
    top = _ephemeral_low()
    if top > _FREE_PORT_LOW:
        for port in random.sample(range(_FREE_PORT_LOW, top), min(64, top - _FREE_PORT_LOW)):
            try:
                with socket.create_server((host, port)):
                    return port
            except OSError:
                continue
    with socket.create_server((host, 0)) as sock:
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The lowest port of the system's ephemeral range (0 if unknown)."""
    try:
        with open(_EPHEMERAL_RANGE) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
