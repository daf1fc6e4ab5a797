"""``clements`` / ``reck``: decompose every tile's U and V^H (after ``unitary``: its one U) into MZI phases;
``butterfly`` and ``fldzhyan``: fit them (:mod:`photocomp.compiler.fit`)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from photocomp.compiler import driver, fit
from photocomp.compiler.canonical import canonicalize_mesh
from photocomp.compiler.decompose import decompose_many, decompose_pair, group_meshes
from photocomp.compiler.fit import FIT_RESTARTS, FIT_STEPS, FLDZHYAN_RESTARTS, FLDZHYAN_STEPS, fit_meshes, fit_svd_tiles
from photocomp.compiler.pipeline import Pass
from photocomp.compiler.state import CompileState
from photocomp.core.errors import PipelineError
from photocomp.core.ir import PhaseMap, TileGrid
from photocomp.core.layout import layout
from photocomp.core.metrics import fidelity
from photocomp.core.phases import MeshPhases
from photocomp.core.registry import quote
from photocomp.core.validate import check_int
from photocomp.sim import ideal

# bound here: ahead-of-time placeholder runs stay out of counts of ideal.tiles_and_meshes_np
from photocomp.sim.ideal import tiles_and_meshes_np as placeholder_tiles


@dataclasses.dataclass(frozen=True)
class _Decompose(Pass):
    requires = frozenset({"svd"})
    provides = frozenset({"phases", "canonical"})  # decompositions emit canonical ranges
    counts = frozenset({"mzis"})
    kind = ""

    def ahead(self, target, grid: TileGrid, circuit: str):
        """The decomposition kernel on identities and the tile program on zero phases, of ``grid``'s shapes.

        Each placeholder runs only where its work (tiles x K^3) is at most
        :data:`photocomp.compiler.driver.AHEAD_MAX_WORK`. The kernel's runs on
        at most one group of meshes (:func:`photocomp.compiler.decompose.group_meshes`):
        every full group of a larger batch runs the program that one group compiles.
        """
        if target.mesh != self.kind:
            return ()
        kind, k, t = self.kind, grid.tile, grid.n_tiles
        lay = layout(kind, k, cell=target.cell)
        per_tile = 1 if circuit == "unitary" else 2  # meshes per tile
        t_kernel = min(t, max(1, group_meshes() // per_tile))

        def kernel():
            eye = np.repeat(np.eye(k, dtype=np.complex128)[None], t_kernel, axis=0)
            return decompose_many(eye, kind) if circuit == "unitary" else decompose_pair(eye, eye, kind)

        def tiles():
            zero = MeshPhases(lay, np.zeros((t, lay.n_mzi)), np.zeros((t, lay.n_mzi)), np.zeros((t, k)))
            gain = np.ones(t)
            pm = (PhaseMap.unitary(grid, zero, gain) if circuit == "unitary"
                  else PhaseMap(grid=grid, v=zero, sigma=np.zeros((t, k)), u=zero, gain=gain))
            return placeholder_tiles(pm)

        limit = driver.AHEAD_MAX_WORK
        return tuple(fn for fn, work in ((kernel, t_kernel * k**3), (tiles, t * k**3)) if work <= limit)

    def __call__(self, state: CompileState):
        if state.target.mesh != self.kind:
            raise PipelineError(
                f"pass {self.name!r} builds a {self.kind} mesh but target {quote(state.target.name)} "
                f"is a {state.target.mesh} chip; use the {state.target.mesh!r} pass"
            )
        u, s_norm, vh, gain = state.require("svd", "svd")
        grid: TileGrid = state.require("grid", "tile")
        lay = layout(self.kind, u.shape[-1], cell=state.target.cell)
        if vh is None:  # the unitary pass: one mesh per tile
            meshes, residual = self._meshes(lay, u)
            pm = PhaseMap.unitary(grid, meshes, gain)
            if residual is not None and _whole(grid):
                return self._measured(state, pm, residual)
        else:
            pm = self._svd_program(lay, grid, u, s_norm, vh, gain)
        # rebuild every mesh from its phases: fidelities, the tile matrices and the compiled matrix's error,
        # in the one program that every later simulation of the compile runs (sim.ideal.tiles_and_meshes_np)
        tiles, v_hat, u_hat = ideal.tiles_and_meshes_np(pm)
        fid_u = np.asarray(fidelity(np.asarray(u, np.complex128), u_hat))
        fid_v = None if vh is None or v_hat is None else np.asarray(fidelity(np.asarray(vh, np.complex128), v_hat))
        err = float(np.sqrt(tile_errors(grid, state.require("blocks", "tile"), tiles).sum()))
        metrics = self._metrics(state, pm, float(fid_u.min() if fid_v is None else min(fid_v.min(), fid_u.min())),
                                err)
        # the rebuilt program matrix is kept for the next pass that needs it (canonicalize's "before")
        return state.replace(phase_map=pm, matrix=pm.grid.join(tiles), meshes=(v_hat, u_hat),
                             matrix_error=metrics["matrix_error"]), metrics

    @staticmethod
    def _metrics(state: CompileState, pm: PhaseMap, fidelity: float, err: float) -> dict:
        """The pass's record: the smallest mesh fidelity, the relative matrix error from the absolute ``err``."""
        norm = float(np.linalg.norm(state.weights))
        return {
            "min_mesh_fidelity": fidelity,
            "matrix_error": err / norm if norm > 0 else err,
            "mzis": int(pm.n_tiles * pm.n_mzi_per_tile),
            "depth": int(pm.depth),
        }

    def _measured(self, state: CompileState, pm: PhaseMap, residual: np.ndarray):
        """A unitary program of whole tiles, checked by what the nulling measured instead of a rebuild.

        Each tile is ``gain U`` (no padding to crop) and the kernel measured
        ``||U - U_hat||_F`` and ``|Tr(U^H U_hat)|`` from its nulled matrix
        (:func:`photocomp.compiler.decompose.decompose_many`), U_hat the
        mesh the phases describe: the tile's error is ``gain ||U - U_hat||_F``
        and the mesh fidelity ``|Tr(U^H U_hat)|^2 / K^2``, the rebuild's
        numbers to rounding at O(K^2) per tile. No matrix is simulated here:
        the next pass that changes the phases (``quantize``) or needs the
        matrix (``lower``) simulates the program once, and the compile's
        summary comes from that simulation.
        """
        gain = np.asarray(pm.gain, dtype=np.float64)
        err = float(np.linalg.norm(gain * residual[:, 0]))
        metrics = self._metrics(state, pm, float(np.min(residual[:, 1] ** 2)) / pm.grid.tile**2, err)
        return state.replace(phase_map=pm, matrix_error=metrics["matrix_error"]), metrics

    # every stack below runs sharded across all JAX devices, in cache-sized chunks
    def _svd_program(self, lay, grid: TileGrid, u, s_norm, vh, gain) -> PhaseMap:
        """The phase map of the tiles ``gain u diag(s_norm) vh``: each factor's mesh, the attenuators."""
        u_out, v_out = decompose_pair(u, vh, self.kind)
        sigma = np.arccos(np.clip(s_norm, 0.0, 1.0))
        return PhaseMap(grid=grid, v=MeshPhases(lay, *v_out[:3]), sigma=sigma, u=MeshPhases(lay, *u_out[:3]),
                        gain=gain)

    def _meshes(self, lay, u) -> tuple[MeshPhases, np.ndarray | None]:
        """The phases of the meshes realising the unitaries ``u`` (a unitary program's tiles), and per mesh
        ``(||U - U_hat||_F, |Tr(U^H U_hat)|)`` as the decomposition measured them (None: not measured)."""
        theta, phi, out, _, residual = decompose_many(u, self.kind)
        return MeshPhases(lay, theta, phi, out), residual


