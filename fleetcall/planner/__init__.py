"""The planner: plan model, incremental plan parser, JSON plans, validation, prompts, joiner.

Everything here is pure and synchronous: text in, plans, issues and decisions out.

>>> from fleetcall.planner import PlanParser
>>> [type(i).__name__ for i in PlanParser().feed('1. search("x")\\njoin()\\n')]
['Task', 'Join']
"""

from fleetcall.planner.joiner import Finish, Replan, joiner_json_schema, parse_joiner, parse_joiner_json
from fleetcall.planner.json_plan import (
    PLAN_TOOL_NAME, JsonPlanParser, parse_json_plan, plan_json_schema, plan_schema, plan_tool_definition,
)
from fleetcall.planner.parser import END_OF_PLAN, PlanParser, parse_plan, parse_plan_strict
from fleetcall.planner.plan import (
    JOIN, Interp, IssueKind, Join, Observation, ObservationStatus, Plan, PlanIssue, Ref, Round, Task,
    iter_refs,
)
from fleetcall.planner.prompts import build_joiner_messages, build_planner_messages, show_task, show_value
from fleetcall.planner.validate import check_task, cycle_issues, raise_for_issues, tool_issues, validate_plan

__all__ = [
    "Finish", "Replan", "joiner_json_schema", "parse_joiner", "parse_joiner_json",
    "PLAN_TOOL_NAME", "JsonPlanParser", "parse_json_plan", "plan_json_schema", "plan_schema", "plan_tool_definition",
    "END_OF_PLAN", "PlanParser", "parse_plan", "parse_plan_strict",
    "JOIN", "Interp", "IssueKind", "Join", "Observation", "ObservationStatus", "Plan", "PlanIssue", "Ref",
    "Round", "Task", "iter_refs",
    "build_joiner_messages", "build_planner_messages", "show_task", "show_value",
    "check_task", "cycle_issues", "raise_for_issues", "tool_issues", "validate_plan",
]
