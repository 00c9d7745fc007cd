"""fleetcall: compile agent queries into parallel function-call DAGs, schedule their LLM calls."""

__version__ = "0.1.0"
