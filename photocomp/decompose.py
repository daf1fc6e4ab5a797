"""Unitary decompositions into MZI phases: Clements (rectangular) and Reck (triangular).

The nulling order is static (see :func:`photocomp.mesh.nulling_schedule`), so
each decomposition is one ``lax.scan`` over the N(N-1)/2 nulling steps whose
per-step metadata are scanned arrays: the traced program has constant size in
N (compile time does not grow with N), there is no Python loop per MZI, and it
``vmap``s over a batch of unitaries. Each step touches two rows or columns,
O(N) work, so a decomposition is O(N^3).

References:
  W. R. Clements et al., "Optimal design for universal multiport
  interferometers", Optica 3, 1460 (2016).
  M. Reck et al., "Experimental realization of any discrete unitary
  operator", PRL 73, 58 (1994).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from photocomp import convention
from photocomp.mesh import MESH_KINDS, MeshLayout, nulling_schedule
from photocomp.phases import MeshPhases
from photocomp.validate import as_unitary_batch

__all__ = ["decompose", "clements", "reck"]


def _null_step(flat, n, is_left, k, t):
    """One nulling step on row-major flattened matrices ``flat`` (N*N, B).

    Right step (``is_left`` False): multiply columns (k, k+1) by T^-1 from the
    right so that entry (t, k) vanishes. Left step: multiply rows (k, k+1) by
    T from the left so that entry (k+1, t) vanishes. Both touch two "lines"
    of N entries, gathered by index arithmetic, so one branch-free body serves
    both (a ``lax.cond`` would copy the whole matrix each step).
    """
    r = jnp.arange(n)
    # line0/line1: the two columns (right step) or the two rows (left step).
    base = jnp.where(is_left, k * n, k)
    stride = jnp.where(is_left, 1, n)
    offset = jnp.where(is_left, n, 1)
    idx0 = base + stride * r
    idx1 = idx0 + offset
    line0 = flat[idx0]  # (N, B): the batch rides along on the trailing axis
    line1 = flat[idx1]
    a = line0[t]  # (B,)
    b = line1[t]
    # right: null a = u[t, k]   -> tan(theta) = |a|/|b|, phi = arg a - arg b
    # left : null b = u[k+1, t] -> tan(theta) = |b|/|a|, phi = arg(-b) - arg a
    num = jnp.where(is_left, jnp.abs(b), jnp.abs(a))
    den = jnp.where(is_left, jnp.abs(a), jnp.abs(b))
    theta = jnp.arctan2(num, den)
    phi = jnp.where(is_left, jnp.angle(-b) - jnp.angle(a), jnp.angle(a) - jnp.angle(b))
    phi = jnp.where(num == 0, 0.0, phi)
    c, s = jnp.cos(theta), jnp.sin(theta)
    # T^-1 from the right and T from the left act on (line0, line1) as
    # new0 = e c line0 - s line1, new1 = e s line0 + c line1, e = exp(-/+ i phi).
    e = jnp.exp(jnp.where(is_left, 1j, -1j) * phi)
    new0 = e * c * line0 - s * line1
    new1 = e * s * line0 + c * line1
    flat = flat.at[idx0].set(new0, unique_indices=True)
    flat = flat.at[idx1].set(new1, unique_indices=True)
    return flat, theta, phi


def _decompose_batch_impl(u, kind: str):
    """Decompose ``u`` (B, N, N); returns theta, phi (B, n_mzi) and out_phase (B, N)."""
    batch = u.shape[0]
    sched = nulling_schedule(kind, u.shape[-1])
    lay: MeshLayout = sched["layout"]
    n = lay.n_modes
    n_steps = lay.n_mzi
    rdtype = jnp.real(u).dtype
    if n_steps == 0:
        return (
            jnp.zeros((batch, 0), rdtype),
            jnp.zeros((batch, 0), rdtype),
            jnp.angle(jnp.diagonal(u, axis1=1, axis2=2)).astype(rdtype),
        )
    left = jnp.asarray(sched["left"])
    ks = jnp.asarray(sched["k"])
    tg = jnp.asarray(sched["target"])

    def step(flat, meta):
        flat, th, ph = _null_step(flat, n, *meta)
        return flat, (th, ph)

    flat = jnp.moveaxis(u.reshape(batch, n * n), 0, -1)  # (N*N, B)
    flat, (theta_s, phi_s) = jax.lax.scan(step, flat, (left, ks, tg))  # theta_s: (steps, B)
    alpha = jnp.angle(flat[jnp.arange(n) * (n + 1)])  # diagonal, (N, B)

    # Push the diagonal screen out through the left-multiplication MZIs,
    # nearest first (reverse nulling order), with the commuting identity.
    left_idx = np.flatnonzero(sched["left"])[::-1]
    if len(left_idx):
        li = jnp.asarray(left_idx)

        def push(screen, idx):
            k = ks[idx]
            a = screen[k]
            b = screen[k + 1]
            new_a, new_b, new_phi = convention.commute_through_inverse(
                theta_s[idx], phi_s[idx], a, b
            )
            # wrap every push: unwrapped phases grow by ~pi per step and lose digits
            screen = screen.at[k].set(convention.wrap_phase(new_a)).at[k + 1].set(convention.wrap_phase(new_b))
            return screen, new_phi

        alpha, new_phis = jax.lax.scan(push, alpha, li)
        phi_s = phi_s.at[li].set(new_phis)

    slot = jnp.asarray(sched["slot"])
    theta = jnp.zeros((n_steps, batch), rdtype).at[slot].set(theta_s)
    phi = jnp.zeros((n_steps, batch), rdtype).at[slot].set(phi_s)
    return theta.T, convention.wrap_phase(phi).T, convention.wrap_phase(alpha).T


_CHUNK = 8
"""Unitaries decomposed together in one scan. Measured on a 2-core x86 CPU at N=64:
8 per scan gives ~400 unitaries/s, 16 or more drops to ~100-200/s (XLA's row gathers
change strategy), so larger batches run as ``lax.map`` over chunks of 8."""


def _decompose_chunked(u, kind: str):
    b = u.shape[0]
    if b <= _CHUNK:
        return _decompose_batch_impl(u, kind)
    chunks = u.reshape((b // _CHUNK, _CHUNK) + u.shape[1:])
    theta, phi, out = jax.lax.map(lambda c: _decompose_batch_impl(c, kind), chunks)
    return theta.reshape(b, -1), phi.reshape(b, -1), out.reshape(b, -1)


_decompose_batch = jax.jit(_decompose_chunked, static_argnames=("kind",))


def _bucket(b: int) -> int:
    """Padded batch size: powers of two up to 256, then multiples of 256 (bounded recompiles)."""
    return 1 << (b - 1).bit_length() if b <= 256 else -(-b // 256) * 256


def decompose(unitary, kind: str = "clements", *, check: bool = True, atol: float = 1e-8) -> MeshPhases:
    """Decompose unitaries into the phases of a ``kind`` mesh.

    Args:
      unitary: complex array ``(N, N)`` or a batch ``(B, N, N)``. Computed in
        float64 (complex128) whatever the global JAX precision.
      kind: ``"clements"`` (depth N) or ``"reck"`` (depth 2N-3).
      check: verify in Python that the input is unitary (to ``atol``).
      atol: tolerance of the unitarity check on ``||U U^H - I||_max``.

    Returns:
      :class:`~photocomp.phases.MeshPhases` with ``theta`` in [0, pi/2],
      ``phi`` and ``out_phase`` in [0, 2 pi); leading batch axis kept.

    Example:
      >>> import numpy as np, photocomp as pc
      >>> ph = pc.decompose(np.eye(4), "clements")
      >>> ph.layout.n_mzi
      6
    """
    if kind not in MESH_KINDS:
        from photocomp.errors import UnknownNameError

        raise UnknownNameError(f"kind must be one of {MESH_KINDS}; got {kind!r}")
    u, batched = as_unitary_batch(unitary, "unitary", check=check, atol=atol)
    lay = nulling_schedule(kind, u.shape[-1])["layout"]
    b = u.shape[0]
    bucket = _bucket(b)
    if bucket != b:
        u = np.concatenate([u, np.broadcast_to(np.eye(u.shape[-1]), (bucket - b,) + u.shape[1:])])
    with jax.enable_x64(True):
        uj = jnp.asarray(u, dtype=jnp.complex128)
        theta, phi, out = _decompose_batch(uj, kind=kind)
        theta, phi, out = (np.asarray(a)[:b] for a in (theta, phi, out))
    if not batched:
        theta, phi, out = theta[0], phi[0], out[0]
    return MeshPhases(layout=lay, theta=theta, phi=phi, out_phase=out)


def clements(unitary, **kwargs) -> MeshPhases:
    """Clements rectangular decomposition; see :func:`decompose`."""
    return decompose(unitary, "clements", **kwargs)


def reck(unitary, **kwargs) -> MeshPhases:
    """Reck triangular decomposition; see :func:`decompose`."""
    return decompose(unitary, "reck", **kwargs)
