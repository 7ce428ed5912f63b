"""Distortion terms used in training.

* :func:`l1`, :func:`mse`: plain means over every element.
* :func:`ssim_weighted_l1`: Johnston et al. 2018's SSIM-weighted L1 (spec rnn_coder section 9.4, lcomp's
  working definition), a pure function ``(x, x_hat, state) -> (loss, new_state, weights)`` whose state
  (an exponential moving average of the block scores) lives outside the optimizer, in the codec state.

All functions accept a reconstruction stack ``x_hat`` of shape ``(T, N, H, W, C)`` (one entry per
iteration of the recurrent coder) as well as a single ``(N, H, W, C)``; the target ``x`` is
``(N, H, W, C)`` and is broadcast over iterations, and the mean runs uniformly over iterations too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lcomp.errors import ConfigError

Array = jax.Array

__all__ = ["l1", "mse", "block_ssim", "init_ssim_weight_state", "ssim_weighted_l1"]


def l1(x: Array, x_hat: Array) -> Array:
    """Mean absolute error over all elements (and iterations, if ``x_hat`` has a leading one)."""
    return jnp.mean(jnp.abs(x_hat - x))


def mse(x: Array, x_hat: Array) -> Array:
    """Mean squared error over all elements (and iterations)."""
    return jnp.mean(jnp.square(x_hat - x))


def _blocks(x: Array, block_size: int) -> Array:
    """``(..., H, W, C)`` -> ``(..., H/b, W/b, b*b, C)``: the pixels of each non-overlapping block."""
    *lead, h, w, c = x.shape
    if h % block_size or w % block_size:
        raise ConfigError(f"image size {h}x{w} is not a multiple of the SSIM block size {block_size}")
    x = x.reshape(*lead, h // block_size, block_size, w // block_size, block_size, c)
    x = jnp.moveaxis(x, -4, -3)  # (..., H/b, W/b, b, b, C)
    return x.reshape(*lead, h // block_size, w // block_size, block_size * block_size, c)


def block_ssim(
    x: Array,
    y: Array,
    *,
    block_size: int = 8,
    data_range: float = 1.0,
    value_offset: float = 0.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Array:
    """SSIM of every non-overlapping ``block_size`` x ``block_size`` block, averaged over channels.

    The statistics (means, biased variances, covariance) are taken over the block itself with uniform
    weights, per channel; the per-channel SSIMs are averaged. SSIM's luminance term assumes non-negative
    intensities, so ``value_offset`` (0.5 for the coder's ``[-0.5, 0.5]`` images) is added first.

    Args:
      x, y: ``(..., H, W, C)`` with broadcast-compatible leading axes.

    Returns:
      ``(..., H/b, W/b)`` float32.
    """
    x, y = jnp.broadcast_arrays(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    bx = _blocks(x + value_offset, block_size)
    by = _blocks(y + value_offset, block_size)
    mu_x = jnp.mean(bx, axis=-2)
    mu_y = jnp.mean(by, axis=-2)
    dx = bx - mu_x[..., None, :]
    dy = by - mu_y[..., None, :]
    var_x = jnp.mean(dx * dx, axis=-2)
    var_y = jnp.mean(dy * dy, axis=-2)
    cov = jnp.mean(dx * dy, axis=-2)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return jnp.mean(ssim, axis=-1)


def init_ssim_weight_state(num_iterations: int | None = None) -> dict[str, Array]:
    """Initial state of :func:`ssim_weighted_l1`: ``{"ema": S_bar, "count": updates so far}``.

    ``num_iterations=None`` keeps one scalar ``S_bar`` (spec 9.4). With ``num_iterations = T`` every
    iteration keeps its own ``S_bar`` (so each iteration's weights average to 1 and iterations stay
    uniformly weighted); the stack passed to the loss must then have ``T`` entries.
    """
    shape = () if num_iterations is None else (int(num_iterations),)
    return {"ema": jnp.zeros(shape, jnp.float32), "count": jnp.zeros((), jnp.int32)}


def ssim_weighted_l1(
    x: Array,
    x_hat: Array,
    state: dict[str, Array],
    *,
    weight_by: str = "dissimilarity",
    block_size: int = 8,
    decay: float = 0.99,
    data_range: float = 1.0,
    value_offset: float = 0.5,
    epsilon: float = 1e-6,
    per_iteration: bool = False,
) -> tuple[Array, dict[str, Array], Array]:
    """SSIM-weighted L1 (J18; lcomp's working definition, spec rnn_coder 9.4).

    For every iteration and every 8x8 block::

        S   = 1 - SSIM(x_block, x_hat_block)      (weight_by="dissimilarity", default)
              SSIM(x_block, x_hat_block)          (weight_by="similarity")
        S_bar <- mean(S) of the first batch, then 0.99 * S_bar + 0.01 * mean(S)
        w   = stop_gradient(S / S_bar)            (the UPDATED S_bar, so the very first batch is defined)
        loss = mean over iterations, images, pixels and channels of  w * |x - x_hat|

    so ``d loss / d x_hat = w * sign(x_hat - x) / x_hat.size``. ``S_bar`` is floored at ``epsilon``
    (only reached once reconstructions are near perfect).

    Args:
      x: target ``(N, H, W, C)``, H and W multiples of ``block_size``.
      x_hat: reconstruction ``(N, H, W, C)`` or stack ``(T, N, H, W, C)``.
      state: from :func:`init_ssim_weight_state` (scalar or per-iteration ``ema``).
      weight_by: ``"dissimilarity"`` (1 - SSIM: badly reconstructed blocks weigh more) or ``"similarity"``.
      per_iteration: return one loss per iteration, shape ``(T,)`` (needs a ``(T, N, H, W, C)`` stack;
        their mean is the default scalar loss), so a caller can weight iterations itself.

    Returns:
      ``(loss, new_state, weights)``; ``weights`` has shape ``x_hat.shape[:-3] + (H/b, W/b)``.
    """
    if weight_by not in ("dissimilarity", "similarity"):
        raise ConfigError(f"weight_by must be 'dissimilarity' or 'similarity', got {weight_by!r}")
    x = jnp.asarray(x, jnp.float32)
    x_hat = jnp.asarray(x_hat, jnp.float32)
    ssim = block_ssim(
        jax.lax.stop_gradient(x),
        jax.lax.stop_gradient(x_hat),
        block_size=block_size,
        data_range=data_range,
        value_offset=value_offset,
    )
    score = 1.0 - ssim if weight_by == "dissimilarity" else ssim

    ema = state["ema"]
    if ema.ndim == 0:
        batch_mean = jnp.mean(score)
    else:
        if x_hat.ndim != 5 or x_hat.shape[0] != ema.shape[0]:
            raise ConfigError(f"a per-iteration S_bar of {ema.shape[0]} entries needs a (T, N, H, W, C) stack")
        batch_mean = jnp.mean(score.reshape(score.shape[0], -1), axis=1)
    new_ema = jnp.where(state["count"] > 0, decay * ema + (1.0 - decay) * batch_mean, batch_mean)
    new_state = {"ema": new_ema, "count": state["count"] + 1}

    norm = jnp.maximum(new_ema, epsilon)
    if ema.ndim:
        norm = norm.reshape(-1, *([1] * (score.ndim - 1)))
    weights = jax.lax.stop_gradient(score / norm)

    error = _blocks(jnp.abs(x_hat - x), block_size)  # (..., H/b, W/b, b*b, C)
    weighted = weights[..., None, None] * error
    if per_iteration:
        if x_hat.ndim != 5:
            raise ConfigError("per_iteration=True needs a (T, N, H, W, C) reconstruction stack")
        return jnp.mean(weighted.reshape(weighted.shape[0], -1), axis=1), new_state, weights
    return jnp.mean(weighted), new_state, weights
