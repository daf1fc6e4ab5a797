"""The calibration engine: errors on a chip, local correction, reachability and the optimiser loop.

* :func:`error` – how far a program's output on a chip is from the ideal
  program (matrix error after the best real electronic gain per tile).
* :func:`local_correction` – analytic per-MZI correction for known coupler
  errors (the baseline): each MZI's internal phase is set so that its
  erroneous couplers give the wanted splitting (clipped where unreachable),
  its external phase and the pushed output screens fix the phases.
* :func:`optimize` – gradient descent with any optax optimizer on the
  differentiable chip model, with early stopping, a NaN/divergence guard and
  best-so-far tracking.
* :func:`reachability` – which MZIs cannot reach their required splitting
  (bar power reachable only in [sin^2(a+b), cos^2(a-b)] with coupler errors
  a, b) and the error clipping them leaves.

Every entry point works on both program circuits (:data:`photocomp.core.ir.CIRCUITS`):
an ``svd`` program's V mesh, attenuators and U mesh, or a ``unitary``
program's one mesh, on a chip fabricated for the program's circuit.

:func:`photocomp.calibrate` (:mod:`photocomp.calibration.calibrate`) and the
digital twin (:mod:`photocomp.calibration.twin`) are built on these.

References: S. Bandyopadhyay et al., "Hardware error correction for
programmable photonics", Optica 8, 1247 (2021); R. Hamerly et al.,
"Accurate self-configuration of rectangular multiport interferometers",
Phys. Rev. Applied 18, 024019 (2022).
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from photocomp.compiler.program import Program
from photocomp.core.bell import bell_from_clements
from photocomp.core.cell import FIXED_THETA, MZI, Cell
from photocomp.core.convention import mzi, physical_mzi
from photocomp.core.errors import InvalidInputError, InvalidTypeError, MismatchError
from photocomp.core.ir import CompileReport, PassRecord, TileGrid
from photocomp.core.layout import MeshLayout
from photocomp.core.phases import MeshPhases
from photocomp.hardware.chip import Chip, as_chip
from photocomp.hardware.chipsim import (
    Settings,
    attenuator_amplitude,
    best_gain,
    chip_tile_matrices,
    drive_map,
    flatten_heaters,
    realized_phases,
    settings_from_program,
    stage_coefficients,
    unflatten_heaters,
)
from photocomp.hardware.dac import quantize_power
from photocomp.sim.devices import gather, pad_tiles, spread, tile_mesh
from photocomp.sim.ideal import tile_matrices_np

__all__ = ["error", "better_per_tile", "local_correction", "reachability", "Reachability", "crossbar_cells", "crossbar_scales", "cell_amplitudes",
           "CrossbarCells", "check_program", "ideal_tiles",
           "ideal_settings", "relative_error", "settings_error", "local_settings", "check_optimizer", "minimize",
           "optimize", "quantized", "MeasuredRun", "spent_fields", "finite_array", "heater_estimates", "check_instrument_target"]


def check_program(prog: object) -> Program:

    if not isinstance(prog, Program):
        raise InvalidTypeError(f"prog must be a photocomp.Program (from photocomp.compile or load); got {type(prog).__name__}")
    return prog


def ideal_tiles(prog: Program) -> np.ndarray:
    return tile_matrices_np(prog.ideal_phase_map)


def relative_error(target_tiles: ArrayLike, chip_tiles_no_gain: ArrayLike) -> tuple[jax.Array, jax.Array]:
    g = best_gain(target_tiles, chip_tiles_no_gain)
    d = target_tiles - g[:, None, None] * chip_tiles_no_gain
    num = jnp.sum(jnp.abs(d) ** 2)
    den = jnp.sum(jnp.abs(target_tiles) ** 2)
    return jnp.sqrt(num / jnp.where(den > 0, den, 1.0)), g


@jax.jit
def _evaluate(chip: Chip, s: Settings, target_tiles):
    """One chip simulation scored three ways: total error, best gains, per-tile errors."""
    b = chip_tile_matrices(chip, s, with_gain=False)
    err, g = relative_error(target_tiles, b)
    d = jnp.sqrt(jnp.sum(jnp.abs(target_tiles - g[:, None, None] * b) ** 2, axis=(-2, -1)))
    norm = jnp.sqrt(jnp.sum(jnp.abs(target_tiles) ** 2, axis=(-2, -1)))
    return err, g, d / jnp.maximum(norm, 1e-300)


def settings_error(chip: Chip, s: Settings, target_tiles: ArrayLike) -> tuple[float, np.ndarray, np.ndarray]:
    """``(matrix error, best gain per tile, error per tile)`` of settings on a chip, in float64."""
    with jax.enable_x64(True):
        err, g, per = _evaluate(chip.unseeded(), s, jnp.asarray(target_tiles))
        return float(err), np.asarray(g), np.asarray(per)


def better_per_tile(chip: Chip, a: Settings, b: Settings, target_tiles: ArrayLike) -> tuple[Settings, float]:
    """Per tile the better of two settings of one program (lower error on ``chip``), and its matrix error.

    Tiles are independent (each has its own heaters and gain), so the choice
    tile by tile is never worse than either ``a`` or ``b`` on any tile, nor in
    the matrix error. Ties keep ``a``.
    """
    _, ga, per_a = settings_error(chip, a, target_tiles)
    _, gb, per_b = settings_error(chip, b, target_tiles)
    take_b = per_b < per_a

    def pick(x, y):
        if x is None:
            return None
        x, y = np.asarray(x), np.asarray(y)
        return np.where(take_b.reshape((-1,) + (1,) * (x.ndim - 1)), y, x)

    a, b = a.replace(gain=ga), b.replace(gain=gb)
    mixed = jax.tree_util.tree_map(pick, a, b, is_leaf=lambda v: v is None)
    err, gain, _ = settings_error(chip, mixed, target_tiles)
    return mixed.replace(gain=gain), err


def error(prog: Program, chip: Chip) -> dict:
    """Matrix error of ``prog`` on ``chip`` versus the ideal program.
    For an uncalibrated program the chip is driven with the program's ideal
    settings (heater offsets and efficiencies compensated, as after a
    standard phase characterisation; coupler errors, losses and their
    non-uniformity uncorrected). A calibrated program is evaluated with its
    own settings. In both cases each tile's electronic gain is set to its
    best real value, which any read-out calibration does.

    Returns:
      ``{"matrix_error": ||W_ideal - W_chip||_F / ||W_ideal||_F, "tile_errors": [...]}``.
    """
    prog = check_program(prog)
    chip = as_chip(chip)
    chip.check_target(prog.target, circuit=prog.circuit)
    s = prog.settings if prog.settings is not None else ideal_settings(prog)
    err, _, per = settings_error(chip, s, ideal_tiles(prog))
    return {"matrix_error": err, "tile_errors": [float(e) for e in per]}


def ideal_settings(prog: Program) -> Settings:
    """The program's ideal settings (:func:`ideal_settings_of` its ideal phase map)."""
    return ideal_settings_of(prog.ideal_phase_map)


def ideal_settings_of(pm) -> Settings:
    """:func:`photocomp.hardware.chipsim.settings_from_program` of a phase map, in float64 numpy."""
    with jax.enable_x64(True):
        s = settings_from_program(pm)
        return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), s)


# ---- local analytic correction ----------------------------------------------------

def _splitting_internal(bar_power, a, b):
    """Internal phase in [pi, 2 pi] giving bar power ``bar_power`` with coupler errors a, b (clipped)."""
    ca, sa = np.cos(np.pi / 4 + a), np.sin(np.pi / 4 + a)
    cb, sb = np.cos(np.pi / 4 + b), np.sin(np.pi / 4 + b)
    cos_psi = (ca**2 * cb**2 + sa**2 * sb**2 - bar_power) / (2 * ca * cb * sa * sb)
    return 2 * np.pi - np.arccos(np.clip(cos_psi, -1.0, 1.0))


