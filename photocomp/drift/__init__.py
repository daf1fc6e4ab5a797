"""Thermal drift of calibrated programs, and what compensates it.

A calibrated program is exact only at the temperature it was calibrated
at. This package models how the die's temperature wanders afterwards
(:class:`ThermalProcess`: ambient and gradients across the die, through the
package's thermal lag), how that shifts every phase shifter
(:func:`thermal_die`: thermo-optic phase per arm, arm-length imbalance per
MZI, the layout's positions), how heaters follow their drives
(:func:`first_order_step`), and compares compensators over time
(:func:`study`)::

    import photocomp as pc
    proc = pc.drift.ThermalProcess(ambient_k_per_hour=1.0, gradient_k=0.2)
    s = pc.drift.study(cal, chip, proc, hours=1.0, dt_s=1.0,
                       compensators=["none", "feedforward", "closed-loop", "recalibrate"], seed=0)
    print(s.table()); s.plot("drift.png"); s.to_csv("drift.csv")

Modules: :mod:`~photocomp.drift.thermal` (process, die, thermo-optic phase),
:mod:`~photocomp.drift.dynamics` (heater lag and the pure error trace),
:mod:`~photocomp.drift.compensators`, :mod:`~photocomp.drift.studies`.
"""

from photocomp.drift.compensators import (
    COMPENSATORS,
    ClosedLoop,
    FeedForward,
    NoCompensation,
    Recalibrate,
    Schedule,
    probe_inputs,
    sensor_positions,
)
from photocomp.drift.dynamics import drifted_chip, error_trace, first_order_step, phase_free_error
from photocomp.drift.studies import DEFAULT_COMPENSATORS, DriftStudy, read_csv, study
from photocomp.drift.thermal import (
    FIELD_NAMES,
    StateSpace,
    ThermalDie,
    ThermalProcess,
    sample_imbalance,
    simulate_temperature,
    state_space,
    thermal_die,
    thermal_phase_map,
    thermo_optic_phase,
)

__all__ = [
    "ThermalProcess",
    "ThermalDie",
    "thermal_die",
    "thermal_phase_map",
    "thermo_optic_phase",
    "sample_imbalance",
    "simulate_temperature",
    "state_space",
    "StateSpace",
    "FIELD_NAMES",
    "first_order_step",
    "phase_free_error",
    "drifted_chip",
    "error_trace",
    "NoCompensation",
    "FeedForward",
    "ClosedLoop",
    "Recalibrate",
    "Schedule",
    "COMPENSATORS",
    "DEFAULT_COMPENSATORS",
    "probe_inputs",
    "sensor_positions",
    "study",
    "DriftStudy",
    "read_csv",
]
