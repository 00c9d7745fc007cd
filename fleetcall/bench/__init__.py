"""fleetcall.bench"""
