"""The learned probability model for the recurrent coder's bits: two passes per iteration, exact arithmetic.

Every iteration t emits bits b_t in {-1, +1}^(h x w x 32). The model predicts p(bit = +1) for each of them
from discrete data the decoder already has:

* all bits of earlier iterations, summarised as b_{t-1}, b_{t-2} and the running sum of b_1..b_{t-1}
  (a "trunk" of 3x3 convolutions over them, plus a learned per-iteration bias);
* inside iteration t, a checkerboard: code positions with (i + j) even form pass 0 and see nothing of
  iteration t; positions with (i + j) odd form pass 1 and also see the pass-0 bits of iteration t through
  one 3x3 convolution over the even-position bits. A 3x3 window around an odd position covers only even
  positions (its 4-neighbours) and odd corners, which are masked out, so pass 1 never sees itself. The
  output head is 1x1 only, so no spatial mixing can leak a position's own bits back to it.

The 32 bits of one position are predicted independently given that context (as in the official progressive
coder of Toderici/Johnston, spec rnn_coder 8.2, whose raster-order row LSTM this replaces: raster order
needs one network call per position, the checkerboard needs two per iteration). Bits that were not sent
(SABR) are 0 in every input; both ends know which they are from the count map.

Why exact arithmetic
--------------------
Encoder and decoder must derive identical probability tables, or the range decoder desynchronises.
Floating-point convolutions do not give identical results across thread counts, CPUs or accelerators (we
measured a desync between 1 and 2 XLA:CPU threads with a plain float model). So this network is an integer
network written in float32: weights are multiples of 2^-8 (8-bit), activations multiples of 2^-4 (6-bit,
after a clipped ReLU), inputs are small integers, and every partial sum is an integer multiple of the grid
below 2^24 in magnitude, hence exact in float32 in ANY summation order. Convolutions are shifted copies and
one dot product at HIGHEST precision (no Winograd/FFT/TF32 tricks). The final logit is rounded to a grid
and mapped to an integer frequency through a table computed with Python's `decimal` (correctly rounded, the
same everywhere). Training sees the very same forward pass, with straight-through gradients for rounding.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from lcomp.errors import ConfigError

Array = jax.Array
PASSES = 2

WEIGHT_FRACTION_BITS = 8  # weights are multiples of 2^-8 ...
WEIGHT_LIMIT = 127  # ... in [-127, 127] * 2^-8 (|w| < 0.5)
ACTIVATION_FRACTION_BITS = 4  # activations are multiples of 2^-4 ...
ACTIVATION_LIMIT = 63  # ... in [0, 63] * 2^-4
HISTORY_SUM_SCALE = 0.25  # the running sum of earlier bits enters as sum / 4 (exact)
LOGIT_STEPS_PER_UNIT = 8  # logits are rounded to multiples of 1/8 ...
LOGIT_LIMIT = 12  # ... and clipped to [-12, 12] before the table lookup
FREQUENCY_PRECISION = 16  # the range coder's probability precision for the bits


@dataclasses.dataclass(frozen=True)
class BitModelConfig:
    features: int = 64
    trunk_layers: int = 3  # 3x3 convolutions over the earlier iterations' bits
    iterations: int = 16  # one learned bias per iteration
    bits_per_position: int = 32

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | Any, **defaults) -> "BitModelConfig":
        from lcomp.configs import dataclass_from_mapping

        return dataclass_from_mapping(cls, mapping, "bit-model", **defaults)

    def check_exactness(self, history_channels: int) -> None:
        """Every layer's worst-case sum of |products|, in units of its grid, must stay below 2^24: then every
        float32 partial sum is an integer multiple of the grid and exact, in any summation order."""
        w, a = WEIGHT_LIMIT, ACTIVATION_LIMIT
        history_max = 4 * self.iterations  # bits are 4 grid units (2^-2), the running sum up to 4 * T / 4
        worst = {
            "trunk_0": 9 * history_channels * w * history_max,
            "trunk_n": 9 * self.features * w * a,
            # pass-1 sum: trunk output (2^-12 grid) + the current-iteration branch (2^-8 grid, 16x coarser)
            "trunk+current": 9 * self.features * w * a + 16 * 9 * self.bits_per_position * w,
            "head": self.features * w * a,
        }
        for layer, bound in worst.items():
            if bound >= 2**24:
                raise ConfigError(f"bit model too wide for exact float32 sums ({layer}: {bound} >= 2^24)")


def checkerboard(height: int, width: int) -> np.ndarray:
    """(h, w) array: 0 where (i + j) is even (pass 0), 1 where odd (pass 1)."""
    return (np.add.outer(np.arange(height), np.arange(width)) % 2).astype(np.int32)


@functools.lru_cache(maxsize=1)
def logit_frequency_table() -> np.ndarray:
    """Integer frequency of bit = 1 for every rounded logit (-12 .. 12 in steps of 1/8), out of 2^16.

    Computed with `decimal` (correctly rounded exp), so it is identical on every machine."""
    context = decimal.Context(prec=40)
    total = 1 << FREQUENCY_PRECISION
    steps = LOGIT_LIMIT * LOGIT_STEPS_PER_UNIT
    table = []
    for k in range(-steps, steps + 1):
        z = decimal.Decimal(k) / LOGIT_STEPS_PER_UNIT
        p = decimal.Decimal(1) / (1 + context.exp(-z))
        table.append(min(max(int((p * total).to_integral_value(decimal.ROUND_HALF_EVEN)), 1), total - 1))
    return np.asarray(table, np.int64)


# --- exact building blocks (straight-through gradients) -------------------------------------------------------


def _round_ste(x):
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def _floor_ste(x):
    return x + jax.lax.stop_gradient(jnp.floor(x) - x)


def quantize_weight(w):
    """A weight on the 2^-8 grid, 8-bit; straight-through gradient inside the range."""
    scale = 2.0**WEIGHT_FRACTION_BITS
    return jnp.clip(_round_ste(w * scale), -WEIGHT_LIMIT, WEIGHT_LIMIT) / scale


def quantize_activation(x):
    """Clipped ReLU onto the 2^-4 grid (6-bit); straight-through gradient inside the range."""
    scale = 2.0**ACTIVATION_FRACTION_BITS
    return jnp.clip(_floor_ste(x * scale), 0, ACTIVATION_LIMIT) / scale


def quantize_bias(b, grid_bits: int):
    return _round_ste(b * 2.0**grid_bits) / 2.0**grid_bits


def exact_conv(x, kernel):
    """'SAME' convolution as shifted copies + one HIGHEST-precision dot (NHWC, kernel HWIO, odd sizes)."""
    kh, kw, cin, cout = kernel.shape
    ph, pw = kh // 2, kw // 2
    padded = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    h, w = x.shape[1:3]
    patches = jnp.concatenate(
        [padded[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    return jnp.einsum(
        "nhwk,ko->nhwo", patches, kernel.reshape(kh * kw * cin, cout), precision=jax.lax.Precision.HIGHEST
    )


class BitProbabilityModel:
    """p(bit = +1) for every bit of every iteration; pure functions of explicit parameters."""

    def __init__(self, config: BitModelConfig):
        self.config = config
        config.check_exactness(3 * config.bits_per_position)

    # --- parameters -----------------------------------------------------------------------------------------
    def init(self, rng: Array, code_shape: tuple[int, ...] | None = None) -> dict:
        c = self.config
        f, bits = c.features, c.bits_per_position
        keys = iter(jax.random.split(rng, c.trunk_layers + 3))

        def conv(k, shape):  # He-style scale, then the grid takes over
            fan_in = shape[0] * shape[1] * shape[2]
            return {"kernel": jax.random.normal(k, shape) * np.sqrt(2.0 / fan_in), "bias": jnp.zeros(shape[-1])}

        params = {}
        channels = 3 * bits
        for i in range(c.trunk_layers):
            params[f"trunk_{i}"] = conv(next(keys), (3, 3, channels, f))
            channels = f
        params["current"] = conv(next(keys), (3, 3, bits, f))
        params["head_0"] = conv(next(keys), (1, 1, f, f))
        params["head_1"] = conv(next(keys), (1, 1, f, bits))
        params["iteration_bias"] = jnp.zeros((c.iterations, f))
        return params

    # --- the network ----------------------------------------------------------------------------------------
    def _logits(self, params, history, current, t):
        """history (B, h, w, 3C) on the 2^-2 grid; current (B, h, w, C) in {-1, 0, 1}; t (B,) ints."""
        c = self.config
        h, w = history.shape[1:3]
        odd = jnp.asarray(checkerboard(h, w), jnp.float32)[None, :, :, None]
        x, grid = history, 2  # `grid` = fraction bits of the values in x
        for i in range(c.trunk_layers):
            layer = params[f"trunk_{i}"]
            acc_grid = grid + WEIGHT_FRACTION_BITS
            x = exact_conv(x, quantize_weight(layer["kernel"])) + quantize_bias(layer["bias"], acc_grid)
            if i == 0:
                x = x + quantize_bias(params["iteration_bias"][t], acc_grid)[:, None, None, :]
            if i < c.trunk_layers - 1:
                x, grid = quantize_activation(x), ACTIVATION_FRACTION_BITS
        layer = params["current"]
        current = exact_conv(current * (1.0 - odd), quantize_weight(layer["kernel"]))
        current = current + quantize_bias(layer["bias"], WEIGHT_FRACTION_BITS)
        x = quantize_activation(x + odd * current)  # both sums live on grids finer than 2^-9: exact
        for name in ("head_0", "head_1"):
            layer = params[name]
            x = exact_conv(x, quantize_weight(layer["kernel"])) + quantize_bias(
                layer["bias"], ACTIVATION_FRACTION_BITS + WEIGHT_FRACTION_BITS
            )
            if name == "head_0":
                x = quantize_activation(x)
        return x

    @staticmethod
    def _history(bits: Array, t) -> Array:
        """Iterations < t of `bits` (T, N, h, w, C) as (N, h, w, 3C): b_{t-1}, b_{t-2}, sum / 4."""
        index = jnp.arange(bits.shape[0])[:, None, None, None, None]
        prev1 = jnp.sum(jnp.where(index == t - 1, bits, 0.0), axis=0)
        prev2 = jnp.sum(jnp.where(index == t - 2, bits, 0.0), axis=0)
        total = jnp.sum(jnp.where(index < t, bits, 0.0), axis=0) * HISTORY_SUM_SCALE
        return jnp.concatenate([prev1, prev2, total], axis=-1)

    def iteration_logits(self, params, bits: Array, t) -> Array:
        """Logits (N, h, w, C) of iteration t's bits given `bits` (T, N, h, w, C).

        Reads iterations < t completely and iteration t only at even positions, so: called with iteration
        t's bits zeroed, it gives pass 0 (use the even positions); called with its even positions filled
        in, it gives pass 1 (use the odd positions). `t` may be traced (one compilation for all t).
        """
        bits = jnp.asarray(bits, jnp.float32)
        t = jnp.asarray(t, jnp.int32)
        current = jax.lax.dynamic_index_in_dim(bits, t, axis=0, keepdims=False)
        n = bits.shape[1]
        return self._logits(params, self._history(bits, t), current, jnp.full((n,), t, jnp.int32))

    def iteration_logits_all(self, params, bits: Array) -> Array:
        """Teacher-forced logits (T, N, h, w, C) of every iteration at once (training and estimates)."""
        bits = jnp.asarray(bits, jnp.float32)
        num, n = bits.shape[:2]
        ts = jnp.arange(num)
        history = jax.vmap(lambda t: self._history(bits, t))(ts)
        merge = lambda a: a.reshape(num * n, *a.shape[2:])
        logits = self._logits(params, merge(history), merge(bits), jnp.repeat(ts, n).astype(jnp.int32))
        return logits.reshape(bits.shape)

    # --- logits -> what the coder uses ------------------------------------------------------------------------
    @staticmethod
    def logit_index(logits: Array) -> Array:
        """The rounded, clipped logit as a table index 0 .. 2 * 12 * 8 (exact: logits are on a fine grid)."""
        steps = LOGIT_LIMIT * LOGIT_STEPS_PER_UNIT
        return (jnp.clip(jnp.round(logits * LOGIT_STEPS_PER_UNIT), -steps, steps) + steps).astype(jnp.int32)

    @staticmethod
    def frequencies(logit_index: np.ndarray) -> np.ndarray:
        """(..., 2) integer frequencies (bit 0, bit 1) out of 2^16 for table indices."""
        one = logit_frequency_table()[np.asarray(logit_index)]
        return np.stack([(1 << FREQUENCY_PRECISION) - one, one], axis=-1)

    @staticmethod
    def bits_cost(logits: Array, bits: Array) -> Array:
        """-log2 p(actual bit) per bit for training (0 where not sent); bits in {-1, +1} (0 = not sent).

        Uses the clipped logit the coder sees (rounding passes the gradient straight through)."""
        z = jnp.clip(logits, -LOGIT_LIMIT, LOGIT_LIMIT)
        z = z + jax.lax.stop_gradient(jnp.round(z * LOGIT_STEPS_PER_UNIT) / LOGIT_STEPS_PER_UNIT - z)
        cost = jax.nn.softplus(-z * bits) / jnp.log(2.0)
        return jnp.where(bits != 0, cost, 0.0)
