"""What every codec offers evaluation and the command line: the `Compressed` result and the
`RateDistortionCodec` protocol.

Classical baselines (`lcomp.baselines`) and trained learned codecs (`lcomp.models.LoadedModel`: a codec
bound to its variables) both satisfy `RateDistortionCodec`, so `lcomp.evaluate` sweeps either without an
adapter. This module imports neither JAX nor Pillow: the baselines stay usable without the learned stack.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Compressed:
    """A complete file and the model's own estimate of what it spends.

    Attributes:
      data: the bytes of the whole file (header, every part, CRC): its length is the real rate.
      estimated_bits: the entropy model's estimate of the payload bits (sum of -log2 p over every coded
        symbol, side information included), computed in the same encode; None for codecs without a model
        (the classical baselines).
    """

    data: bytes
    estimated_bits: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "data", bytes(self.data))
        if self.estimated_bits is not None:
            object.__setattr__(self, "estimated_bits", float(self.estimated_bits))

    def __len__(self) -> int:
        return len(self.data)


@runtime_checkable
class RateDistortionCodec(Protocol):
    """Anything `lcomp.evaluate` can sweep: a named codec with settings that writes real files."""

    #: Registry name, e.g. "jpeg420" or "johnston2018".
    name: str

    @property
    def label(self) -> str:
        """Human-readable description: codec, library versions, chroma format, model."""

    def settings(self) -> list[dict[str, Any]]:
        """The operating points of a default sweep, each a dict of keyword arguments for `encode`."""

    def encode(self, image: np.ndarray, **setting) -> Compressed:
        """A complete file for a uint8 H x W x 3 image, with the model's estimate (or None)."""

    def decode(self, data: bytes) -> np.ndarray:
        """The uint8 H x W x 3 image stored in `data`."""

    def file_layout(self, data: bytes) -> dict[str, Any]:
        """`header_bytes` (int) and `part_bytes` ({part name: bytes}), each None where the format does not say."""
