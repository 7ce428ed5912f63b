"""The recurrent coder as a codec: training loss, compress, decompress, progressive files, SABR.

    image -> pad to 16 -> encoder iterations (network.py) -> bits b_1..b_T in {-1,+1}
          -> [SABR: per-block iteration counts, later bits zeroed (sabr.py)]
          -> per iteration, two checkerboard passes: p(bit) from the bit model (entropy_model.py)
             -> integer frequencies -> range coder -> one container part per iteration ("t01", "t02", ...)
    file  -> the same passes in the same order -> bits -> decoder iterations -> crop -> image

One part per iteration makes the file progressive: `lcomp.container.Container.first_parts` cut after
iteration t gives a valid file that decodes to the t-iteration image.

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
from lcomp.codecs.rnn.entropy_model import (
    FREQUENCY_PRECISION,
    PASSES,
    BitModelConfig,
    BitProbabilityModel,
    checkerboard,
)
from lcomp.codecs.rnn.network import RNNCoderConfig, RNNCoderNetwork
from lcomp.data import crop, pad_to_multiple
from lcomp.errors import BitstreamError, ConfigError, ImageError

LOSSES = ("l1", "ssim_weighted_l1")


def part_name(t: int) -> str:
    """Container part holding iteration t (0-based) of the bits."""
    return f"t{t + 1:02d}"


def to_float(image_u8):
    """uint8 [0, 255] -> float32 [-0.5, 0.5], the network's input range."""
    return jnp.asarray(image_u8, jnp.float32) / 255.0 - 0.5


def to_u8(x) -> np.ndarray:
    """The network's float output -> the 8-bit image a decoder writes (round, clip)."""
    return np.asarray(jnp.clip(jnp.round((jnp.asarray(x) + 0.5) * 255.0), 0, 255)).astype(np.uint8)