def _phase(z):
    return np.angle(z)


_GRID_INTERNAL = 128  # internal-heater phases searched per cell (a cell other than the MZI)
_GRID_TRIM = 16  # trim-heater phases searched per trim


def _cell_core(cell: Cell, internal, trims: dict, errors: dict):
    """The cell without its external heater (that heater is first in every built-in cell), ``S + (2, 2)``."""
    settings = {"internal": internal, "external": np.zeros(np.shape(internal)), **trims}
    if "internal" not in cell.heaters:  # a fixed-splitting cell: its coupler(s) alone
        del settings["internal"]
    return cell.transfer(settings, errors)


def _searched_heaters(cell: Cell) -> tuple[str, ...]:
    """The heaters a cell's splitting is searched over: ``"internal"`` and its trims."""
    return ("internal",) + tuple(h for h, _ in cell.trims)


def _core_at(cell: Cell, point: dict, errors: dict):
    """:func:`_cell_core` at the heater phases ``point`` (``"internal"`` and every trim heater)."""
    return _cell_core(cell, point["internal"], {h: point[h] for h, _ in cell.trims}, errors)


def _bar(core):
    m = np.abs(core[..., :, 0]) ** 2
    return m[..., 0] / np.maximum(m.sum(-1), 1e-300)


def _cell_candidates(cell: Cell, errors: dict):
    """The cell's bar power on a grid of internal (and trim) phases: ``(grid settings, bar (n, G))``."""
    internal = np.linspace(0.0, 2 * np.pi, _GRID_INTERNAL, endpoint=False)
    axes = [internal] + [np.concatenate([[phase], np.linspace(0.0, 2 * np.pi, _GRID_TRIM, endpoint=False)])
                         for _, phase in cell.trims]
    mesh = [a.ravel() for a in np.meshgrid(*axes, indexing="ij")]
    grid = {"internal": mesh[0], **{h: mesh[j + 1] for j, (h, _) in enumerate(cell.trims)}}
    errs = {k: np.asarray(v)[:, None] for k, v in errors.items()}
    bar = _bar(_cell_core(cell, grid["internal"][None, :], {h: grid[h][None, :] for h, _ in cell.trims}, errs))
    return grid, bar


def _refine(cell: Cell, errors: dict, point: dict, objective, rounds: int = 12) -> dict:
    """Pattern search around ``point`` (heater -> ``(T, n)``) minimising ``objective(bar)`` per cell: a
    5-point stencil per heater (internal and trims), the step shrinking 2.5x per round from the grid's."""
    names = _searched_heaters(cell)
    steps = np.array([2 * np.pi / _GRID_INTERNAL] + [2 * np.pi / _GRID_TRIM] * len(cell.trims))
    stencil = np.stack([a.ravel() for a in np.meshgrid(*[np.arange(-2, 3)] * len(names), indexing="ij")], -1)
    errs = {k: np.asarray(v)[None, :, None] for k, v in errors.items()}
    point = {h: np.asarray(point[h], dtype=np.float64) for h in names}
    for _ in range(rounds):
        cand = {h: point[h][..., None] + stencil[:, j] * steps[j] for j, h in enumerate(names)}
        value = objective(_bar(_core_at(cell, cand, errs)))
        best = np.argmin(value, axis=-1)[..., None]
        point = {h: np.take_along_axis(cand[h], best, -1)[..., 0] for h in names}
        steps = steps / 2.5
    return point


def _cell_split(cell: Cell, bar_power, errors: dict):
    """Heater phases (internal and trims, each ``(T, n)``) giving each cell the bar power ``bar_power`` (T, n)
    with its coupler errors (``(n,)`` each), or the nearest reachable one: the best point of a grid search
    (trims at their ideal phase where that reaches it), refined by a pattern search and minimum-norm Newton
    steps on all its heaters (:func:`_split_from`). A cell whose splitting angle still misses by more than
    ``_SPLIT_TOL`` is searched again from its next best grid points (up to ``_SPLIT_STARTS`` in all), and
    keeps the closest result: the Newton steps can end on a ridge of the heater space from which the wanted
    splitting is out of their reach, though another start reaches it."""
    bar_power = np.asarray(bar_power, dtype=np.float64)
    want = _bar_angle(bar_power)
    names = _searched_heaters(cell)
    out = _split_from(cell, bar_power, errors, 0)
    errs = {k: np.asarray(v)[None, :] for k, v in errors.items()}
    miss = np.abs(_split_angle(_core_at(cell, out, errs)) - want)
    for start in range(1, _SPLIT_STARTS):
        t_idx, n_idx = np.nonzero(miss > _SPLIT_TOL)
        if not len(t_idx):
            break
        sub_errs = {k: np.asarray(v)[n_idx] for k, v in errors.items()}
        alt = _split_from(cell, bar_power[t_idx, n_idx][None, :], sub_errs, start)
        alt_miss = np.abs(_split_angle(_core_at(cell, alt, {k: v[None, :] for k, v in sub_errs.items()}))[0]
                          - want[t_idx, n_idx])
        better = alt_miss < miss[t_idx, n_idx]
        for h in names:
            out[h][t_idx[better], n_idx[better]] = alt[h][0, better]
        miss[t_idx[better], n_idx[better]] = alt_miss[better]
    return out


_SPLIT_STARTS = 4
_SPLIT_TOL = 1e-12  # rad of splitting angle


def _split_from(cell: Cell, bar_power, errors: dict, start: int):
    """:func:`_cell_split` from one grid point per cell: ``start`` 0, the best (preferring the trims' ideal
    phases); later starts, the best point of the trim setting that ranks ``start``-th by its best point (so that
    each start is in another part of the heater space), or for a cell without trims its ``start``-th best
    point."""
    grid, bar = _cell_candidates(cell, errors)  # (n, G)
    miss = np.abs(bar[None, :, :] - bar_power[:, :, None])  # (T, n, G)
    # prefer the trims' ideal phases: they keep the cell's phase response closest to the design
    ideal = np.ones(bar.shape[-1], dtype=bool)
    for h, phase in cell.trims:
        ideal &= grid[h] == phase
    ranked = miss + 1e-3 * ~ideal
    if start == 0:
        best = np.argmin(ranked, axis=-1)
    elif not cell.trims:
        best = np.argsort(ranked, axis=-1)[..., start]
    else:
        _, key = np.unique(np.stack([grid[h] for h, _ in cell.trims], -1), axis=0, return_inverse=True)
        key = key.reshape(-1)
        n_keys = int(key.max()) + 1
        per_key = np.full(miss.shape[:-1] + (n_keys,), np.inf)
        for k in range(n_keys):
            per_key[..., k] = miss[..., key == k].min(axis=-1)
        chosen = np.argsort(per_key, axis=-1)[..., min(start, n_keys - 1)]  # (T, n)
        best = np.argmin(np.where(key == chosen[..., None], miss, np.inf), axis=-1)
    names = _searched_heaters(cell)
    out = _refine(cell, errors, {h: grid[h][best] for h in names}, lambda b: np.abs(b - bar_power[..., None]))
    errs = {k: np.asarray(v)[None, :] for k, v in errors.items()}
    angle_of = lambda p: _split_angle(_core_at(cell, p, errs))  # noqa: E731
    want = _bar_angle(bar_power)
    step = 1e-7
    for _ in range(_SPLIT_NEWTON_STEPS):  # minimum-norm Newton steps on all the cell's heaters (central differences)
        miss = angle_of(out) - want
        grad = [(angle_of({**out, h: out[h] + step}) - angle_of({**out, h: out[h] - step})) / (2 * step) for h in names]
        norm2 = sum(g**2 for g in grad)
        scale = np.where(norm2 > 1e-12, miss / np.where(norm2 > 0, norm2, 1.0), 0.0)
        for h, g in zip(names, grad):
            out[h] = out[h] - np.clip(scale * g, -0.05, 0.05)
    return out


