"""The learned probability model of the recurrent coder's bits: two passes per iteration, exact arithmetic.

Every iteration t emits bits b_t in {-1, +1}^(h x w x 32). The model predicts p(bit = +1) for each of them
from discrete data the decoder already has:

* all bits of earlier iterations, summarised as b_{t-1}, b_{t-2} and the running sum of b_1..b_{t-1}
  (a "trunk" of 3x3 convolutions over them, plus a learned per-iteration bias);
* inside iteration t, a checkerboard (`lcomp.entropy.schedules.checkerboard_iterations`): positions with
  (i + j) even form pass 0 and see nothing of iteration t; positions with (i + j) odd form pass 1 and also
  see the pass-0 bits of iteration t through one convolution with a checkerboard kernel mask
  (`lcomp.entropy.masks.checkerboard_mask`: the 4 edge-neighbours, all of the other colour) over the even
  positions' bits. The output head is 1x1 only, so no spatial mixing can leak a position's own bits back.

The 32 bits of one position are predicted independently given that context (as in the official progressive
coder of Toderici/Johnston, spec rnn_coder 8.2, whose raster-order row LSTM this replaces: raster order
needs one network call per position, the checkerboard two per iteration). Bits that were not sent (SABR)
are 0 in every input; both ends know which they are from the count map.

The network is built from `lcomp.entropy.exact` (8-bit weights, 6-bit activations, every sum exact in
float32, checked automatically when the model is built), so the teacher-forced dense pass the encoder uses
and the pass-by-pass evaluation of the decoder give identical tables on every machine.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from lcomp.entropy import exact
from lcomp.entropy.masks import checkerboard_mask, mask_taps

Array = jax.Array

GRID = exact.DEFAULT_GRID  # 8-bit weights on 2^-8, activations on 2^-4 in [0, 63/16]
FREQUENCY_PRECISION = 16  # the range coder's probability precision for the bits
# Logits rounded to 1/8 in [-12, 12], frequencies out of 2^16.
LOGITS = exact.LogitGrid(steps_per_unit=8, limit=12, precision=FREQUENCY_PRECISION)
HISTORY_SUM_SCALE = 0.25  # the running sum of earlier bits enters as sum / 4 (exact, on the 2^-2 grid)
HISTORY_BITS = 2
CURRENT_TAPS = mask_taps(checkerboard_mask((3, 3)))


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


def checkerboard(height: int, width: int) -> np.ndarray:
    """(h, w) array: 0 where (i + j) is even (pass 0), 1 where odd (pass 1)."""
    return (np.add.outer(np.arange(height), np.arange(width)) % 2).astype(np.int32)


class BitProbabilityModel:
    """p(bit = +1) for every bit of every iteration; pure functions of explicit parameters."""

    def __init__(self, config: BitModelConfig):
        self.config = config
        # Walks the whole network on abstract inputs: a ConfigError here names the layer that could round.
        c = config
        exact.check_exactness(
            lambda p: self.iteration_logits_all(p, jnp.zeros((c.iterations, 1, 4, 4, c.bits_per_position))),
            jax.eval_shape(self.init, jax.random.key(0)),
        )

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
        # The full 3x3 kernel is kept (file compatibility of trained models); the checkerboard mask reads
        # only its 4 edge taps.
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
        x = exact.exact_input(history, HISTORY_BITS, max(1.0, c.iterations * HISTORY_SUM_SCALE))
        for i in range(c.trunk_layers):
            x = exact.conv(x, params[f"trunk_{i}"], name=f"trunk_{i}")
            if i == 0:
                x = exact.add_bias(x, params["iteration_bias"][t][:, None, None, :], name="iteration bias")
            if i < c.trunk_layers - 1:
                x = exact.relu_to_grid(x)
        even_bits = exact.select(1.0 - odd, exact.exact_input(current, 0, 1.0))
        seen = exact.conv(even_bits, params["current"], taps=CURRENT_TAPS, name="current")
        x = exact.relu_to_grid(exact.add(x, exact.select(odd, seen), name="trunk + current"))
        x = exact.relu_to_grid(exact.conv(x, params["head_0"], name="head_0"))
        return exact.conv(x, params["head_1"], name="head_1").value

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
        """Teacher-forced logits (T, N, h, w, C) of every iteration at once: training, and the encoder's dense
        pass (identical to the pass-by-pass logits, the arithmetic being exact)."""
        bits = jnp.asarray(bits, jnp.float32)
        num, n = bits.shape[:2]
        ts = jnp.arange(num)
        history = jax.vmap(lambda t: self._history(bits, t))(ts)
        merge = lambda a: a.reshape(num * n, *a.shape[2:])
        logits = self._logits(params, merge(history), merge(bits), jnp.repeat(ts, n).astype(jnp.int32))
        return logits.reshape(bits.shape)

    # Logits -> table indices and frequencies: LOGITS.index and LOGITS.binary_frequencies (lcomp.entropy.exact).

    @staticmethod
    def bits_cost(logits: Array, bits: Array) -> Array:
        """-log2 p(actual bit) per bit for training (0 where not sent); bits in {-1, +1} (0 = not sent).

        Uses the clipped, rounded logit the coder sees (rounding passes the gradient straight through)."""
        return LOGITS.binary_bits(logits, bits)
