"""Importance map -> mask over the K latent channels (spec mentzer2018 section 3), and what a file sends.

    y      = sigmoid(importance channel) * K            one value in (0, K) per latent position
    m[k]   = clip(y - k, 0, 1),  k = 0 .. K-1           "code": the soft ramp (released code, the default)
    m[k]   = ceil(clip(y - k, 0, 1)), identity gradient "thesis": binary forward, the ramp's gradient
    z      = m * z  -> nearest-center quantizer

Both variants give channel k a nonzero mask exactly when k < y, so the number of channels a position uses is
the integer `count = #{k : m[k] > 0}` (= ceil(y), in [0, K]). Channels k >= count hold z = 0, which the
quantizer maps to the center nearest 0: their symbol is known without being sent.

What the file sends (decided here, documented in codec.py): the official code sends no mask and codes every
symbol (masked ones are cheap under the context model); we code only the symbols with k < count, and send the
count map as side information (`lcomp.entropy.side_info.encode_integer_map`, levels K + 1), from which both
ends derive the same mask with `lcomp.entropy.side_info.mask_from_counts`. The decoder fills every unsent
symbol with the center nearest 0, so its latent volume equals the encoder's exactly, in both variants.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

VARIANTS = ("code", "thesis")


def importance(channel0: Array, channels: int) -> Array:
    """y = sigmoid(channel0) * K."""
    return jax.nn.sigmoid(channel0) * channels


def soft_mask(y: Array, channels: int) -> Array:
    """m[..., k] = clip(y - k, 0, 1): (..., K), sum_k m = y for y in [0, K]."""
    return jnp.clip(y[..., None] - jnp.arange(channels, dtype=y.dtype), 0.0, 1.0)


def mask(y: Array, channels: int, variant: str = "code") -> Array:
    """The mask applied to the latents: the soft ramp ("code") or its ceiling with the ramp's gradient ("thesis")."""
    m = soft_mask(y, channels)
    if variant == "code":
        return m
    if variant == "thesis":
        return m + jax.lax.stop_gradient(jnp.ceil(m) - m)
    raise ValueError(f"mask variant must be one of {VARIANTS}, got {variant!r}")


def counts(m: Array) -> Array:
    """Channels in use per position: #{k : m[k] > 0} (int32, shape m.shape[:-1]); the side information."""
    return jnp.sum(jax.lax.stop_gradient(m) > 0, axis=-1).astype(jnp.int32)
