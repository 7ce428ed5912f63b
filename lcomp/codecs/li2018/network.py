"""Li et al. 2018's networks (spec li2018 section 2, official prototxt `compress_v1*.prototxt`).

    encoder:    x (uint8) -> (x - 127.5) / 127.5 -> conv 8x8/4 (pad 2) 128 -> blk(128) -> conv 4x4/2 (pad 1) 256
                -> blk(256) -> conv3x3 256 -> blk(256) = F        (H/8 x W/8 x 256)
                F -> conv1x1 n, sigmoid = e                       (the code before the binarizer)
                F -> conv3x3 128, ReLU -> conv1x1 1, sigmoid = p  (the importance map, official: 2 convolutions)
    decoder:    c (n channels) -> conv3x3 512 -> blk(512) -> conv3x3 512 -> blk(512) -> depth-to-space 2
                -> conv3x3 256 -> blk(256) -> depth-to-space 4 -> conv3x3 32 -> conv1x1 3 -> x 127.5 + 127.5

`blk(C)`: conv3x3 `hidden` (128 in the paper), ReLU -> conv3x3 C, ReLU -> + input -> ReLU. Xavier (Glorot
uniform) weights everywhere, no normalisation layers. Caffe's explicit padding is reproduced with explicit
pads, so every image size a multiple of 8 gives the same shapes as the prototxt. The widths are config
fields so that the `small`/`tiny` variants keep the layer table with fewer channels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lcomp.nn.blocks import Conv2D, depth_to_space

Array = jax.Array
_XAVIER = nn.initializers.glorot_uniform()


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    code_channels: int = 64  # n: 64 (released models 1-4) or 128 (model 5)
    encoder_widths: tuple = (128, 256)  # conv1/blk1, conv2..blk3
    decoder_widths: tuple = (512, 256, 32)  # inv_conv1..blk5, inv_conv3/blk6, inv_conv4
    block_hidden: int = 128  # the first convolution of every blk(C)
    importance_hidden: int = 128  # imp1

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | Any) -> "NetworkConfig":
        from lcomp.configs import dataclass_from_mapping
        from lcomp.errors import ConfigError

        config = dataclass_from_mapping(cls, mapping, "li2018 network")
        config = dataclasses.replace(config, encoder_widths=tuple(config.encoder_widths),
                                     decoder_widths=tuple(config.decoder_widths))
        if len(config.encoder_widths) != 2 or len(config.decoder_widths) != 3:
            raise ConfigError("network.encoder_widths needs 2 widths and decoder_widths 3")
        if config.decoder_widths[0] % 4 or config.decoder_widths[1] % 16:
            raise ConfigError("decoder_widths[0] must be a multiple of 4 and [1] of 16 (depth-to-space 2, then 4)")
        if min(config.code_channels, config.block_hidden, config.importance_hidden, *config.encoder_widths) < 1:
            raise ConfigError("network widths must be >= 1")
        return config


def normalize(image_u8) -> Array:
    """uint8 -> [-1, 1] (the prototxt's scale 1/127.5 around 127.5)."""
    return (jnp.asarray(image_u8, jnp.float32) - 127.5) / 127.5


def to_u8(x) -> np.ndarray:
    """The decoder's output on [-1, 1] -> uint8."""
    return np.asarray(jnp.clip(jnp.round(jnp.asarray(x) * 127.5 + 127.5), 0, 255)).astype(np.uint8)


def _conv(features, kernel, strides=1, pad=None, name=None):
    padding = "SAME" if pad is None else ((pad, pad), (pad, pad))
    return Conv2D(features, (kernel, kernel), strides, padding=padding, kernel_init=_XAVIER, name=name)


class Block(nn.Module):
    """`blk(C)`: conv3x3 hidden, ReLU -> conv3x3 C, ReLU -> + x -> ReLU."""

    hidden: int

    @nn.compact
    def __call__(self, x):
        y = nn.relu(_conv(self.hidden, 3, pad=1, name="conv_0")(x))
        y = nn.relu(_conv(x.shape[-1], 3, pad=1, name="conv_1")(y))
        return nn.relu(x + y)


class Encoder(nn.Module):
    """uint8 (N, H, W, 3), H and W multiples of 8 -> (e, p): e (N, H/8, W/8, n) and p (N, H/8, W/8), in (0, 1)."""

    config: NetworkConfig

    @nn.compact
    def __call__(self, image_u8):
        c = self.config
        w1, w2 = c.encoder_widths
        x = normalize(image_u8)
        x = nn.relu(_conv(w1, 8, 4, pad=2, name="conv1")(x))
        x = Block(c.block_hidden, name="blk1")(x)
        x = nn.relu(_conv(w2, 4, 2, pad=1, name="conv2")(x))
        x = Block(c.block_hidden, name="blk2")(x)
        x = nn.relu(_conv(w2, 3, pad=1, name="conv3")(x))
        features = Block(c.block_hidden, name="blk3")(x)
        e = nn.sigmoid(_conv(c.code_channels, 1, name="conv4")(features))
        y = nn.relu(_conv(c.importance_hidden, 3, pad=1, name="imp1")(features))
        p = nn.sigmoid(_conv(1, 1, name="imp2")(y))[..., 0]
        return e, p


class Decoder(nn.Module):
    """Code c (N, h, w, n) in {0, 1} -> image on [-1, 1] (N, 8h, 8w, 3), float, not clipped."""

    config: NetworkConfig

    @nn.compact
    def __call__(self, code):
        c = self.config
        d1, d2, d3 = c.decoder_widths
        x = nn.relu(_conv(d1, 3, pad=1, name="inv_conv1")(code))
        x = Block(c.block_hidden, name="blk4")(x)
        x = nn.relu(_conv(d1, 3, pad=1, name="inv_conv2")(x))
        x = Block(c.block_hidden, name="blk5")(x)
        x = depth_to_space(x, 2)
        x = nn.relu(_conv(d2, 3, pad=1, name="inv_conv3")(x))
        x = Block(c.block_hidden, name="blk6")(x)
        x = depth_to_space(x, 4)
        x = nn.relu(_conv(d3, 3, pad=1, name="inv_conv4")(x))
        return _conv(3, 1, name="pdata")(x)
