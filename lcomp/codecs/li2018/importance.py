"""Li et al. 2018's importance map -> quantized level -> channel mask (spec li2018 section 3), with the
paper's surrogate gradient, and the map's bit-planes (what the file codes).

    Q(p)   = floor(L p)  in {0 .. L-1}                 one level per latent position (p from a sigmoid)
    m[k]   = 1[k < (n / L) Q(p)],  k = 0 .. n-1        channels kept; at most n - n/L (p < 1), none at Q = 0
    dLoss/dp = L * sum_{k in [g (Q - 1), g (Q + 1))} dLoss/dm[k],  g = n / L     (spec 3.4, Eq. 7)

The backward window is one level on either side of the current boundary: in the paper's 1-based form,
dm_k/dp = L where ceil(k L / n) - 1 <= L p < ceil(k L / n) + 1. The quantizer sits inside this one
custom_vjp, so `floor` gets no second straight-through gradient (spec 7.3).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def level(p: Array, levels: int) -> Array:
    """Q(p) = floor(L p), clipped to [0, L-1] (int32); p = 1.0 exactly (a saturated float sigmoid) is L-1."""
    return jnp.clip(jnp.floor(jnp.asarray(p, jnp.float32) * levels), 0, levels - 1).astype(jnp.int32)


def kept_channels(q: Array, channels: int, levels: int) -> Array:
    """Channels kept at level q: (n / L) q."""
    return q * (channels // levels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def mask(p: Array, channels: int, levels: int) -> Array:
    """(..., n) float32 mask in {0, 1} from the importance map p (...), with the paper's backward pass."""
    k = jnp.arange(channels)
    return (k < kept_channels(level(p, levels), channels, levels)[..., None]).astype(jnp.float32)


def _mask_fwd(p, channels, levels):
    return mask(p, channels, levels), level(p, levels)


def _mask_bwd(channels, levels, q, g):
    per_level = channels // levels
    k = jnp.arange(channels)
    lo = (per_level * (q - 1))[..., None]
    hi = (per_level * (q + 1))[..., None]
    window = (k >= lo) & (k < hi)
    return (levels * jnp.sum(jnp.where(window, g, 0.0), axis=-1),)


mask.defvjp(_mask_fwd, _mask_bwd)


def planes(levels: int) -> int:
    """Bit-planes of a level in [0, L): log2 L (L a power of two, checked by the codec's config)."""
    return int(levels).bit_length() - 1


def to_planes(q, levels: int) -> np.ndarray:
    """Levels (h, w) -> bit-planes (P, h, w) in {0, 1}, most significant plane first."""
    q = np.asarray(q, np.int64)
    p = planes(levels)
    return ((q[None] >> np.arange(p - 1, -1, -1)[:, None, None]) & 1).astype(np.int32)


def from_planes(bits) -> np.ndarray:
    """Inverse of `to_planes`: (P, h, w) -> levels (h, w) int32."""
    bits = np.asarray(bits, np.int64)
    weights = 1 << np.arange(bits.shape[0] - 1, -1, -1)
    return np.tensordot(weights, bits, axes=1).astype(np.int32)
