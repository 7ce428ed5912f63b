"""One N-D convolution as explicit patch gathering plus one matmul (im2col), shared by every layer that needs it.

Three kinds of layer convolve this way, each for its own reason:

* ``lcomp.nn.blocks.conv2d``: XLA:CPU's native convolution (and its gradients) is pathologically slow on
  the small maps the recurrent coder trains on; a matmul has no such cases.
* ``lcomp.nn.masked``: a causal layer reads only its unmasked taps. Gathering just those (``taps=``) equals
  convolving with ``kernel * mask`` and skips the multiply-adds the mask zeroes.
* exact integer networks (``lcomp.entropy``): encoder and decoder must compute identical sums. A plain
  contraction at ``precision=HIGHEST`` has no Winograd/FFT/TF32 shortcuts, so integer-valued operands whose
  partial sums stay below 2^24 give the same float32 result in any summation order.

Layout: ``x`` is ``(N, *spatial, C_in)``, the kernel ``(*kernel_size, C_in, C_out)`` (channels last, like
``lax.conv_general_dilated`` with ``NHWC``/``HWIO`` or ``NDHWC``/``DHWIO``). The gathered patches hold
``len(taps) * C_in`` values per output position (transiently, during the call), tap-major: column
``t * C_in + c`` is channel ``c`` at tap ``taps[t]``.
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Pads = tuple[tuple[int, int], ...]
Taps = tuple[tuple[int, ...], ...]

__all__ = ["im2col_conv", "gather_patches", "resolve_padding"]


def resolve_padding(
    padding: str | Sequence[tuple[int, int]],
    spatial_shape: Sequence[int],
    kernel_size: Sequence[int],
    strides: Sequence[int] | None = None,
) -> Pads:
    """``'SAME'`` (TensorFlow rule: the odd extra pad goes after), ``'VALID'`` or explicit pairs -> pairs.

    One ``(before, after)`` pair per spatial axis; explicit pairs are checked for count and sign.
    """
    ndim = len(kernel_size)
    strides = (1,) * ndim if strides is None else tuple(int(s) for s in strides)
    if isinstance(padding, str):
        if padding == "VALID":
            return ((0, 0),) * ndim
        if padding != "SAME":
            raise ValueError(f"padding must be 'SAME', 'VALID' or {ndim} (before, after) pairs, got {padding!r}")
        pads = []
        for n, k, s in zip(spatial_shape, kernel_size, strides):
            out = -(-int(n) // s)
            total = max((out - 1) * s + int(k) - int(n), 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    pads = tuple((int(a), int(b)) for a, b in padding)
    if len(pads) != ndim:
        raise ValueError(f"explicit padding needs {ndim} (before, after) pairs, got {padding!r}")
    if any(a < 0 or b < 0 for a, b in pads):
        raise ValueError(f"padding must not be negative, got {padding!r}")
    return pads


def _all_taps(kernel_size) -> Taps:
    return tuple(itertools.product(*(range(int(k)) for k in kernel_size)))


def _check_geometry(x_shape, kernel_size, pads, strides, taps) -> tuple[Pads, tuple[int, ...], Taps, tuple[int, ...]]:
    """Normalises pads/strides/taps to tuples of ints, checks them, returns them and the output size."""
    ndim = len(kernel_size)
    if len(x_shape) != ndim + 2:
        raise ValueError(
            f"x must have shape (N, *spatial, C_in) with {ndim} spatial axes for a kernel of size"
            f" {tuple(kernel_size)}, got shape {tuple(x_shape)}"
        )
    pads = tuple((int(a), int(b)) for a, b in pads)
    if len(pads) != ndim or any(a < 0 or b < 0 for a, b in pads):
        raise ValueError(f"pads must be {ndim} non-negative (before, after) pairs, got {pads!r}")
    strides = (1,) * ndim if strides is None else tuple(int(s) for s in strides)
    if len(strides) != ndim or any(s < 1 for s in strides):
        raise ValueError(f"strides must be {ndim} positive ints, got {strides!r}")
    if taps is None:
        taps = _all_taps(kernel_size)
    else:
        taps = tuple(tuple(int(i) for i in tap) for tap in taps)
        if not taps:
            raise ValueError("taps is empty: a convolution must read at least one kernel tap")
        for tap in taps:
            if len(tap) != ndim or any(not 0 <= i < k for i, k in zip(tap, kernel_size)):
                raise ValueError(f"tap {tap} is not an index into a kernel of size {tuple(kernel_size)}")
    out = tuple(
        (int(n) + a + b - k) // s + 1 for n, k, (a, b), s in zip(x_shape[1:-1], kernel_size, pads, strides)
    )
    if any(o < 1 for o in out):
        raise ValueError(f"a kernel of size {tuple(kernel_size)} does not fit the padded input {tuple(x_shape)}")
    return pads, strides, taps, out


def _pad(x: Array, pads: Pads, static_value: float, traced_value: Array | None) -> Array:
    if all(p == (0, 0) for p in pads):
        return x
    widths = ((0, 0), *pads, (0, 0))
    if traced_value is None:
        return jnp.pad(x, widths, constant_values=static_value)
    # jnp.pad cannot differentiate with respect to its constant (JAX 0.10), and a learned constant such
    # as Mentzer's centers[0] needs that gradient; a select against a static mask of the interior has it.
    interior = np.pad(np.ones(x.shape[1:-1], bool), pads)[None, ..., None]
    return jnp.where(interior, jnp.pad(x, widths), traced_value.astype(x.dtype))


def _gather(x: Array, pads, strides, taps, out, static_value, traced_value) -> Array:
    xp = _pad(x, pads, static_value, traced_value)
    columns = []
    for tap in taps:
        window = tuple(slice(t, t + (o - 1) * s + 1, s) for t, o, s in zip(tap, out, strides))
        columns.append(xp[(slice(None), *window, slice(None))])
    return columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _conv(x: Array, kernel: Array, traced_value, static_value, pads, strides, taps, precision) -> Array:
    kernel_size = kernel.shape[:-2]
    c_in, c_out = kernel.shape[-2:]
    pads, strides, taps, out = _check_geometry(x.shape, kernel_size, pads, strides, taps)
    patches = _gather(x, pads, strides, taps, out, static_value, traced_value)
    if taps == _all_taps(kernel_size):
        rows = kernel  # every tap in kernel order: a reshape, no gather (whose gradient would be a scatter)
    else:
        rows = kernel[tuple(np.asarray(taps).T)]  # (taps, C_in, C_out), in the order of the columns
    y = jnp.dot(
        patches.reshape(-1, len(taps) * c_in), rows.reshape(len(taps) * c_in, c_out), precision=precision
    )
    return y.reshape(x.shape[0], *out, c_out)


def _split_pad_value(pad_value) -> tuple[float, Array | None]:
    """A Python/numpy number stays a compile-time constant; anything else (traced, maybe learned) is an operand."""
    if isinstance(pad_value, (int, float, np.number)):
        return float(pad_value), None
    value = jnp.asarray(pad_value)
    if value.shape != ():
        raise ValueError(f"pad_value must be a scalar, got shape {value.shape}")
    return 0.0, value


def gather_patches(
    x: Array,
    kernel_size: Sequence[int],
    pads: Sequence[tuple[int, int]],
    *,
    strides: Sequence[int] | None = None,
    taps: Sequence[Sequence[int]] | None = None,
    pad_value=0.0,
) -> Array:
    """The im2col matrix: ``(N, *out, len(taps) * C_in)``, column ``t * C_in + c`` = channel ``c`` at ``taps[t]``.

    For callers that contract the patches themselves (e.g. with their own integer arithmetic). Arguments as
    in :func:`im2col_conv`.
    """
    kernel_size = tuple(int(k) for k in kernel_size)
    pads, strides, taps, out = _check_geometry(x.shape, kernel_size, pads, strides, taps)
    static_value, traced_value = _split_pad_value(pad_value)
    return _gather(x, pads, strides, taps, out, static_value, traced_value)


def im2col_conv(
    x: Array,
    kernel: Array,
    pads: Sequence[tuple[int, int]],
    *,
    strides: Sequence[int] | None = None,
    taps: Sequence[Sequence[int]] | None = None,
    precision: jax.lax.Precision | None = None,
    pad_value=0.0,
) -> Array:
    """N-D convolution (cross-correlation, like ``lax.conv_general_dilated``) as gathered patches @ kernel rows.

    Args:
      x: ``(N, *spatial, C_in)``.
      kernel: ``(*kernel_size, C_in, C_out)``.
      pads: one ``(before, after)`` pair per spatial axis (see :func:`resolve_padding` for 'SAME'/'VALID').
      strides: one int per spatial axis; default all 1.
      taps: the kernel indices to read, e.g. ``lcomp.entropy.mask_taps(mask)``; default every tap in kernel
        (row-major) order. Reading a subset equals convolving with ``kernel * mask`` without the zero work.
      precision: passed to the contraction; ``jax.lax.Precision.HIGHEST`` for exact networks.
      pad_value: the padding constant. A Python number is compiled in; an array (e.g. a learned centre) is an
        operand and receives a gradient.

    Returns:
      ``(N, *out, C_out)`` with ``out = (size + before + after - k) // stride + 1`` per axis.
    """
    if kernel.ndim < 3 or kernel.shape[-2] != x.shape[-1]:
        raise ValueError(
            f"kernel must have shape (*kernel_size, C_in={x.shape[-1]}, C_out), got shape {tuple(kernel.shape)}"
        )
    kernel_size = tuple(kernel.shape[:-2])
    pads, strides, taps, _ = _check_geometry(x.shape, kernel_size, pads, strides, taps)
    static_value, traced_value = _split_pad_value(pad_value)
    return _conv(x, kernel, traced_value, static_value, pads, strides, taps, precision)