_SPLIT_NEWTON_STEPS = 24


def _bar_angle(bar_power):
    """The splitting angle (rad) of a bar power: ``arccos(sqrt(bar))``."""
    return np.arccos(np.sqrt(np.clip(bar_power, 0.0, 1.0)))


def _split_angle(core):
    """The splitting angle ``atan2(|cross|, |bar|)`` of light entering the upper port (rad, in [0, pi/2]):
    ``arccos(sqrt(bar power))``, computed from both amplitudes so that it is as well conditioned near full bar
    and full cross as in between."""
    return np.arctan2(np.abs(core[..., 1, 0]), np.abs(core[..., 0, 0]))


def _bar_range(cell: Cell, errors: dict):
    """Smallest and largest bar power ``(n,)`` each cell reaches with its coupler errors: a grid search, a
    pattern search from the best grid points, then Gauss-Newton steps (:func:`_null_element`) that drive the
    element setting the extreme (the bar amplitude for the smallest, the cross amplitude for the largest)
    towards zero; each extreme is the best bar power any of them found."""
    grid, bar = _cell_candidates(cell, errors)
    names = _searched_heaters(cell)
    errs = {k: np.asarray(v)[None, :] for k, v in errors.items()}

    def bar_at(p):
        return _bar(_core_at(cell, p, errs))[0]

    out = []
    for sign, pick, row in ((1.0, np.argmin, 0), (-1.0, np.argmax, 1)):
        best = pick(bar, axis=-1)
        point = {h: grid[h][best][None, :] for h in names}
        point = _refine(cell, errors, point, lambda b, sign=sign: sign * b)
        found = bar_at(point)
        polished = bar_at(_null_element(cell, errs, point, row))
        out.append(np.where(sign * polished < sign * found, polished, found))
    return out[0], out[1]


def _null_element(cell: Cell, errs: dict, point: dict, row: int, steps: int = 20) -> dict:
    """Gauss-Newton on the heaters (internal and trims) towards ``core[row, 0] = 0`` for every cell: the bar
    amplitude (``row`` 0) or the cross amplitude (``row`` 1) of light entering the upper port.

    The bar power is quadratic in the distance to its zero, so a search on it stalls about the square root of
    its resolution away (about 1e-4 in bar power, a few 1e-3 rad of splitting angle near full bar or cross);
    the complex element itself has a simple zero, which these steps reach quadratically where the cell can
    reach it, and approach in the least-squares sense where it cannot. Steps are the minimum-norm solutions of
    the linearised real and imaginary parts (derivatives by central differences), each limited to 0.05 rad.
    """
    names = _searched_heaters(cell)
    point = {h: np.array(point[h], dtype=np.float64) for h in names}
    h_fd = 1e-7

    def element(p):
        core = _core_at(cell, p, errs)
        g = core[..., row, 0] / np.sqrt(np.maximum(np.sum(np.abs(core[..., :, 0]) ** 2, -1), 1e-300))
        return np.stack([g.real, g.imag], -1)  # (..., 2)

    for _ in range(steps):
        r = element(point)
        jac = np.stack([(element({**point, h: point[h] + h_fd}) - element({**point, h: point[h] - h_fd})) / (2 * h_fd)
                        for h in names], -1)  # (..., 2, H)
        step = -np.einsum("...hr,...r->...h", np.linalg.pinv(jac, rcond=1e-10), r)
        step = np.clip(step, -0.05, 0.05)
        for j, h in enumerate(names):
            point[h] = point[h] + step[..., j]
    return point


_PHASE_FIT_MIN_RATIO = 0.05
"""Local correction fits an MZI's external phase to its wanted 2 x 2 only where the wanted minor amplitude
(the smaller of ``|t00|`` and ``|t01|``) is at least this fraction of the device's at its corrected
internal phase; elsewhere the external phase stays 0, as in the ideal settings. Such an MZI is clipped:
its design wants (almost) no coupling and its couplers leak more than that. Its wanted cross term then
comes from rounding (the ``quantize`` pass moves theta = 0 to the nearest DAC level), and fitting every
leak's phase to those terms lined the leaks up. Zero-padded tiles' meshes are mostly such MZIs, and there
the fit made local correction worse than none; with the phase left alone every tile gains and full tiles
are as before (``tests/test_calibrate.py::test_local_correction_improves_zero_padded_tiles``)."""


def _local_mesh(lay: MeshLayout, theta, phi, out, c_in, c_out, loss_db, cell_errors=None):
    """Local correction of a stack of meshes (T, ...) sharing one chip stage.

    Returns ``(internal, external, out, trims)`` with ``trims`` the flat trim
    group (T, n_mzi * n_trims) or None. The MZI's splitting has a closed form;
    another cell's is searched (:func:`_cell_split`), trims included. A
    fixed-splitting cell (Fldzhyan's) keeps its coupler's splitting (its
    ``internal`` is ``(T, 0)``); its phases are fitted like every cell's.
    """
    cell = lay.cell
    internal = np.zeros_like(theta)
    external = np.zeros_like(theta)
    trims = {h: np.zeros_like(theta) for h, _ in cell.trims}
    screen = np.zeros(out.shape)  # physical = diag(e^{i screen}) . math so far
    top, index, valid = lay.column_slots
    amp_loss = 10.0 ** (-np.asarray(loss_db) / 20.0)
    errors_all = {"coupler_in": np.asarray(c_in), "coupler_out": np.asarray(c_out),
                  **{k: np.asarray(v) for k, v in (cell_errors or {}).items()}}
    for c in range(lay.depth):
        idx = index[c][valid[c]]
        k, k2 = top[c][valid[c]], lay.column_bottoms[c][valid[c]]
        a_err, b_err = c_in[idx], c_out[idx]
        th, ph = theta[:, idx], phi[:, idx]
        if cell == MZI:
            psi = _splitting_internal(np.cos(th) ** 2, a_err, b_err)
            # A = B(b) P(psi) B(a) (times loss): the device is A @ diag(e^{i chi}, 1)
            amat = physical_mzi(psi, 0.0, a_err, b_err, xp=np) * amp_loss[idx][:, None, None]
        else:
            errs = {name: errors_all[name][idx] for name in cell.couplers}
            if cell.programming == "fixed":  # nothing sets a static coupler's splitting: only the phases are fitted
                split = {"internal": np.zeros_like(th)}
            else:
                split = _cell_split(cell, np.cos(th) ** 2, errs)
            psi = split["internal"]
            for h, _ in cell.trims:
                trims[h][:, idx] = split[h]
            amat = _cell_core(cell, psi, {h: split[h] for h, _ in cell.trims},
                              {n: e[None, :] for n, e in errs.items()}) * amp_loss[idx][:, None, None]
        # wanted: device = D_new @ T(theta, phi) @ diag(e^{-i pa}, e^{-i pb})
        pa, pb = screen[:, k], screen[:, k2]
        tmat = mzi(th, ph, xp=np) * np.stack([np.exp(-1j * pa), np.exp(-1j * pb)], -1)[..., None, :]
        a00, a01, a10, a11 = amat[..., 0, 0], amat[..., 0, 1], amat[..., 1, 0], amat[..., 1, 1]
        t00, t01, t10, t11 = tmat[..., 0, 0], tmat[..., 0, 1], tmat[..., 1, 0], tmat[..., 1, 1]
        # least-squares phases: chi from both columns' ratios, then the output screen; chi stays 0 where the
        # wanted minor amplitude is a small fraction of what the device leaks (_PHASE_FIT_MIN_RATIO)
        u = t00 * a01 * np.conj(t01 * a00) + t10 * a11 * np.conj(t11 * a10)
        mag = np.abs(u)
        wanted = np.minimum(np.abs(t00), np.abs(t01))
        fit = (mag > 1e-300) & (wanted >= _PHASE_FIT_MIN_RATIO * np.minimum(np.abs(a00), np.abs(a01)))
        u = np.where(fit, u / np.where(mag > 0, mag, 1.0), 1.0)
        d0 = _phase(a01 * np.conj(t01) + a00 * u * np.conj(t00))
        d1 = _phase(a11 * np.conj(t11) + a10 * u * np.conj(t10))
        internal[:, idx] = psi
        external[:, idx] = _phase(u)
        screen[:, k] = d0
        screen[:, k2] = d1
    out_phys = np.mod(out - screen, 2 * np.pi)
    if cell.programming == "fixed":
        internal = internal[:, :0]  # no internal heaters
    flat_trims = np.mod(np.concatenate([trims[h] for h, _ in cell.trims], axis=-1), 2 * np.pi) if cell.trims else None
    return np.mod(internal, 2 * np.pi), np.mod(external, 2 * np.pi), out_phys, flat_trims


