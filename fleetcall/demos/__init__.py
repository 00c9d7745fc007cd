"""fleetcall.demos"""
