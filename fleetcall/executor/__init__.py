"""fleetcall.executor"""
