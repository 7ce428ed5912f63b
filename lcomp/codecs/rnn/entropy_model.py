"""The learned probability model for the recurrent coder's bits, decodable in two passes per iteration.

Every iteration t emits bits b_t in {-1, +1}^(h x w x 32). The model predicts p(bit = +1) for each of them
from discrete data the decoder already has:

* all bits of earlier iterations, summarised as b_{t-1}, b_{t-2} and the running mean of b_1..b_{t-1}
  (a "trunk" of 3x3 convolutions over them, plus a learned per-iteration bias);
* inside iteration t, a checkerboard: code positions with (i + j) even form pass 0 and see nothing of
  iteration t; positions with (i + j) odd form pass 1 and also see the pass-0 bits of iteration t through
  one 3x3 convolution over the even-position bits. A 3x3 window around an odd position covers only even
  positions (its 4-neighbours) and odd corners, which are masked out, so pass 1 never sees itself. The
  output head is 1x1 only, so no spatial mixing can leak a position's own bits back to it.

The 32 bits of one position are predicted independently given that context (as in the official progressive
coder of Toderici/Johnston, spec rnn_coder 8.2, whose raster-order row LSTM this replaces: raster order
needs one network call per position, the checkerboard needs two per iteration).

Bits that were not sent (SABR) are 0 in every input; both ends know which they are from the count map.

Training is fully parallel (teacher forcing over all iterations at once, `iteration_logits_all`); coding
calls `iteration_logits` twice per iteration. Both give the same numbers for the positions a pass codes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lcomp.errors import ConfigError

Array = jax.Array
PASSES = 2


@dataclasses.dataclass(frozen=True)
class BitModelConfig:
    features: int = 64
    trunk_layers: int = 3  # 3x3 convolutions over the earlier iterations' bits
    iterations: int = 16  # one learned bias per iteration
    bits_per_position: int = 32

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | Any, **defaults) -> "BitModelConfig":
        if hasattr(mapping, "to_dict"):
            mapping = mapping.to_dict()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - names)
        if unknown:
            raise ConfigError(f"unknown bit-model settings: {', '.join(unknown)}")
        return cls(**{**defaults, **dict(mapping)})


def checkerboard(height: int, width: int) -> np.ndarray:
    """(h, w) array: 0 where (i + j) is even (pass 0), 1 where odd (pass 1)."""
    return (np.add.outer(np.arange(height), np.arange(width)) % 2).astype(np.int32)


class _BitModelNet(nn.Module):
    config: BitModelConfig

    @nn.compact
    def __call__(self, history: Array, current_even: Array, t: Array) -> Array:
        """history: (B, h, w, 3C) from earlier iterations; current_even: (B, h, w, C), iteration t's bits at
        even positions (zeros at odd ones); t: (B,) iteration index. Returns logits (B, h, w, C)."""
        c = self.config
        h, w = history.shape[1:3]
        odd = jnp.asarray(checkerboard(h, w), history.dtype)[None, :, :, None]
        x = history
        for i in range(c.trunk_layers):
            x = nn.Conv(c.features, (3, 3), padding="SAME", name=f"trunk_{i}")(x)
            if i == 0:
                bias = self.param("iteration_bias", nn.initializers.zeros, (c.iterations, c.features))
                x = x + bias[t][:, None, None, :]
            x = nn.relu(x)
        current = nn.Conv(c.features, (3, 3), padding="SAME", name="current")(current_even * (1.0 - odd))
        x = nn.relu(x + odd * current)
        x = nn.relu(nn.Conv(c.features, (1, 1), name="head_0")(x))
        return nn.Conv(c.bits_per_position, (1, 1), name="head_1")(x)


def _history(bits: Array, t: Array) -> Array:
    """Features of iterations < t for one t: (N, h, w, 3C). `bits` is (T, N, h, w, C), t a scalar."""
    num = bits.shape[0]
    index = jnp.arange(num)[:, None, None, None, None]
    prev1 = jnp.sum(jnp.where(index == t - 1, bits, 0.0), axis=0)
    prev2 = jnp.sum(jnp.where(index == t - 2, bits, 0.0), axis=0)
    mean = jnp.sum(jnp.where(index < t, bits, 0.0), axis=0) / jnp.maximum(t, 1).astype(bits.dtype)
    return jnp.concatenate([prev1, prev2, mean], axis=-1)


class BitProbabilityModel:
    """p(bit = +1) for every bit of every iteration; pure functions of explicit parameters."""

    def __init__(self, config: BitModelConfig):
        self.config = config
        self.net = _BitModelNet(config)

    def init(self, rng: Array, code_shape: tuple[int, ...]) -> dict:
        """`code_shape` = one iteration's bits (N, h, w, C)."""
        n, h, w, c = code_shape
        history = jnp.zeros((n, h, w, 3 * c), jnp.float32)
        return self.net.init(rng, history, jnp.zeros((n, h, w, c)), jnp.zeros((n,), jnp.int32))["params"]

    def iteration_logits(self, params, bits: Array, t) -> Array:
        """Logits (N, h, w, C) of iteration t's bits given `bits` (T, N, h, w, C).

        Reads iterations < t completely and iteration t only at even positions, so: called with iteration
        t's bits zeroed, it gives pass 0 (use the even positions); called with its even positions filled
        in, it gives pass 1 (use the odd positions). `t` may be traced (one compilation for all t).
        """
        bits = jnp.asarray(bits, jnp.float32)
        t = jnp.asarray(t, jnp.int32)
        history = _history(bits, t)
        current = jax.lax.dynamic_index_in_dim(bits, t, axis=0, keepdims=False)
        n = bits.shape[1]
        return self.net.apply({"params": params}, history, current, jnp.full((n,), t, jnp.int32))

    def iteration_logits_all(self, params, bits: Array) -> Array:
        """Teacher-forced logits (T, N, h, w, C) of every iteration at once (training and estimates)."""
        bits = jnp.asarray(bits, jnp.float32)
        num, n = bits.shape[:2]
        ts = jnp.arange(num)
        history = jax.vmap(lambda t: _history(bits, t))(ts)  # (T, N, h, w, 3C)
        merge = lambda a: a.reshape(num * n, *a.shape[2:])
        logits = self.net.apply(
            {"params": params}, merge(history), merge(bits), jnp.repeat(ts, n).astype(jnp.int32)
        )
        return logits.reshape(bits.shape)

    @staticmethod
    def bits_cost(logits: Array, bits: Array, sent: Array | None = None) -> Array:
        """-log2 p(actual bit) per bit (0 where not sent); bits in {-1, +1} (0 = not sent)."""
        cost = jax.nn.softplus(-logits * bits) / jnp.log(2.0)
        mask = (bits != 0) if sent is None else sent
        return jnp.where(mask, cost, 0.0)
