"""Causal kernel masks: which taps a context model's convolution may read. One home for every mask.

A context model predicts a symbol from symbols the decoder already has. During training the whole map goes
through the network in one call, so causality lives in the kernels: a tap whose input the decoder would not
have yet is masked out. A mask is a constant 0/1 array over the kernel's spatial shape; layers hand
:func:`mask_taps` to ``lcomp.nn.im2col.im2col_conv`` (read only the kept taps), which equals convolving with
``kernel * mask``.

* :func:`raster_mask`: row-major order over any number of axes (PixelCNN; Li et al. 2018 in 2D).
* :func:`channel_causal_mask`: Mentzer et al. 2018's 3D context model, depth = latent channel.
* :func:`checkerboard_mask`: two-pass decoding, where each colour of a checkerboard reads only the other.

Mask 'A' (``include_centre=False``) is for a network's first layer: a position must not see its own symbol.
Mask 'B' (``include_centre=True``) is for later layers, whose centre features already depend only on
earlier symbols.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["raster_mask", "channel_causal_mask", "checkerboard_mask", "mask_taps"]


def _kernel_size(kernel_size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(int(k) for k in kernel_size)
    if not size or any(k < 1 for k in size):
        raise ValueError(f"kernel_size must be one or more positive ints, got {kernel_size!r}")
    return size


def raster_mask(kernel_size: Sequence[int], centre: Sequence[int], include_centre: bool) -> np.ndarray:
    """A 0/1 mask keeping every tap that precedes ``centre`` in row-major order.

    Args:
      kernel_size: spatial kernel shape, any number of axes (2 for images, 3 for volumes).
      centre: the tap aligned with the output position.
      include_centre: keep the centre tap too (mask 'B') or not (mask 'A').

    Returns:
      float32 array of shape ``kernel_size``.
    """
    kernel_size = _kernel_size(kernel_size)
    centre = tuple(int(c) for c in centre)
    if len(centre) != len(kernel_size) or any(not 0 <= c < k for c, k in zip(centre, kernel_size)):
        raise ValueError(f"centre {centre} is not a tap of a kernel of shape {kernel_size}")
    flat_centre = np.ravel_multi_index(centre, kernel_size)
    flat = np.arange(int(np.prod(kernel_size)))
    keep = flat <= flat_centre if include_centre else flat < flat_centre
    return keep.reshape(kernel_size).astype(np.float32)


def channel_causal_mask(kernel_size: Sequence[int] = (2, 3, 3), include_centre: bool = False) -> np.ndarray:
    """Mentzer et al. 2018 (section 5.2): a ``(kd, kh, kw)`` mask over (latent channel, row, column).

    The kernel spans only the current and earlier channels, so its centre is ``(kd - 1, kh // 2, kw // 2)``:
    earlier depth slices are fully visible, and inside the current slice the rows above and the taps left of
    the centre are (2D raster order). Mask 'A' = ``include_centre=False``, 'B' = ``True``. For ``(2, 3, 3)``
    that is 13 taps (A) or 14 (B) of 27.

    Returns:
      float32 array of shape ``kernel_size``.
    """
    kernel_size = _kernel_size(kernel_size)
    if len(kernel_size) != 3:
        raise ValueError(f"a channel-causal mask is 3D (depth, height, width), got kernel_size {kernel_size}")
    kd, kh, kw = kernel_size
    return raster_mask(kernel_size, (kd - 1, kh // 2, kw // 2), include_centre)


def checkerboard_mask(kernel_size: Sequence[int]) -> np.ndarray:
    """Keeps the taps whose offset from the centre has an odd coordinate sum (``di + dj`` odd in 2D).

    Positions of one checkerboard colour then read only positions of the other colour: with the first colour
    decoded in pass 0, pass 1 sees all of it and nothing of its own colour (for 3x3: the 4 edge-neighbours).
    Works for any number of axes; every size must be odd so that the centre is a tap.

    Returns:
      float32 array of shape ``kernel_size``.
    """
    kernel_size = _kernel_size(kernel_size)
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"a checkerboard mask needs odd kernel sizes (a centre tap), got {kernel_size}")
    centre = np.asarray([k // 2 for k in kernel_size]).reshape(-1, *([1] * len(kernel_size)))
    offset_sum = (np.indices(kernel_size) - centre).sum(axis=0)
    return (offset_sum % 2 == 1).astype(np.float32)


def mask_taps(mask) -> tuple[tuple[int, ...], ...]:
    """The kernel indices of ``mask``'s nonzero taps, row-major: the ``taps=`` argument of ``im2col_conv``."""
    mask = np.asarray(mask)
    return tuple(tuple(int(i) for i in tap) for tap in zip(*np.nonzero(mask)))
