"""The fleet planner (``fleetcall plan-fleet``): the cheapest mix of GPUs serving a workload
within its SLO. capacity (first cut from the performance model), search (pure), runner (the
simulation runner shared with ``fleetcall tune``), planner (ties them), prices, report."""
