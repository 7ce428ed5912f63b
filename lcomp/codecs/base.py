"""The codec interface every paper implements.

A codec is a small object that holds its model config and its linen modules; parameters and state are
always passed in explicitly (pure-functional `init`/`apply`). The training engine (`lcomp.train`) only ever
calls `init` and `loss`; the command line and the evaluation code only call `compress`, `decompress`,
`operating_points` and `estimate_bits`.

Variables are a dict::

    {"params": {group_name: pytree, ...},   # one entry per optimizer (param_groups)
     "state":  pytree}                      # non-trained state (e.g. the SSIM moving average)
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import ml_collections
import numpy as np

Variables = dict[str, Any]


class Codec(abc.ABC):
    """Base class of all codecs. Subclasses register themselves with `lcomp.codecs.registry.register`."""

    name: ClassVar[str] = ""
    #: One optax optimizer (with its own learning rate and schedule) per group.
    param_groups: ClassVar[tuple[str, ...]] = ("autoencoder",)
    #: Images are padded (bottom/right, edge replication) to a multiple of this before encoding.
    pad_multiple: ClassVar[int] = 16

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    # --- training ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def init(self, rng, example_batch: dict) -> Variables:
        """Initialises parameters (grouped by optimizer) and non-trained state from an example batch."""

    @abc.abstractmethod
    def loss(self, params, state, batch: dict, rng, train: bool):
        """Returns `(loss, (metrics, new_state))`; `metrics` holds scalars and includes "loss" and "bpp"."""

    # --- coding -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def compress(self, variables: Variables, image: np.ndarray, **settings) -> bytes:
        """Encodes a uint8 HxWx3 image into a complete container file."""

    @abc.abstractmethod
    def decompress(self, variables: Variables, data: bytes, **settings) -> np.ndarray:
        """Decodes a container file into a uint8 HxWx3 image; raises BitstreamError/ModelMismatchError."""

    def operating_points(self) -> list[dict]:
        """The settings `lcomp eval` sweeps (e.g. every iteration count); a single default point by default."""
        return [{}]

    @abc.abstractmethod
    def estimate_bits(self, variables: Variables, image: np.ndarray, **settings) -> float:
        """The entropy model's estimate of the bits `compress` spends (payload only, no header)."""

    @classmethod
    def cut_file(cls, data: bytes, iterations: int) -> bytes:
        """A shorter valid file holding the first `iterations` iterations (progressive codecs only)."""
        from lcomp.errors import ConfigError

        raise ConfigError(f"codec {cls.name!r} is not progressive: its files cannot be cut")