def _cell_form(delta, a_err, b_err):
    """The form (:data:`photocomp.core.bell.CELL_FORM`) of symmetric cells with coupler errors ``a_err``
    (in), ``b_err`` (out) at arm difference ``delta``: ``B(b) P(delta) B(a) = e^{i delta/2}
    diag(e^{i alpha}, e^{i beta}) R(theta') diag(1, e^{i eps})`` (the arms' common phase at 0, loss aside)."""
    w = physical_mzi(delta, 0.0, a_err, b_err, xp=np)
    w00, w01, w10, w11 = w[..., 0, 0], w[..., 0, 1], w[..., 1, 0], w[..., 1, 1]
    alpha = np.angle(w00)
    crossed = np.abs(w01) > 1e-300  # else a bar state: eps is free, set it to 0
    eps = np.where(crossed, np.angle(-w01) - alpha, 0.0)
    beta = np.where(crossed, np.angle(w10), np.angle(w11))
    return {"delta": delta, "alpha": alpha - delta / 2, "beta": beta - delta / 2, "gamma": np.zeros_like(delta),
            "eps": eps}


def _local_bell(lay: MeshLayout, stage: str, theta, phi, out, c_in, c_out, loss_db) -> dict:
    """Local correction of a Bell mesh: the MZI mesh's (:func:`_local_mesh` with the same couplers), carried
    over exactly. A Bell cell is an MZI whose internal phase is upper - lower and that has no external
    heater, so every corrected MZI is written in its cell form (:func:`_cell_form`), its external phase and
    the phases it leaves are pushed forward into the next column's mathematical phases and the output
    screen (:func:`_push_phases`), and the phase sweep realises that mesh with the corrected cells. Both
    meshes therefore get the same corrections, the rule for clipped cells (``_PHASE_FIT_MIN_RATIO``)
    included."""
    mzi_lay = dataclasses.replace(lay, cell=MZI)
    psi, chi, out_phys, _ = _local_mesh(mzi_lay, theta, phi, out, c_in, c_out, loss_db)
    form = _cell_form(psi, c_in, c_out)
    phi_m, out_m = _push_phases(lay, chi, out_phys, form)
    ph = bell_from_clements(lay, theta, phi_m, out_m, cells=form)
    return {f"{stage}_{g}": ph[k] for g, k in (("int", "internal"), ("low", "lower"), ("in", "input"),
                                                ("edge", "edge"), ("out", "output"))}


def _push_phases(lay: MeshLayout, chi, out_phys, form: dict) -> tuple[np.ndarray, np.ndarray]:
    """The mathematical phases ``(phi, out_phase)`` of a physical MZI mesh with external phases ``chi`` and
    output phases ``out_phys`` whose cells have the forms ``form`` (:func:`_cell_form`): the mesh equals
    the mathematical one with every cell's ``theta'`` (global phase aside). A cell with input phases
    ``x`` (upper), ``y`` (lower) is ``diag(e^{i(a + y)}, e^{i(b + y)}) T(theta', x - y)`` (``a``, ``b``
    its output phases), so a sweep column by column takes each cell's ``x - y`` as its ``phi`` and passes
    ``a + y``, ``b + y`` on to the next column; the output screen takes what is left."""
    top, index, valid = lay.column_slots
    pending = np.zeros(np.shape(out_phys)[:-1] + (lay.n_modes,))
    phi = np.zeros(np.shape(chi))
    half = form["delta"] / 2
    for c in range(lay.depth):
        idx, k = index[c][valid[c]], top[c][valid[c]]
        x = chi[..., idx] + pending[..., k]
        y = form["eps"][..., idx] + pending[..., k + 1]
        phi[..., idx] = x - y
        pending[..., k] = half[..., idx] + form["alpha"][..., idx] + y
        pending[..., k + 1] = half[..., idx] + form["beta"][..., idx] + y
    return np.mod(phi, 2 * np.pi), np.mod(out_phys + pending, 2 * np.pi)


def local_correction(prog: Program, chip: Chip) -> Settings:
    """Settings with every MZI corrected analytically for the chip's known coupler errors and losses.
    ``chip`` must be fabricated for the program's target and circuit
    (:class:`~photocomp.core.errors.MismatchError` otherwise); a unitary
    program's settings have ``v_int``, ``v_ext``, ``v_out`` and ``att`` None.
    """
    prog = check_program(prog)
    chip = as_chip(chip)
    chip.check_target(prog.target, circuit=prog.circuit)
    return local_settings(prog, chip, ideal_tiles(prog))[0]


def local_settings(prog: Program, chip: Chip, target_tiles: ArrayLike) -> tuple[Settings, float]:
    """Local correction and its matrix error (best gains set), for either circuit.
    Every mesh is corrected with its own stage's coupler errors and losses;
    in an svd program each attenuator's internal phase gives its wanted
    transmission with its couplers, and the V mesh's output screens take
    off the attenuators' phases.
    """
    pm = prog.ideal_phase_map
    lay = pm.layout
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    if lay.cell.programming == "sweep":
        return _local_bell_settings(pm, chip, target_tiles)
    if lay.crossbar:
        cells = crossbar_cells(pm, chip)
        s = Settings.unitary(pm.grid, lay, cells.internal, cells.external, cells.output, f64(pm.gain))
        err, g, _ = settings_error(chip, s, target_tiles)
        return s.replace(gain=g), err
    u_int, u_ext, u_out, u_trim = _local_mesh(
        lay, f64(pm.u.theta), f64(pm.u.phi), f64(pm.u.out_phase),
        f64(chip.coupler_in["u"]), f64(chip.coupler_out["u"]), f64(chip.loss_db["u"]), chip.cell_errors.get("u"),
    )
    if pm.v is None:
        s = Settings.unitary(pm.grid, lay, u_int, u_ext, u_out, f64(pm.gain), u_trim)
    else:
        att, amp_phase = _local_attenuators(pm, chip)
        v_int, v_ext, v_out, v_trim = _local_mesh(
            lay, f64(pm.v.theta), f64(pm.v.phi), f64(pm.v.out_phase),
            f64(chip.coupler_in["v"]), f64(chip.coupler_out["v"]), f64(chip.loss_db["v"]), chip.cell_errors.get("v"),
        )
        v_out = np.mod(v_out - amp_phase, 2 * np.pi)
        s = Settings(pm.grid, lay, v_int, v_ext, v_out, att, u_int, u_ext, u_out, f64(pm.gain), v_trim, u_trim)
    err, g, _ = settings_error(chip, s, target_tiles)
    return s.replace(gain=g), err


