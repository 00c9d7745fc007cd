"""Tests of the HTTP service (fleetcall.app) and `fleetcall serve`."""
