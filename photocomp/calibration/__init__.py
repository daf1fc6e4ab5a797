"""The calibration layer: local correction, model-based and black-box (digital-twin) calibration."""
