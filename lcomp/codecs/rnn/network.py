"""The recurrent coder's networks: Toderici et al. 2017 (T17) with Johnston et al. 2018 (J18) switches.

Data flow of one iteration ``t = 1..T`` (spec rnn_coder sections 2-3)::

    r_{t-1} = x - x_hat_{t-1}                 (r_0 = x, x_hat_0 = 0)
    E:  E-Conv (3x3/2) -> E-RNN#1..3 (each stride 2 on its input conv)      H/16 x W/16 x 512
    B:  1x1 conv -> tanh -> binarize                                       b_t in {-1,+1}^(H/16 x W/16 x 32)
    D:  D-Conv#1 (1x1) -> [D-RNN#k -> depth_to_space x2] for k = 1..4 -> D-Conv#2 (1x1) -> activation
    x_hat_t = D(b_t)                        one_shot  (gamma = 0)
    x_hat_t = x_hat_{t-1} + D(b_t)          additive  (gamma = 1)
    x_hat_t = x_hat_{t-1} + D(b_t) / ZOH(g_{t-1}),  g_t = G(x_hat_t)     residual_scaling (UNVERIFIED)

Images are float ``N x H x W x 3`` in ``[-0.5, 0.5]`` with ``H, W`` multiples of 16 (of ``gain_block``,
32 by default, for residual scaling). Every iteration emits ``32 * (H/16) * (W/16) = H*W/8`` bits, i.e.
1/8 bpp before entropy coding.

Priming and diffusion (J18 section 9.3; the mechanics are not confirmed by the paper, these are lcomp's
definitions, switched by ``priming_steps`` and ``diffusion_steps``):

* Let ``extra_t = priming_steps`` for the first iteration and ``diffusion_steps`` for every later one.
* Encoder, iteration t: run E ``extra_t`` times on the input of this iteration (``r_{t-1}``, scaled in
  residual-scaling mode); these runs only update the hidden states, their binarizer outputs are never
  computed. Then run E once more; that run's code is ``b_t``. So ``priming_steps = k`` means ``k`` EXTRA
  runs (``k + 1`` in total) -- the spec's "k-priming" (k runs in total) is ``priming_steps = k - 1``
  if that reading of J18 is the right one.
* Decoder, iteration t: after receiving ``b_t`` run D ``extra_t`` times on ``b_t`` (hidden states only;
  no image, no loss), then once more to produce ``x_hat_t``. Priming steps therefore run on ``b_1`` and
  diffusion steps on the newest bits ``b_t`` (never on bits of a later iteration), so the decoder needs
  nothing it does not already have, and priming is exactly diffusion applied to the first iteration.
* No extra step emits bits, images or loss terms: the raw rate is independent of k and d.

Entry points (all pure functions of explicit parameters, jit-able):

* :meth:`RNNCoderNetwork.run_iterations` -- the joint scan used in training (stochastic binarizer) and at
  encode time (deterministic), returning bits, reconstructions and per-iteration distortion.
* :meth:`RNNCoderNetwork.encode_iterations` -- the bits only (deterministic binarizer).
* :meth:`RNNCoderNetwork.decode_iterations` -- the decoder alone on given bits; it reproduces the
  reconstructions of the joint scan for the same bits. Bits may contain 0 (SABR: a position that
  stopped sending); 0 is the neutral value between -1 and +1 and is decoded like any other input.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import flax.linen as nn
from jax import lax

from lcomp.errors import ConfigError, ImageError
from lcomp.nn.blocks import Conv2D, depth_to_space
from lcomp.nn.conv_rnn import ConvGRUCell, ConvLSTMCell
from lcomp.quantize import binarize

Array = jax.Array
Params = Any

__all__ = [
    "RNNCoderConfig",
    "RNNEncoder",
    "RNNDecoder",
    "GainEstimator",
    "RNNCoderNetwork",
    "IterationOutputs",
]

_RECONSTRUCTIONS = ("one_shot", "additive", "residual_scaling")
_GAIN_BLOCKS = (8, 16, 32, 64)  # gain_block: pixels per gain along each axis (one stride-2 conv per halving)
_ACTIVATIONS = ("auto", "half_tanh", "tanh", "none")


def _as_tuple(value):
    """Lists (from ConfigDicts / JSON) -> tuples, recursively, so the config stays hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class RNNCoderConfig:
    """Everything that shapes the network. Defaults = the T17 layer table (spec 3.1) with conv-GRU cells.

    Kernel sizes are ``(height, width)`` pairs; ``*_input_kernels`` are the kernels applied to a layer's
    input, ``*_hidden_kernels`` those applied to its previous hidden state.
    """

    cell: str = "gru"  # "gru" or "lstm"
    residual_gru: bool = False  # UNVERIFIED guess at T17's Residual GRU: output = h + conv1x1(x)
    reconstruction: str = "one_shot"  # "one_shot" (gamma=0), "additive" (gamma=1), "residual_scaling"
    output_activation: str = "auto"  # "auto": half_tanh for one_shot, tanh for additive, none for scaling
    encoder_conv_features: int = 64
    encoder_conv_kernel: tuple[int, int] = (3, 3)
    encoder_rnn_features: tuple[int, ...] = (256, 512, 512)
    encoder_input_kernels: tuple[tuple[int, int], ...] = ((3, 3), (3, 3), (3, 3))
    encoder_hidden_kernels: tuple[tuple[int, int], ...] = ((1, 1), (1, 1), (1, 1))
    bits_per_position: int = 32
    decoder_conv_features: int = 512
    decoder_rnn_features: tuple[int, ...] = (512, 512, 256, 128)
    decoder_input_kernels: tuple[tuple[int, int], ...] = ((3, 3), (3, 3), (3, 3), (3, 3))
    decoder_hidden_kernels: tuple[tuple[int, int], ...] = ((1, 1), (1, 1), (3, 3), (3, 3))
    use_bias: bool = False  # the ports use no bias anywhere
    lstm_forget_bias: float = 0.0
    iterations: int = 16
    priming_steps: int = 0  # extra encoder/decoder steps in the first iteration (J18 uses priming)
    diffusion_steps: int = 0  # extra encoder/decoder steps in every later iteration
    remat: bool = False  # jax.checkpoint each iteration: less memory in backprop, ~1/3 more compute
    gain_features: int = 32  # residual scaling: width of the gain estimator G
    gain_stop_gradient: bool = True  # residual scaling: G sees stop_gradient(x_hat) (G itself still trains)
    # Residual scaling: pixels per gain along each axis. 32 is the Boyyeo port's G (five stride-2 convs);
    # 16 drops one of its 3x3 convs, so the shipped model's 48-pixel training patches fit (rnn_quality/j18_rscale).
    gain_block: int = 32
    # The binarizer in training: "stochastic" (T16/T17: +1 with probability (1+u)/2, spec 5) or
    # "deterministic" (where(u >= 0, 1, -1), the test-time binarizer, with the same straight-through gradient).
    train_binarizer: str = "stochastic"

    def __post_init__(self):
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _as_tuple(getattr(self, field.name)))
        self.validate()

    @classmethod
    def tiny(cls, **overrides) -> "RNNCoderConfig":
        """The same topology with small widths, for tests and CPU smoke runs."""
        fields = dict(
            encoder_conv_features=8,
            encoder_rnn_features=(16, 16, 16),
            decoder_conv_features=16,
            decoder_rnn_features=(16, 16, 16, 8),
            gain_features=4,
        )
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | Any) -> "RNNCoderConfig":
        """Build from a dict or an ``ml_collections.ConfigDict``; unknown keys raise ``ConfigError``."""
        from lcomp.configs import dataclass_from_mapping

        return dataclass_from_mapping(cls, mapping, "RNN coder", convert=_as_tuple)

    def validate(self) -> None:
        """Raise ``ConfigError`` for settings that cannot form a working network."""
        if self.cell not in ("gru", "lstm"):
            raise ConfigError(f"cell must be 'gru' or 'lstm', got {self.cell!r}")
        if self.residual_gru and self.cell != "gru":
            raise ConfigError("residual_gru needs cell='gru'")
        if self.reconstruction not in _RECONSTRUCTIONS:
            raise ConfigError(f"reconstruction must be one of {_RECONSTRUCTIONS}, got {self.reconstruction!r}")
        if self.train_binarizer not in ("stochastic", "deterministic"):
            raise ConfigError(f"train_binarizer must be 'stochastic' or 'deterministic', got {self.train_binarizer!r}")
        if self.output_activation not in _ACTIVATIONS:
            raise ConfigError(f"output_activation must be one of {_ACTIVATIONS}, got {self.output_activation!r}")
        n_enc, n_dec = len(self.encoder_rnn_features), len(self.decoder_rnn_features)
        if len(self.encoder_input_kernels) != n_enc or len(self.encoder_hidden_kernels) != n_enc:
            raise ConfigError("need one encoder input and hidden kernel per encoder RNN layer")
        if len(self.decoder_input_kernels) != n_dec or len(self.decoder_hidden_kernels) != n_dec:
            raise ConfigError("need one decoder input and hidden kernel per decoder RNN layer")
        if n_dec != n_enc + 1:
            # The encoder halves the resolution 1 + n_enc times, the decoder doubles it n_dec times.
            raise ConfigError(f"{n_enc} encoder RNN layers need {n_enc + 1} decoder RNN layers, got {n_dec}")
        if any(f % 4 for f in self.decoder_rnn_features):
            raise ConfigError("decoder RNN widths must be multiples of 4 (depth_to_space x2 follows each)")
        for name in ("iterations", "bits_per_position"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        for name in ("priming_steps", "diffusion_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if self.gain_block not in _GAIN_BLOCKS:
            raise ConfigError(f"gain_block must be one of {_GAIN_BLOCKS}, got {self.gain_block!r}")

    @property
    def downsampling(self) -> int:
        """Pixels per code position along each axis (16 for the paper's network)."""
        return 2 ** (1 + len(self.encoder_rnn_features))

    @property
    def pad_multiple(self) -> int:
        """Image sides must be multiples of this (residual scaling's gain map needs one more halving)."""
        if self.reconstruction == "residual_scaling":
            return max(self.downsampling, self.gain_block)
        return self.downsampling

    @property
    def resolved_output_activation(self) -> str:
        if self.output_activation != "auto":
            return self.output_activation
        return {"one_shot": "half_tanh", "additive": "tanh", "residual_scaling": "none"}[self.reconstruction]


def _make_cell(config: RNNCoderConfig, features, input_kernel, hidden_kernel, stride, name):
    common = dict(
        features=features,
        input_kernel_size=input_kernel,
        hidden_kernel_size=hidden_kernel,
        strides=stride,
        use_bias=config.use_bias,
        name=name,
    )
    if config.cell == "gru":
        return ConvGRUCell(residual_output=config.residual_gru, **common)
    return ConvLSTMCell(forget_bias=config.lstm_forget_bias, **common)


def _run_cells(cells, states: tuple, x: Array, after_each=None) -> tuple[tuple, Array]:
    """One step of a stack of recurrent cells: each cell's output feeds the next (optionally transformed)."""
    new_states = []
    for cell, state in zip(cells, states):
        state, x = cell(state, x)
        new_states.append(state)
        if after_each is not None:
            x = after_each(x)
    return tuple(new_states), x


class RNNEncoder(nn.Module):
    """E-Conv + E-RNN#1..n + the binarizer's 1x1 conv and tanh (everything before ``binarize``).

    Methods (each used through ``apply(..., method=...)``): ``embed`` (E-Conv), ``step`` (one pass of
    the RNN stack), ``code`` (binarizer pre-activation ``u`` in [-1, 1]). ``__call__`` chains them and
    exists so ``init`` creates every parameter.
    """

    config: RNNCoderConfig

    def setup(self):
        c = self.config
        self.input_conv = Conv2D(c.encoder_conv_features, c.encoder_conv_kernel, strides=2, use_bias=c.use_bias)
        self.cells = [
            _make_cell(c, f, ki, kh, 2, f"rnn_{i}")
            for i, (f, ki, kh) in enumerate(
                zip(c.encoder_rnn_features, c.encoder_input_kernels, c.encoder_hidden_kernels)
            )
        ]
        self.binarizer_conv = Conv2D(c.bits_per_position, (1, 1), use_bias=c.use_bias)

    def embed(self, encoder_input: Array) -> Array:
        return self.input_conv(encoder_input)

    def step(self, states: tuple, features: Array) -> tuple[tuple, Array]:
        return _run_cells(self.cells, states, features)

    def code(self, top: Array) -> Array:
        return jnp.tanh(self.binarizer_conv(top).astype(jnp.float32))

    def __call__(self, states: tuple, encoder_input: Array) -> tuple[tuple, Array]:
        states, top = self.step(states, self.embed(encoder_input))
        return states, self.code(top)


class RNNDecoder(nn.Module):
    """D-Conv#1 + [D-RNN#k, depth_to_space x2] + D-Conv#2 and the output activation.

    Methods: ``embed`` (D-Conv#1 on the bits), ``step`` (the RNN stack; returns the full-resolution
    features), ``to_image`` (D-Conv#2 + activation). ``__call__`` chains them for ``init``.
    """

    config: RNNCoderConfig

    def setup(self):
        c = self.config
        self.input_conv = Conv2D(c.decoder_conv_features, (1, 1), use_bias=c.use_bias)
        self.cells = [
            _make_cell(c, f, ki, kh, 1, f"rnn_{i}")
            for i, (f, ki, kh) in enumerate(
                zip(c.decoder_rnn_features, c.decoder_input_kernels, c.decoder_hidden_kernels)
            )
        ]
        self.output_conv = Conv2D(3, (1, 1), use_bias=c.use_bias)

    def embed(self, bits: Array) -> Array:
        return self.input_conv(bits)

    def step(self, states: tuple, features: Array) -> tuple[tuple, Array]:
        return _run_cells(self.cells, states, features, after_each=lambda x: depth_to_space(x, 2))

    def to_image(self, features: Array) -> Array:
        y = self.output_conv(features)
        activation = self.config.resolved_output_activation
        if activation == "half_tanh":
            return 0.5 * jnp.tanh(y)
        if activation == "tanh":
            return jnp.tanh(y)
        return y

    def __call__(self, states: tuple, bits: Array) -> tuple[tuple, Array]:
        states, features = self.step(states, self.embed(bits))
        return states, self.to_image(features)


class GainEstimator(nn.Module):
    """Residual scaling's gain network G (spec 2.3, from the Boyyeo port; UNVERIFIED against T17).

    ``log2(block) - 1`` 3x3 stride-2 convs (ELU) and a 2x2 stride-2 conv to one channel, ELU + 2, so
    ``g >= 1``: one gain per ``block x block`` block (the port: four convs, ``block = 32``).
    """

    features: int = 32
    block: int = 32

    @nn.compact
    def __call__(self, image: Array) -> Array:
        x = image
        num_halving_convs = self.block.bit_length() - 2  # log2(block) - 1; the last conv halves once more
        for i in range(num_halving_convs):
            x = nn.elu(Conv2D(self.features, (3, 3), strides=2, name=f"conv_{i}")(x))
        return nn.elu(Conv2D(1, (2, 2), strides=2, name=f"conv_{num_halving_convs}")(x)) + 2.0


class IterationOutputs(NamedTuple):
    """Per-iteration outputs of the joint scan (leading axis = iteration)."""

    bits: Array  # (T, N, H/16, W/16, bits_per_position), values in {-1, +1} (0 where bit_mask dropped a bit)
    reconstructions: Array  # (T, N, H, W, 3), x_hat_t (not clipped)
    distortion: Array  # (T, N), mean |x - x_hat_t| per image


def _zero_order_hold(gain: Array, factor: int) -> Array:
    """Nearest-neighbour upsampling of a per-block gain map to pixel resolution."""
    return jnp.repeat(jnp.repeat(gain, factor, axis=1), factor, axis=2)


def _repeat_steps(step_fn, num_steps: int, state):
    """Apply ``state = step_fn(state)`` a static number of times (priming / diffusion)."""
    if num_steps == 0:
        return state
    if num_steps == 1:
        return step_fn(state)
    return lax.fori_loop(0, num_steps, lambda _, s: step_fn(s), state)


class RNNCoderNetwork:
    """The recurrent coder's networks and their iteration loops.

    A plain object holding the config and the Linen modules; every method is a pure function of explicit
    parameters ``{"encoder": ..., "decoder": ...[, "gain": ...]}`` and can be jitted.
    """

    def __init__(self, config: RNNCoderConfig | None = None):
        self.config = config or RNNCoderConfig()
        self.encoder = RNNEncoder(self.config)
        self.decoder = RNNDecoder(self.config)
        self.gain = GainEstimator(self.config.gain_features, self.config.gain_block) if self._scaling else None

    @property
    def _scaling(self) -> bool:
        return self.config.reconstruction == "residual_scaling"

    # ------------------------------------------------------------------------------------------ shapes

    def check_image_shape(self, shape: tuple[int, ...]) -> None:
        """Raise ``ImageError`` unless ``shape`` is ``(N, H, W, 3)`` with ``H, W`` multiples of ``pad_multiple``."""
        m = self.config.pad_multiple
        if len(shape) != 4 or shape[-1] != 3 or shape[1] % m or shape[2] % m or shape[1] == 0 or shape[2] == 0:
            raise ImageError(f"the RNN coder needs N x H x W x 3 images with H, W multiples of {m}; got {shape}")

    def code_shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Shape of one iteration's bits for ``batch`` images of ``height x width``."""
        d = self.config.downsampling
        return (batch, height // d, width // d, self.config.bits_per_position)

    def initial_state(self, batch: int, height: int, width: int) -> dict[str, tuple]:
        """Zero recurrent states (spec 3.2) for images of ``height x width``.

        ``{"encoder": (state of E-RNN#1, ...), "decoder": (state of D-RNN#1, ...)}``; a GRU state is one
        array, an LSTM state a pair ``(c, h)``. Encoder states live at H/4, H/8, H/16; decoder states at
        the resolution before their depth_to_space: H/16, H/8, H/4, H/2.
        """
        c = self.config
        encoder = []
        size = 2  # E-Conv halves the resolution; each encoder RNN halves it again
        for i, features in enumerate(c.encoder_rnn_features):
            size *= 2
            cell = _make_cell(c, features, c.encoder_input_kernels[i], c.encoder_hidden_kernels[i], 2, None)
            encoder.append(cell.initial_state(batch, height // size, width // size))
        decoder = []
        for i, features in enumerate(c.decoder_rnn_features):
            cell = _make_cell(c, features, c.decoder_input_kernels[i], c.decoder_hidden_kernels[i], 1, None)
            decoder.append(cell.initial_state(batch, height // size, width // size))
            size //= 2
        return {"encoder": tuple(encoder), "decoder": tuple(decoder)}

    def init(self, rng: Array, image_shape: tuple[int, ...]) -> Params:
        """Random parameters for images of ``image_shape`` (``N x H x W x 3``; any valid size works later)."""
        self.check_image_shape(tuple(image_shape))
        n, h, w, _ = image_shape
        state = self.initial_state(n, h, w)
        k_enc, k_dec, k_gain = jax.random.split(rng, 3)
        image = jnp.zeros(image_shape, jnp.float32)
        params = {
            "encoder": self.encoder.init(k_enc, state["encoder"], image)["params"],
            "decoder": self.decoder.init(k_dec, state["decoder"], jnp.zeros(self.code_shape(n, h, w)))["params"],
        }
        if self._scaling:
            params["gain"] = self.gain.init(k_gain, image)["params"]
        return params

    # ---------------------------------------------------------------------- one iteration, each side

    def encoder_iteration(self, params: Params, states: tuple, encoder_input: Array, extra_steps: int):
        """Run E ``extra_steps + 1`` times on ``encoder_input``; return the new states and ``u`` of the last run."""
        apply = lambda method, *args: self.encoder.apply({"params": params["encoder"]}, *args, method=method)
        features = apply(RNNEncoder.embed, encoder_input)  # the same for every step of this iteration
        states = _repeat_steps(lambda s: apply(RNNEncoder.step, s, features)[0], extra_steps, states)
        states, top = apply(RNNEncoder.step, states, features)
        return states, apply(RNNEncoder.code, top)

    def decoder_iteration(self, params: Params, states: tuple, bits: Array, extra_steps: int):
        """Run D ``extra_steps + 1`` times on ``bits``; return the new states and the last run's output."""
        apply = lambda method, *args: self.decoder.apply({"params": params["decoder"]}, *args, method=method)
        features = apply(RNNDecoder.embed, bits.astype(jnp.float32))
        states = _repeat_steps(lambda s: apply(RNNDecoder.step, s, features)[0], extra_steps, states)
        states, top = apply(RNNDecoder.step, states, features)
        return states, apply(RNNDecoder.to_image, top)

    def _reconstruct(self, params: Params, previous: Array, gain: Array | None, decoded: Array):
        """Combine the decoder output with the previous reconstruction according to the mode."""
        mode = self.config.reconstruction
        if mode == "one_shot":
            return decoded, None
        if mode == "additive":
            return previous + decoded, None
        reconstruction = previous + decoded / _zero_order_hold(gain, self.config.gain_block)
        gain_input = lax.stop_gradient(reconstruction) if self.config.gain_stop_gradient else reconstruction
        return reconstruction, self.gain.apply({"params": params["gain"]}, gain_input)

    def _encoder_input(self, image: Array, reconstruction: Array, gain: Array | None) -> Array:
        residual = image - reconstruction
        if gain is not None:
            residual = residual * _zero_order_hold(gain, self.config.gain_block)
        return residual

    def _initial_carry(self, batch: int, height: int, width: int):
        reconstruction = jnp.zeros((batch, height, width, 3), jnp.float32)
        gain = None
        if self._scaling:
            block = self.config.gain_block
            gain = jnp.ones((batch, height // block, width // block, 1), jnp.float32)  # g_0 = 1
        return reconstruction, gain

    def _extra_steps(self, iteration_index: int) -> int:
        return self.config.priming_steps if iteration_index == 0 else self.config.diffusion_steps

    def _scan_iterations(self, step, carry, xs, num_iterations: int):
        """Iteration 0 (priming) unrolled, iterations 1.. (diffusion) as one ``lax.scan``; stack outputs.

        When priming and diffusion use the same number of extra steps, every iteration goes through the
        one scan (one copy of the step in the compiled program: faster compilation).
        """
        if self._extra_steps(0) == self._extra_steps(1):
            uniform_step = lambda c, x: step(c, x, self._extra_steps(0))
            if self.config.remat:
                uniform_step = jax.checkpoint(uniform_step)
            return lax.scan(uniform_step, carry, xs)
        first_xs = jax.tree_util.tree_map(lambda a: a[0], xs)
        carry, first = step(carry, first_xs, self._extra_steps(0))
        if num_iterations == 1:
            return carry, jax.tree_util.tree_map(lambda a: a[None], first)
        later_step = lambda c, x: step(c, x, self._extra_steps(1))
        if self.config.remat:
            later_step = jax.checkpoint(later_step)
        rest_xs = jax.tree_util.tree_map(lambda a: a[1:], xs)
        carry, rest = lax.scan(later_step, carry, rest_xs)
        return carry, jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b], axis=0), first, rest)

    # ------------------------------------------------------------------------------- entry points

    def run_iterations(
        self,
        params: Params,
        image: Array,
        num_iterations: int | None = None,
        *,
        key: Array | None = None,
        train: bool = False,
        bit_mask: Array | None = None,
    ) -> IterationOutputs:
        """Encoder, binarizer and decoder for ``num_iterations`` (default ``config.iterations``).

        Args:
          params: ``{"encoder", "decoder"[, "gain"]}``.
          image: float ``N x H x W x 3`` in ``[-0.5, 0.5]``.
          num_iterations: static number of emitted iterations.
          key: PRNG key for the stochastic binarizer (iteration t uses ``fold_in(key, t)``); needed when
            ``train``.
          train: stochastic binarizer (training) or ``where(u >= 0, 1, -1)`` (encoding).
          bit_mask: optional 0/1 array ``(T, N, h, w)`` or ``(T, N, h, w, bits)``: bits where it is 0 are
            replaced by 0 before the decoder sees them (SABR, closed loop: later residuals are computed
            from what the decoder really reconstructs). The returned bits are the masked ones.

        Returns:
          :class:`IterationOutputs` with leading axis ``num_iterations``.
        """
        num_iterations = int(num_iterations or self.config.iterations)
        self.check_image_shape(image.shape)
        if train and key is None:
            raise ValueError("run_iterations(train=True) needs a PRNG key for the binarizer")
        image = image.astype(jnp.float32)
        n, h, w, _ = image.shape
        states = self.initial_state(n, h, w)
        reconstruction, gain = self._initial_carry(n, h, w)
        code_shape = self.code_shape(n, h, w)
        if bit_mask is None:
            bit_mask = jnp.ones((num_iterations, *code_shape[:3], 1), jnp.float32)
        else:
            bit_mask = jnp.asarray(bit_mask, jnp.float32)
            if bit_mask.ndim == 4:
                bit_mask = bit_mask[..., None]
            if bit_mask.shape[0] != num_iterations:
                raise ValueError(f"bit_mask covers {bit_mask.shape[0]} iterations, expected {num_iterations}")
        xs = (jnp.arange(num_iterations), bit_mask)

        def step(carry, x, extra_steps):
            enc_states, dec_states, previous, gain = carry
            t, mask = x
            enc_states, u = self.encoder_iteration(
                params, enc_states, self._encoder_input(image, previous, gain), extra_steps
            )
            iteration_key = jax.random.fold_in(key, t) if train else None
            stochastic = train and self.config.train_binarizer == "stochastic"
            bits = binarize(u, iteration_key, stochastic=stochastic) * mask
            dec_states, decoded = self.decoder_iteration(params, dec_states, bits, extra_steps)
            reconstruction, gain = self._reconstruct(params, previous, gain, decoded)
            distortion = jnp.mean(jnp.abs(image - reconstruction), axis=(1, 2, 3))
            return (enc_states, dec_states, reconstruction, gain), (bits, reconstruction, distortion)

        carry = (states["encoder"], states["decoder"], reconstruction, gain)
        _, (bits, reconstructions, distortion) = self._scan_iterations(step, carry, xs, num_iterations)
        return IterationOutputs(bits, reconstructions, distortion)

    def encode_iterations(self, params: Params, image: Array, num_iterations: int | None = None) -> Array:
        """Bits ``(T, N, H/16, W/16, bits_per_position)`` in {-1, +1} with the deterministic binarizer."""
        return self.run_iterations(params, image, num_iterations, train=False).bits

    def decode_iterations(self, params: Params, bits: Array) -> Array:
        """Reconstructions ``(T, N, H, W, 3)`` from bits ``(T, N, H/16, W/16, bits_per_position)``.

        Runs only the decoder (and, for residual scaling, the gain estimator on its own reconstructions),
        with the same priming/diffusion schedule as :meth:`run_iterations`, so it reproduces the joint
        scan's reconstructions for the same bits. Any prefix of the iterations can be decoded. Bits may
        be 0 (not sent).
        """
        bits = jnp.asarray(bits, jnp.float32)
        if bits.ndim != 5 or bits.shape[-1] != self.config.bits_per_position or bits.shape[0] < 1:
            raise ValueError(f"bits must be (T, N, h, w, {self.config.bits_per_position}), got {bits.shape}")
        t, n, ch, cw, _ = bits.shape
        d = self.config.downsampling
        h, w = ch * d, cw * d
        states = self.initial_state(n, h, w)
        reconstruction, gain = self._initial_carry(n, h, w)

        def step(carry, b, extra_steps):
            dec_states, previous, gain = carry
            dec_states, decoded = self.decoder_iteration(params, dec_states, b, extra_steps)
            reconstruction, gain = self._reconstruct(params, previous, gain, decoded)
            return (dec_states, reconstruction, gain), reconstruction

        _, reconstructions = self._scan_iterations(step, (states["decoder"], reconstruction, gain), bits, t)
        return reconstructions