@dataclasses.dataclass(frozen=True)
class CrossbarCells:
    """Per-cell correction of a crossbar program on a chip (:func:`crossbar_cells`), arrays ``(T, K^2)``.
    Attributes:
      internal, external: the heaters' phases (rad, wrapped) that give every cell its share of the tile.
      unreachable: cells of the matrix (not padding) whose share ``c |w_ij|`` lies outside their range: below
        their extinction floor, or above their top where the tile's scale is set past the weakest path's.
      scale: ``(T,)`` the common amplitude scale ``c`` of each tile (cell ``(i, j)`` is set to ``c w_ij``).
      amplitude: the cells' amplitudes as set, ``c |w_ij|`` clipped into their range (path and loss included).
      output: ``(T, K)`` the outputs' phase references (rad), the program's, which the input shifters allow for.
    """
    internal: np.ndarray
    external: np.ndarray
    unreachable: np.ndarray
    scale: np.ndarray
    amplitude: np.ndarray
    output: np.ndarray


def crossbar_cells(pm, chip: Chip) -> CrossbarCells:
    """Closed-form correction of every weight cell of a crossbar program for the chip's known errors.

    A cell's element, path included, is ``m(internal) = P e^{i internal} - Q`` (times ``e^{i external}``):
    ``P`` and ``Q`` come from the chip's coefficients at internal 0 and pi, so they carry the cell's
    couplers, its loss and its fan-out and fan-in amplitudes. Its amplitude ranges over
    ``[||P| - |Q||, |P| + |Q|]``. Each tile takes a scale ``c`` (the gain restores it) and sets every cell
    to ``c |w_ij|`` clipped into its range: its internal phase gives that amplitude exactly (the branch of the
    ideal ``[pi, 2 pi]``), its input shifter the entry's phase less the output's phase reference. The scale
    is the one of :func:`crossbar_scales`' candidates, from the largest at which every cell reaches its
    top (the weakest path's) up, whose clipped cells leave the least error. Cells err independently, so
    this is exact for every reachable cell, whatever the size.
    """
    lay = pm.layout
    k = lay.n_modes
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    with jax.enable_x64(True):
        zeros = jnp.zeros(k * k, jnp.float64)
        at0 = np.asarray(stage_coefficients(chip, lay, "u", zeros, zeros, dtype=jnp.complex128)[0])
        at_pi = np.asarray(stage_coefficients(chip, lay, "u", zeros + np.pi, zeros, dtype=jnp.complex128)[0])
    p, q = (at0 - at_pi) / 2, -(at0 + at_pi) / 2
    w = np.cos(f64(pm.u.theta)) * np.exp(1j * f64(pm.u.phi))  # (T, K^2), the program's cells
    rows, cols = pm.grid.extent()
    i, j = np.divmod(np.arange(k * k), k)
    used = (i[None, :] < rows[:, None]) & (j[None, :] < cols[:, None])
    scale, amp, unreachable, half, chi = cell_amplitudes(p, q, np.where(used, np.abs(w), 0.0), used)
    internal = 2 * np.pi - half - chi  # the root -chi - half, on the ideal's branch
    m = p * np.exp(1j * internal) - q
    out = f64(ideal_settings_of(pm).u_out)  # (T, K): each output's phase reference
    external = np.angle(w) - out[:, i] - np.angle(m)
    wrap = lambda a: np.mod(a, 2 * np.pi)  # noqa: E731
    return CrossbarCells(wrap(internal), wrap(external), unreachable, scale, amp, out)


def cell_amplitudes(p: np.ndarray, q: np.ndarray, mag: np.ndarray, used: np.ndarray) -> tuple:
    """The amplitudes of crossbar cells whose element is ``p e^{i theta} - q`` in their internal phase theta.

    A cell's amplitude spans ``[||p| - |q||, |p| + |q|]``. Each tile takes the scale of
    :func:`crossbar_scales` and every cell the amplitude ``c |w|`` clipped into its range.

    Args:
      p, q: ``(n,)`` the cells' coefficients (the chip's, :func:`crossbar_cells`; or measured,
        :class:`~photocomp.calibration.cells.Cells`).
      mag: ``(T, n)`` the program's ``|w|`` per tile (0 where a cell carries nothing).
      used: ``(T, n)`` the cells that carry entries of the matrix (not padding).

    Returns:
      ``(scale (T,), amplitude (T, n), unreachable (T, n), half, chi)``: the internal phases that give
      each cell its amplitude are ``-chi ± half`` (mod 2π); ``half`` is 0 where ``p q`` is 0.
    """
    hi, lo = np.abs(p) + np.abs(q), np.abs(np.abs(p) - np.abs(q))
    scale = crossbar_scales(mag, lo, hi)
    want = scale[:, None] * mag
    unreachable = used & ((want < lo[None, :] * (1 - 1e-12)) | (want > hi[None, :] * (1 + 1e-12)))
    amp = np.clip(want, lo[None, :], hi[None, :])
    rho = np.abs(p * np.conj(q))
    chi = np.angle(p * np.conj(q))
    cos_arg = (np.abs(p) ** 2 + np.abs(q) ** 2 - amp**2) / (2 * np.where(rho > 0, rho, 1.0))
    return scale, amp, unreachable, np.arccos(np.clip(cos_arg, -1.0, 1.0)), chi  # cos(theta + chi) = cos_arg


CROSSBAR_SCALES = 48
"""Scales a crossbar tile's correction tries (:func:`crossbar_scales`): from the largest at which every cell
reaches its top to 4 times it, geometrically."""


