"""Dead-leaves images: a procedural source of training images with natural-image statistics.

The dead-leaves model (Matheron 1968; Lee, Mumford & Huang 2001) stacks opaque shapes whose radii follow
``p(r) ~ r^-3`` between ``r_min`` and ``r_max``. The result is scale invariant, has a power spectrum close to
``1/f^2`` and occlusion edges everywhere, the statistics that make photographs hard to compress; training on
it is an established way to get image-restoration networks that generalise to photographs (Achddou et al.
2021, "Synthetic images as a regularity prior for image restoration neural networks"). lcomp uses it to
complement the few embedded photographs, whose late-iteration detail a recurrent coder otherwise memorises
(experiments/results/rnn_quality/FINDINGS.md: j18_v3 against j18_v2).

Each image is a pure function of ``(seed, index)``. Beyond flat discs, which would make every edge a perfect
step, each leaf gets a linear shading ramp and, with some probability, a sinusoidal texture; the image is
rendered at twice the size and box-downsampled (anti-aliased edges), then blurred by a random amount (depth of
field) and gets a little sensor noise.
"""

from __future__ import annotations

import numpy as np

from lcomp.configs import integer_setting
from lcomp.data.sources import ImageSource
from lcomp.errors import ConfigError


def dead_leaves_image(rng: np.random.Generator, size: int, r_min: float = 2.0, r_max: float | None = None) -> np.ndarray:
    """One dead-leaves image, uint8 ``(size, size, 3)``, drawn with ``rng``.

    ``r_min``/``r_max`` are leaf radii in output pixels (``r_max`` defaults to half the image side). The
    default ``r_min = 2``: smaller leaves are sub-pixel speckle after the blur, and they double the cost.
    """
    size = integer_setting("size", size, minimum=8)
    scale = 2  # render at 2x, then box-downsample: anti-aliased occlusion edges
    side = size * scale
    r_lo = float(r_min) * scale
    r_hi = float(r_max if r_max is not None else size / 2) * scale
    if not 0 < r_lo < r_hi:
        raise ConfigError(f"dead leaves need 0 < r_min < r_max, got {r_min!r}, {r_max!r}")
    canvas = np.zeros((side, side, 3), np.float32)
    covered = np.zeros((side, side), bool)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    # Leaves fall front to back: each new leaf only paints pixels no earlier leaf covers (the first leaf is on top).
    for _ in range(20_000):
        if covered.all():
            break
        u = rng.random()
        radius = (r_lo**-2 - u * (r_lo**-2 - r_hi**-2)) ** -0.5  # inverse CDF of p(r) ~ r^-3
        cy, cx = rng.uniform(-radius, side + radius, size=2)
        top, bottom = max(int(cy - radius), 0), min(int(cy + radius) + 2, side)
        left, right = max(int(cx - radius), 0), min(int(cx + radius) + 2, side)
        if top >= bottom or left >= right:
            continue
        y, x = yy[top:bottom, left:right], xx[top:bottom, left:right]
        if rng.random() < 0.7:
            inside = (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
        else:  # an ellipse at a random angle: not every edge is a circle arc
            angle, ratio = rng.uniform(0, np.pi), rng.uniform(0.3, 1.0)
            dy, dx = y - cy, x - cx
            a = dx * np.cos(angle) + dy * np.sin(angle)
            b = -dx * np.sin(angle) + dy * np.cos(angle)
            inside = a**2 + (b / ratio) ** 2 <= radius**2
        paint = inside & ~covered[top:bottom, left:right]
        if not paint.any():
            continue
        colour = _leaf_colour(rng)
        # Shading: a linear ramp across the leaf, up to +-20 % of full scale.
        slope = rng.normal(0.0, 0.1, size=2) / max(radius, 1.0)
        shade = slope[0] * (y - cy) + slope[1] * (x - cx)
        value = colour[None, None, :] + shade[..., None]
        if rng.random() < 0.3:  # a periodic texture (stripes), frequency up to a quarter of the sampling rate
            freq = rng.uniform(0.02, 0.25)
            theta = rng.uniform(0, np.pi)
            stripes = np.sin(2 * np.pi * freq * (x * np.cos(theta) + y * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
            value = value + rng.uniform(0.02, 0.15) * stripes[..., None]
        region = canvas[top:bottom, left:right]
        region[paint] = value[paint]
        covered[top:bottom, left:right] |= paint
    image = canvas.reshape(size, scale, size, scale, 3).mean(axis=(1, 3))
    sigma = rng.uniform(0.0, 1.5)
    if sigma > 0.3:
        image = _gaussian_blur(image, sigma)
    image = image + rng.normal(0.0, rng.uniform(0.0, 2.0) / 255.0, size=image.shape)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def _leaf_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour with photograph-like spread: mostly muted, sometimes saturated, any brightness."""
    grey = rng.random() ** 1.2
    hue = rng.random(3)
    saturation = rng.random() ** 2
    return (grey * (1.0 - saturation) + hue * saturation).astype(np.float32)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(3 * sigma + 0.5))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(w * padded[i : i + image.shape[0]] for i, w in enumerate(taps))
    return sum(w * rows[:, i : i + image.shape[1]] for i, w in enumerate(taps))


class DeadLeavesSource(ImageSource):
    """``count`` dead-leaves images of ``size`` x ``size``, image ``i`` drawn from ``default_rng([seed, i])``.

    Images are generated on first access (about 0.1 s each) and cached like decoded files.
    """

    def __init__(self, count: int = 2000, size: int = 128, seed: int = 0, r_min: float = 2.0, cache: bool = True):
        self.count = integer_setting("count", count, minimum=1)
        self.r_min = float(r_min)
        self.size = integer_setting("size", size, minimum=8)
        self.seed = integer_setting("seed", seed, minimum=0)
        super().__init__([f"dead_leaves_{self.seed}_{i:05d}" for i in range(self.count)], cache=cache)

    def _load(self, index: int) -> np.ndarray:
        return dead_leaves_image(np.random.default_rng([self.seed, index]), self.size, r_min=self.r_min)

    def __repr__(self) -> str:
        return f"DeadLeavesSource({self.count} images of {self.size}x{self.size}, seed {self.seed})"
