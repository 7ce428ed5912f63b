"""The recurrent coder as a codec: training loss, compress, decompress, progressive files, SABR.

    image -> pad to 16 -> encoder iterations (network.py) -> bits b_1..b_T in {-1,+1}
          -> [SABR: per-block iteration counts, later bits zeroed (sabr.py)]
          -> per iteration, two checkerboard passes: p(bit) from the bit model (entropy_model.py)
             -> integer frequencies -> range coder -> one container part per iteration ("t01", "t02", ...)
    file  -> the same passes in the same order -> bits -> decoder iterations -> crop -> image

One part per iteration makes the file progressive (`part_layout`): `codec.cut_file(data, t)` is a valid file
that decodes to the t-iteration image, and `compress(..., bpp=b)` keeps the longest prefix within b.
What is generic lives elsewhere: the schedule and its walker in `lcomp.entropy.schedules`, the exact
toolkit in `lcomp.entropy.exact`, the count-map coder in `lcomp.entropy.side_info`, part validation and
cutting in `lcomp.container.PartLayout`.

Registered twice with different defaults (experiments/configs): `toderici2017` (Toderici et al. 2017: L1 loss,
no priming) and `johnston2018` (Johnston et al. 2018: priming, diffusion, SSIM-weighted L1, SABR).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lcomp import container, entropy, losses
from lcomp.codecs.base import Codec
from lcomp.codecs.registry import register
from lcomp.codecs.rnn import sabr
from lcomp.codecs.rnn.entropy_model import FREQUENCY_PRECISION, LOGITS, BitModelConfig, BitProbabilityModel
from lcomp.entropy import schedules
from lcomp.entropy.side_info import mask_from_counts
from lcomp.fingerprint import fingerprint
from lcomp.interface import Compressed
from lcomp.codecs.rnn.network import RNNCoderConfig, RNNCoderNetwork
from lcomp.data import crop, pad_to_multiple
from lcomp.errors import BitstreamError, ConfigError

LOSSES = ("l1", "ssim_weighted_l1")
ITERATION_WEIGHTINGS = ("uniform", "sum", "normalized", "linear", "final")


def weight_iterations(per_iteration, weighting: str = "uniform"):
    """The training objective from one distortion per iteration ``(T,)``.

    ``uniform``: their mean (spec 9.4 default). ``sum``: their sum (T times the mean). ``normalized``: the mean
    of ``d_t / stop_gradient(d_t)``, so every iteration's term has value 1 and gradient ``grad d_t / d_t``:
    each iteration is pushed to cut its own error by the same FRACTION (the gradient of ``mean_t log d_t``,
    a PSNR-like objective), instead of later iterations, whose errors are small, counting for little.
    ``linear``: weights proportional to t (mean 1). ``final``: the last iteration only (a diagnostic: what the
    network can reach at T iterations when nothing else counts; the earlier prefixes are then not trained).
    """
    if weighting == "uniform":
        return jnp.mean(per_iteration)
    if weighting == "sum":
        return jnp.sum(per_iteration)
    if weighting == "normalized":
        return jnp.mean(per_iteration / jax.lax.stop_gradient(jnp.maximum(per_iteration, 1e-8)))
    if weighting == "linear":
        t = jnp.arange(1, per_iteration.shape[0] + 1, dtype=per_iteration.dtype)
        return jnp.mean(per_iteration * t / jnp.mean(t))
    if weighting == "final":
        return per_iteration[-1]
    raise ConfigError(f"iteration_weighting must be one of {ITERATION_WEIGHTINGS}, got {weighting!r}")


def to_float(image_u8):
    """uint8 [0, 255] -> float32 [-0.5, 0.5], the network's input range."""
    return jnp.asarray(image_u8, jnp.float32) / 255.0 - 0.5


def to_u8(x) -> np.ndarray:
    """The network's float output -> the 8-bit image a decoder writes (round, clip)."""
    return np.asarray(jnp.clip(jnp.round((jnp.asarray(x) + 0.5) * 255.0), 0, 255)).astype(np.uint8)


