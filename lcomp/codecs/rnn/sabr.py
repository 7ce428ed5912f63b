"""SABR: spatially adaptive bit rates for the recurrent coder (Johnston et al. 2018), an encode-time algorithm.

The network is unchanged. The encoder decides, for every block of `block x block` pixels, how many
iterations the block needs to reach a target quality, sends the block's bits only up to that count, and sends
the count map as side information. The decoder sets the missing bits to 0 (neutral between -1 and +1), runs
as usual, and shows every block as it was after its own last iteration.

lcomp's procedure (J18's exact one is unpublished; every choice below is a setting):

1. Encode all T iterations; measure each block's quality after every iteration (on the 8-bit image).
2. counts[block] = the first iteration at which the block reaches `target` (at least `min_iterations`). A
   block that never reaches it stops where its quality saturates (within 0.25 dB / 0.005 SSIM of its best):
   more iterations would spend bits on it for nothing.
3. Closed loop: re-run encoder and decoder with the later bits of each block zeroed, so that residuals and
   reconstructions are exactly what the decoder will compute; blocks that now miss the target get one more
   iteration; repeat until nothing changes (at most `max_rounds`). The zeroed bits of a block change its
   neighbours through the recurrent states, which is why the loop is needed. Blocks that cannot reach the
   target are not raised.
4. The decoder's output is `compose(reconstructions, counts)`: each block from iteration counts[block].

The count map is side information, coded by `lcomp.entropy.encode_integer_map` as `counts - 1` with
`levels = T` (an adaptive model whose context is the count of the block above; integer tables updated
identically at both ends, so no floating point is involved), and expanded to the bits' mask by
`lcomp.entropy.mask_from_counts`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from lcomp import entropy
from lcomp.errors import ConfigError

METRICS = ("psnr", "ssim")
#: A block that cannot reach the target stops at the first iteration within this of its best quality.
SATURATION_TOLERANCE = {"psnr": 0.25, "ssim": 0.005}


@dataclasses.dataclass(frozen=True)
class SabrSettings:
    target: float  # per-block quality to reach: PSNR in dB, or SSIM in [0, 1]
    metric: str = "psnr"
    block: int = 16  # pixels; a multiple of the code grid (16): one code position is 16x16 pixels
    min_iterations: int = 1
    max_rounds: int = 4

    def validate(self, downsampling: int) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"SABR metric must be one of {METRICS}, got {self.metric!r}")
        if self.block < downsampling or self.block % downsampling:
            raise ConfigError(f"SABR block size must be a multiple of {downsampling} pixels, got {self.block}")
        if self.min_iterations < 1:
            raise ConfigError("SABR min_iterations must be >= 1")
        if self.metric == "ssim" and not 0.0 < self.target <= 1.0:
            raise ConfigError(f"an SSIM target must lie in (0, 1], got {self.target}")


# --- quality per block ----------------------------------------------------------------------------------------


def _blocks(image: np.ndarray, block: int) -> np.ndarray:
    """(..., H, W, C) -> (..., H/b, W/b, b*b, C); H and W must be multiples of b."""
    *lead, h, w, c = image.shape
    x = image.reshape(*lead, h // block, block, w // block, block, c)
    x = np.moveaxis(x, -3, -4)  # (..., H/b, W/b, b, b, C)
    return x.reshape(*lead, h // block, w // block, block * block, c)


def block_quality(original: np.ndarray, reconstruction: np.ndarray, block: int, metric: str) -> np.ndarray:
    """Quality of every block of 8-bit images: PSNR (dB; inf where exact) or SSIM (uniform window = block).

    `reconstruction` may carry leading axes (e.g. iterations); the result has shape (..., H/b, W/b).
    """
    x = _blocks(original.astype(np.float64), block)
    y = _blocks(reconstruction.astype(np.float64), block)
    if metric == "psnr":
        mse = np.mean((x - y) ** 2, axis=(-2, -1))
        with np.errstate(divide="ignore"):
            return 10.0 * np.log10(255.0**2 / mse)
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mx, my = x.mean(axis=-2), y.mean(axis=-2)
    vx, vy = x.var(axis=-2), y.var(axis=-2)
    cov = ((x - mx[..., None, :]) * (y - my[..., None, :])).mean(axis=-2)
    ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim.mean(axis=-1)


def first_reaching(quality: np.ndarray, target: float, min_iterations: int = 1, tolerance: float = 0.0):
    """Per-block iteration counts: 1 + the first iteration whose quality >= target.

    A block that never reaches the target stops where its quality saturates: the first iteration within
    `tolerance` of its best quality (spending more iterations on it would buy nothing). Returns
    `(counts, reachable)`."""
    reached = quality >= target
    reachable = reached.any(axis=0)
    t = quality.shape[0]
    saturated = quality >= quality.max(axis=0, keepdims=True) - tolerance
    counts = np.where(reachable, reached.argmax(axis=0), saturated.argmax(axis=0)) + 1
    return np.clip(counts, min(min_iterations, t), t).astype(np.int32), reachable


# --- masks and composition ------------------------------------------------------------------------------------


def bit_mask(counts: np.ndarray, iterations: int, block: int, downsampling: int) -> np.ndarray:
    """(T, h, w) mask of the code positions that send bits: position in block b sends while t < counts[b]."""
    return entropy.mask_from_counts(counts, iterations, block // downsampling).astype(np.float32)


def compose(reconstructions: np.ndarray, counts: np.ndarray, block: int) -> np.ndarray:
    """The decoder's image: each block taken from the reconstruction after its own last iteration.

    `reconstructions` is (T, H, W, C); iterations beyond T (a file cut short) use the last one available.
    """
    t = reconstructions.shape[0]
    index = np.minimum(counts, t) - 1
    pixel_index = np.repeat(np.repeat(index, block, axis=0), block, axis=1)  # (H, W)
    return np.take_along_axis(reconstructions, pixel_index[None, :, :, None], axis=0)[0]


# --- the allocation loop --------------------------------------------------------------------------------------


def allocate(
    run: Callable[[np.ndarray | None], tuple[np.ndarray, np.ndarray]],
    original_u8: np.ndarray,
    iterations: int,
    settings: SabrSettings,
    downsampling: int,
    to_u8: Callable[[np.ndarray], np.ndarray],
):
    """Chooses the per-block iteration counts.

    Args:
      run: `run(mask) -> (bits (T, h, w, C), reconstructions (T, H, W, 3) float)`, the closed-loop coder;
        `mask` is (T, h, w) or None for no masking.
      original_u8: the (padded) image, uint8 (H, W, 3).
      to_u8: converts the network's float reconstructions into the 8-bit images the decoder writes.

    Returns `(counts, bits, final_u8)`: the count map, the masked bits to code and the decoder's image.
    """
    settings.validate(downsampling)
    bits, recon = run(None)
    quality = block_quality(original_u8, to_u8(recon), settings.block, settings.metric)
    tolerance = SATURATION_TOLERANCE[settings.metric]
    counts, reachable = first_reaching(quality, settings.target, settings.min_iterations, tolerance)
    for _ in range(settings.max_rounds):
        bits, recon = run(bit_mask(counts, iterations, settings.block, downsampling))
        decoded = to_u8(recon)
        final = compose(decoded, counts, settings.block)
        achieved = block_quality(original_u8, final, settings.block, settings.metric)
        # Only blocks that can reach the target get more iterations; the others stay where they saturate.
        missed = (achieved < settings.target) & reachable & (counts < iterations)
        if not missed.any():
            return counts, bits, final
        counts = counts + missed.astype(np.int32)
    bits, recon = run(bit_mask(counts, iterations, settings.block, downsampling))
    return counts, bits, compose(to_u8(recon), counts, settings.block)


# --- the count map on the wire --------------------------------------------------------------------------------

def encode_count_map(counts: np.ndarray, iterations: int) -> bytes:
    """Codes a count map (values 1..T) as side information; returns the range-coded bytes."""
    counts = np.asarray(counts)
    if counts.min() < 1 or counts.max() > iterations:
        raise ConfigError(f"SABR counts must lie in 1..{iterations}")
    return entropy.encode_integer_map(counts - 1, iterations)


def decode_count_map(data: bytes, shape: tuple[int, int], iterations: int) -> np.ndarray:
    """Inverse of `encode_count_map`; a damaged stream raises BitstreamError."""
    return entropy.decode_integer_map(data, shape, iterations) + 1
