"""Mentzer et al. 2018's 3D context model `P` (spec mentzer2018 section 5), as an exact integer network.

The latent volume (N, K, h, w) is a 3D signal whose depth axis is the latent channel. Four masked (2, 3, 3)
convolutions (`lcomp.entropy.masks.channel_causal_mask`: A for the first, B for the others) predict L logits
for every symbol from symbols earlier in (channel, row, column) order (spec table 5.3, `res_shallow`):

    x  = pad(values, depth (4, 0), rows (4, 4), columns (4, 4), with centers[0])
    a1 = relu(convA(x))                          1 -> F, VALID
    a2 = relu(convB(a1))                         F -> F
    a3 = convB(a2) + a1[:, 2:, 2:-2, 2:-2]       F -> F, no activation (residual crop of the spec)
    logits = relu(convB(a3))                     F -> L ("logit_relu", the official code's ReLU)

Exactness (`lcomp.entropy.exact`): the input is the symbols' centers rounded onto the 2^-6 grid (|c| <= 8;
the pad value is centers[0] on the same grid), weights 8-bit, a1/a2 clipped ReLUs on 2^-4, a3 rounded onto
the signed grid 2^-4 in [-127, 127] / 16 (the spec has no activation there; an exact network needs its sum
on a grid before the next layer), logits rounded to 1/8 in [-12, 12] (`LogitGrid`), tables by
`categorical_frequencies` (integer arithmetic). Every sum is an integer below 2^24 grid units, so the
numbers do not depend on the order of additions: the encoder's dense pass over the whole volume and the
decoder's wavefront give identical tables on any machine.

Wavefront decoding with cached activations (spec 5.4): a layer's activation at coordinate p depends on the
layer below at p (B masks' centre tap) and at coordinates of strictly smaller t = 4 d + 2 h + w (every other
tap), and a1 on the input at smaller t only. So front t's symbols need only fronts < t, and each layer at
front t needs only the layer below at fronts <= t. `Wavefront.step(t)` computes every layer at exactly the
coordinates of front t (including the margins the VALID convolutions need), reading the cached activations
of the layer below through gathered neighbour indices, and returns the logits of front t. One step is a few
hundred small matrix products; a Kodak latent (K = 32, 64 x 96) takes 367 steps (346 fronts + 21 margin
fronts), never one network call per symbol.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from lcomp.entropy import exact
from lcomp.entropy.frequencies import categorical_frequencies
from lcomp.entropy.masks import channel_causal_mask, mask_taps
from lcomp.quantize import round_ste

Array = jax.Array

KERNEL = (2, 3, 3)
MASK_A = channel_causal_mask(KERNEL, include_centre=False)
MASK_B = channel_causal_mask(KERNEL, include_centre=True)
TAPS_A = mask_taps(MASK_A)  # 13 taps
TAPS_B = mask_taps(MASK_B)  # 14 taps
PAD = ((4, 0), (4, 4), (4, 4))  # depth, rows, columns: 4 layers of (2, 3, 3) VALID convolutions
GRID = exact.DEFAULT_GRID
LOGITS = exact.LogitGrid(steps_per_unit=8, limit=12)
FREQUENCY_PRECISION = 16
INPUT_BITS = 6  # centers enter on the 2^-6 grid ...
INPUT_LIMIT = 8.0  # ... clipped to [-8, 8]
RESIDUAL_BITS = 4  # a3 on the signed grid 2^-4 ...
RESIDUAL_LIMIT = 127  # ... in [-127, 127] * 2^-4
LAYERS = ("conv_a", "res_b1", "res_b2", "logits")


@dataclasses.dataclass(frozen=True)
class ContextModelConfig:
    features: int = 24  # `arch_param__k` (res_shallow); res_shallow_64 uses 64
    num_centers: int = 6  # L
    logit_relu: bool = True  # the official code's ReLU on the logits (spec section 11, row 8)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | Any, **defaults) -> "ContextModelConfig":
        from lcomp.configs import dataclass_from_mapping

        return dataclass_from_mapping(cls, mapping, "mentzer2018 context-model", **defaults)


def input_values(centers: Array, symbols: Array, *, gradient: bool = False) -> Array:
    """The context model's input: centers[symbols] on the 2^-6 grid, clipped to +-8.

    `gradient=False` (code semantics): no gradient. `gradient=True` (thesis semantics): the rounding is
    straight-through, so with `centers[symbols]` replaced by the quantizer's output the rate reaches the
    encoder through the values (the caller passes q-bar as `centers` with `symbols=None`)."""
    values = centers if symbols is None else centers[symbols]
    if not gradient:
        values = jax.lax.stop_gradient(values)
    scale = 2.0**INPUT_BITS
    return jnp.clip(round_ste(values * scale), -INPUT_LIMIT * scale, INPUT_LIMIT * scale) / scale


def pad_value(centers: Array) -> Array:
    """centers[0] on the input grid, without gradient (spec 12.7)."""
    return input_values(centers[:1], None)[0]


def _signed_to_grid(x: exact.Exact) -> exact.Exact:
    """Rounds a sum onto the signed grid 2^-4 in [-127, 127] * 2^-4 (straight-through gradient)."""
    scale = 2.0**RESIDUAL_BITS
    value = jnp.clip(round_ste(x.value * scale), -RESIDUAL_LIMIT, RESIDUAL_LIMIT) / scale
    return exact.Exact(value, RESIDUAL_BITS, RESIDUAL_LIMIT)


def _crop(v):
    return v[:, 2:, 2:-2, 2:-2, :]


class ContextModel:
    """Pure functions of explicit parameters: init, dense logits (training / encoder), wavefront (decoder)."""

    def __init__(self, config: ContextModelConfig):
        self.config = config
        # Walks the whole network on abstract inputs: a ConfigError here names the layer that could round.
        exact.check_exactness(
            lambda p: self.logits(p, jnp.zeros((1, 2, 3, 3)), jnp.float32(0.0)),
            jax.eval_shape(self.init, jax.random.key(0)),
        )

    # --- parameters ---------------------------------------------------------------------------------------
    def init(self, rng) -> dict:
        c = self.config
        shapes = {
            "conv_a": (1, c.features),
            "res_b1": (c.features, c.features),
            "res_b2": (c.features, c.features),
            "logits": (c.features, c.num_centers),
        }
        params = {}
        for key, name in zip(jax.random.split(rng, len(LAYERS)), LAYERS):
            cin, cout = shapes[name]
            taps = len(TAPS_A if name == "conv_a" else TAPS_B)
            # Glorot/Xavier uniform over the unmasked taps (the masked ones are never read).
            limit = np.sqrt(6.0 / (taps * cin + taps * cout))
            params[name] = {
                "kernel": jax.random.uniform(key, (*KERNEL, cin, cout), jnp.float32, -limit, limit),
                "bias": jnp.zeros((cout,), jnp.float32),
            }
        return params

    # --- the dense pass ---------------------------------------------------------------------------------------
    def logits(self, params, values: Array, pad: Array) -> Array:
        """Exact logits (N, K, h, w, L) of every symbol of `values` (N, K, h, w) (from `input_values`), padded
        with `pad` (from `pad_value`). Training (teacher forced) and the encoder's one dense pass."""
        x = exact.exact_input(values[..., None], INPUT_BITS, INPUT_LIMIT)
        x = x.map(lambda v: jnp.pad(v, ((0, 0), *PAD, (0, 0)), constant_values=pad))
        a1 = exact.relu_to_grid(exact.conv(x, params["conv_a"], padding="VALID", taps=TAPS_A, name="conv_a"))
        a2 = exact.relu_to_grid(exact.conv(a1, params["res_b1"], padding="VALID", taps=TAPS_B, name="res_b1"))
        a3 = exact.conv(a2, params["res_b2"], padding="VALID", taps=TAPS_B, name="res_b2")
        a3 = _signed_to_grid(exact.add(a3, a1.map(_crop), name="residual"))
        out = exact.conv(a3, params["logits"], padding="VALID", taps=TAPS_B, name="logits")
        return jnp.maximum(out.value, 0.0) if self.config.logit_relu else out.value

    def float_logits(self, params, values: Array, pad: Array) -> Array:
        """The float32 twin: the same layers with the raw (unrounded) weights and inputs, plain ReLUs, no
        grids, no logit rounding. Used only to measure what exactness costs; never for coding."""
        from lcomp.nn.im2col import im2col_conv

        def conv(x, name, taps):
            p = params[name]
            return im2col_conv(x, p["kernel"], ((0, 0),) * 3, taps=taps,
                               precision=jax.lax.Precision.HIGHEST) + p["bias"]

        x = jnp.pad(values[..., None], ((0, 0), *PAD, (0, 0)), constant_values=pad)
        a1 = jax.nn.relu(conv(x, "conv_a", TAPS_A))
        a2 = jax.nn.relu(conv(a1, "res_b1", TAPS_B))
        a3 = conv(a2, "res_b2", TAPS_B) + _crop(a1)
        out = conv(a3, "logits", TAPS_B)
        return jax.nn.relu(out) if self.config.logit_relu else out

    # --- logits -> what the coder and the loss use ----------------------------------------------------------
    logit_index = staticmethod(LOGITS.index)

    @staticmethod
    def frequencies(logit_index: np.ndarray) -> np.ndarray:
        """(n, L) integer frequencies out of 2^16 for (n, L) table indices (integer arithmetic only)."""
        return categorical_frequencies(logit_index, LOGITS.steps_per_unit, LOGITS.limit, FREQUENCY_PRECISION)

    @staticmethod
    def bits(logits: Array, symbols: Array) -> Array:
        """-log2 p(symbol) per symbol under the rounded logits the coder sees (training cross-entropy)."""
        return LOGITS.categorical_bits(logits, symbols)


