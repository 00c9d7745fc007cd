"""Tests of the HTTP service (fleetcall.service.app) and `fleetcall serve`."""