class RecurrentCoder(Codec):
    """Toderici et al. 2017 recurrent coder with Johnston et al. 2018's switches."""

    param_groups = ("autoencoder", "context_model")
    part_layout = container.PartLayout(side=("sabr",), numbered_streams="t", count_setting="iterations")

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.net_config = RNNCoderConfig.from_mapping(config.network)
        self.net = RNNCoderNetwork(self.net_config)
        self.bit_config = BitModelConfig.from_mapping(
            config.get("bit_model", {}),
            iterations=self.net_config.iterations,
            bits_per_position=self.net_config.bits_per_position,
        )
        if self.bit_config.iterations < self.net_config.iterations:
            raise ConfigError("bit_model.iterations must cover network.iterations")
        self.bit_model = BitProbabilityModel(self.bit_config)
        self.loss_name = config.get("loss", "l1")
        if self.loss_name not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {self.loss_name!r}")
        self.iteration_weighting = config.get("iteration_weighting", "uniform")
        if self.iteration_weighting not in ITERATION_WEIGHTINGS:
            raise ConfigError(
                f"iteration_weighting must be one of {ITERATION_WEIGHTINGS}, got {self.iteration_weighting!r}"
            )
        self.sabr_defaults = config.get("sabr", ml_collections.ConfigDict())

    @property
    def pad_multiple(self) -> int:  # type: ignore[override]
        return self.net_config.pad_multiple

    @property
    def iterations(self) -> int:
        return self.net_config.iterations

    # --- training ---------------------------------------------------------------------------------------
    def init(self, rng, example_batch):
        n, h, w, _ = np.shape(example_batch["image"])
        k_net, k_bits = jax.random.split(rng)
        autoencoder = self.net.init(k_net, (n, h, w, 3))
        context = self.bit_model.init(k_bits, self.net.code_shape(n, h, w))
        state = {}
        if self.loss_name == "ssim_weighted_l1":
            per_iteration = self.config.get("ssim_per_iteration", False)
            state["ssim"] = losses.init_ssim_weight_state(self.iterations if per_iteration else None)
        return {"params": {"autoencoder": autoencoder, "context_model": context}, "state": state}

    def loss(self, params, state, batch, rng, train):
        x = to_float(batch["image"])
        out = self.net.run_iterations(params["autoencoder"], x, key=rng, train=train)
        new_state = dict(state)
        if self.loss_name == "ssim_weighted_l1":
            per_iteration, new_state["ssim"], _ = losses.ssim_weighted_l1(
                x,
                out.reconstructions,
                state["ssim"],
                weight_by=self.config.get("ssim_weight_by", "dissimilarity"),
                per_iteration=True,
            )
        else:
            per_iteration = jnp.mean(out.distortion, axis=1)  # L1 of every iteration's reconstruction
        distortion = jnp.mean(per_iteration)  # the metric: uniform over iterations, whatever the weighting
        objective = weight_iterations(per_iteration, self.iteration_weighting)
        # The bit model learns from the bits only: no gradient reaches the autoencoder through the rate.
        bits = jax.lax.stop_gradient(out.bits)
        logits = self.bit_model.iteration_logits_all(params["context_model"], bits)
        cost = self.bit_model.bits_cost(logits, bits)  # (T, N, h, w, C)
        bits_per_bit = jnp.mean(cost)
        pixels = x.shape[0] * x.shape[1] * x.shape[2]
        loss = objective + self.config.get("rate_weight", 1.0) * bits_per_bit
        final = out.reconstructions[-1]
        mse = jnp.mean(((jnp.clip(final, -0.5, 0.5) - x) * 255.0) ** 2)
        metrics = {
            "distortion": distortion,
            "l1_first": jnp.mean(out.distortion[0]),
            "l1_last": jnp.mean(out.distortion[-1]),
            "psnr_last": 10.0 * jnp.log10(255.0**2 / jnp.maximum(mse, 1e-10)),
            "bpp": jnp.sum(cost) / pixels,  # estimated, entropy-coded, all T iterations
            "bpp_raw": jnp.asarray(out.bits.size / pixels, jnp.float32),
            "bits_per_bit": bits_per_bit,
        }
        return loss, (metrics, new_state)

    # --- jitted pieces used by compress/decompress --------------------------------------------------------
    @functools.partial(jax.jit, static_argnums=(0, 3))
    def _encode(self, params, x, num_iterations):
        return self.net.run_iterations(params, x, num_iterations, train=False)

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def _encode_masked(self, params, x, mask, num_iterations):
        return self.net.run_iterations(params, x, num_iterations, train=False, bit_mask=mask)

    @functools.partial(jax.jit, static_argnums=(0,))
    def _decode(self, params, bits):
        return self.net.decode_iterations(params, bits)

    @functools.partial(jax.jit, static_argnums=(0,))
    def _iteration_logit_index(self, params, bits, t):
        # Exact integer arithmetic inside (see entropy_model.py): the same table index on every machine.
        return LOGITS.index(self.bit_model.iteration_logits(params, bits, t))

    @functools.partial(jax.jit, static_argnums=(0,))
    def _all_logit_index(self, params, bits):
        # The encoder's dense pass: every iteration teacher-forced at once, equal to the passes (exact).
        return LOGITS.index(self.bit_model.iteration_logits_all(params, bits))

    # --- the bit streams ----------------------------------------------------------------------------------
    # Symbols are the bits as integers (1 for +1, 0 for -1); `sent` marks the bits a file carries (SABR
    # leaves later iterations of a block unsent, and the model sees them as 0).
    def _schedule(self, shape):
        t, n, h, w, c = shape
        return schedules.checkerboard_iterations(t, n, h, w, c, self.part_layout.stream_name)

    @staticmethod
    def _as_bits(symbols, sent):
        return np.where(sent, 2.0 * symbols - 1.0, 0.0).astype(np.float32)

    def _pass_tables(self, context_params, sent):
        """The decoder's table function: iteration t's logits from the bits decoded so far, one call per pass."""

        def tables(symbols, coding_pass, where):
            t, _ = coding_pass.step
            index = np.asarray(self._iteration_logit_index(context_params, self._as_bits(symbols, sent), t))
            return LOGITS.binary_frequencies(index[where[t]])

        return tables

    def _dense_tables(self, context_params, sent):
        def dense(symbols):
            return LOGITS.binary_frequencies(np.asarray(self._all_logit_index(context_params, self._as_bits(symbols, sent))))

        return dense

    def _sent_mask(self, counts, block, t_total, shape):
        """(T, N, h, w, 1) bool: which code positions send bits (all of them without SABR)."""
        n, h, w = shape[1:4]
        if counts is None:
            return np.ones((t_total, n, h, w, 1), bool)
        return mask_from_counts(counts, t_total, block // self.net_config.downsampling)[:, None, :, :, None]

    # --- compress -----------------------------------------------------------------------------------------
    def _sabr_settings(self, target_quality, settings):
        cfg = self.sabr_defaults
        return sabr.SabrSettings(
            target=float(target_quality),
            metric=settings.pop("sabr_metric", cfg.get("metric", "psnr")),
            block=int(settings.pop("sabr_block", cfg.get("block", 16))),
            min_iterations=int(cfg.get("min_iterations", 1)),
            max_rounds=int(cfg.get("max_rounds", 4)),
        )

    def _analyse(self, variables, image, iterations, target_quality, settings):
        """Runs the encoder (and SABR); returns the bits (T,1,h,w,C) with zeros for unsent bits, the counts
        (or None) and the SABR settings (or None)."""
        params = variables["params"]["autoencoder"]
        sabr_settings = self._sabr_settings(target_quality, settings) if target_quality is not None else None
        multiple = self.pad_multiple if sabr_settings is None else math.lcm(self.pad_multiple, sabr_settings.block)
        padded, _ = pad_to_multiple(image, multiple)
        x = to_float(padded)[None]
        if sabr_settings is None:
            return np.asarray(self._encode(params, x, iterations).bits), None, None

        def run(mask):
            if mask is None:
                bits = self._encode(params, x, iterations).bits
            else:
                bits = self._encode_masked(params, x, jnp.asarray(mask)[:, None], iterations).bits
            # The decoder's own program on the (masked) bits: the encoder then knows the decoder's pixels
            # exactly, not just up to float rounding of a differently fused computation.
            return np.asarray(bits), np.asarray(self._decode(params, bits)[:, 0])

        counts, bits, _ = sabr.allocate(run, padded, iterations, sabr_settings, self.net_config.downsampling, to_u8)
        return bits, counts, sabr_settings

    def compress(self, variables, image, *, iterations=None, target_quality=None, bpp=None, **settings):
        """Encodes `iterations` iterations (default all), SABR with `target_quality`, or the longest
        progressive prefix within `bpp`; returns the file and the bit model's estimate of its payload."""
        if target_quality is not None and bpp is not None:
            raise ConfigError("give either a target quality or a target bpp, not both")
        image = self.check_image(image)
        iterations = int(iterations or self.iterations)
        if not 1 <= iterations <= self.iterations:
            raise ConfigError(f"iterations must lie in 1..{self.iterations}, got {iterations}")
        unknown = set(settings) - {"sabr_metric", "sabr_block"}
        if unknown:
            raise ConfigError(f"{self.name} has no setting(s) {sorted(unknown)}")
        bits, counts, sabr_settings = self._analyse(variables, image, iterations, target_quality, dict(settings))
        sent = self._sent_mask(counts, sabr_settings and sabr_settings.block, iterations, bits.shape)
        symbols = np.where(sent, (bits > 0).astype(np.int32), 0)
        streams, estimates = schedules.encode(
            self._schedule(bits.shape),
            symbols,
            dense_tables=self._dense_tables(variables["params"]["context_model"], sent),
            sent=sent,
            precision=FREQUENCY_PRECISION,
        )
        parts, side_bits = [], 0.0
        header_settings = {"iterations": iterations}
        if counts is not None:
            count_map = sabr.encode_count_map(counts, iterations)
            parts.append(("sabr", count_map))
            side_bits = 8.0 * len(count_map)  # coded adaptively: its size is its cost
            header_settings.update(sabr_block=sabr_settings.block, sabr_metric=sabr_settings.metric,
                                   target_quality=sabr_settings.target)
        names = [self.part_layout.stream_name(t) for t in range(iterations)]
        parts += [(name, streams[name]) for name in names]
        header = container.Header(
            codec=self.name,
            fingerprint=fingerprint(variables),
            height=image.shape[0],
            width=image.shape[1],
            settings=header_settings,
        )
        data = container.pack(container.Container(header, tuple(parts)))
        if bpp is not None:
            data = self.cut_to_rate(data, float(bpp) * image.shape[0] * image.shape[1] / 8.0)
            names = [n for n in container.unpack(data).part_names if n in estimates]
        return Compressed(data, side_bits + sum(estimates[n] for n in names))

    # --- decompress ---------------------------------------------------------------------------------------
    def max_streams(self) -> int:
        return self.iterations

    def decode_bits(self, variables, data, *, iterations=None):
        """The bits a file carries, decoded: (bits (T, 1, h, w, C) in {-1, 0, +1} with 0 = not sent, the
        number of iterations decoded, the SABR count map or None). What `decompress` synthesises from."""
        box, available = self.unpack_own(variables, data)
        header = box.header
        total = self.part_layout.recorded_count(box, self.iterations)
        use = available if iterations is None else int(iterations)
        if not 1 <= use <= available:
            raise ConfigError(f"this file holds {available} iteration(s); cannot decode {use}")
        d = self.net_config.downsampling
        block = header.settings.get("sabr_block")
        if "sabr" in box.part_names and (isinstance(block, bool) or not isinstance(block, int) or block % d or block < d):
            raise BitstreamError(f"invalid SABR block size {block!r}")
        multiple = self.pad_multiple if block is None else math.lcm(self.pad_multiple, int(block))
        hp, wp = -(-header.height // multiple) * multiple, -(-header.width // multiple) * multiple
        shape = (total, 1, hp // d, wp // d, self.net_config.bits_per_position)
        counts = None
        if "sabr" in box.part_names:
            counts = sabr.decode_count_map(box.part("sabr"), (hp // block, wp // block), total)
        sent = self._sent_mask(counts, block, total, shape)
        names = [self.part_layout.stream_name(t) for t in range(use)]
        symbols = schedules.decode(
            self._schedule(shape).only(names),
            {name: box.part(name) for name in names},
            self._pass_tables(variables["params"]["context_model"], sent),
            sent=sent,
            precision=FREQUENCY_PRECISION,
        )
        return self._as_bits(symbols, sent), use, counts

    def decompress(self, variables, data, *, iterations=None, **settings):
        if settings:
            raise ConfigError(f"decompress takes no setting(s) {sorted(settings)}")
        bits, use, counts = self.decode_bits(variables, data, iterations=iterations)
        header = container.unpack(data).header
        reconstructions = to_u8(self._decode(variables["params"]["autoencoder"], jnp.asarray(bits[:use])))[:, 0]
        if counts is None:
            image = reconstructions[-1]
        else:
            image = sabr.compose(reconstructions, counts, header.settings["sabr_block"])
        return crop(image, (header.height, header.width))

    def operating_points(self):
        return [{"iterations": t} for t in range(1, self.iterations + 1)]


@register("toderici2017", config="toderici2017", zoo="toderici2017")
class Toderici2017(RecurrentCoder):
    """Full-resolution recurrent coder (Toderici et al., CVPR 2017), with a learned two-pass bit model."""


@register("johnston2018", config="johnston2018", zoo="johnston2018")
class Johnston2018(RecurrentCoder):
    """Toderici 2017 + priming, diffusion, SSIM-weighted L1 and SABR (Johnston et al., CVPR 2018)."""
