"""Exact integer networks in float32: the probability models both ends of a file evaluate identically.

Encoder and decoder must derive identical probability tables, or the range decoder desynchronises. Float
convolutions do not give identical results across thread counts, CPUs or accelerators (a plain float model
desynchronised between 1 and 2 XLA:CPU threads). An exact network is an integer network written in
float32:

* weights are multiples of 2^-8 in [-127, 127] * 2^-8 (`quantize_weight`), biases multiples of the grid of
  the sum they join, clipped to |b| <= 8 (`quantize_bias`), activations a clipped ReLU onto 2^-4 in
  [0, 63] * 2^-4 (`relu_to_grid`), inputs small integers or multiples of a power of two;
* every sum therefore is an integer multiple of its grid; while its worst case stays below 2^24 grid units,
  every float32 partial sum is exact, in ANY summation order (blocked, threaded, fused: all the same);
* convolutions are one gathered-patch contraction at `Precision.HIGHEST` (`lcomp.nn.im2col`: no Winograd,
  FFT or TF32 shortcuts, which would round);
* logits are rounded onto a grid and mapped to integer frequencies by tables computed with integer or
  `decimal` arithmetic (`lcomp.entropy.frequencies`), the same on every machine.

Values travel as `Exact(value, bits, units)`: the array, the fraction bits of its grid, and the worst case of
|value| in grid units over every input and every parameter the grids allow. Each op below updates `units`
and raises `ConfigError` the moment a sum could reach 2^24, at trace time. So the exactness check walks any
stack of these ops automatically, for any network, with no hand-written bound; `check_exactness(fn, ...)`
runs it on abstract inputs (no computation) when a model is built.

Training sees the very same forward pass; rounding passes gradients straight through
(`lcomp.quantize.round_ste` / `floor_ste`, whose forward value is exactly the rounded number).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lcomp.entropy import frequencies
from lcomp.errors import ConfigError
from lcomp.nn.im2col import im2col_conv
from lcomp.quantize import floor_ste, round_ste

Array = jax.Array

#: float32 represents every integer of magnitude <= 2^24 exactly: sums stay below it in grid units.
EXACT_LIMIT = 2**24


@dataclasses.dataclass(frozen=True)
class Grid:
    """The number grids of an exact network (defaults: 8-bit weights, 6-bit activations)."""

    weight_bits: int = 8  # weights are multiples of 2^-8 ...
    weight_limit: int = 127  # ... in [-127, 127] * 2^-8 (|w| < 0.5)
    activation_bits: int = 4  # activations are multiples of 2^-4 ...
    activation_limit: int = 63  # ... in [0, 63] * 2^-4
    bias_limit: float = 8.0  # |bias| <= 8, on the grid of the sum it joins


DEFAULT_GRID = Grid()


@dataclasses.dataclass(frozen=True)
class Exact:
    """An array on the grid 2^-bits whose magnitude is at most `units` grid units for every possible input."""

    value: Array
    bits: int
    units: int

    @property
    def shape(self):
        return self.value.shape

    def map(self, fn: Callable[[Array], Array]) -> "Exact":
        """Applies a value-preserving rearrangement (slice, reshape, transpose, pad with 0) to the array."""
        return Exact(fn(self.value), self.bits, self.units)


def _check(units: int, what: str) -> int:
    if units >= EXACT_LIMIT:
        raise ConfigError(
            f"exact network: {what} can reach {units} grid units >= 2^24, so float32 sums would round; "
            "use fewer channels/taps or a coarser grid"
        )
    return int(units)


def exact_input(x, bits: int, max_abs: float) -> Exact:
    """Wraps a network input: values are multiples of 2^-bits with |x| <= max_abs."""
    return Exact(jnp.asarray(x, jnp.float32), int(bits), _check(math.ceil(max_abs * 2**bits), "an input"))


# --- parameters onto their grids (straight-through gradients) -----------------------------------------------


def quantize_weight(w, grid: Grid = DEFAULT_GRID):
    """A weight on the 2^-weight_bits grid, clipped to the weight limit; straight-through inside the range."""
    scale = 2.0**grid.weight_bits
    return jnp.clip(round_ste(w * scale), -grid.weight_limit, grid.weight_limit) / scale


def quantize_bias(b, bits: int, grid: Grid = DEFAULT_GRID):
    """A bias on the 2^-bits grid (the grid of the sum it is added to), |b| <= grid.bias_limit."""
    scale = 2.0**bits
    limit = grid.bias_limit * scale
    return jnp.clip(round_ste(b * scale), -limit, limit) / scale


def bias_units(bits: int, grid: Grid = DEFAULT_GRID) -> int:
    return int(grid.bias_limit * 2**bits)


# --- ops on Exact values ------------------------------------------------------------------------------------


def conv(
    x: Exact,
    params: dict,
    *,
    padding: Sequence[tuple[int, int]] | str = "SAME",
    taps: Sequence[tuple[int, ...]] | None = None,
    pad_value: float = 0.0,
    use_bias: bool = True,
    grid: Grid = DEFAULT_GRID,
    name: str = "conv",
) -> Exact:
    """N-D stride-1 convolution of an exact value with `params["kernel"]` (`*kernel_size, C_in, C_out`) on the
    weight grid, plus `params["bias"]`; reads only `taps` (a causal mask's unmasked taps) if given.

    `padding`: "SAME" (centred, odd kernels), "VALID" or one (before, after) pair per spatial axis, filled
    with `pad_value` (which must lie on x's grid within x's bound, e.g. a quantizer's first centre).
    """
    kernel = params["kernel"]
    kernel_size = tuple(kernel.shape[:-2])
    c_in = kernel.shape[-2]
    if x.value.shape[-1] != c_in:
        raise ConfigError(f"{name}: input has {x.value.shape[-1]} channels, kernel expects {c_in}")
    pads = _pads(padding, kernel_size)
    pad_units = abs(pad_value) * 2**x.bits
    if pad_units != int(pad_units) or pad_units > x.units:
        raise ConfigError(f"{name}: pad value {pad_value} is not on the input's grid 2^-{x.bits} within its bound")
    num_taps = len(taps) if taps is not None else math.prod(kernel_size)
    bits = x.bits + grid.weight_bits
    units = num_taps * c_in * grid.weight_limit * x.units + (bias_units(bits, grid) if use_bias else 0)
    _check(units, f"{name} ({num_taps} taps x {c_in} channels)")
    y = im2col_conv(
        x.value,
        quantize_weight(kernel, grid),
        pads,
        taps=None if taps is None else tuple(tuple(int(i) for i in t) for t in taps),
        precision=jax.lax.Precision.HIGHEST,
        pad_value=pad_value,
    )
    if use_bias:
        y = y + quantize_bias(params["bias"], bits, grid)
    return Exact(y, bits, units)


def add_bias(x: Exact, bias, grid: Grid = DEFAULT_GRID, name: str = "bias") -> Exact:
    """x + a learned bias (broadcast), the bias on x's grid, |bias| <= grid.bias_limit."""
    units = _check(x.units + bias_units(x.bits, grid), name)
    return Exact(x.value + quantize_bias(bias, x.bits, grid), x.bits, units)


def relu_to_grid(x: Exact, grid: Grid = DEFAULT_GRID) -> Exact:
    """Clipped ReLU onto the activation grid: floor(x * 2^a) clipped to [0, limit], times 2^-a."""
    if x.bits < grid.activation_bits:
        raise ConfigError("relu_to_grid: the input grid is coarser than the activation grid")
    scale = 2.0**grid.activation_bits
    value = jnp.clip(floor_ste(x.value * scale), 0, grid.activation_limit) / scale
    return Exact(value, grid.activation_bits, grid.activation_limit)


def _aligned_units(parts: Sequence[Exact]) -> tuple[int, list[int]]:
    bits = max(p.bits for p in parts)
    return bits, [p.units * 2 ** (bits - p.bits) for p in parts]


def add(*parts: Exact, name: str = "add") -> Exact:
    """The exact sum (on the finest of the grids)."""
    bits, units = _aligned_units(parts)
    value = parts[0].value
    for p in parts[1:]:
        value = value + p.value
    return Exact(value, bits, _check(sum(units), name))


def select(mask, x: Exact) -> Exact:
    """x where a 0/1 `mask` is 1, else 0 (a causal input mask; bounds unchanged)."""
    return Exact(x.value * jnp.asarray(mask, x.value.dtype), x.bits, x.units)


def concat(parts: Sequence[Exact], axis: int = -1) -> Exact:
    """Concatenation (bounds: the largest, on the finest grid)."""
    bits, units = _aligned_units(parts)
    return Exact(jnp.concatenate([p.value for p in parts], axis=axis), bits, max(units))


def _pads(padding, kernel_size) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        if padding == "VALID":
            return tuple((0, 0) for _ in kernel_size)
        if padding == "SAME":
            if any(k % 2 == 0 for k in kernel_size):
                raise ConfigError(f"SAME padding needs odd kernel sizes, got {kernel_size}")
            return tuple((k // 2, k // 2) for k in kernel_size)
        raise ConfigError(f"padding must be 'SAME', 'VALID' or (before, after) pairs, got {padding!r}")
    pads = tuple((int(a), int(b)) for a, b in padding)
    if len(pads) != len(kernel_size):
        raise ConfigError(f"padding needs {len(kernel_size)} (before, after) pairs, got {padding!r}")
    return pads


# --- logits -> table indices --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogitGrid:
    """Logits are rounded to multiples of 1/steps_per_unit and clipped to [-limit, limit] before the table."""

    steps_per_unit: int = 8
    limit: int = 12
    precision: int = 16  # frequency tables sum to 2^precision

    @property
    def num_indices(self) -> int:
        return 2 * self.limit * self.steps_per_unit + 1

    def binary_frequencies(self, index) -> np.ndarray:
        """(..., 2) integer frequencies (bit 0, bit 1) for logit indices of any shape."""
        return frequencies.binary_frequencies(index, self.steps_per_unit, self.limit, self.precision)

    def categorical_frequencies(self, index) -> np.ndarray:
        """(n, L) integer frequencies for (n, L) logit indices (integer arithmetic only)."""
        return frequencies.categorical_frequencies(index, self.steps_per_unit, self.limit, self.precision)

    def index(self, logits) -> Array:
        """The rounded, clipped logit as a table index 0 .. 2 * limit * steps (exact: logits lie on a finer grid)."""
        steps = self.limit * self.steps_per_unit
        return (jnp.clip(jnp.round(logits * self.steps_per_unit), -steps, steps) + steps).astype(jnp.int32)

    def rounded(self, logits) -> Array:
        """What the coder sees, as a float with a straight-through gradient (for training losses)."""
        z = jnp.clip(logits, -self.limit, self.limit)
        return round_ste(z * self.steps_per_unit) / self.steps_per_unit

    def binary_bits(self, logits, bits) -> Array:
        """-log2 p(bit) per bit for training: `bits` in {-1, +1} (0 = not sent, costs 0)."""
        cost = jax.nn.softplus(-self.rounded(logits) * bits) / jnp.log(2.0)
        return jnp.where(bits != 0, cost, 0.0)

    def categorical_bits(self, logits, symbols) -> Array:
        """-log2 p(symbol) per symbol for training: `logits` (..., L), integer `symbols` (...)."""
        log_p = jax.nn.log_softmax(self.rounded(logits), axis=-1)
        return -jnp.take_along_axis(log_p, symbols[..., None], axis=-1)[..., 0] / jnp.log(2.0)


# --- the automatic check ------------------------------------------------------------------------------------


def check_exactness(fn: Callable, *args, **kwargs) -> None:
    """Traces `fn(*args, **kwargs)` abstractly (no computation): every op of an exact network checks its
    worst-case sum, so this raises ConfigError if any layer of the stack could round. Arguments may be
    arrays or `jax.ShapeDtypeStruct`s."""
    jax.eval_shape(fn, *args, **kwargs)
