"""Small building blocks: depth-to-space / space-to-depth, residual blocks, sub-pixel upsampling.

``depth_to_space`` follows TensorFlow's NHWC channel order (``tf.nn.depth_to_space``): output pixel
``(h * b + i, w * b + j)`` channel ``c`` comes from input pixel ``(h, w)`` channel
``(i * b + j) * C_out + c``. PyTorch's ``pixel_shuffle`` orders channels differently (``c * b * b +
i * b + j``); that only matters when importing weights.

Sub-pixel upsampling (a convolution followed by ``depth_to_space``) is preferred to transposed
convolutions: on XLA:CPU the weight gradient of a strided transposed convolution is 10-30x slower than
the forward pass, while an ordinary convolution's is not.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

Array = jax.Array

__all__ = ["depth_to_space", "space_to_depth", "ResidualBlock", "SubpixelUpsample"]


def depth_to_space(x: Array, block_size: int) -> Array:
    """``N x H x W x (b*b*C)`` -> ``N x bH x bW x C`` (TensorFlow channel order)."""
    n, h, w, c = x.shape
    b = int(block_size)
    if c % (b * b):
        raise ValueError(f"depth_to_space: {c} channels are not divisible by block_size**2 = {b * b}")
    out_c = c // (b * b)
    x = x.reshape(n, h, w, b, b, out_c)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # n, h, i, w, j, c
    return x.reshape(n, h * b, w * b, out_c)


def space_to_depth(x: Array, block_size: int) -> Array:
    """``N x bH x bW x C`` -> ``N x H x W x (b*b*C)``; the exact inverse of :func:`depth_to_space`."""
    n, hb, wb, c = x.shape
    b = int(block_size)
    if hb % b or wb % b:
        raise ValueError(f"space_to_depth: spatial size {hb}x{wb} is not divisible by block_size = {b}")
    x = x.reshape(n, hb // b, b, wb // b, b, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # n, h, w, i, j, c
    return x.reshape(n, hb // b, wb // b, b * b * c)


class ResidualBlock(nn.Module):
    """``y = post(x + conv(act(conv(x))))`` with optional batch norm after each convolution.

    Covers the variants the CVPR 2018 codecs use:

    * Mentzer et al.: conv-BN-ReLU-conv-BN, add, no activation after the add
      (``use_batch_norm=True``).
    * Li et al. ``blk(C)``: conv-ReLU-conv-ReLU, add, ReLU (``activation_before_add=True``,
      ``activation_after_add=True``).

    ``features=None`` keeps the input's channel count (needed for the skip connection).
    """

    features: int | None = None
    kernel_size: tuple[int, int] = (3, 3)
    hidden_features: int | None = None
    activation: Callable[[Array], Array] = nn.relu
    activation_before_add: bool = False
    activation_after_add: bool = False
    use_bias: bool = True
    use_batch_norm: bool = False
    batch_norm_momentum: float = 0.9
    batch_norm_epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        features = self.features or x.shape[-1]
        if features != x.shape[-1]:
            raise ValueError(f"ResidualBlock: skip needs equal channels, got {x.shape[-1]} -> {features}")
        hidden = self.hidden_features or features

        def norm(y, name):
            if not self.use_batch_norm:
                return y
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=self.batch_norm_momentum,
                epsilon=self.batch_norm_epsilon,
                dtype=self.dtype,
                name=name,
            )(y)

        y = nn.Conv(hidden, self.kernel_size, padding="SAME", use_bias=self.use_bias, dtype=self.dtype, name="conv_0")(x)
        y = self.activation(norm(y, "norm_0"))
        y = nn.Conv(features, self.kernel_size, padding="SAME", use_bias=self.use_bias, dtype=self.dtype, name="conv_1")(y)
        y = norm(y, "norm_1")
        if self.activation_before_add:
            y = self.activation(y)
        y = x + y
        if self.activation_after_add:
            y = self.activation(y)
        return y


class SubpixelUpsample(nn.Module):
    """Upsample by ``factor``: a convolution to ``features * factor**2`` channels, then depth-to-space."""

    features: int
    factor: int = 2
    kernel_size: tuple[int, int] = (3, 3)
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        y = nn.Conv(
            self.features * self.factor**2, self.kernel_size, padding="SAME", use_bias=self.use_bias, dtype=self.dtype
        )(x)
        return depth_to_space(y, self.factor)