def crossbar_scales(mag: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per tile the scale ``c`` whose cells, set to ``clip(c |w|, lo, hi)`` with their phases exact, leave the
    least matrix error after the best gain: ``sum |w|^2 - (sum |w| a)^2 / sum a^2`` with ``a`` the clipped
    amplitudes over ``c``. Candidates: :data:`CROSSBAR_SCALES` from ``min hi / |w|`` (nothing clipped at the
    top) to 4 times it; a larger scale dims fewer cells below their floor and clips the brightest. An all-zero
    tile gets 0."""
    with np.errstate(divide="ignore"):
        ratio = np.where(mag > 0, hi[None, :] / np.where(mag > 0, mag, 1.0), np.inf)
    first = ratio.min(axis=1)
    live = np.isfinite(first)
    first = np.where(live, first, 1.0)
    best = first.copy()
    best_err = np.full(len(mag), np.inf)
    for f in np.geomspace(1.0, 4.0, CROSSBAR_SCALES):
        c = first * f
        a = np.clip(c[:, None] * mag, lo[None, :], hi[None, :]) / c[:, None]
        num = np.sum(mag * a, axis=1)
        err = np.sum(mag**2, axis=1) - num**2 / np.sum(a**2, axis=1)
        better = err < best_err * (1 - 1e-12)  # ties keep the smaller scale (the first, unclipped at the top)
        best = np.where(better, c, best)
        best_err = np.where(better, err, best_err)
    return np.where(live, best, 0.0)


def _local_attenuators(pm, chip: Chip) -> tuple[np.ndarray, np.ndarray]:
    """The attenuator column of :func:`local_settings`: internal phases (wrapped) that give each cell the
    program's transmission ``cos(sigma)^2`` with its couplers, and the phase the attenuator leaves on its
    mode, which the V mesh's output phases take off."""
    sigma = np.asarray(pm.sigma, dtype=np.float64)
    a, b = np.asarray(chip.coupler_in["att"], np.float64), np.asarray(chip.coupler_out["att"], np.float64)
    att = _splitting_internal(np.cos(sigma) ** 2, a, b)
    with jax.enable_x64(True):
        amp = np.asarray(attenuator_amplitude(att, a, b, np.asarray(chip.loss_db["att"], np.float64)))
    return np.mod(att, 2 * np.pi), np.angle(amp)


def _local_bell_settings(pm, chip: Chip, target_tiles) -> tuple[Settings, float]:
    """:func:`local_settings` of a Bell chip (:func:`_local_bell` per mesh, attenuators as on every chip)."""
    lay = pm.layout
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    mesh = lambda stage, mp: _local_bell(lay, stage, f64(mp.theta), f64(mp.phi), f64(mp.out_phase),  # noqa: E731
                                         f64(chip.coupler_in[stage]), f64(chip.coupler_out[stage]),
                                         f64(chip.loss_db[stage]))
    u = mesh("u", pm.u)
    if pm.v is None:
        s = Settings.unitary(pm.grid, lay, u.pop("u_int"), None, u.pop("u_out"), f64(pm.gain), **u)
    else:
        att, amp_phase = _local_attenuators(pm, chip)
        v = mesh("v", pm.v)
        v["v_out"] = np.mod(v["v_out"] - amp_phase, 2 * np.pi)
        s = Settings(pm.grid, lay, v.pop("v_int"), None, v.pop("v_out"), att, u.pop("u_int"),
                     None, u.pop("u_out"), f64(pm.gain), **v, **u)
    err, g, _ = settings_error(chip, s, target_tiles)
    return s.replace(gain=g), err


# ---- reachability -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Reachability:
    """Which MZIs of a program cannot reach their splitting on a chip.
    Attributes:
      v, u: boolean masks (T, n_mzi) of unreachable MZIs in the V / U meshes.
      att: boolean mask (T, K) of unreachable attenuators.
        A unitary program has no V mesh and no attenuators: its ``v`` and
        ``att`` are empty ``(T, 0)`` masks, so sums, sizes and :attr:`count`
        read the same for both circuits.
      fraction: unreachable fraction of all MZIs used (attenuators included).
      clip_error: matrix error (after the best gain per tile) of the ideal
        program with every unreachable MZI clipped to its nearest reachable
        splitting, its programmed phases kept, and everything else perfect:
        an estimate of what the unreachable cells cost. It is not a floor of
        calibration: a global calibration (model, twin, in situ) compensates
        part of it with the neighbouring cells and can end below it, and
        losses and the other errors of a chip come on top of it. Nor is it
        what local correction reaches: on zero-padded tiles, whose meshes are
        mostly cells that want no coupling, clipping with the programmed
        phases kept can cost more than no correction at all, while local
        correction leaves those cells' external phases alone
        (``_PHASE_FIT_MIN_RATIO``) and ends well below it.
    """
    v: np.ndarray
    u: np.ndarray
    att: np.ndarray
    fraction: float
    clip_error: float

    @property
    def count(self) -> int:
        return int(self.v.sum() + self.u.sum() + self.att.sum())

    @property
    def floor(self) -> float:
        """The former name of :attr:`clip_error` (it is no floor of calibration; see there)."""
        return self.clip_error


def _theta_bounds(a, b, cell: Cell = MZI, other: dict | None = None):
    """Reachable theta interval of every cell with coupler errors ``a`` (in), ``b`` (out) and ``other``
    (the cell's other couplers): for the MZI ``[|a - b|, pi/2 - |a + b|]``; another cell's from the bar
    powers a grid search reaches (:func:`_bar_range`; theta = arccos(sqrt(bar))). A fixed-splitting cell
    (Fldzhyan's) reaches the one splitting of its coupler, ``pi/4 + a``: on a chip with coupler errors
    every such cell is "unreachable" on its own, and only a fit of the whole mesh (model calibration)
    takes the errors into account."""
    if cell.programming == "fixed":
        theta = FIXED_THETA + np.asarray(a)
        return theta, theta
    if cell == MZI:
        return np.abs(a - b), np.pi / 2 - np.abs(a + b)
    low, high = _bar_range(cell, {"coupler_in": a, "coupler_out": b, **(other or {})})
    return _bar_angle(high), _bar_angle(low)


def reachability(prog: Program, chip: Chip) -> Reachability:
    """Find unreachable MZIs (bar power outside [sin^2(a+b), cos^2(a-b)]) and the error clipping them leaves.
    ``chip`` must be fabricated for the program's target and circuit; a
    unitary program's result has empty ``v`` and ``att`` masks.
    """
    prog = check_program(prog)
    chip = as_chip(chip)
    chip.check_target(prog.target, circuit=prog.circuit)
    pm = prog.ideal_phase_map
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    none = np.zeros((pm.n_tiles, 0), dtype=bool)
    if pm.layout.crossbar:
        return _crossbar_reachability(pm, chip, none)
    angles = {"u": f64(pm.u.theta)} if pm.v is None else {"v": f64(pm.v.theta), "u": f64(pm.u.theta),
                                                          "att": f64(pm.sigma)}
    masks, clipped = {"v": none, "att": none}, {}
    for stage, th in angles.items():
        # attenuators are MZIs on every chip; a symmetric cell splits as an MZI at internal = upper - lower
        cell = MZI if stage == "att" or pm.layout.cell.programming == "sweep" else pm.layout.cell
        lo, hi = _theta_bounds(f64(chip.coupler_in[stage]), f64(chip.coupler_out[stage]), cell,
                               chip.cell_errors.get(stage))
        masks[stage] = (th < lo - 1e-12) | (th > hi + 1e-12)
        clipped[stage] = np.clip(th, lo, hi)

    clip_pm = pm.replace(u=MeshPhases(pm.u.layout, clipped["u"], f64(pm.u.phi), f64(pm.u.out_phase)))
    if pm.v is not None:
        clip_pm = clip_pm.replace(v=MeshPhases(pm.v.layout, clipped["v"], f64(pm.v.phi), f64(pm.v.out_phase)),
                                  sigma=clipped["att"])
    target = tile_matrices_np(pm)
    clipped_tiles = tile_matrices_np(clip_pm.replace(gain=np.ones_like(f64(pm.gain))))
    with jax.enable_x64(True):
        floor = float(relative_error(jnp.asarray(target), jnp.asarray(clipped_tiles))[0])
    total = sum(m.size for m in masks.values())
    frac = float(sum(m.sum() for m in masks.values()) / total) if total else 0.0
    return Reachability(masks["v"], masks["u"], masks["att"], frac, floor)


def _crossbar_reachability(pm, chip: Chip, none: np.ndarray) -> Reachability:
    """:func:`reachability` of a crossbar: the cells of the matrix whose share of the tile lies below their
    extinction floor at the tile's largest common scale (:func:`crossbar_cells`; a crossbar's top end is
    always reached, the gain takes the scale), and the error of setting every cell below its floor to it
    (the zero padding's too, which the error counts) with everything else exact: what local correction
    reaches on the chip model."""
    cells = crossbar_cells(pm, chip)
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    k = pm.grid.tile
    # the cells as set, relative to the tile's scale (a floor can exceed full transmission there: no theta
    # reaches it, so the tiles are built from the amplitudes), with the program's phases
    scale = np.where(cells.scale > 0, cells.scale, 1.0)[:, None]
    clipped = (cells.amplitude / scale * np.exp(1j * f64(pm.u.phi))).reshape(-1, k, k)
    clipped = np.exp(1j * f64(pm.u.out_phase))[:, :, None] * clipped / k
    with jax.enable_x64(True):
        err = float(relative_error(jnp.asarray(tile_matrices_np(pm)), jnp.asarray(clipped))[0])
    rows, cols = pm.grid.extent()
    used = int(np.sum(rows * cols))
    frac = float(cells.unreachable.sum() / used) if used else 0.0
    return Reachability(none, cells.unreachable, none, frac, err)


# ---- calibration -----------------------------------------------------------------

@functools.cache
def default_optimizer():
    """``optax.lbfgs()``, one object for the process: the optimisation step is compiled per optimizer object."""
    import optax

    return optax.lbfgs()


def check_optimizer(optimizer):
    import optax

    if optimizer is None:
        return default_optimizer()
    if not isinstance(optimizer, optax.GradientTransformation):
        raise InvalidTypeError(
            f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-2)); got {type(optimizer).__name__}"
        )
    return optimizer


