"""Convolutional recurrent cells with separate input and hidden kernels (Toderici et al. 2017).

Flax's own ``ConvLSTMCell`` uses one kernel size and one stride for both convolutions, and Linen has no
convolutional GRU. The recurrent coder needs, per layer, an *input* kernel (e.g. 3x3, stride 2 in the
encoder) and a *hidden* kernel (1x1 or 3x3, always stride 1, applied at the layer's output resolution),
so both cells are written here.

Both cells follow Flax's cell convention: ``new_carry, output = cell(carry, inputs)``, NHWC tensors,
'SAME' padding (TensorFlow style: a stride-2 convolution pads bottom/right), float32 by default. The
carry of a layer is

* ``ConvGRUCell``: the hidden state ``h`` (one array ``N x H' x W' x features``);
* ``ConvLSTMCell``: the pair ``(c, h)`` (Flax's order), both ``N x H' x W' x features``;

where ``H' = ceil(H / stride)``. All states start at zero (``initial_state`` / ``initialize_carry``).

Speed: every gate that reads the same tensor through the same kernel shares one convolution (one input
convolution produces all gates; the LSTM's hidden convolution produces all four gates; the GRU's update
and reset hidden convolutions are fused). XLA:CPU runs large fused convolutions close to matmul speed,
while many small ones and extra elementwise passes are memory bound. The convolutions are
:class:`lcomp.nn.blocks.Conv2D` (im2col gradients), which avoids XLA:CPU's very slow convolutions on the
2x2 and 4x4 maps of 32x32 training patches.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

from lcomp.nn.blocks import Conv2D

Array = jax.Array
Initializer = Callable[..., Array]

__all__ = ["ConvGRUCell", "ConvLSTMCell"]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """Normalise ``3`` or ``(3, 3)`` to a tuple of two ints."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {value!r}")
    return value  # type: ignore[return-value]


def _output_size(size: int, stride: int) -> int:
    """Spatial size after a 'SAME' convolution with this stride."""
    return -(-size // stride)


class _ConvRNNBase(nn.Module):
    """Fields and helpers shared by the conv-GRU and conv-LSTM cells."""

    features: int
    input_kernel_size: int | tuple[int, int] = (3, 3)
    hidden_kernel_size: int | tuple[int, int] = (1, 1)
    strides: int | tuple[int, int] = (1, 1)
    use_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()

    def _conv(self, features: int, kernel: int | tuple[int, int], strides, name: str) -> Conv2D:
        return Conv2D(
            features,
            kernel_size=_pair(kernel),
            strides=_pair(strides),
            padding="SAME",
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            name=name,
        )

    def state_shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Shape of one state tensor; ``height``/``width`` are the layer's OUTPUT resolution."""
        return (batch, height, width, self.features)

    def output_resolution(self, height: int, width: int) -> tuple[int, int]:
        """Resolution of the state and output for an input of ``height x width``."""
        sh, sw = _pair(self.strides)
        return _output_size(height, sh), _output_size(width, sw)


class ConvGRUCell(_ConvRNNBase):
    """Convolutional GRU, Toderici et al. 2017 eqs. 11-13.

    ::

        z = sigmoid(W_z * x + U_z * h)
        r = sigmoid(W_r * x + U_r * h)
        h' = (1 - z) . h + z . tanh(W * x + U * (r . h))

    ``z`` weights the NEW candidate (Flax's ``GRUCell`` uses the opposite convention). ``W`` convolutions
    use ``input_kernel_size`` and ``strides``; ``U`` convolutions use ``hidden_kernel_size`` and stride 1.
    The candidate's hidden convolution acts on ``r . h`` and so cannot be fused with the other two.

    ``residual_output=True`` (UNVERIFIED guess at T17's "Residual GRU", spec 4.3): the layer output is
    ``h' + conv1x1(x)`` (stride-matched projection of the input) while the carry stays ``h'``.

    Call: ``h_new, output = cell(h, x)``; ``h`` has shape ``state_shape(N, H/stride, W/stride)``.
    """

    residual_output: bool = False

    def initial_state(self, batch: int, height: int, width: int) -> Array:
        """Zero hidden state at the layer's output resolution ``height x width``."""
        return jnp.zeros(self.state_shape(batch, height, width), self.dtype)

    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Array:
        """Flax-style zero carry for inputs of shape ``(N, H, W, C)``."""
        del rng
        batch, height, width = input_shape[0], input_shape[-3], input_shape[-2]
        return self.initial_state(batch, *self.output_resolution(height, width))

    @nn.compact
    def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
        h = carry
        c = self.features
        # One input convolution for the update gate, reset gate and candidate (3C output channels).
        x_gates = self._conv(3 * c, self.input_kernel_size, self.strides, "input_conv")(inputs)
        # The update and reset hidden convolutions read the same tensor h: fuse them (2C channels).
        h_gates = self._conv(2 * c, self.hidden_kernel_size, 1, "hidden_gate_conv")(h)
        x_z, x_r, x_n = jnp.split(x_gates, 3, axis=-1)
        h_z, h_r = jnp.split(h_gates, 2, axis=-1)
        z = nn.sigmoid(x_z + h_z)
        r = nn.sigmoid(x_r + h_r)
        candidate = jnp.tanh(x_n + self._conv(c, self.hidden_kernel_size, 1, "hidden_candidate_conv")(r * h))
        new_h = h + z * (candidate - h)  # == (1 - z) h + z candidate, one multiply fewer
        output = new_h
        if self.residual_output:
            output = output + self._conv(c, 1, self.strides, "residual_projection")(inputs)
        return new_h, output

    @nn.nowrap
    def num_feature_axes(self) -> int:
        return 3


class ConvLSTMCell(_ConvRNNBase):
    """Convolutional LSTM (spec 4.1), gate order (i, f, j, o)::

        [i, f, j, o] = split(W * x + U * h)
        c' = sigmoid(f + forget_bias) . c + sigmoid(i) . tanh(j)
        h' = sigmoid(o) . tanh(c')          # also the layer output

    ``forget_bias`` is a constant added inside the forget sigmoid (0 as in the PyTorch port; the
    official TensorFlow code initialises the forget bias to 1). Carry: ``(c, h)``.
    """

    forget_bias: float = 0.0

    def initial_state(self, batch: int, height: int, width: int) -> tuple[Array, Array]:
        """Zero ``(c, h)`` at the layer's output resolution ``height x width``."""
        zeros = jnp.zeros(self.state_shape(batch, height, width), self.dtype)
        return (zeros, zeros)

    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> tuple[Array, Array]:
        """Flax-style zero carry for inputs of shape ``(N, H, W, C)``."""
        del rng
        batch, height, width = input_shape[0], input_shape[-3], input_shape[-2]
        return self.initial_state(batch, *self.output_resolution(height, width))

    @nn.compact
    def __call__(self, carry: tuple[Array, Array], inputs: Array) -> tuple[tuple[Array, Array], Array]:
        c_prev, h_prev = carry
        n = self.features
        gates = self._conv(4 * n, self.input_kernel_size, self.strides, "input_conv")(inputs)
        gates = gates + self._conv(4 * n, self.hidden_kernel_size, 1, "hidden_conv")(h_prev)
        i, f, j, o = jnp.split(gates, 4, axis=-1)
        c_new = nn.sigmoid(f + self.forget_bias) * c_prev + nn.sigmoid(i) * jnp.tanh(j)
        h_new = nn.sigmoid(o) * jnp.tanh(c_new)
        return (c_new, h_new), h_new

    @nn.nowrap
    def num_feature_axes(self) -> int:
        return 3
