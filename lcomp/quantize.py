"""Quantizers with explicit surrogate gradients.

Each function's forward value is the exact quantized value (a ``custom_vjp`` returns it as computed,
where the ``x + stop_gradient(q - x)`` identity can be off by one float32 ulp), and its backward pass is
stated in its docstring:

==================  ======================================  ===========================================
function            forward                                 gradient
==================  ======================================  ===========================================
``binarize``        +-1 (stochastic in training,            straight-through: d b / d u = 1
                    ``where(u >= 0, 1, -1)`` at test)
``threshold_ste``   ``1[e > threshold]`` in {0, 1}          straight-through: d b / d e = 1
``round_ste``       ``round(x)`` (half to even)             identity
``nearest_center``  nearest center ``c[argmin (z - c)^2]``  that of the soft assignment
                                                            ``sum_j softmax(-sigma d)_j c_j`` w.r.t.
                                                            ``z`` and the centers
==================  ======================================  ===========================================

Everything is computed in float32: with bfloat16 a pre-activation near 0 can binarise differently on
two machines, which would make bitstreams irreproducible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["binarize", "threshold_ste", "round_ste", "floor_ste", "nearest_center", "soft_assignment"]


@jax.custom_vjp
def _straight_through(x: Array, value: Array) -> Array:
    """Return ``value``; pass the incoming gradient to ``x`` unchanged (``value`` gets none)."""
    return value


def _straight_through_fwd(x, value):
    return value, None


def _straight_through_bwd(_, g):
    return g, jnp.zeros_like(g)


_straight_through.defvjp(_straight_through_fwd, _straight_through_bwd)


def binarize(u: Array, key: Array | None = None, *, stochastic: bool) -> Array:
    """The recurrent coder's binarizer (Toderici et al.; spec rnn_coder section 5).

    Args:
      u: pre-activations in ``[-1, 1]`` (the output of a tanh), any shape.
      key: PRNG key, required when ``stochastic``.
      stochastic: training mode: ``+1`` with probability ``(1 + u) / 2``, else ``-1`` (so
        ``E[b] = u``). Otherwise the deterministic ``where(u >= 0, 1, -1)``; never 0, unlike ``sign``,
        so no third symbol can appear.

    Returns:
      float32 array of the same shape with values exactly ``+1.0`` or ``-1.0``. Gradient: ``d b/d u = 1``.
    """
    u32 = jnp.asarray(u).astype(jnp.float32)
    if stochastic:
        if key is None:
            raise ValueError("binarize(stochastic=True) needs a PRNG key")
        draw = jax.random.uniform(key, u32.shape, jnp.float32)
        bits = jnp.where(draw < 0.5 * (1.0 + u32), 1.0, -1.0)
    else:
        bits = jnp.where(u32 >= 0, 1.0, -1.0)
    return _straight_through(u32, jax.lax.stop_gradient(bits.astype(jnp.float32)))


def threshold_ste(e: Array, threshold: float = 0.5) -> Array:
    """``1[e > threshold]`` in {0, 1} (float32) with straight-through gradient ``d b / d e = 1``.

    This is Li et al.'s binarizer on sigmoid outputs (spec li2018 section 3.1).
    """
    e32 = jnp.asarray(e).astype(jnp.float32)
    return _straight_through(e32, jax.lax.stop_gradient((e32 > threshold).astype(jnp.float32)))


def round_ste(x: Array) -> Array:
    """``round(x)`` forward (``jnp.round``: halves to even), identity gradient."""
    x = jnp.asarray(x)
    return _straight_through(x, jax.lax.stop_gradient(jnp.round(x)))


def floor_ste(x: Array) -> Array:
    """``floor(x)`` forward, identity gradient (exact networks' activations: flooring onto a grid)."""
    x = jnp.asarray(x)
    return _straight_through(x, jax.lax.stop_gradient(jnp.floor(x)))


def soft_assignment(z: Array, centers: Array, sigma: float = 1.0) -> Array:
    """Mentzer et al.'s soft quantization ``sum_j softmax_j(-sigma (z - c_j)^2) c_j``, shape of ``z``."""
    distance = jnp.square(z[..., None] - centers)
    weights = jax.nn.softmax(-sigma * distance, axis=-1)
    return jnp.sum(weights * centers, axis=-1)


@jax.custom_vjp
def _hard_with_soft_gradient(z: Array, centers: Array, sigma: float) -> Array:
    symbols = jnp.argmin(jnp.square(z[..., None] - centers), axis=-1)
    return centers[symbols]


def _hard_with_soft_gradient_fwd(z, centers, sigma):
    return _hard_with_soft_gradient(z, centers, sigma), (z, centers, sigma)


def _hard_with_soft_gradient_bwd(residuals, g):
    z, centers, sigma = residuals
    # The backward pass IS the soft path's vector-Jacobian product; recomputing it here costs an
    # N x L softmax and saves storing it between the passes.
    _, soft_vjp = jax.vjp(lambda zz, cc: soft_assignment(zz, cc, sigma), z, centers)
    dz, dc = soft_vjp(g)
    return dz, dc, jnp.zeros_like(sigma)


_hard_with_soft_gradient.defvjp(_hard_with_soft_gradient_fwd, _hard_with_soft_gradient_bwd)


def nearest_center(z: Array, centers: Array, sigma: float = 1.0) -> tuple[Array, Array]:
    """Mentzer et al.'s quantizer (spec mentzer2018 section 4).

    Args:
      z: encoder output, any shape.
      centers: the ``L`` (trainable) centers, shape ``(L,)``.
      sigma: softness of the assignment used for the gradient (1 in the paper; no annealing).

    Returns:
      ``(q, symbols)``: ``q`` (float32, shape of ``z``) equals the nearest center
      ``centers[argmin_j (z - c_j)^2]`` exactly in the forward pass; its gradient with respect to
      ``z`` AND ``centers`` is that of :func:`soft_assignment`. ``symbols`` (int32) are the center
      indices (ties go to the lower index).
    """
    z32 = jnp.asarray(z).astype(jnp.float32)
    c32 = jnp.asarray(centers).astype(jnp.float32)
    if c32.ndim != 1:
        raise ValueError(f"centers must be a vector, got shape {c32.shape}")
    symbols = jnp.argmin(jnp.square(jax.lax.stop_gradient(z32)[..., None] - jax.lax.stop_gradient(c32)), axis=-1)
    q = _hard_with_soft_gradient(z32, c32, jnp.asarray(sigma, jnp.float32))
    return q, symbols.astype(jnp.int32)