# --- wavefront decoding with cached activations ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layer:
    """One layer's output extent in volume coordinates and the flat layout of its cache."""

    lo: tuple[int, int, int]  # first coordinate (d, h, w)
    size: tuple[int, int, int]

    def flat(self, d, h, w):
        return ((d - self.lo[0]) * self.size[1] + (h - self.lo[1])) * self.size[2] + (w - self.lo[2])

    @property
    def count(self) -> int:
        return int(np.prod(self.size))


def _geometry(depth: int, height: int, width: int) -> list[_Layer]:
    """Extents of the input (margin 4) and of layers 1..4 (margin 4 - l; depth only before, since the
    depth padding is (4, 0))."""
    out = []
    for margin in (4, 3, 2, 1, 0):
        out.append(_Layer((-margin, -margin, -margin), (depth + margin, height + 2 * margin, width + 2 * margin)))
    return out


def front_range(depth: int, height: int, width: int) -> tuple[int, int]:
    """(first, last) front t the wavefront runs: from the margin of layer 1 to the last symbol."""
    return -3 * 7, 4 * (depth - 1) + 2 * (height - 1) + (width - 1)


class Wavefront:
    """The decoder's context model for one (K, h, w) volume: activation caches on the device, one jitted step
    per front. `step(t, previous)` writes the symbols of front t - 1 (`previous`: one per (d, h) of the
    volume, the symbol at column t - 1 - 4d - 2h, anything where that column does not exist) and returns the
    logit indices (K * h, L) of front t, one row per (d, h) (valid where column t - 4d - 2h exists)."""

    def __init__(self, model: ContextModel, params, centers, shape, unsent_value):
        self.model = model
        self.shape = tuple(int(s) for s in shape)
        depth, height, width = self.shape
        self.layers = _geometry(depth, height, width)
        self.params = params
        self.values = input_values(jnp.asarray(centers), jnp.arange(len(centers)))  # symbol -> input value
        pad = pad_value(jnp.asarray(centers))
        features = model.config.features
        x = jnp.full(self.layers[0].size, pad, jnp.float32)
        x = x.at[4:, 4:-4, 4:-4].set(jnp.float32(unsent_value))
        self.cache = {
            "x": x.reshape(-1, 1),
            "a1": jnp.zeros((self.layers[1].count, features), jnp.float32),
            "a2": jnp.zeros((self.layers[2].count, features), jnp.float32),
            "a3": jnp.zeros((self.layers[3].count, features), jnp.float32),
        }
        self._step = _compiled_step(model, self.shape)

    def step(self, t: int, previous: np.ndarray) -> np.ndarray:
        self.cache, index = self._step(self.params, self.values, self.cache, jnp.int32(t),
                                       jnp.asarray(previous, jnp.int32))
        return np.asarray(index)


