"""Simulation: the emulated GPU engine, emulated endpoints, their HTTP and in-process fronts, responders."""
