"""fleetcall.planner"""