@functools.lru_cache(maxsize=8)
def _compiled_step(model: ContextModel, shape):
    depth, height, width = shape
    layers = _geometry(depth, height, width)
    dd, hh = np.meshgrid(np.arange(depth), np.arange(height), indexing="ij")
    real_d, real_h = jnp.asarray(dd.reshape(-1)), jnp.asarray(hh.reshape(-1))

    def candidates(layer: _Layer, t):
        """Every (d, h) of the layer's extent with its column w = t - 4d - 2h; valid where w exists."""
        d = jnp.arange(layer.lo[0], layer.lo[0] + layer.size[0])[:, None]
        h = jnp.arange(layer.lo[1], layer.lo[1] + layer.size[1])[None, :]
        d, h = jnp.broadcast_arrays(d, h)
        d, h = d.reshape(-1), h.reshape(-1)
        w = t - 4 * d - 2 * h
        valid = (w >= layer.lo[2]) & (w < layer.lo[2] + layer.size[2])
        return d, h, jnp.clip(w, layer.lo[2], layer.lo[2] + layer.size[2] - 1), valid

    def layer_at(params, name, taps, below: _Layer, prev_cache, d, h, w, bits, units):
        """The exact convolution at coordinates (d, h, w), reading `prev_cache` (the layer below)."""
        # Kernel tap (kd, kh, kw) reads the layer below at (d - 1 + kd, h - 1 + kh, w - 1 + kw).
        offsets = jnp.asarray([below.flat(kd - 1, kh - 1, kw - 1) - below.flat(0, 0, 0) for kd, kh, kw in taps])
        index = below.flat(d, h, w)[:, None] + offsets[None, :]
        patches = exact.Exact(prev_cache[index], bits, units)  # (n, taps, C): a 1-D "signal" of the taps
        rows = params[name]["kernel"][tuple(np.asarray(taps).T)]  # (taps, C_in, C_out)
        out = exact.conv(patches, {"kernel": rows, "bias": params[name]["bias"]}, padding="VALID", name=name)
        return exact.Exact(out.value[:, 0, :], out.bits, out.units)

    def scatter(cache, layer: _Layer, d, h, w, valid, value):
        index = jnp.where(valid, layer.flat(d, h, w), layer.count)  # out of range: dropped
        return cache.at[index].set(value, mode="drop")

    @functools.partial(jax.jit, donate_argnums=(2,))
    def step(params, values, cache, t, previous):
        cache = dict(cache)
        # The symbols of front t - 1 enter the input.
        w_prev = t - 1 - 4 * real_d - 2 * real_h
        valid = (w_prev >= 0) & (w_prev < width)
        x_index = jnp.where(valid, layers[0].flat(real_d, real_h, jnp.clip(w_prev, 0, width - 1)), layers[0].count)
        cache["x"] = cache["x"].at[x_index].set(values[previous][:, None], mode="drop")
        x_bits, x_units = INPUT_BITS, int(INPUT_LIMIT * 2**INPUT_BITS)
        # Layer 1 (mask A), 2 (mask B): clipped ReLUs onto the activation grid.
        act = GRID.activation_bits, GRID.activation_limit
        d, h, w, ok = candidates(layers[1], t)
        a1 = exact.relu_to_grid(layer_at(params, "conv_a", TAPS_A, layers[0], cache["x"], d, h, w, x_bits, x_units))
        cache["a1"] = scatter(cache["a1"], layers[1], d, h, w, ok, a1.value)
        d, h, w, ok = candidates(layers[2], t)
        a2 = exact.relu_to_grid(layer_at(params, "res_b1", TAPS_B, layers[1], cache["a1"], d, h, w, *act))
        cache["a2"] = scatter(cache["a2"], layers[2], d, h, w, ok, a2.value)
        # Layer 3: convolution + the residual (a1 at the same coordinate), rounded onto the signed grid.
        d, h, w, ok = candidates(layers[3], t)
        conv3 = layer_at(params, "res_b2", TAPS_B, layers[2], cache["a2"], d, h, w, *act)
        skip = exact.Exact(cache["a1"][layers[1].flat(d, h, w)], *act)
        a3 = _signed_to_grid(exact.add(conv3, skip, name="residual"))
        cache["a3"] = scatter(cache["a3"], layers[3], d, h, w, ok, a3.value)
        # Logits at the volume's own positions of front t.
        d, h, w, _ = candidates(layers[4], t)
        out = layer_at(params, "logits", TAPS_B, layers[3], cache["a3"], d, h, w, RESIDUAL_BITS, RESIDUAL_LIMIT)
        logits = jnp.maximum(out.value, 0.0) if model.config.logit_relu else out.value
        return cache, LOGITS.index(logits)

    return step
