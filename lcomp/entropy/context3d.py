"""A 3D masked-convolution context model as an exact integer network: Mentzer et al. 2018's `P` (spec
mentzer2018 section 5), which Li et al. 2018's codec also uses for its binary code and its importance map's
bit-planes (L = 2 symbols, `lcomp.codecs.li2018`).

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
LOGITS = exact.LogitGrid(steps_per_unit=8, limit=12, precision=16)
FREQUENCY_PRECISION = LOGITS.precision
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
        return LOGITS.categorical_frequencies(logit_index)

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


#: Fronts run in buckets of a few fixed sizes (fractions of the largest front), one compilation each, so a
#: step does work for about as many positions as its front has, not for the largest front.
BUCKETS = (0.25, 0.5, 0.75, 1.0)


class Wavefront:
    """The decoder's context model for one (K, h, w) volume: activation caches on the device, one jitted step
    per front t (from the margin fronts before the first symbol, `front_range`).

    `positions(t)` are the volume positions (d, h, w) of front t in C order; `step(t, previous)` writes the
    symbols of front t - 1 (`previous`, one per `positions(t - 1)`) into the input and returns the logit
    indices (n, L) of `positions(t)`. Each layer is computed at exactly the coordinates of front t in its
    extent, reading the cached layer below through gathered neighbour indices."""

    def __init__(self, model: ContextModel, params, centers, shape, unsent_value, pad=None):
        """`pad`: the value outside the volume (default `pad_value(centers)`, Mentzer's centers[0])."""
        self.model = model
        self.shape = tuple(int(s) for s in shape)
        depth, height, width = self.shape
        self.layers = _geometry(depth, height, width)
        self.params = params
        self.values = input_values(jnp.asarray(centers), jnp.arange(len(centers)))  # symbol -> input value
        pad = pad_value(jnp.asarray(centers)) if pad is None else jnp.float32(pad)
        features = model.config.features
        x = jnp.full(self.layers[0].size, pad, jnp.float32)
        x = x.at[4:, 4:-4, 4:-4].set(jnp.float32(unsent_value))
        self.cache = {
            "x": x.reshape(-1, 1),
            "a1": jnp.zeros((self.layers[1].count, features), jnp.float32),
            "a2": jnp.zeros((self.layers[2].count, features), jnp.float32),
            "a3": jnp.zeros((self.layers[3].count, features), jnp.float32),
        }
        self.first, self.last = front_range(depth, height, width)
        self._fronts = [None] + [_by_front(layer, self.first, self.last) for layer in self.layers[1:]]
        largest = max(int(np.max(np.diff(starts))) for _, starts in self._fronts[1:])
        fractions = BUCKETS if largest > 512 else (1.0,)  # small volumes: one compilation
        self.buckets = sorted({max(32, -(-int(largest * f) // 32) * 32) for f in fractions})
        self._step = _compiled_step(model, self.shape)

    def positions(self, t: int, layer: int = 4):
        coords, starts = self._fronts[layer]
        k = t - self.first
        if not 0 <= k < len(starts) - 1:
            return coords[:0].T
        return coords[starts[k] : starts[k + 1]].T

    def _indices(self, t: int):
        """(9, B) int32: per layer the cache rows to write and the flat base index of the layer below."""
        L = self.layers
        cols = [self.positions(t - 1)]  # front t - 1's volume positions: written into the input
        for layer in (1, 2, 3, 4):
            cols.append(self.positions(t, layer))
        size = max(c.shape[1] for c in cols)
        bucket = next(b for b in self.buckets if b >= size)
        out = np.zeros((9, bucket), np.int32)
        d, h, w = cols[0]
        out[0] = L[0].count
        out[0, : d.size] = L[0].flat(d, h, w)
        for row, layer in ((1, 1), (3, 2), (5, 3)):
            d, h, w = cols[layer]
            out[row] = L[layer].count  # padding: out of range, dropped
            out[row, : d.size] = L[layer].flat(d, h, w)
            out[row + 1, : d.size] = L[layer - 1].flat(d, h, w)
        d, h, w = cols[3]
        out[7, : d.size] = L[1].flat(d, h, w)  # layer 3's residual: a1 at the same coordinates
        d, h, w = cols[4]
        out[8, : d.size] = L[3].flat(d, h, w)
        return out

    def step(self, t: int, previous: np.ndarray) -> np.ndarray:
        index = self._indices(t)
        symbols = np.zeros(index.shape[1], np.int32)
        symbols[: len(previous)] = previous
        self.cache, logits = self._step(self.params, self.values, self.cache, jnp.asarray(index),
                                        jnp.asarray(symbols))
        return np.asarray(logits)[: self.positions(t).shape[1]]


def _by_front(layer: _Layer, first: int, last: int):
    """Every coordinate of a layer's extent, sorted by front (C order inside a front), and the start of each
    front first..last in that list."""
    d, h, w = np.meshgrid(*(np.arange(lo, lo + n) for lo, n in zip(layer.lo, layer.size)), indexing="ij")
    coords = np.stack([d.reshape(-1), h.reshape(-1), w.reshape(-1)], axis=1)
    t = 4 * coords[:, 0] + 2 * coords[:, 1] + coords[:, 2]
    keep = t <= last
    coords, t = coords[keep], t[keep]
    order = np.argsort(t, kind="stable")
    coords, t = coords[order], t[order]
    starts = np.searchsorted(t, np.arange(first, last + 2))
    return coords.astype(np.int64), starts


@functools.lru_cache(maxsize=8)
def _compiled_step(model: ContextModel, shape):
    layers = _geometry(*shape)

    def layer_at(params, name, taps, below: _Layer, prev_cache, base, bits, units):
        """The exact convolution at the positions whose flat index in the layer below is `base`."""
        # Kernel tap (kd, kh, kw) reads the layer below at (d - 1 + kd, h - 1 + kh, w - 1 + kw).
        offsets = jnp.asarray([below.flat(kd - 1, kh - 1, kw - 1) - below.flat(0, 0, 0) for kd, kh, kw in taps])
        patches = exact.Exact(prev_cache[base[:, None] + offsets[None, :]], bits, units)  # (n, taps, C)
        rows = params[name]["kernel"][tuple(np.asarray(taps).T)]  # (taps, C_in, C_out)
        out = exact.conv(patches, {"kernel": rows, "bias": params[name]["bias"]}, padding="VALID", name=name)
        return exact.Exact(out.value[:, 0, :], out.bits, out.units)

    @functools.partial(jax.jit, donate_argnums=(2,))
    def step(params, values, cache, index, previous):
        cache = dict(cache)
        cache["x"] = cache["x"].at[index[0]].set(values[previous][:, None], mode="drop")
        x_bits, x_units = INPUT_BITS, int(INPUT_LIMIT * 2**INPUT_BITS)
        act = GRID.activation_bits, GRID.activation_limit
        a1 = exact.relu_to_grid(layer_at(params, "conv_a", TAPS_A, layers[0], cache["x"], index[2], x_bits, x_units))
        cache["a1"] = cache["a1"].at[index[1]].set(a1.value, mode="drop")
        a2 = exact.relu_to_grid(layer_at(params, "res_b1", TAPS_B, layers[1], cache["a1"], index[4], *act))
        cache["a2"] = cache["a2"].at[index[3]].set(a2.value, mode="drop")
        conv3 = layer_at(params, "res_b2", TAPS_B, layers[2], cache["a2"], index[6], *act)
        skip = exact.Exact(cache["a1"][index[7]], *act)
        a3 = _signed_to_grid(exact.add(conv3, skip, name="residual"))
        cache["a3"] = cache["a3"].at[index[5]].set(a3.value, mode="drop")
        out = layer_at(params, "logits", TAPS_B, layers[3], cache["a3"], index[8], RESIDUAL_BITS, RESIDUAL_LIMIT)
        logits = jnp.maximum(out.value, 0.0) if model.config.logit_relu else out.value
        return cache, LOGITS.index(logits)

    return step
