"""GPU and model catalogs, the roofline performance model and its calibration (used by the
router's predictor and the emulator)."""
