"""Small building blocks: a CPU-friendly 2D convolution, depth-to-space / space-to-depth, residual blocks,
sub-pixel upsampling.

``conv2d`` / ``Conv2D`` (a drop-in for ``flax.linen.Conv`` with the same ``kernel``/``bias`` parameters)
exist because XLA:CPU's native convolution has pathological cases exactly where the recurrent coder
trains: on 32x32 patches the innermost layers work on 2x2 maps, where a 3x3 convolution (512 -> 1536
channels, batch 32) takes ~0.6 s forward, and the input gradient of a stride-2 convolution onto a 4x4 map
~0.9 s, instead of ~5 ms. An explicit im2col + matmul (:func:`lcomp.nn.im2col.im2col_conv`, the one
im2col convolution of the package) has no such cases. ``conv2d`` therefore

* uses im2col + matmul in the forward pass for small outputs (<= ``IM2COL_MAX_OUTPUT_AREA`` positions)
  and XLA's native convolution otherwise (slightly faster on large maps, e.g. full-image decoding);
* always differentiates through the im2col formulation (a ``custom_vjp``): both gradients become
  matmuls plus cheap pads/adds, which is as fast or faster than XLA:CPU's convolution gradients at
  every size measured;
* computes a 1x1 stride-1 convolution as a plain matmul.

This is the ``method="auto"`` behaviour when the default backend is the CPU. On GPU/TPU ``"auto"`` uses
the native convolution in both directions (cuDNN and the TPU compiler have none of these problems);
``method="native"`` / ``"im2col"`` force one implementation.

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

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
from jax import lax

from lcomp.nn.im2col import im2col_conv, resolve_padding

Array = jax.Array

__all__ = [
    "conv2d",
    "Conv2D",
    "depth_to_space",
    "space_to_depth",
    "ResidualBlock",
    "SubpixelUpsample",
    "IM2COL_MAX_OUTPUT_AREA",
]

IM2COL_MAX_OUTPUT_AREA = 64  # forward im2col when out_h * out_w <= this (measured crossover on XLA:CPU)

Padding = str | Sequence[tuple[int, int]]


def _conv_native(x: Array, kernel: Array, strides: tuple[int, int], pads) -> Array:
    return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_with_im2col_gradient(x, kernel, strides, pads, native_forward: bool):
    if native_forward:
        return _conv_native(x, kernel, strides, pads)
    return im2col_conv(x, kernel, pads, strides=strides)


def _conv_fwd(x, kernel, strides, pads, native_forward):
    return _conv_with_im2col_gradient(x, kernel, strides, pads, native_forward), (x, kernel)


def _conv_bwd(strides, pads, native_forward, residuals, g):
    x, kernel = residuals
    _, vjp = jax.vjp(lambda a, b: im2col_conv(a, b, pads, strides=strides), x, kernel)
    return vjp(g)


_conv_with_im2col_gradient.defvjp(_conv_fwd, _conv_bwd)


def conv2d(
    x: Array,
    kernel: Array,
    strides: int | Sequence[int] = 1,
    padding: Padding = "SAME",
    *,
    method: str = "auto",
) -> Array:
    """2D convolution, NHWC input, HWIO kernel, fast on XLA:CPU at every map size (see module docstring).

    Args:
      x: ``N x H x W x C_in``.
      kernel: ``kh x kw x C_in x C_out``.
      strides: int or pair.
      padding: ``'SAME'`` (TensorFlow rule, as ``lax``), ``'VALID'`` or ``((top, bottom), (left, right))``.
      method: ``"auto"`` (CPU: im2col gradients and im2col forward on small maps; other backends:
        native), ``"native"`` (``lax.conv_general_dilated`` and its autodiff) or ``"im2col"``.

    Returns:
      ``N x H' x W' x C_out``, identical (up to float rounding) to ``lax.conv_general_dilated``.
    """
    if method not in ("auto", "native", "im2col"):
        raise ValueError(f"method must be 'auto', 'native' or 'im2col', got {method!r}")
    strides = (strides, strides) if isinstance(strides, int) else tuple(int(s) for s in strides)
    kh, kw = kernel.shape[:2]
    pads = resolve_padding(padding, x.shape[1:3], (kh, kw), strides)
    if method == "auto":
        # Decided at trace time from the default backend (where the jitted computation will run).
        method = "cpu" if jax.default_backend() == "cpu" else "native"
    return _conv2d_jit(x, kernel, strides, pads, method)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _conv2d_jit(x: Array, kernel: Array, strides: tuple[int, int], pads, method: str) -> Array:
    # Jitted so that eager calls (e.g. an un-jitted ``init``) compile one program per shape instead of
    # one per gathered tap; inside an outer jit this is simply inlined.
    if method == "native":
        return _conv_native(x, kernel, strides, pads)
    kh, kw = kernel.shape[:2]
    if (kh, kw) == (1, 1) and strides == (1, 1) and pads == ((0, 0), (0, 0)):
        return im2col_conv(x, kernel, pads, strides=strides)  # a plain matmul; autodiff is already optimal
    out_h = (x.shape[1] + sum(pads[0]) - kh) // strides[0] + 1
    out_w = (x.shape[2] + sum(pads[1]) - kw) // strides[1] + 1
    native_forward = method == "cpu" and out_h * out_w > IM2COL_MAX_OUTPUT_AREA
    return _conv_with_im2col_gradient(x, kernel, strides, pads, native_forward)


class Conv2D(nn.Module):
    """A drop-in for ``nn.Conv`` (2D, NHWC) built on :func:`conv2d`; parameters ``kernel`` (HWIO), ``bias``."""

    features: int
    kernel_size: int | Sequence[int] = (3, 3)
    strides: int | Sequence[int] = 1
    padding: Padding = "SAME"
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Array] = nn.initializers.zeros_init()
    method: str = "auto"  # see conv2d

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = (self.kernel_size, self.kernel_size) if isinstance(self.kernel_size, int) else self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), self.param_dtype)
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, self.padding, method=self.method)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), self.param_dtype).astype(self.dtype)
        return y


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

        y = Conv2D(hidden, self.kernel_size, use_bias=self.use_bias, dtype=self.dtype, name="conv_0")(x)
        y = self.activation(norm(y, "norm_0"))
        y = Conv2D(features, self.kernel_size, use_bias=self.use_bias, dtype=self.dtype, name="conv_1")(y)
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
        y = Conv2D(self.features * self.factor**2, self.kernel_size, use_bias=self.use_bias, dtype=self.dtype, name="conv")(x)
        return depth_to_space(y, self.factor)
