"""The HTTP service: the ASGI app (runs, endpoints, metrics, auth) served by ``fleetcall serve``."""

from fleetcall.service.app import create_app

__all__ = ["create_app"]
