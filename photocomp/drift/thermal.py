"""Thermal model of the die: the temperature process, the field, and the phases it shifts.

**Temperature process** (:class:`ThermalProcess`). Relative to the moment of
calibration, the die temperature is

    dT(x, y, t) = a(t) + g_x(t) (x - x_c) / W_x + g_y(t) (y - y_c) / W_y

with ``a`` the ambient (package) temperature and ``g_x``, ``g_y`` the
temperature differences end to end across the die along and across the
light (``W`` the die's extent, ``(x_c, y_c)`` its centre). Each of the three
follows a driver ``u`` through the package's first-order thermal lag,
``dz = (u - z) dt / tau_p``; each driver is an Ornstein–Uhlenbeck process
(a random walk when its correlation time is infinite). The pair is linear,
so it is simulated exactly at any time step: ``x' = F x + w``, ``w ~ N(0,
Q)``, with ``F`` and ``Q`` from Van Loan's matrix exponential
(:func:`state_space`). The process starts from its stationary law and the
die's state at calibration is subtracted, so every trajectory starts at 0.

**Thermo-optic phase** (:func:`thermo_optic_phase`): a waveguide of length
``L`` warmed by ``dT`` gains ``2 pi L (dn/dT) dT / lambda``.

**From the field to heater phases** (:func:`thermal_phase_map`). Every mode
of the mesh carries the same length of waveguide per column (the mesh is
path balanced), split into an input section (half a column pitch, with the
external heater on the upper mode) and an arm section (half a pitch, between
the couplers, with the internal heater on the upper arm); output phase
shifters sit on one full pitch per mode. The heated arm of every shifter is
at its layout position (:func:`photocomp.hardware.chip.heater_positions`); the
reference arm of an MZI (and of an attenuator) runs one mode pitch below it.
An MZI's upper arm is longer than its lower arm by a fabricated imbalance
``dL`` (:class:`ThermalDie`). For an MZI with input phase screen ``(s_n,
s_{n+1})``:

* its internal heater sees ``k [(l + dL) dT_upper - l dT_lower]``;
* its external heater absorbs ``s_n - s_{n+1} + k l (dT_in,upper - dT_in,lower)``;
* the common part ``s_{n+1} + k l (dT_in,lower + dT_lower)`` leaves on both
  outputs (a phase on both arms commutes with the couplers),

with ``k = 2 pi (dn/dT) / lambda`` and ``l`` half a column pitch. A cell of
Fldzhyan's layout (a shifter and one static coupler, no internal arms) has only
the input section: its external heater absorbs ``s_n - s_{n+1} + k [(l + dL)
dT_in,upper - l dT_in,lower]`` (the arms between the couplers before it and its
own are the unequal ones) and ``s_{n+1} + k l dT_in,lower`` leaves. Modes
that pass a column without an MZI gain ``k l`` times the temperatures of
both sections; output shifters absorb the screen that reaches them. This
push of phase screens is exact, so the thermal state moves the chip exactly
like a change of heater phases: a flat ``(H,)`` vector per kelvin of each of
``a``, ``g_x``, ``g_y``. A balanced mesh (``dL = 0``) under uniform heating
therefore gains the same phase on every output: a global phase. So does a
gradient along the light. A gradient across the modes does not: every mode
runs the whole length of the die, so it tilts the phases across the modes in
proportion to that length, the mesh's strongest thermal sensitivity.

The die is the chip's: an ``svd`` chip's V mesh, attenuator column and U
mesh, or a ``unitary`` chip's one mesh (:data:`photocomp.core.ir.CIRCUITS`),
with heaters where :func:`~photocomp.hardware.chip.heater_positions` puts
them for that circuit. The unitary die of a seed has the arm imbalances of
the svd die's U mesh, as its chip has that mesh's components.

References: J. Komma et al., "Thermo-optic coefficient of silicon at 1550 nm
and cryogenic temperatures", Appl. Phys. Lett. 101, 041905 (2012) (dn/dT);
G. E. Uhlenbeck and L. S. Ornstein, "On the theory of the Brownian motion",
Phys. Rev. 36, 823 (1930) (the driver process); C. F. Van Loan, "Computing
integrals involving the matrix exponential", IEEE Trans. Autom. Control 23,
395 (1978) (the exact discrete-time noise covariance).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from photocomp.core.bell import bell_from_clements
from photocomp.core.errors import InvalidInputError, InvalidTypeError
from photocomp.core.ir import circuit_stages
from photocomp.core.registry import quote
from photocomp.core.target import Target
from photocomp.core.validate import check_int, check_real
from photocomp.hardware.chip import Chip, as_chip, heater_positions, heater_slices

__all__ = [
    "ThermalProcess",
    "ThermalDie",
    "thermal_die",
    "thermo_optic_phase",
    "thermal_phase_map",
    "sample_imbalance",
    "field_basis",
    "simulate_temperature",
    "state_space",
    "StateSpace",
    "FIELD_NAMES",
]

#: the three components of the temperature state, in order (all in K)
FIELD_NAMES = ("ambient_k", "gradient_x_k", "gradient_y_k")

HOUR_S = 3600.0

#: largest RMS temperature (K) a :class:`ThermalProcess` accepts: the linear thermo-optic model's range
MAX_TEMPERATURE_K = 100.0
#: largest arm-length imbalance standard deviation (um)
MAX_IMBALANCE_UM = 1000.0
#: accepted finite time constants (s) of a :class:`ThermalProcess`
TAU_RANGE_S = (1e-6, 1e9)
#: memory (bytes) a drift simulation may ask for before it is refused up front
MEMORY_LIMIT_BYTES = 2 * 1024**3


@dataclasses.dataclass(frozen=True)
class ThermalProcess:
    """The thermal environment of a die and its drift-specific parameters.

    Each temperature component (ambient, gradient along x, gradient along y)
    is driven by an Ornstein–Uhlenbeck process ``u`` (the package's
    surroundings) that the die follows through the package's first-order
    thermal lag: ``dz = (u - z) dt / package_tau_s``.

    Attributes (defaults and where they come from):
      ambient_k_per_hour: RMS change over one hour of the ambient driving the
        package (K), default 1.0: an uncontrolled package in a conditioned
        room. For scale, ASHRAE's thermal guidelines for data processing
        environments allow rates of change of 5-20 K per hour, and a
        thermo-electric controller holds a package to ~0.01 K. (Order of
        magnitude; an assumption, not a measurement of a particular chip.)
      ambient_tau_s: correlation time of the ambient driver (s), default
        7200; ``math.inf`` makes it a random walk (assumption: room
        temperature wanders over hours).
      gradient_k: stationary RMS of the die's end-to-end temperature
        difference, per axis (K), default 0.2 (assumption: non-uniform
        mounting and heat sinking).
      gradient_tau_s: correlation time of the gradient drivers (s), default
        1800 (assumption).
      package_tau_s: thermal time constant of the package and die (s),
        default 120 (assumption: a die on a metal carrier settles in
        minutes); 0 makes the die follow its drivers at once (pure OU).
      arm_imbalance_um: standard deviation of the effective arm-length
        imbalance of an MZI (um), default 30: designed-equal arms still
        differ in their thermal response over a heater section of a few
        hundred um, e.g. from a changed waveguide cross-section or cladding
        under the heater (assumption: ~10 % over ~300 um).

    Ranges (checked when built): temperatures in ``[0, 100]`` K (the linear
    thermo-optic model does not hold much beyond), the imbalance in ``[0,
    1000]`` um, time constants in ``[1e-6, 1e9]`` s (``math.inf`` for the
    ambient driver, ``0`` for the package).

    The thermo-optic coefficient, wavelength, layout pitches and the heater
    time constant come from the chip's :class:`~photocomp.core.target.Target`.

    Example:
      >>> import photocomp as pc
      >>> proc = pc.drift.ThermalProcess(ambient_k_per_hour=1.0, gradient_k=0.2)
      >>> round(proc.ambient_sigma_k, 3)   # stationary RMS of the ambient driver (K)
      1.127
    """

    ambient_k_per_hour: float = 1.0
    ambient_tau_s: float = 7200.0
    gradient_k: float = 0.2
    gradient_tau_s: float = 1800.0
    package_tau_s: float = 120.0
    arm_imbalance_um: float = 30.0

    def __post_init__(self):
        for name, high in (("ambient_k_per_hour", MAX_TEMPERATURE_K), ("gradient_k", MAX_TEMPERATURE_K),
                           ("arm_imbalance_um", MAX_IMBALANCE_UM)):
            object.__setattr__(self, name, check_real(getattr(self, name), f"ThermalProcess.{name}", low=0.0, high=high))
        lo, hi = TAU_RANGE_S
        for name in ("ambient_tau_s", "gradient_tau_s", "package_tau_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise InvalidTypeError(f"ThermalProcess.{name} must be a real number (s); got {type(v).__name__} {quote(v)}")
            v = float(v)
            if name == "package_tau_s":
                ok, what = v == 0 or lo <= v <= hi, f"0 (the die follows its drivers at once) or in [{lo:g}, {hi:g}] s"
            else:
                ok, what = lo <= v <= hi or v == math.inf, f"in [{lo:g}, {hi:g}] s, or math.inf for a random walk"
            if not ok:
                raise InvalidInputError(f"ThermalProcess.{name} must be {what}; got {quote(v)}")
            object.__setattr__(self, name, v)
        if math.isinf(self.gradient_tau_s) and self.gradient_k > 0:
            raise InvalidInputError("ThermalProcess.gradient_tau_s must be finite: gradient_k is a stationary RMS value")

    @property
    def ambient_sigma_k(self) -> float:
        """Stationary RMS of the ambient driver (K); ``inf`` for a random walk."""
        if math.isinf(self.ambient_tau_s):
            return math.inf
        return self.ambient_k_per_hour / math.sqrt(-2.0 * math.expm1(-HOUR_S / self.ambient_tau_s))

    def replace(self, **changes) -> ThermalProcess:
        return dataclasses.replace(self, **changes)


def as_process(proc: object) -> ThermalProcess:
    if not isinstance(proc, ThermalProcess):
        raise InvalidTypeError(f"process must be a photocomp.drift.ThermalProcess; got {type(proc).__name__}")
    return proc


def thermo_optic_phase(length_um: npt.ArrayLike, delta_t_k: npt.ArrayLike, *, wavelength_nm: float = 1550.0,
                       dn_dt_per_k: float = 1.8e-4) -> np.ndarray | np.floating:
    """Phase (rad) a waveguide of ``length_um`` gains when warmed by ``delta_t_k``.

    ``2 pi L (dn/dT) dT / lambda``; arrays broadcast.

    Example:
      >>> round(float(thermo_optic_phase(100.0, 1.0)), 6)   # 100 um, 1 K
      0.072966
    """
    return 2.0 * np.pi * np.asarray(length_um) * dn_dt_per_k * np.asarray(delta_t_k) / (wavelength_nm * 1e-3)


@dataclasses.dataclass(frozen=True)
class StateSpace:
    """Exact discrete-time form of the process over one step (host float64 arrays).

    State ``x`` (6,): ``[u_a, z_a, u_gx, z_gx, u_gy, z_gy]`` (drivers ``u``,
    die temperatures ``z``, K). ``x' = F x + w`` with ``w ~ N(0, Q)``;
    ``P0`` is the stationary covariance (zero for a random-walk component,
    which starts at 0); ``die`` (3, 6) picks the die temperatures.
    """

    F: np.ndarray
    Q: np.ndarray
    P0: np.ndarray
    die: np.ndarray


def _component(dt_s: float, tau_s: float, sigma: float, diffusion: float, package_tau_s: float):
    """``(F, Q, P0)`` (2x2) of one driver/die pair (Van Loan's matrix exponential for Q).

    ``Q`` is linear in ``diffusion**2``: it is computed for a diffusion of
    ``1 / h`` (every block of Van Loan's matrix then of order one) and scaled.
    Van Loan's exponential holds ``exp(+A h)``, which overflows when a rate
    times the step is large, so it is taken over ``h = dt_s / 2**n`` with
    every rate times ``h`` at most 1, and the step is doubled ``n`` times
    (``F <- F F``, ``Q <- F Q F^T + Q``), exactly.
    """
    from jax.scipy.linalg import expm

    a = 0.0 if math.isinf(tau_s) else 1.0 / tau_s
    if package_tau_s == 0:  # the die is the driver: z' = u'
        rho = math.exp(-a * dt_s)
        q = diffusion**2 * (dt_s if a == 0 else -math.expm1(-2 * a * dt_s) / (2 * a))
        F = np.array([[rho, 0.0], [rho, 0.0]])
        Q = q * np.ones((2, 2))
        P0 = (0.0 if a == 0 else sigma**2) * np.ones((2, 2))
        return F, Q, P0
    b = 1.0 / package_tau_s
    n = max(0, math.ceil(math.log2(max(a, b) * dt_s))) if max(a, b) * dt_s > 1 else 0
    h = dt_s / 2.0**n
    A = np.array([[-a, 0.0], [b, -b]])
    M = np.zeros((4, 4))
    M[:2, :2] = -A * h
    M[0, 2] = 1.0  # the noise block G G^T h for a diffusion of 1 / h
    M[2:, 2:] = A.T * h
    with jax.enable_x64(True):
        E = np.asarray(expm(jnp.asarray(M)))
    F = E[2:, 2:].T
    Q = h * (F @ E[:2, 2:])  # back to unit diffusion
    for _ in range(n):
        Q = F @ Q @ F.T + Q
        F = F @ F
    Q = diffusion**2 * (Q + Q.T) / 2
    if a == 0:
        P0 = np.zeros((2, 2))
    else:
        c = sigma**2 * b / (a + b)
        P0 = np.array([[sigma**2, c], [c, c]])
    return F, Q, P0


def state_space(proc: ThermalProcess, dt_s: float) -> StateSpace:
    """The exact one-step transition of ``proc`` over ``dt_s`` (see :class:`StateSpace`).

    Raises:
      InvalidInputError: if ``dt_s`` is not a finite number > 0, or the
        transition is not finite (a process outside the model's range).
    """
    proc = as_process(proc)
    dt_s = check_real(dt_s, "dt_s", low=0.0, low_open=True)
    blocks = []
    # ambient: RMS change per hour of the driver gives its diffusion and stationary RMS
    if math.isinf(proc.ambient_tau_s):
        sig_a, dif_a = math.inf, proc.ambient_k_per_hour / math.sqrt(HOUR_S)
    else:
        sig_a = proc.ambient_sigma_k
        dif_a = sig_a * math.sqrt(2.0 / proc.ambient_tau_s)
    blocks.append(_component(dt_s, proc.ambient_tau_s, sig_a, dif_a, proc.package_tau_s))
    # gradients: the die's stationary RMS is gradient_k, so the driver's is larger by sqrt((a + b) / b)
    a = 1.0 / proc.gradient_tau_s
    scale = 1.0 if proc.package_tau_s == 0 else math.sqrt((a + 1.0 / proc.package_tau_s) * proc.package_tau_s)
    sig_g = proc.gradient_k * scale
    for _ in range(2):
        blocks.append(_component(dt_s, proc.gradient_tau_s, sig_g, sig_g * math.sqrt(2.0 * a), proc.package_tau_s))
    F, Q, P0 = (np.zeros((6, 6)) for _ in range(3))
    for i, (f, q, p) in enumerate(blocks):
        s = slice(2 * i, 2 * i + 2)
        F[s, s], Q[s, s], P0[s, s] = f, q, p
    die = np.zeros((3, 6))
    die[[0, 1, 2], [1, 3, 5]] = 1.0
    if not (np.all(np.isfinite(F)) and np.all(np.isfinite(Q)) and np.all(np.isfinite(P0))):
        raise InvalidInputError(f"process and dt_s must give a finite thermal transition; got {proc} at "
                                f"dt_s = {dt_s:g} s, outside the range the model can represent")
    return StateSpace(F, Q, P0, die)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return v * np.sqrt(np.clip(w, 0.0, None))


def simulate_temperature(key: jax.Array, proc: ThermalProcess, n_steps: int, dt_s: float) -> jax.Array:
    """Die temperature state ``(n_steps + 1, 3)`` (K) relative to calibration, at ``t = k dt_s``.

    Columns: ambient, gradient along x, gradient along y (:data:`FIELD_NAMES`).
    The process starts from its stationary law (drivers and die), and the
    die's state at ``t = 0`` is subtracted. Pure in ``key``; ``jax.vmap``
    over keys gives Monte-Carlo runs:

      >>> import jax, photocomp as pc
      >>> keys = jax.random.split(jax.random.PRNGKey(0), 8)
      >>> sim = lambda k: pc.drift.simulate_temperature(k, pc.drift.ThermalProcess(), 60, 1.0)
      >>> jax.vmap(sim)(keys).shape
      (8, 61, 3)

    Raises:
      InvalidInputError: for ``n_steps`` < 0, ``dt_s`` <= 0, or a trajectory
        larger than :data:`MEMORY_LIMIT_BYTES` (stating its size).
    """
    n_steps = check_int(n_steps, "n_steps", low=0)
    need = 8 * 16 * (n_steps + 1)  # noise and states (6 each) and the temperatures (3), float64
    if need > MEMORY_LIMIT_BYTES:
        raise InvalidInputError(f"n_steps must keep the trajectory within {format_bytes(MEMORY_LIMIT_BYTES)}; got "
                                f"n_steps = {n_steps:,}, about {format_bytes(need)}")
    return _simulate(key, *process_matrices(proc, dt_s), n_steps)


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units, e.g. ``"1.5 GiB"``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.3g} {units[i]}"


def process_matrices(proc: ThermalProcess, dt_s: float) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(F, sqrt Q, sqrt P0, die)`` as arrays for :func:`simulate_temperature`'s pure core."""
    ss = state_space(proc, dt_s)
    return jnp.asarray(ss.F), jnp.asarray(_sqrt_psd(ss.Q)), jnp.asarray(_sqrt_psd(ss.P0)), jnp.asarray(ss.die)


@functools.partial(jax.jit, static_argnames=("n_steps",))
def simulate_runs(keys, F, L, L0, die, n_steps: int):
    """:func:`simulate_temperature` for a batch of keys at once (``jax.vmap``): ``(R, n_steps + 1, 3)``."""
    return jax.vmap(lambda k: _simulate(k, F, L, L0, die, n_steps))(keys)


def _simulate(key, F, L, L0, die, n_steps: int):
    k0, k1 = jax.random.split(key)
    dtype = F.dtype
    x0 = L0 @ jax.random.normal(k0, (F.shape[0],), dtype)
    xi = jax.random.normal(k1, (n_steps, F.shape[0]), dtype)

    def step(x, e):
        x = F @ x + L @ e
        return x, x

    _, xs = jax.lax.scan(step, x0, xi)
    z = jnp.concatenate([x0[None], xs], axis=0) @ die.T
    return z - z[:1]


# ---- the die ---------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _positions(target: Target, circuit: str = "svd") -> np.ndarray:
    """:func:`photocomp.hardware.chip.heater_positions`, computed once per target and circuit (read-only)."""
    pos = heater_positions(target, circuit)
    pos.setflags(write=False)
    return pos


@dataclasses.dataclass(frozen=True)
class ThermalDie:
    """Thermal response of one fabricated die (host arrays, float64).

    Attributes:
      target: the chip's target.
      imbalance_um: arm-length imbalance (um) of every MZI, keyed ``"v"``,
        ``"att"``, ``"u"`` like the chip's coupler errors (a unitary chip: ``"u"`` only).
      heater_xy: ``(H, 2)`` heater positions (um), flat heater order.
      centre, extent: die centre and extent ``(W_x, W_y)`` (um).
      phase_per_k: ``(H, 3)`` heater phase shift (rad) per kelvin of ambient,
        x gradient and y gradient (:func:`thermal_phase_map`).
      circuit: the chip's circuit, ``"svd"``, ``"unitary"`` or ``"crossbar"``.
    """

    target: Target
    imbalance_um: dict
    heater_xy: np.ndarray
    centre: np.ndarray
    extent: np.ndarray
    phase_per_k: np.ndarray
    circuit: str = "svd"

    def field(self, xy: npt.ArrayLike, state: npt.ArrayLike) -> np.ndarray:
        """Temperature change (K) at positions ``xy`` (..., 2) um for states ``(..., 3)`` (broadcast)."""
        return np.sum(field_basis(xy, self.centre, self.extent) * np.asarray(state)[..., None, :], axis=-1)


def field_basis(xy: npt.ArrayLike, centre: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """``(P, 3)`` temperature per unit of ambient, x gradient and y gradient at ``xy`` (P, 2)."""
    xy = np.asarray(xy, dtype=np.float64)
    rel = (xy - centre) / extent
    return np.concatenate([np.ones(xy.shape[:-1] + (1,)), rel], axis=-1)


def die_box(target: Target, circuit: str = "svd") -> tuple[np.ndarray, np.ndarray]:
    """``(centre, extent)`` (um) of a ``circuit`` die: the box around every heater and reference arm."""
    pos = _positions(target, circuit)
    lo = pos.min(axis=0)
    hi = pos.max(axis=0) + np.array([0.0, target.mode_pitch_um])
    return (lo + hi) / 2, np.maximum(hi - lo, 1e-9)


def sample_imbalance(chip: Chip, sigma_um: float) -> dict[str, np.ndarray]:
    """Arm-length imbalance (um) per MZI, from a seed derived from the chip's seed.

    The chip itself is left as fabricated: the standard normal draws come
    from ``numpy.random.default_rng([chip.seed, K, 0xD81F7])`` and are scaled
    by ``sigma_um``, so one chip has one imbalance pattern at every scale.
    Keys are the chip's stages (``"v"``, ``"att"``, ``"u"``; a unitary chip
    ``"u"`` only, with the svd chip's U draws of the same seed).
    """
    chip = as_chip(chip)
    sigma_um = check_real(sigma_um, "sigma_um", low=0.0, high=MAX_IMBALANCE_UM)
    t = chip.target
    rng = np.random.default_rng([chip.seed, t.size, 0xD81F7])
    m = t.layout.n_mzi
    draws = {s: rng.standard_normal(n) for s, n in (("v", m), ("att", t.size), ("u", m))}
    return {s: sigma_um * draws[s] for s in circuit_stages(chip.circuit)}


def thermal_phase_map(target: Target, imbalance_um: dict, temperature: Callable[[np.ndarray], npt.ArrayLike],
                      circuit: str = "svd") -> np.ndarray:
    """Heater phase shifts (rad) ``(H, B)`` that ``B`` temperature fields cause (module docstring).

    Args:
      target: the chip's target (layout, pitches, wavelength, dn/dT).
      imbalance_um: arm-length imbalance per MZI (um), keyed by the circuit's
        stages: ``"v"``, ``"att"``, ``"u"`` (``svd``) or ``"u"`` (``unitary``).
      temperature: ``f(xy) -> (P, B)``: temperature change (K) of ``B`` fields
        at positions ``xy`` (P, 2) um.
      circuit: the chip's circuit, ``"svd"``, ``"unitary"`` or ``"crossbar"``; ``H`` is its heater count.
        A crossbar's weight cell: its internal heater sees its arms' difference, its input shifter the
        path's common phase (input section and reference arm), each output reference its section.
    """
    stages = circuit_stages(circuit)
    if not isinstance(imbalance_um, dict) or set(imbalance_um) != set(stages):
        got = sorted(map(str, imbalance_um)) if isinstance(imbalance_um, dict) else type(imbalance_um).__name__
        raise InvalidInputError(f"imbalance_um must be a dict with keys {sorted(stages)} for the {circuit} "
                                f"circuit; got {quote(got)}")
    lay = target.layout
    n, px, py = target.size, target.column_pitch_um, target.mode_pitch_um
    kappa = float(thermo_optic_phase(1.0, 1.0, wavelength_nm=target.wavelength_nm, dn_dt_per_k=target.dn_dt_per_k))
    half = px / 2
    pos = _positions(target, circuit)
    sl = heater_slices(target, circuit)
    below = np.array([0.0, py])
    n_fields = np.asarray(temperature(pos[:1])).shape[-1]
    out = np.zeros((len(pos), n_fields))
    temp = lambda xy: np.asarray(temperature(np.asarray(xy, dtype=np.float64)), dtype=np.float64)  # noqa: E731
    modes_y = np.arange(n) * py

    trims = len(lay.cell.trims)
    if lay.crossbar:  # independent weight cells (photocomp.core.crossbar)
        p_int, p_ext = pos[sl["u_int"]], pos[sl["u_ext"]]
        imb = np.asarray(imbalance_um["u"], dtype=np.float64)
        t_l = temp(p_int + below)
        # the internal heater sees the arms' difference; the input shifter carries the path's common phase:
        # its input section and the reference (lower) arm; the output reference its own section
        out[sl["u_int"]] = kappa * ((half + imb[:, None]) * temp(p_int) - half * t_l)
        out[sl["u_ext"]] = kappa * half * (temp(p_ext) + t_l)
        out[sl["u_out"]] = kappa * px * temp(pos[sl["u_out"]])
        return out

    def bell_stage(name, x0, screen):
        """A Bell mesh: arm sections onto the arm heaters, the phases between columns by the Bell sweep."""
        p_int, p_low = pos[sl[f"{name}_int"]], pos[sl[f"{name}_low"]]
        imb = np.asarray(imbalance_um[name], dtype=np.float64)
        d_int = kappa * (half + imb[:, None]) * temp(p_int)
        d_low = kappa * half * temp(p_low)
        pairs, cols = lay.pair_array, lay.column_array
        arrive = screen.copy()  # phases reaching the next cells, per mode
        gamma = np.zeros((lay.n_mzi, n_fields))
        eps = np.zeros((lay.n_mzi, n_fields))
        for c in range(lay.depth):
            sel = np.flatnonzero(cols == c)
            top = pairs[sel]
            arrive += kappa * half * temp(np.column_stack([np.full(n, (x0 + c - 0.5) * px), modes_y]))
            gamma[sel], eps[sel] = -arrive[top], -arrive[top + 1]
            free = np.setdiff1d(np.arange(n), np.concatenate([top, top + 1]))
            kept = arrive[free]
            arrive = np.zeros_like(arrive)  # the cells' inputs took the rest; unpaired modes carry theirs on
            arrive[free] = kept + kappa * half * temp(np.column_stack([np.full(free.size, (x0 + c) * px),
                                                                        modes_y[free]]))
        zeros = np.zeros((n_fields, lay.n_mzi))
        ph = bell_from_clements(lay, zeros, zeros, arrive.T, cells={"delta": zeros, "alpha": zeros, "beta": zeros,
                                                                    "gamma": gamma.T, "eps": eps.T}, wrap=False)
        out[sl[f"{name}_int"]] = d_int + ph["internal"].T
        out[sl[f"{name}_low"]] = d_low + ph["lower"].T
        out[sl[f"{name}_in"]] = ph["input"].T
        out[sl[f"{name}_edge"]] = ph["edge"].T
        out[sl[f"{name}_out"]] = ph["output"].T + kappa * px * temp(pos[sl[f"{name}_out"]])

    def stage(name, x0, screen):
        if lay.cell.programming == "sweep":
            bell_stage(name, x0, screen)
            return
        fixed = "internal" not in lay.cell.heaters  # a fixed-splitting cell: input section and coupler only
        p_ext = pos[sl[f"{name}_ext"]]
        p_int = None if fixed else pos[sl[f"{name}_int"]]
        d_int = np.zeros((lay.n_mzi, n_fields))
        d_ext = np.zeros((lay.n_mzi, n_fields))
        # trim sections (a cell with trims): arms as long as the internal heater's, a quarter column on
        p_trim = pos[sl[f"{name}_trim"]].reshape(trims, lay.n_mzi, 2) if trims else np.zeros((0, lay.n_mzi, 2))
        d_trim = np.zeros((trims, lay.n_mzi, n_fields))
        imb = np.asarray(imbalance_um[name], dtype=np.float64)
        pairs, lower, cols = lay.pair_array, lay.lower_array, lay.column_array
        for c in range(lay.depth):
            sel = np.flatnonzero(cols == c)
            top, bottom = pairs[sel], lower[sel]
            t_eu, t_el = temp(p_ext[sel]), temp(p_ext[sel] + below)
            a, b = screen[top], screen[bottom]
            d_ext[sel] = a - b + kappa * half * (t_eu - t_el)
            if fixed:  # its two input arms, from the couplers before it, are the ones of unequal length
                d_ext[sel] += kappa * imb[sel, None] * t_eu
            common = b + kappa * half * t_el
            if not fixed:
                t_iu, t_il = temp(p_int[sel]), temp(p_int[sel] + below)
                d_int[sel] = kappa * ((half + imb[sel, None]) * t_iu - half * t_il)
                common = common + kappa * half * t_il
            for j in range(trims):
                t_tu, t_tl = temp(p_trim[j, sel]), temp(p_trim[j, sel] + below)
                d_trim[j, sel] = kappa * half * (t_tu - t_tl)
                common = common + kappa * half * t_tl
            free = np.setdiff1d(np.arange(n), np.concatenate([top, bottom]))
            if free.size:
                x_in = np.column_stack([np.full(free.size, (x0 + c - 0.5) * px), modes_y[free]])
                x_arm = np.column_stack([np.full(free.size, (x0 + c) * px), modes_y[free]])
                screen[free] += kappa * half * (temp(x_in) + (0.0 if fixed else temp(x_arm)))
                for j in range(trims):  # the trim sections' length, at the trims' position
                    x_trim = np.column_stack([np.full(free.size, (x0 + c + 0.25 * (j + 1)) * px), modes_y[free]])
                    screen[free] += kappa * half * temp(x_trim)
            screen[top] = common
            screen[bottom] = common
        if not fixed:
            out[sl[f"{name}_int"]] = d_int
        out[sl[f"{name}_ext"]] = d_ext
        if trims:
            out[sl[f"{name}_trim"]] = d_trim.reshape(trims * lay.n_mzi, n_fields)
        p_out = pos[sl[f"{name}_out"]]
        out[sl[f"{name}_out"]] = screen + kappa * px * temp(p_out)

    if stages == ("u",):  # one mesh from the first column
        stage("u", 0, np.zeros((n, n_fields)))
        return out
    stage("v", 0, np.zeros((n, n_fields)))
    # attenuator column: input section and arms, the attenuator heater on the upper arm
    p_att = pos[sl["att"]]
    x_att = p_att[:, 0]
    t_u, t_l = temp(p_att), temp(p_att + below)
    t_in = temp(np.column_stack([x_att - half, p_att[:, 1]]))
    imb = np.asarray(imbalance_um["att"], dtype=np.float64)
    out[sl["att"]] = kappa * ((half + imb[:, None]) * t_u - half * t_l)
    screen = kappa * half * (t_in + t_l)
    stage("u", lay.depth + 2, screen)
    return out


def _check_imbalance(imbalance_um, chip) -> dict:
    """``imbalance_um`` as float64 arrays: a dict keyed by the chip's stages (``"v"``, ``"att"``, ``"u"``, or ``"u"``
    for a unitary chip) with the chip's MZI counts, finite."""
    sizes = {s: len(v) for s, v in sample_imbalance(chip, 0.0).items()}
    if not isinstance(imbalance_um, dict) or set(imbalance_um) != set(sizes):
        got = sorted(map(str, imbalance_um)) if isinstance(imbalance_um, dict) else type(imbalance_um).__name__
        raise InvalidInputError(f"imbalance_um must be a dict with keys {sorted(sizes)}; got {quote(got)}")
    out = {}
    for s, n in sizes.items():
        try:
            v = np.asarray(imbalance_um[s], dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidTypeError(f"imbalance_um[{s!r}] must be a real array (um); got {type(imbalance_um[s]).__name__}") from None
        if v.shape != (n,) or not np.all(np.isfinite(v)):
            raise InvalidInputError(f"imbalance_um[{s!r}] must be finite with shape ({n},); got shape {v.shape}")
        out[s] = v
    return out


def thermal_die(chip: Chip, proc: ThermalProcess, *, imbalance_um: dict | None = None) -> ThermalDie:
    """The thermal response of ``chip`` under ``proc`` (imbalance sampled from the chip's seed).

    Args:
      chip: a fabricated :class:`~photocomp.hardware.chip.Chip`.
      proc: the :class:`ThermalProcess` (its ``arm_imbalance_um`` scales the imbalance).
      imbalance_um: override the sampled imbalance (e.g. zeros for a balanced die), keyed like
        :func:`sample_imbalance`'s for this chip.

    The die is the chip's circuit's (``chip.circuit``): a unitary chip's die holds its one mesh.
    """
    chip = as_chip(chip)
    proc = as_process(proc)
    t = chip.target
    imb = sample_imbalance(chip, proc.arm_imbalance_um) if imbalance_um is None else _check_imbalance(imbalance_um, chip)
    centre, extent = die_box(t, chip.circuit)
    phi = thermal_phase_map(t, imb, lambda xy: field_basis(xy, centre, extent), chip.circuit)
    return ThermalDie(t, imb, _positions(t, chip.circuit), centre, extent, phi, chip.circuit)