class RecurrentCoder(Codec):
    """Toderici et al. 2017 recurrent coder with Johnston et al. 2018's switches."""

    param_groups = ("autoencoder", "context_model")

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
            distortion, new_state["ssim"], _ = losses.ssim_weighted_l1(
                x, out.reconstructions, state["ssim"], weight_by=self.config.get("ssim_weight_by", "dissimilarity")
            )
        else:
            distortion = jnp.mean(out.distortion)  # L1 of every iteration's residual, uniform over iterations
        # The bit model learns from the bits only: no gradient reaches the autoencoder through the rate.
        bits = jax.lax.stop_gradient(out.bits)
        logits = self.bit_model.iteration_logits_all(params["context_model"], bits)
        cost = self.bit_model.bits_cost(logits, bits)  # (T, N, h, w, C)
        bits_per_bit = jnp.mean(cost)
        pixels = x.shape[0] * x.shape[1] * x.shape[2]
        loss = distortion + self.config.get("rate_weight", 1.0) * bits_per_bit
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
        return self.bit_model.logit_index(self.bit_model.iteration_logits(params, bits, t))

    # --- the bit streams (one function for both ends: same inputs, same order) ----------------------------
    def _code_iterations(self, context_params, shape, num_iterations, sent, per_pass):
        """Walks the iterations and passes in coding order; `per_pass(t, positions, freqs)` codes or decodes
        the bits of one pass (freqs: (n, 2) integer frequencies of bit 0 / bit 1) and returns them as +-1."""
        t_total, n, h, w, c = shape
        bits = np.zeros(shape, np.float32)
        parity = checkerboard(h, w)
        for t in range(num_iterations):
            for p in range(PASSES):
                index = np.asarray(self._iteration_logit_index(context_params, bits, t))
                positions = (parity == p)[None] & sent[t]  # (N, h, w)
                freqs = self.bit_model.frequencies(index[positions])  # (n, C, 2)
                bits[t][positions] = per_pass(t, positions, freqs.reshape(-1, 2)).reshape(freqs.shape[:2])
        return bits

    def _sent_mask(self, counts, block, t_total, shape):
        """(T, N, h, w) bool: which code positions send bits (all of them without SABR)."""
        n, h, w = shape[1:4]
        if counts is None:
            return np.ones((t_total, n, h, w), bool)
        return sabr.bit_mask(counts, t_total, block, self.net_config.downsampling).astype(bool)[:, None]

    # --- compress -----------------------------------------------------------------------------------------
    def _check_image(self, image):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ImageError(f"expected a uint8 H x W x 3 image, got {image.dtype} {image.shape}")
        if min(image.shape[:2]) < 1:
            raise ImageError("empty image")
        return image

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
        """Runs the encoder (and SABR); returns padded size, bits (T,1,h,w,C) with zeros for unsent bits,
        counts (or None), sabr settings (or None)."""
        params = variables["params"]["autoencoder"]
        sabr_settings = self._sabr_settings(target_quality, settings) if target_quality is not None else None
        multiple = self.pad_multiple if sabr_settings is None else math.lcm(self.pad_multiple, sabr_settings.block)
        padded, _ = pad_to_multiple(image, multiple)
        x = to_float(padded)[None]
        if sabr_settings is None:
            bits = np.asarray(self._encode(params, x, iterations).bits)
            return padded.shape[:2], bits, None, None

        def run(mask):
            if mask is None:
                bits = self._encode(params, x, iterations).bits
            else:
                bits = self._encode_masked(params, x, jnp.asarray(mask)[:, None], iterations).bits
            # The decoder's own program on the (masked) bits: the encoder then knows the decoder's pixels
            # exactly, not just up to float rounding of a differently fused computation.
            return np.asarray(bits), np.asarray(self._decode(params, bits)[:, 0])

        counts, bits, _ = sabr.allocate(run, padded, iterations, sabr_settings, self.net_config.downsampling, to_u8)
        return padded.shape[:2], bits, counts, sabr_settings

    def _prepare(self, variables, image, iterations, target_quality, settings):
        """What compress and estimate_bits share: checked settings, the encoder's bits (with SABR's counts
        and settings, or None) and the mask of positions that send bits."""
        iterations = int(iterations or self.iterations)
        if not 1 <= iterations <= self.iterations:
            raise ConfigError(f"iterations must lie in 1..{self.iterations}, got {iterations}")
        unknown = set(settings) - {"sabr_metric", "sabr_block"}
        if unknown:
            raise ConfigError(f"{self.name} has no setting(s) {sorted(unknown)}")
        _, bits, counts, sabr_settings = self._analyse(variables, image, iterations, target_quality, dict(settings))
        sent = self._sent_mask(counts, sabr_settings and sabr_settings.block, iterations, bits.shape)
        return iterations, bits, counts, sabr_settings, sent

    def compress(self, variables, image, *, iterations=None, target_quality=None, bpp=None, **settings):
        from lcomp import models

        if target_quality is not None and bpp is not None:
            raise ConfigError("give either a target quality or a target bpp, not both")
        image = self._check_image(image)
        iterations, bits, counts, sabr_settings, sent = self._prepare(
            variables, image, iterations, target_quality, settings
        )
        parts = []
        header_settings = {"iterations": iterations}
        if counts is not None:
            parts.append(("sabr", sabr.encode_count_map(counts, iterations)))
            header_settings.update(sabr_block=sabr_settings.block, sabr_metric=sabr_settings.metric,
                                   target_quality=sabr_settings.target)
        encoders = [entropy.SymbolEncoder(FREQUENCY_PRECISION) for _ in range(iterations)]

        def per_pass(t, positions, freqs):
            values = bits[t][positions].reshape(-1)
            encoders[t].encode((values > 0).astype(np.int32), freqs=freqs)
            return values

        self._code_iterations(variables["params"]["context_model"], bits.shape, iterations, sent, per_pass)
        parts += [(part_name(t), encoders[t].to_bytes()) for t in range(iterations)]
        header = container.Header(
            codec=self.name,
            fingerprint=models.fingerprint(variables),
            height=image.shape[0],
            width=image.shape[1],
            settings=header_settings,
        )
        data = container.pack(container.Container(header, tuple(parts)))
        if bpp is not None:
            data = self._cut_to_rate(data, float(bpp) * image.shape[0] * image.shape[1] / 8.0)
        return data

    def _cut_to_rate(self, data: bytes, max_bytes: float) -> bytes:
        """The longest progressive prefix whose whole file fits in `max_bytes` (at least one iteration)."""
        box = container.unpack(data)
        total = box.header.settings["iterations"]
        best = cut(data, 1)
        for t in range(2, total + 1):
            candidate = cut(data, t)
            if len(candidate) > max_bytes:
                break
            best = candidate
        return best

    def estimate_bits(self, variables, image, *, iterations=None, target_quality=None, **settings):
        """The bit model's estimate (sum of -log2 p over the bits sent, from the coding passes) + SABR map."""
        image = self._check_image(image)
        iterations, bits, counts, _, sent = self._prepare(variables, image, iterations, target_quality, settings)
        total = 0.0

        def per_pass(t, positions, freqs):
            nonlocal total
            values = bits[t][positions].reshape(-1)
            total += entropy.code_length_bits((values > 0).astype(np.int32), freqs, FREQUENCY_PRECISION)
            return values

        self._code_iterations(variables["params"]["context_model"], bits.shape, iterations, sent, per_pass)
        if counts is not None:
            total += 8 * len(sabr.encode_count_map(counts, iterations))
        return total

    # --- decompress ---------------------------------------------------------------------------------------
    def decompress(self, variables, data, *, iterations=None, **settings):
        from lcomp import models

        if settings:
            raise ConfigError(f"decompress takes no setting(s) {sorted(settings)}")
        box = container.unpack(data)
        container.check_model(box, self.name, models.fingerprint(variables))
        header = box.header
        recorded = header.settings
        total = recorded.get("iterations")
        if not isinstance(total, int) or not 1 <= total <= self.iterations:
            raise BitstreamError(f"file records {total!r} iterations; this model codes 1..{self.iterations}")
        available = sum(1 for name in box.part_names if name.startswith("t"))
        expected = [part_name(t) for t in range(available)]
        if [n for n in box.part_names if n != "sabr"] != expected or available < 1:
            raise BitstreamError(f"unexpected parts {box.part_names}; expected sabr (optional) and {expected}")
        use = available if iterations is None else int(iterations)
        if not 1 <= use <= available:
            raise ConfigError(f"this file holds {available} iteration(s); cannot decode {use}")

        block = recorded.get("sabr_block")
        multiple = self.pad_multiple if block is None else math.lcm(self.pad_multiple, int(block))
        hp, wp = -(-header.height // multiple) * multiple, -(-header.width // multiple) * multiple
        d = self.net_config.downsampling
        shape = (total, 1, hp // d, wp // d, self.net_config.bits_per_position)
        counts = None
        if "sabr" in box.part_names:
            if not isinstance(block, int) or block % d or block < d:
                raise BitstreamError(f"invalid SABR block size {block!r}")
            counts = sabr.decode_count_map(box.part("sabr"), (hp // block, wp // block), total)
        sent = self._sent_mask(counts, block, total, shape)
        decoders = [entropy.SymbolDecoder(box.part(part_name(t)), FREQUENCY_PRECISION) for t in range(use)]

        def per_pass(t, positions, freqs):
            return decoders[t].decode(freqs=freqs).astype(np.float32) * 2.0 - 1.0

        bits = self._code_iterations(variables["params"]["context_model"], shape, use, sent, per_pass)
        for decoder in decoders:
            decoder.finish()
        reconstructions = to_u8(self._decode(variables["params"]["autoencoder"], jnp.asarray(bits[:use])))[:, 0]
        if counts is not None:
            image = sabr.compose(reconstructions, counts, block)
        else:
            image = reconstructions[-1]
        return crop(image, (header.height, header.width))

    def operating_points(self):
        return [{"iterations": t} for t in range(1, self.iterations + 1)]

    @classmethod
    def cut_file(cls, data: bytes, iterations: int) -> bytes:
        return cut(data, iterations)


def cut(data: bytes, iterations: int) -> bytes:
    """A progressive file cut after `iterations` iterations (a valid file in its own right)."""
    if int(iterations) < 1:
        raise ConfigError(f"a cut file needs at least one iteration, got {iterations}")
    box = container.unpack(data)
    names = [n for n in box.part_names if n == "sabr"] + [part_name(t) for t in range(iterations)]
    missing = [n for n in names if n not in box.part_names]
    if missing:
        raise ConfigError(f"the file holds fewer than {iterations} iterations")
    return container.pack(box.with_parts(names))


@register("toderici2017", config="toderici2017", zoo="toderici2017")
class Toderici2017(RecurrentCoder):
    """Full-resolution recurrent coder (Toderici et al., CVPR 2017), with a learned two-pass bit model."""


@register("johnston2018", config="johnston2018", zoo="johnston2018")
class Johnston2018(RecurrentCoder):
    """Toderici 2017 + priming, diffusion, SSIM-weighted L1 and SABR (Johnston et al., CVPR 2018)."""
