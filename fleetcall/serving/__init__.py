"""fleetcall.serving"""
