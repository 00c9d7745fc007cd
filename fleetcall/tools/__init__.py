"""fleetcall.tools"""