def _whole(grid: TileGrid) -> bool:
    """Whether every tile of ``grid`` holds K x K entries of the matrix (no padding)."""
    return grid.out_dim == grid.rows * grid.tile and grid.in_dim == grid.cols * grid.tile


def _unpadded(grid: TileGrid) -> np.ndarray:
    """Boolean (T, K, K): where each tile holds entries of the matrix (not zero padding)."""
    rows, cols = grid.extent()
    i = np.arange(grid.tile)
    return (i[None, :, None] < rows[:, None, None]) & (i[None, None, :] < cols[:, None, None])


def tile_errors(grid: TileGrid, blocks, tiles: np.ndarray) -> np.ndarray:
    """Per tile the squared Frobenius error of ``tiles`` against ``blocks`` over the unpadded part,
    so that ``sqrt(sum)`` is ``||W - W_hat||_F``."""
    d = np.where(_unpadded(grid), np.asarray(blocks, np.complex128) - tiles, 0.0)
    return np.einsum("tij,tij->t", d.real, d.real) + np.einsum("tij,tij->t", d.imag, d.imag)


@dataclasses.dataclass(frozen=True)
class Clements(_Decompose):
    """Clements rectangular decomposition of every tile (depth K per mesh).

    Reference: W. R. Clements et al., Optica 3, 1460 (2016).
    """

    name = "clements"
    kind = "clements"


@dataclasses.dataclass(frozen=True)
class Reck(_Decompose):
    """Reck triangular decomposition of every tile (depth 2K - 3 per mesh).

    Reference: M. Reck et al., PRL 73, 58 (1994).
    """

    name = "reck"
    kind = "reck"