def _stores_value_and_grad(state) -> bool:
    """Whether an optax state holds one ``value`` and one ``grad`` (a line search's, at the next iterate)."""
    import optax

    try:
        return optax.tree.get(state, "value") is not None and optax.tree.get(state, "grad") is not None
    except (AttributeError, KeyError):  # an older optax without optax.tree, or several line searches
        return False


@functools.lru_cache(maxsize=64)
def extra_args_optimizer(opt):
    """``optax.with_extra_args_support(opt)``, the same object for the same ``opt`` (so its step stays compiled)."""
    import optax

    return optax.with_extra_args_support(opt)


def _step(p, state, args, *, loss_fn, opt, from_state: bool):
    """One optimizer step on ``loss_fn(p, *args)``; returns ``(new params, new state, loss of p)``."""
    import optax

    def value_fn(q):
        return loss_fn(q, *args)

    if from_state:  # a line search evaluated the new point: reuse, don't recompute
        loss, grad = optax.value_and_grad_from_state(value_fn)(p, state=state)
    else:
        loss, grad = jax.value_and_grad(value_fn)(p)
    updates, state = opt.update(grad, state, p, value=loss, grad=grad, value_fn=value_fn)
    return optax.apply_updates(p, updates), state, loss


# one jit for every minimisation: the compiled step is cached on (loss_fn, opt, from_state) and on the
# structure, shapes and dtypes of the parameters, the optimizer state and `args`, never on their values
_jit_step = jax.jit(_step, static_argnames=("loss_fn", "opt", "from_state"))


def minimize(loss_fn, params0, opt, steps, tol, patience, progress, desc, callback=None, args=()):
    """Minimise ``loss_fn(params, *args)`` (a squared error) with an optax optimizer, keeping the best iterate.
    Stops after ``steps``, after ``patience`` steps without a relative
    improvement by ``tol``, on a non-finite loss, on divergence (1000x the
    start), when ``callback(step, error)`` returns True, or on Ctrl-C; in
    every case the best parameters seen are returned. ``opt`` must accept
    optax's extra arguments (``value``, ``grad``, ``value_fn``).

    The step is jitted with ``loss_fn`` and ``opt`` static and ``args`` (a
    pytree: a chip, target matrices, ...) as traced arguments: a module-level
    ``loss_fn`` and the same ``opt`` object compile once for all ``args`` of
    one structure and shape. Data closed over by ``loss_fn`` instead is baked
    into the compiled program (a new closure compiles again).

    Returns:
      ``(best params, history of sqrt(loss) per step, info)``.
    """
    state = opt.init(params0)
    step = functools.partial(_jit_step, loss_fn=loss_fn, opt=opt, from_state=_stores_value_and_grad(state))
    args = tuple(args)

    # optax's initial states hold weakly typed scalars that `step` returns strongly typed: without
    # this, the second call would compile `step` a second time
    state = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=jnp.asarray(a).dtype), state)
    # every call of `step` returns the loss of the parameters it was given, so the first call
    # scores the start and each loop step scores the parameters the step before produced
    new_p, new_state, loss = step(params0, state, args)
    best, best_loss = params0, float(loss)
    history = [np.sqrt(best_loss)]
    since_best, stop_reason = 0, "steps"
    if not np.isfinite(best_loss):
        return best, np.asarray(history), {"steps_run": 0, "stopped": "non-finite loss at the start"}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc, unit="step")
    try:
        for i in range(steps):
            p, state = new_p, new_state
            new_p, new_state, loss = step(p, state, args)
            loss = float(loss)  # loss of `p`, the result of step i
            if not np.isfinite(loss):
                stop_reason = "non-finite loss (kept the best settings so far)"
                break
            if loss < best_loss * (1 - tol):
                best_loss, best, since_best = loss, p, 0
            else:
                since_best += 1
            history.append(np.sqrt(loss))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(error=f"{np.sqrt(best_loss):.3e}")
            if callback is not None and callback(i + 1, float(np.sqrt(best_loss))):
                stop_reason = "stopped by the callback"
                break
            if since_best >= patience:
                stop_reason = f"converged (no {tol:g} relative improvement in {patience} steps)"
                break
            if loss > 1e3 * max(history[0] ** 2, 1e-30):
                stop_reason = "diverged (kept the best settings so far)"
                break
    except KeyboardInterrupt:
        stop_reason = "interrupted (kept the best settings so far)"
    finally:
        if bar is not None:
            bar.close()
    return best, np.asarray(history), {"steps_run": len(history) - 1, "stopped": stop_reason}


def _tile_sharded(start: Settings, target_tiles, devices):
    """Settings and target tiles padded to a multiple of the device count, and the tiles' device mesh.
    Padding tiles repeat the last tile's settings and have a zero target, so
    their best gain is 0 and they add nothing to the loss or its gradient.
    Returns ``(settings, target tiles, mesh or None)``; ``None`` (no sharding)
    with one device or fewer tiles than devices.
    """
    t, k = start.grid.n_tiles, start.grid.tile
    if len(devices) < 2 or t < len(devices):
        return start, target_tiles, None
    size = -(-t // len(devices)) * len(devices)
    if size > t:
        start = jax.tree_util.tree_map(lambda a: pad_tiles(a, size), start)
        start = start.replace(grid=TileGrid(out_dim=size * k, in_dim=k, tile=k))
        target_tiles = np.concatenate([target_tiles, np.zeros((size - t, k, k), target_tiles.dtype)])
    return start, target_tiles, tile_mesh(tuple(devices))


@dataclasses.dataclass(frozen=True)
class _CalibrationLoss:
    """The calibration objective ``loss(flat, chip, template, tiles)``: squared matrix error of heater phases.

    Hashable (a static argument of the jitted step, :func:`minimize`), with
    the chip, the settings template and the target tiles as traced
    arguments, so its compiled step serves every chip and program of one
    shape. ``sharding`` (or None) lays the phases out over the tiles' devices.
    """

    sharding: Any = None

    def __call__(self, flat, chip: Chip, template: Settings, tiles):
        if self.sharding is not None:
            flat = jax.lax.with_sharding_constraint(flat, self.sharding)
        s = unflatten_heaters(template, flat, chip.target)
        b = chip_tile_matrices(chip, s, with_gain=False, reverse_only=True)  # differentiated by jax.grad only
        err, _ = relative_error(tiles, b)
        return err**2


def on_devices(tree, mesh=None, spec=None):
    """Every array of ``tree`` as a JAX array: on the default device, or laid out over ``mesh`` by ``spec``
    (default: replicated; each process supplies what it holds). Arguments of a jitted loop go over once,
    not at every call."""
    if mesh is None:
        return jax.tree_util.tree_map(jnp.asarray, tree)
    sharding = jax.sharding.NamedSharding(mesh, spec if spec is not None else jax.sharding.PartitionSpec())

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree_util.tree_map(put, tree)


def optimize(chip, start: Settings, target_tiles, optimizer, steps, tol, patience, progress, desc, callback=None):
    """Gradient descent on heater phases; returns (best settings, history, info).
    The chip, the start settings and the target tiles are arguments of one
    jitted step (not constants of it): calibrating another chip, or another
    program of the same target, tile count and circuit, reuses the compiled
    step. With several JAX devices the tiles are sharded across them: the heater
    phases and target tiles are laid out along the tile axis over a one-axis device mesh and
    XLA partitions the chip simulation and the optimizer's arithmetic to
    match (the loss is a sum over tiles).
    """
    n_tiles = start.grid.n_tiles
    start_p, target_p, mesh = _tile_sharded(start, np.asarray(target_tiles), jax.devices())
    with jax.enable_x64(True):
        host0 = np.asarray(flatten_heaters(start_p), dtype=np.float64)
        template = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), start_p)
        if mesh is None:
            flat0, loss_fn = jnp.asarray(host0), _CalibrationLoss()
            args = on_devices((chip.unseeded(), template, target_p))
        else:
            tiles_spec = jax.sharding.PartitionSpec("tiles")
            flat0 = spread(host0, mesh)
            loss_fn = _CalibrationLoss(jax.sharding.NamedSharding(mesh, tiles_spec))
            args = on_devices((chip.unseeded(), template), mesh) + (on_devices(target_p, mesh, tiles_spec),)
        # extra-args support lets line-search optimizers (optax.lbfgs) see the objective
        best_flat, history, info = minimize(loss_fn, flat0, extra_args_optimizer(optimizer), steps, tol, patience, progress,
                                            desc, callback, args=args)
        best_flat = gather((best_flat,))[0][:n_tiles]
        best = unflatten_heaters(start, best_flat, chip.target)
        best = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), best)
    return best, history, info


