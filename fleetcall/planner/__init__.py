"""The planner: plan model, incremental plan parser, JSON plans, validation, prompts, joiner.

Everything here is pure and synchronous: text in, plans, issues and decisions out.

>>> from fleetcall.planner import PlanParser
>>> [type(i).__name__ for i in PlanParser().feed('1. search("x")\\njoin()\\n')]
['Task', 'Join']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetcall._lazy import lazy_exports

if TYPE_CHECKING:
    from fleetcall.planner.joiner import Finish, Replan, joiner_json_schema, parse_joiner, parse_joiner_json
    from fleetcall.planner.json_plan import (
        PLAN_TOOL_NAME, JsonPlanParser, parse_json_plan, plan_json_schema, plan_schema, plan_tool_definition,
    )
    from fleetcall.planner.parser import END_OF_PLAN, PlanParser, parse_plan, parse_plan_strict
    from fleetcall.plan import (
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

__getattr__, __dir__ = lazy_exports(__name__, {
    'Finish': 'fleetcall.planner.joiner',
    'Replan': 'fleetcall.planner.joiner',
    'joiner_json_schema': 'fleetcall.planner.joiner',
    'parse_joiner': 'fleetcall.planner.joiner',
    'parse_joiner_json': 'fleetcall.planner.joiner',
    'PLAN_TOOL_NAME': 'fleetcall.planner.json_plan',
    'JsonPlanParser': 'fleetcall.planner.json_plan',
    'parse_json_plan': 'fleetcall.planner.json_plan',
    'plan_json_schema': 'fleetcall.planner.json_plan',
    'plan_schema': 'fleetcall.planner.json_plan',
    'plan_tool_definition': 'fleetcall.planner.json_plan',
    'END_OF_PLAN': 'fleetcall.planner.parser',
    'PlanParser': 'fleetcall.planner.parser',
    'parse_plan': 'fleetcall.planner.parser',
    'parse_plan_strict': 'fleetcall.planner.parser',
    'JOIN': 'fleetcall.plan',
    'Interp': 'fleetcall.plan',
    'IssueKind': 'fleetcall.plan',
    'Join': 'fleetcall.plan',
    'Observation': 'fleetcall.plan',
    'ObservationStatus': 'fleetcall.plan',
    'Plan': 'fleetcall.plan',
    'PlanIssue': 'fleetcall.plan',
    'Ref': 'fleetcall.plan',
    'Round': 'fleetcall.plan',
    'Task': 'fleetcall.plan',
    'iter_refs': 'fleetcall.plan',
    'build_joiner_messages': 'fleetcall.planner.prompts',
    'build_planner_messages': 'fleetcall.planner.prompts',
    'show_task': 'fleetcall.planner.prompts',
    'show_value': 'fleetcall.planner.prompts',
    'check_task': 'fleetcall.planner.validate',
    'cycle_issues': 'fleetcall.planner.validate',
    'raise_for_issues': 'fleetcall.planner.validate',
    'tool_issues': 'fleetcall.planner.validate',
    'validate_plan': 'fleetcall.planner.validate',
})
