"""Evaluation metrics on 8-bit RGB images: PSNR, PSNR-Y, SSIM, MS-SSIM and MS-SSIM in dB.

Definitions follow the evaluation spec (section 2):

* Inputs are 8-bit RGB images, either ``uint8`` or floats on the [0, 255] scale. Floats are rounded and
  clipped to the 8-bit grid first (``clip(round(x), 0, 255)``), i.e. the metric sees the image that would be
  written to a PNG. Both arguments get the same treatment, so the order of ``(x, y)`` does not matter.
* Shapes are ``(..., H, W, 3)``; every leading axis is a batch axis and every metric returns one value per
  image (shape ``(...)``).
* Everything is plain ``jax.numpy`` on static shapes: the functions can be called inside ``jax.jit``.
  Bad input (mismatched shapes, no RGB axis, images too small for MS-SSIM) raises :class:`ImageError`.

MS-SSIM is the standard definition of Wang, Simoncelli & Bovik (2003), as in ``tf.image.ssim_multiscale``
and ``pytorch_msssim.ms_ssim``: five scales, an 11x11 Gaussian window (sigma 1.5) applied separably without
padding, 2x2 average pooling between scales, negative values clamped to zero before the power, one value
per channel, then the mean over channels. It needs the shorter image side to be at least 176 px (11 px at
the coarsest scale); the evaluation metric never shrinks its window to accept smaller images.
"""

from __future__ import annotations

import math

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from lcomp.errors import ImageError

MAX_VALUE = 255.0
SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: Every one of the five scales must hold at least one full window: 11 * 2**4 px on the shorter side.
MS_SSIM_MIN_SIDE = SSIM_FILTER_SIZE * 2 ** (len(MS_SSIM_WEIGHTS) - 1)
#: BT.601 full-range luma weights on R'G'B'.
BT601_LUMA = (0.299, 0.587, 0.114)


# --- input handling ----------------------------------------------------------------------------------------


def _check_pair(x, y, min_side: int = 1) -> None:
    if x.shape != y.shape:
        raise ImageError(f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ImageError(f"expected RGB images of shape (..., H, W, 3), got shape {tuple(x.shape)}")
    height, width = x.shape[-3], x.shape[-2]
    if min(height, width) < min_side:
        raise ImageError(
            f"images of {height}x{width} px (HxW) are too small: MS-SSIM uses 5 scales with an 11x11 window, "
            f"so the shorter side must be at least {min_side} px"
        )


def _to_8bit_float(x) -> jax.Array:
    """The image on the 8-bit grid, as float32 in [0, 255]."""
    x = jnp.asarray(x)
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32)
    return jnp.clip(jnp.round(x.astype(jnp.float32)), 0.0, MAX_VALUE)


def _prepare(x, y, min_side: int = 1) -> tuple[jax.Array, jax.Array]:
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_pair(x, y, min_side)
    return _to_8bit_float(x), _to_8bit_float(y)


def _psnr_from_mse(mse: jax.Array) -> jax.Array:
    # mse == 0 gives +inf, which is what identical images deserve.
    return 10.0 * jnp.log10(MAX_VALUE**2 / mse)


# --- PSNR ----------------------------------------------------------------------------------------------------


def psnr(x, y) -> jax.Array:
    """PSNR in dB over all three channels of 8-bit RGB images, one value per image (inf if identical)."""
    x, y = _prepare(x, y)
    diff = x - y
    return _psnr_from_mse(jnp.mean(diff * diff, axis=(-3, -2, -1)))


def luma(x) -> jax.Array:
    """BT.601 full-range luma Y' of 8-bit R'G'B' (float, not rounded)."""
    x = _to_8bit_float(x)
    return x @ jnp.asarray(BT601_LUMA, jnp.float32)


def psnr_y(x, y) -> jax.Array:
    """PSNR in dB on BT.601 luma computed from the 8-bit RGB values, one value per image."""
    x, y = _prepare(x, y)
    diff = luma(x) - luma(y)
    return _psnr_from_mse(jnp.mean(diff * diff, axis=(-2, -1)))


# --- SSIM ----------------------------------------------------------------------------------------------------


def ssim(x, y) -> jax.Array:
    """Single-scale SSIM (11x11 Gaussian, sigma 1.5, valid filtering, mean over pixels and channels)."""
    x, y = _prepare(x, y, min_side=SSIM_FILTER_SIZE)
    return dm_pix.ssim(
        x,
        y,
        max_val=MAX_VALUE,
        filter_size=SSIM_FILTER_SIZE,
        filter_sigma=SSIM_FILTER_SIGMA,
        k1=SSIM_K1,
        k2=SSIM_K2,
    )