def quantized(model: Chip, chip: Chip, s: Settings, target_tiles, bits: int | None):
    """Apply settings found on ``model`` to ``chip`` through drives (optionally DAC-quantized).
    The heater powers that make ``model`` produce the settings' phases are
    computed (crosstalk pre-compensated), quantized by a ``bits``-bit DAC if
    given, and the phases ``chip`` then really produces become the settings;
    returns ``(settings with best gains, matrix error)`` on ``chip``.
    """
    with jax.enable_x64(True):
        power = drive_map(model, np.asarray(flatten_heaters(s)))
        if bits is not None:
            power = quantize_power(power, chip.target, bits)
        real = np.asarray(realized_phases(chip, jnp.asarray(power)))
    out = unflatten_heaters(s, np.mod(real, 2 * np.pi), chip.target)
    out = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), out)
    err, g, _ = settings_error(chip, out, target_tiles)
    return out.replace(gain=g), err


# ---- calibration by measurement: the result every measuring method returns ------------------------

def spent_fields(spent: dict) -> dict:
    """The cost fields of a :class:`MeasuredRun` from a ledger's :meth:`~photocomp.hardware.instrument.Ledger.since`."""
    return {"readings": int(spent["readings"]), "configurations": int(spent["configurations"]),
            "chip_time_s": float(spent["chip_time_s"]), "faults": types.MappingProxyType(spent["faults"]),
            "retries": int(spent["retries"])}


@dataclasses.dataclass(frozen=True)
class MeasuredRun:
    """What a calibration by measurement found and what it cost (the fields every measuring method shares).

    Attributes:
      drives_mw: the drives to apply, ``(n_heaters,)`` or ``(n_tiles, n_heaters)`` mW.
      start_drives_mw: the drives it started from.
      error_start_measured, error_measured: matrix error measured at the start and at :attr:`drives_mw`.
      kept: which drives were kept (the method's words, e.g. ``"start"``).
      history: ``(readings, chip_time_s, figure)`` as the run went on (the method says which figure).
      readings, configurations, chip_time_s: cost on the instrument's ledger.
      faults: faults the ledger counted during the run, by kind.
      retries: re-reads and re-sets made to get past faults.
      skipped: updates given up because reads kept failing.
      stopped: why the search ended; wall_s: wall-clock seconds.
    """

    drives_mw: np.ndarray
    start_drives_mw: np.ndarray
    error_start_measured: float
    error_measured: float
    kept: str
    history: tuple[tuple[int, float, float], ...]
    readings: int
    configurations: int
    chip_time_s: float
    faults: types.MappingProxyType
    retries: int
    skipped: int
    stopped: str
    wall_s: float

    method: ClassVar[str] = "measured"

    def details(self) -> dict:
        """The method's own scalar results (:meth:`metrics` adds the shared ones)."""
        return {}

    def label(self) -> str:
        """The pass record's text, e.g. ``"selfconfig(sweeps=3)"``."""
        return self.method

    def metrics(self) -> dict:
        """The scalar results, for a :class:`~photocomp.core.ir.CompileReport` summary."""
        return {"method": self.method, **self.details(), "error_start_measured": self.error_start_measured,
                "error_after_measured": self.error_measured, "kept": self.kept, "measurements": self.readings,
                "configurations": self.configurations, "chip_time_s": self.chip_time_s,
                "faults": dict(self.faults), "retries": self.retries, "skipped": self.skipped,
                "stopped": self.stopped, "wall_s": self.wall_s}

    def settings(self, chip: Chip, template: Settings) -> Settings:
        """The :class:`~photocomp.hardware.chipsim.Settings` (``template``'s gains) that :attr:`drives_mw`
        produce on ``chip``, one row of drives per tile (one row serves every tile)."""
        drives = np.atleast_2d(np.asarray(self.drives_mw, np.float64))
        with jax.enable_x64(True):
            phases = np.asarray(realized_phases(chip, drives))
        phases = np.broadcast_to(phases, (template.grid.n_tiles, phases.shape[-1]))
        return unflatten_heaters(template, np.mod(phases, 2 * np.pi), chip.target)

    def to_program(self, program: Program, chip: Chip) -> Program:
        """``program`` calibrated for ``chip`` (the instrument's hidden chip) with :attr:`drives_mw`.

        Simulates what ``chip`` does with the drives (best real gain per tile,
        as every calibration reports) and records the true errors before
        (ideal settings) and after, with :meth:`metrics`, in the report: this
        is how ``photocomp.calibrate`` returns a measured calibration.
        """
        program = check_program(program)
        chip = as_chip(chip)
        chip.check_target(program.target, circuit=program.circuit)
        tiles = ideal_tiles(program)
        template = ideal_settings(program)
        before = settings_error(chip, template, tiles)[0]
        s = self.settings(chip, template)
        after, gain, _ = settings_error(chip, s, tiles)
        s = s.replace(gain=np.asarray(gain))
        metrics = {**self.metrics(), "error_before": before, "error_after": after}
        record = PassRecord(self.method, self.label(), self.wall_s,
                            types.MappingProxyType({"matrix_error": after, "measurements": self.readings,
                                                    "chip_time_s": self.chip_time_s}))
        report = CompileReport(program.report.records + (record,),
                               types.MappingProxyType({**dict(program.report.summary), **metrics}))
        return program.with_chip(chip, s, report)


def finite_array(value, name: str, shape: tuple, unit: str = "") -> np.ndarray:
    """``value`` as a finite float64 array of ``shape``, else a typed error naming ``name``."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"{name} must be a real array of shape {shape}{unit}; "
                               f"got {type(value).__name__}") from None
    if a.shape != shape or not np.all(np.isfinite(a)):
        raise InvalidInputError(f"{name} must be finite with shape {shape}; got shape {a.shape}")
    return a


def heater_estimates(heaters, h: int) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, efficiencies)`` of ``h`` heaters, checked: finite ``(h,)`` arrays, efficiencies > 0."""
    if not isinstance(heaters, tuple) or len(heaters) != 2:
        raise InvalidTypeError(f"heaters must be a tuple (offsets, efficiencies) of ({h},) arrays; "
                               f"got {type(heaters).__name__}")
    offsets, eta = (finite_array(v, f"heaters {name}", (h,)) for name, v in zip(("offsets", "efficiencies"), heaters))
    if np.any(eta <= 0):
        raise InvalidInputError(f"heaters efficiencies must be > 0; got min {eta.min():g}")
    return offsets, eta


def check_instrument_target(program: Program, instrument) -> None:
    """Raise :class:`MismatchError` unless ``instrument`` is a chip of ``program``'s target."""
    if instrument.target != program.target:
        raise MismatchError(f"instrument must be a chip of the program's target {program.target.name!r}; "
                            f"got one of {instrument.target.name!r}")