@dataclasses.dataclass(frozen=True)
class Butterfly(_Decompose):
    """Fit every tile's U and V^H (after ``unitary``: its one U) with a butterfly mesh (log2 K columns).

    A butterfly has (K / 2) log2 K MZIs, too few to reach every unitary, so
    its phases are fitted (:func:`photocomp.compiler.fit.fit_meshes`: L-BFGS
    from ``restarts`` starts, the first the butterfly's recursive factorization
    and the others random, drawn from ``seed``; ``steps`` steps
    each) and then brought to canonical ranges. An SVD program's tiles are
    then refined as a whole (:func:`photocomp.compiler.fit.fit_svd_tiles`: both
    meshes, the attenuators and the phases between them fitted to the tile),
    so its meshes no longer approximate the SVD factors one by one and
    ``min_mesh_fidelity`` (against those factors) is low; ``matrix_error`` is
    the figure of merit. A butterfly realises its own family of unitaries
    exactly and a generic matrix only approximately.

    Args:
      seed: seed of the ``jax.random`` key of the random starts.
      restarts: starts per mesh (the best is kept).
      steps: L-BFGS steps per start.
    """

    seed: int = 0
    restarts: int = FIT_RESTARTS
    steps: int = FIT_STEPS

    name = "butterfly"
    kind = "butterfly"

    def __post_init__(self):
        check_int(self.seed, f"{self.name} seed", low=0, high=2**32 - 1)
        check_int(self.restarts, f"{self.name} restarts", low=1, high=1024)
        check_int(self.steps, f"{self.name} steps", low=1, high=100_000)

    def ahead(self, target, grid: TileGrid, circuit: str):
        """The fit's programs for ``grid``'s tiles, compiled without running
        (:func:`~photocomp.compiler.fit.compile_mesh_fit`; an SVD program's tile refinement,
        :func:`~photocomp.compiler.fit.compile_tile_fit`, in the other thread, so that the two compile at
        once). Nothing runs on placeholder data, so any grid takes them."""
        if target.mesh != self.kind or circuit not in ("svd", "unitary"):
            return ()
        lay, t = layout(self.kind, grid.tile, cell=target.cell), grid.n_tiles
        meshes = functools.partial(fit.compile_mesh_fit, lay, t if circuit == "unitary" else 2 * t,
                                   restarts=self.restarts)
        if circuit == "unitary":
            return (meshes,)
        return meshes, functools.partial(fit.compile_tile_fit, lay, t)

    def _svd_program(self, lay, grid: TileGrid, u, s_norm, vh, gain) -> PhaseMap:
        """Each factor fitted alone, then every tile refined as a whole (:func:`photocomp.compiler.fit.fit_svd_tiles`):
        the product of two separately fitted factors is far from the tile (``tests/test_butterfly.py``)."""
        t = len(u)
        theta, phi, out = self._fit(lay, np.concatenate([u, vh]))
        w = np.einsum("tij,tj,tjk->tik", np.asarray(u, np.complex128), np.asarray(s_norm, np.float64),
                      np.asarray(vh, np.complex128))
        fit = fit_svd_tiles(lay, w, _unpadded(grid), (theta[:t], phi[:t]), (theta[t:], phi[t:]), s_norm, out[t:],
                            steps=self.steps)
        scale = fit["s"].max(axis=1)
        live = scale > 0  # a zero tile keeps its zero gain
        sigma = np.arccos(np.clip(fit["s"] / np.where(live, scale, 1.0)[:, None], 0.0, 1.0))
        u_ph = MeshPhases(lay, *canonicalize_mesh(lay, *fit["u"]))
        v_ph = MeshPhases(lay, *canonicalize_mesh(lay, *fit["v"]))
        return PhaseMap(grid=grid, v=v_ph, sigma=sigma, u=u_ph, gain=np.asarray(gain) * np.where(live, scale, 1.0))

    def _fit(self, lay, stack):
        """Canonical ``(theta, phi, out_phase)`` of the meshes fitted to the unitaries ``stack``."""
        theta, phi, out, _ = fit_meshes(lay, stack, key=jax.random.key(self.seed), restarts=self.restarts,
                                        steps=self.steps)
        return canonicalize_mesh(lay, theta, phi, out)

    def _meshes(self, lay, u) -> tuple[MeshPhases, np.ndarray | None]:
        return MeshPhases(lay, *self._fit(lay, u)), None


@dataclasses.dataclass(frozen=True)
class Fldzhyan(Butterfly):
    """Fit every tile's meshes on Fldzhyan's layout: 2K brick columns of static couplers, one phase each.

    The layout has exactly K^2 phases (K (K - 1) external, K output), but no
    decomposition: its phases are fitted as the butterfly's are (every start
    random), and an SVD program's tiles are refined as a whole. Haar-random
    unitaries of a few modes fit to rounding; from about a dozen modes on the
    fits stall in local minima (notebook 06, section 7, has the numbers), and
    ``matrix_error`` reports what was reached. The arguments are the
    butterfly pass's, with :data:`~photocomp.compiler.fit.FLDZHYAN_RESTARTS`
    starts of :data:`~photocomp.compiler.fit.FLDZHYAN_STEPS` steps by default.
    """

    restarts: int = FLDZHYAN_RESTARTS
    steps: int = FLDZHYAN_STEPS

    name = "fldzhyan"
    kind = "fldzhyan"