# --- MS-SSIM -------------------------------------------------------------------------------------------------


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(SSIM_FILTER_SIZE, dtype=np.float64) - (SSIM_FILTER_SIZE - 1) / 2
    window = np.exp(-(offsets**2) / (2.0 * SSIM_FILTER_SIGMA**2))
    return (window / window.sum()).astype(np.float32)


def _blur_valid(planes: jax.Array) -> jax.Array:
    """Separable Gaussian filter without padding on a stack of single-channel planes ``(B, H, W)``.

    Written as eleven shifted multiply-adds per direction: XLA fuses them into one pass, which on CPU is
    about 20x faster than a one-channel ``conv_general_dilated``.
    """
    window = [float(w) for w in _gaussian_window()]
    taps = len(window)
    height = planes.shape[-2] - taps + 1
    rows = sum(w * planes[..., k : k + height, :] for k, w in enumerate(window))
    width = planes.shape[-1] - taps + 1
    return sum(w * rows[..., :, k : k + width] for k, w in enumerate(window))


def _ssim_and_cs(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean SSIM and mean contrast-structure term of planes ``(B, H, W)``, each of shape ``(B,)``."""
    c1 = (SSIM_K1 * MAX_VALUE) ** 2
    c2 = (SSIM_K2 * MAX_VALUE) ** 2
    # Moments are taken about each plane's mean: the variances are the same, but float32 loses far less
    # precision in E[x^2] - E[x]^2 when the values are small.
    centre = jnp.mean(x, axis=(-2, -1), keepdims=True)
    xc, yc = x - centre, y - centre
    batch = x.shape[0]
    moments = _blur_valid(jnp.concatenate([xc, yc, xc * xc, yc * yc, xc * yc], axis=0))
    mu_x, mu_y, e_xx, e_yy, e_xy = (moments[i * batch : (i + 1) * batch] for i in range(5))
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    cs_map = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
    mu_x, mu_y = mu_x + centre, mu_y + centre
    luminance_map = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return jnp.mean(luminance_map * cs_map, axis=(-2, -1)), jnp.mean(cs_map, axis=(-2, -1))


def _avg_pool_2x2(planes: jax.Array) -> jax.Array:
    """2x2 average pooling with stride 2; an odd last row/column is first repeated, as TensorFlow does."""
    height, width = planes.shape[-2:]
    if height % 2 or width % 2:
        planes = jnp.pad(planes, ((0, 0), (0, height % 2), (0, width % 2)), mode="edge")
        height, width = planes.shape[-2:]
    blocks = planes.reshape(planes.shape[0], height // 2, 2, width // 2, 2)
    return jnp.mean(blocks, axis=(2, 4))


def ms_ssim(x, y) -> jax.Array:
    """MS-SSIM (linear, in [0, 1]) of 8-bit RGB images, one value per image; see the module docstring."""
    x, y = _prepare(x, y, min_side=MS_SSIM_MIN_SIDE)
    batch_shape = x.shape[:-3]
    height, width = x.shape[-3:-1]
    # One plane per (image, channel): (..., H, W, 3) -> (B * 3, H, W).
    x = jnp.moveaxis(x.reshape((-1, height, width, 3)), -1, 1).reshape(-1, height, width)
    y = jnp.moveaxis(y.reshape((-1, height, width, 3)), -1, 1).reshape(-1, height, width)
    factors = []
    for scale, weight in enumerate(MS_SSIM_WEIGHTS):
        ssim_mean, cs_mean = _ssim_and_cs(x, y)
        last = scale == len(MS_SSIM_WEIGHTS) - 1
        factors.append(jnp.maximum(ssim_mean if last else cs_mean, 0.0) ** weight)
        if not last:
            x, y = _avg_pool_2x2(x), _avg_pool_2x2(y)
    per_channel = math.prod(factors).reshape(-1, 3)
    return jnp.mean(per_channel, axis=-1).reshape(batch_shape)


def ms_ssim_db(x, y) -> jax.Array:
    """MS-SSIM in dB, ``-10 log10(1 - MS-SSIM)``, one value per image (inf if identical)."""
    return -10.0 * jnp.log10(1.0 - ms_ssim(x, y))


def ms_ssim_to_db(value):
    """Converts linear MS-SSIM values (e.g. a mean over images) to dB, in float64 numpy."""
    value = np.asarray(value, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(1.0 - value)
