"""The codec interface every paper implements (interface v2).

A codec is a small object that holds its model config and its linen modules; parameters and state are
always passed in explicitly (pure-functional `init`/`apply`). The training engine (`lcomp.train`) only ever
calls `init` and `loss`; the command line and evaluation call `compress`, `decompress` and
`operating_points`, usually through `lcomp.models.LoadedModel` (a codec bound to its variables, which is an
`lcomp.interface.RateDistortionCodec` like every classical baseline).

Variables are a dict::

    {"params": {group_name: pytree, ...},   # one entry per optimizer (param_groups)
     "state":  pytree}                      # non-trained state (e.g. the SSIM moving average)

What v2 changed, and why:

* `compress` returns `lcomp.interface.Compressed` (the file and the model's estimate of its bits from the
  same encode), so evaluation encodes every image and setting once.
* `part_layout` declares the parts a file holds (`lcomp.container.PartLayout`); validation, `cut` and
  cut-to-rate are generic instead of hand-written per codec.
* `loss` may return one objective per parameter group; the engine differentiates each group's own
  objective (Mentzer's autoencoder and context model) without stop_gradient tricks.
* The model fingerprint comes from `lcomp.fingerprint`, so codecs never import `lcomp.models`.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping

import jax
import ml_collections
import numpy as np

from lcomp import container
from lcomp.errors import ConfigError, ImageError
from lcomp.interface import Compressed

Variables = dict[str, Any]
#: What `Codec.loss` returns as its first value: one scalar that every group minimises, or a mapping
#: {group: scalar} where each group minimises its own objective (the engine takes group g's gradient of
#: objective g only; one forward pass, one backward pass per group).
Objective = jax.Array | Mapping[str, jax.Array]


class Codec(abc.ABC):
    """Base class of all codecs. Subclasses register themselves with `lcomp.codecs.registry.register`."""

    name: ClassVar[str] = ""
    #: One optax optimizer (with its own learning rate, schedule and training window) per group.
    param_groups: ClassVar[tuple[str, ...]] = ("autoencoder",)
    #: Images are padded (bottom/right, edge replication) to a multiple of this before encoding.
    pad_multiple: ClassVar[int] = 16
    #: The parts of this codec's files (side information, streams, progressive or not).
    part_layout: ClassVar[container.PartLayout] = container.PartLayout(streams=("payload",))

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    # --- training ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def init(self, rng, example_batch: dict) -> Variables:
        """Initialises parameters (grouped by optimizer) and non-trained state from an example batch."""

    @abc.abstractmethod
    def loss(self, params, state, batch: dict, rng, train: bool):
        """Returns `(objective, (metrics, new_state))`.

        `objective` is a scalar, or `{group: scalar}` with one entry per parameter group (see `Objective`).
        `metrics` holds scalars and includes "loss" (what the progress bar shows) and "bpp" (estimated)."""

    # --- coding -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def compress(self, variables: Variables, image: np.ndarray, **settings) -> Compressed:
        """Encodes a uint8 HxWx3 image into a complete container file, with the model's bit estimate."""

    @abc.abstractmethod
    def decompress(self, variables: Variables, data: bytes, **settings) -> np.ndarray:
        """Decodes a container file into a uint8 HxWx3 image; raises BitstreamError/ModelMismatchError."""

    def operating_points(self) -> list[dict]:
        """The settings `lcomp eval` sweeps (e.g. every iteration count); a single default point by default."""
        return [{}]

    def max_streams(self) -> int | None:
        """The most stream parts a file of this model may record (progressive codecs), None if unbounded."""
        return None

    # --- progressive files (generic, from part_layout) -------------------------------------------------
    def cut_file(self, data: bytes, count: int) -> bytes:
        """A shorter valid file holding the first `count` streams (progressive codecs only)."""
        if not self.part_layout.progressive:
            raise ConfigError(f"codec {self.name!r} is not progressive: its files cannot be cut")
        return self.part_layout.cut(data, count, self.max_streams())

    def cut_to_rate(self, data: bytes, max_bytes: float) -> bytes:
        """The longest progressive prefix whose whole file fits in `max_bytes` (at least one stream)."""
        if not self.part_layout.progressive:
            raise ConfigError(f"codec {self.name!r} is not progressive: its files cannot be cut to a rate")
        return self.part_layout.cut_to_rate(data, max_bytes, self.max_streams())

    # --- helpers every codec needs ----------------------------------------------------------------------
    @staticmethod
    def check_image(image) -> np.ndarray:
        """The uint8 H x W x 3 array a codec encodes; ImageError for anything else."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ImageError(f"expected a uint8 H x W x 3 image, got {image.dtype} {image.shape}")
        if min(image.shape[:2]) < 1:
            raise ImageError("empty image")
        return image

    def unpack_own(self, variables: Variables, data: bytes) -> tuple[container.Container, int]:
        """Unpacks a file, checks that this model wrote it and that its parts fit `part_layout`;
        returns the container and the number of stream parts it holds."""
        from lcomp.fingerprint import fingerprint

        box = container.unpack(data)
        container.check_model(box, self.name, fingerprint(variables))
        return box, self.part_layout.validate(box, self.max_streams())
