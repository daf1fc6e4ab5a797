"""The analysis layer: cost figures and plots of programs, calibrations and drift studies."""
