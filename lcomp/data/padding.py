"""Padding an image up to the multiple a codec needs, and cropping the decoded image back.
"""

from __future__ import annotations

import numpy as np

from lcomp.configs import integer_setting
from lcomp.errors import ImageError


def _image_axes(image: np.ndarray, what: str) -> tuple[int, int]:
    """Axes of height and width: (0, 1) for one (H, W, C) image, (1, 2) for an (N, H, W, C) batch."""
    if image.ndim == 3:
        return 0, 1
    if image.ndim == 4:
        return 1, 2
    raise ImageError(f"{what} expects an (H, W, C) image or an (N, H, W, C) batch, got shape {image.shape}")


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad height and width up to a multiple by replicating the bottom row and right column.

    Works on an (H, W, C) image or an (N, H, W, C) batch. Returns ``(padded, (H, W))`` where ``(H, W)`` is the
    original size to pass to :func:`crop` after decoding. An image that is already a multiple is returned as is.
    """
    multiple = integer_setting("padding multiple", multiple, minimum=1)
    image = np.asarray(image)
    h_axis, w_axis = _image_axes(image, "pad_to_multiple")
    height, width = image.shape[h_axis], image.shape[w_axis]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return image, (height, width)
    widths = [(0, 0)] * image.ndim
    widths[h_axis], widths[w_axis] = (0, pad_h), (0, pad_w)
    return np.pad(image, widths, mode="edge"), (height, width)


def crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The top-left ``(H, W)`` of an (H', W', C) image or (N, H', W', C) batch: undoes :func:`pad_to_multiple`."""
    image = np.asarray(image)
    h_axis, w_axis = _image_axes(image, "crop")
    height, width = (int(v) for v in size)
    if not (0 < height <= image.shape[h_axis] and 0 < width <= image.shape[w_axis]):
        raise ImageError(f"cannot crop an image of shape {image.shape} to {height} x {width}")
    if image.ndim == 3:
        return image[:height, :width]
    return image[:, :height, :width]
