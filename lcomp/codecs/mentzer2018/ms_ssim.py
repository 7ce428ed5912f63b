"""The official code's TRAINING MS-SSIM (spec mentzer2018 12.12, `code/ms_ssim.py`); evaluation uses
`lcomp.metrics.ms_ssim` (the standard definition on full images).

On small training crops the coarsest scales are smaller than the 11x11 window: the window shrinks to
`min(11, H, W)` with sigma = size * 1.5 / 11; separable Gaussian, VALID; 2x2 box downsampling; K1 = 0.01,
K2 = 0.03, max value 255; result `prod_{j<5} cs_j^{w_j} * ssim_5^{w_5}` on [0, 255] float images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
C1 = (0.01 * 255.0) ** 2
C2 = (0.03 * 255.0) ** 2


def _gaussian(size: int) -> np.ndarray:
    sigma = size * 1.5 / 11.0
    g = np.exp(-((np.arange(size) - (size - 1) / 2.0) ** 2) / (2.0 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _blur(x, size):
    """Separable Gaussian, VALID, per channel: (N, H, W, C) -> (N, H - size + 1, W - size + 1, C)."""
    channels = x.shape[-1]
    g = jnp.asarray(_gaussian(size))
    dims = ("NHWC", "HWIO", "NHWC")
    rows = jnp.tile(g.reshape(size, 1, 1, 1), (1, 1, 1, channels))
    cols = jnp.tile(g.reshape(1, size, 1, 1), (1, 1, 1, channels))
    x = jax.lax.conv_general_dilated(x, rows, (1, 1), "VALID", dimension_numbers=dims, feature_group_count=channels)
    return jax.lax.conv_general_dilated(x, cols, (1, 1), "VALID", dimension_numbers=dims, feature_group_count=channels)


def _ssim_cs(x, y):
    size = min(11, x.shape[1], x.shape[2])
    c = x.shape[-1]
    moments = _blur(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), size)  # one blur for all five
    mx, my, xx, yy, xy = (moments[..., i * c : (i + 1) * c] for i in range(5))
    sxx = xx - mx * mx
    syy = yy - my * my
    sxy = xy - mx * my
    cs = (2.0 * sxy + C2) / (sxx + syy + C2)
    ssim = (2.0 * mx * my + C1) / (mx * mx + my * my + C1) * cs
    return jnp.mean(ssim, axis=(1, 2, 3)), jnp.mean(cs, axis=(1, 2, 3))


def _downsample(x):
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def training_ms_ssim(x, y) -> jax.Array:
    """MS-SSIM per image of float [0, 255] batches (N, H, W, 3), differentiable."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    value = 1.0
    for j, weight in enumerate(WEIGHTS):
        ssim, cs = _ssim_cs(x, y)
        last = j == len(WEIGHTS) - 1
        # Negative contrast-structure terms (rare, early in training) would make the power NaN.
        value = value * jnp.maximum(ssim if last else cs, 1e-6) ** weight
        if not last:
            x, y = _downsample(x), _downsample(y)
    return value
