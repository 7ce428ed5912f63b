"""Mentzer et al. 2018's autoencoder (spec mentzer2018 section 2, official code `autoencoder.py`, `_CVPR`).

    encoder: x (uint8) -> normalise -> conv5x5/2 64 -> conv5x5/2 n (skip0) -> B groups of 3 residual blocks
             (+ group skip) -> linear residual block -> + skip0 -> conv5x5/2 K+1           (total stride 8)
    decoder: (N, h, w, K) -> up3x3/2 n (skip0) -> B groups -> linear residual block -> + skip0
             -> up5x5/2 64 -> up5x5/2 3 -> undo the normalisation                        (float, not clipped)

Every convolution is followed by batch normalisation (hence no bias), including the bottleneck and the RGB
output layer, momentum 0.9, eps 1e-5, with scale and offset; ReLU except where the table says none.

Batch statistics under data parallelism: the training engine runs `loss` under one `jax.jit` over the whole
global batch, sharded along the mesh's "data" axis; `nn.BatchNorm`'s mean and variance are `jnp.mean`s over
the batch axis, which XLA computes with a cross-device all-reduce. The statistics are therefore SYNCED over
the global batch: a step on 4 devices normalises exactly as a step on one device with the same batch (the
official code: one GPU, batch 30). The running averages (codec state "batch_stats") are updated once per
step from those global statistics. Evaluation and coding use the running averages (`train=False`).

Upsampling (`upsampling`): "transposed" is the paper's transposed convolution (TF `conv2d_transpose`,
SAME); "subpixel" is a convolution to 4x the channels followed by depth-to-space, whose gradients are
10-30x cheaper on XLA:CPU (the small and tiny configs use it, stated there).
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

# Fixed input normalisation of the official code (`_get_mean_var`): per-channel mean and variance on [0, 255].
RGB_MEAN = np.array([121.85369873, 113.58860779, 100.63715363], np.float32)
RGB_VAR = np.array([4746.37695312, 4454.13964844, 4812.234375], np.float32)
RGB_STD = np.sqrt(RGB_VAR + 1e-10).astype(np.float32)

UPSAMPLING = ("transposed", "subpixel")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    latent_channels: int = 32  # K (`num_chan_bn`); the encoder emits K + 1 (one importance channel)
    width: int = 128  # n (`arch_param_n`)
    groups: int = 5  # B (`arch_param_B`), each 3 residual blocks
    blocks_per_group: int = 3
    first_width: int = 64  # h1 and h12
    upsampling: str = "transposed"  # "transposed" (paper) | "subpixel" (faster on CPU)
    batch_norm_momentum: float = 0.9
    batch_norm_epsilon: float = 1e-5

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | Any) -> "NetworkConfig":
        from lcomp.configs import dataclass_from_mapping
        from lcomp.errors import ConfigError

        config = dataclass_from_mapping(cls, mapping, "mentzer2018 network")
        if config.upsampling not in UPSAMPLING:
            raise ConfigError(f"network.upsampling must be one of {UPSAMPLING}, got {config.upsampling!r}")
        if config.latent_channels < 1 or config.width < 1 or config.groups < 0:
            raise ConfigError("network.latent_channels and width must be >= 1, groups >= 0")
        return config


def normalize(image_u8) -> Array:
    """uint8 [0, 255] -> the network's input (fixed per-channel mean and standard deviation)."""
    return (jnp.asarray(image_u8, jnp.float32) - RGB_MEAN) / RGB_STD


def denormalize(x) -> Array:
    """The network's output -> [0, 255] floats (not clipped)."""
    return x * RGB_STD + RGB_MEAN


def to_u8(x_255) -> np.ndarray:
    return np.asarray(jnp.clip(jnp.round(jnp.asarray(x_255)), 0, 255)).astype(np.uint8)


class _ConvBN(nn.Module):
    features: int
    kernel: int
    strides: int = 1
    relu: bool = True
    config: NetworkConfig = NetworkConfig()

    @nn.compact
    def __call__(self, x, train: bool):
        x = Conv2D(self.features, (self.kernel, self.kernel), self.strides, use_bias=False,
                   kernel_init=nn.initializers.glorot_uniform(), name="conv")(x)
        x = _bn(self.config, train, "norm")(x)
        return nn.relu(x) if self.relu else x


def _bn(config: NetworkConfig, train: bool, name: str):
    return nn.BatchNorm(use_running_average=not train, momentum=config.batch_norm_momentum,
                        epsilon=config.batch_norm_epsilon, name=name)


class _Residual(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + x (no activation after the add); `linear`: no ReLU at all."""

    features: int
    linear: bool = False
    config: NetworkConfig = NetworkConfig()

    @nn.compact
    def __call__(self, x, train: bool):
        y = _ConvBN(self.features, 3, relu=not self.linear, config=self.config, name="a")(x, train)
        y = _ConvBN(self.features, 3, relu=False, config=self.config, name="b")(y, train)
        return x + y


class _Trunk(nn.Module):
    """B groups of residual blocks (each group + its input), a linear residual block, + the trunk input."""

    config: NetworkConfig

    @nn.compact
    def __call__(self, x, train: bool):
        c = self.config
        skip0 = x
        for g in range(c.groups):
            group_in = x
            for b in range(c.blocks_per_group):
                x = _Residual(c.width, config=c, name=f"group{g}_res{b}")(x, train)
            x = x + group_in
        x = _Residual(c.width, linear=True, config=c, name="res_final")(x, train)
        return x + skip0


class _Up(nn.Module):
    """Stride-2 upsampling + BN (+ ReLU): transposed convolution or sub-pixel convolution."""

    features: int
    kernel: int
    relu: bool
    config: NetworkConfig

    @nn.compact
    def __call__(self, x, train: bool):
        k = (self.kernel, self.kernel)
        if self.config.upsampling == "transposed":
            x = nn.ConvTranspose(self.features, k, strides=(2, 2), padding="SAME", use_bias=False,
                                 kernel_init=nn.initializers.glorot_uniform(), name="conv")(x)
        else:
            x = Conv2D(4 * self.features, k, use_bias=False, kernel_init=nn.initializers.glorot_uniform(),
                       name="conv")(x)
            x = depth_to_space(x, 2)
        x = _bn(self.config, train, "norm")(x)
        return nn.relu(x) if self.relu else x


class Encoder(nn.Module):
    """uint8 (N, H, W, 3), H and W multiples of 8 -> (N, H/8, W/8, K + 1); channel 0 is the importance map."""

    config: NetworkConfig

    @nn.compact
    def __call__(self, image_u8, train: bool = False):
        c = self.config
        x = normalize(image_u8)
        x = _ConvBN(c.first_width, 5, 2, config=c, name="h1")(x, train)
        x = _ConvBN(c.width, 5, 2, config=c, name="h2")(x, train)
        x = _Trunk(c, name="trunk")(x, train)
        return _ConvBN(c.latent_channels + 1, 5, 2, relu=False, config=c, name="to_bn")(x, train)


class Decoder(nn.Module):
    """Quantized latents (N, h, w, K) -> image on [0, 255] (N, 8h, 8w, 3), float, not clipped."""

    config: NetworkConfig

    @nn.compact
    def __call__(self, q, train: bool = False):
        c = self.config
        x = _Up(c.width, 3, True, c, name="from_bn")(q, train)
        x = _Trunk(c, name="trunk")(x, train)
        x = _Up(c.first_width, 5, True, c, name="h12")(x, train)
        x = _Up(3, 5, False, c, name="h13")(x, train)
        return denormalize(x)
