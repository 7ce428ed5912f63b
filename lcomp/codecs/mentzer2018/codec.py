"""Mentzer et al. 2018 as a codec: autoencoder + importance mask + exact 3D context model, real files.

    image -> pad to 8 (edge) -> encoder (network.py) -> K latents z + importance y -> mask m (importance.py)
          -> nearest of L learned centers (lcomp.quantize.nearest_center) -> symbols (K, h, w)
          -> count map (channels in use per position) -> side part "mask" (lcomp.entropy.side_info)
          -> exact context model, ONE dense pass over the volume (lcomp/entropy/context3d.py) -> integer tables
          -> lcomp.entropy.schedules.encode over the wavefront t = 4c + 2h + w -> stream "symbols"
    file  -> count map -> mask -> wavefront decode (one cached step per front) -> centers -> decoder -> crop

What the file sends (spec section 3; our decision): the official code sends no mask and codes every symbol
(masked ones are cheap under the context model). We send the count map (#channels with m > 0 per latent
position, levels K + 1, coded by the platform's adaptive integer-map coder) and code only the symbols inside
the mask; the decoder fills every other symbol with the center nearest 0 (which is what the encoder's
quantizer produced there: m = 0 makes the value 0), so both ends hold the identical latent volume and the
context model sees exactly what it saw in training. The count map's bytes are part of the file and of the
estimate (`Compressed.estimated_bits` = 8 x mask bytes + the context model's ideal code length).

Training (`loss`, spec section 6): `{"autoencoder": distortion + beta * max(H_soft - H_target, 0) + L2,
"context_model": ...}` where H_soft = (H_mask + H_real) / 2 in bits per symbol from the exact model's
rounded logits. Switches (spec section 11): `mask` ("code" soft ramp | "thesis" ceiling), `pc_input_grad`
(False: the context model's input is detached, the rate reaches the encoder only through the mask; True:
straight-through into the quantized values), `send_mask` (True: the count map is sent and masked-out symbols
are not coded; False: the official code's choice, no mask, every symbol coded; read with a default so that
runs recorded before the switch existed resume unchanged), `pc_loss` ("total": the context model minimises the total loss,
i.e. only the hinge reaches it, as in the released code; "own": its own H_soft every step, the thesis).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lcomp import container
from lcomp.codecs.base import Codec
from lcomp.codecs.mentzer2018 import importance
from lcomp.entropy.context3d import (
    FREQUENCY_PRECISION,
    ContextModel,
    ContextModelConfig,
    Wavefront,
    input_values,
    pad_value,
)
from lcomp.codecs.mentzer2018.ms_ssim import training_ms_ssim
from lcomp.codecs.mentzer2018.network import Decoder, Encoder, NetworkConfig, to_u8
from lcomp.codecs.registry import register
from lcomp.data import crop, pad_to_multiple
from lcomp.entropy import schedules
from lcomp.entropy.range_coding import SymbolEncoder
from lcomp.entropy.side_info import decode_integer_map, encode_integer_map, mask_from_counts
from lcomp.errors import BitstreamError, ConfigError
from lcomp.fingerprint import fingerprint
from lcomp.interface import Compressed
from lcomp.quantize import nearest_center

DISTORTIONS = ("ms_ssim", "mse")
PC_LOSSES = ("total", "own")


def _l2(tree) -> jax.Array:
    """slim-style L2, sum(w^2) / 2, over convolution kernels only (no BatchNorm parameters)."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return sum(0.5 * jnp.sum(jnp.square(v)) for path, v in leaves if "kernel" in jax.tree_util.keystr(path))


@register("mentzer2018", config="mentzer2018", zoo="mentzer2018")
class Mentzer2018(Codec):
    """Conditional probability models for deep image compression (Mentzer et al., CVPR 2018)."""

    param_groups = ("autoencoder", "context_model")
    pad_multiple = 8
    part_layout = container.PartLayout(side=("mask",), streams=("symbols",))

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.net_config = NetworkConfig.from_mapping(config.get("network", {}))
        self.K = self.net_config.latent_channels
        self.L = int(config.get("num_centers", 6))
        self.cm_config = ContextModelConfig.from_mapping(config.get("context_model", {}), num_centers=self.L)
        if self.cm_config.num_centers != self.L:
            raise ConfigError("context_model.num_centers must equal num_centers")
        self.encoder = Encoder(self.net_config)
        self.decoder = Decoder(self.net_config)
        self.context = ContextModel(self.cm_config)
        self.use_importance = bool(config.get("importance_map", True))
        # True: send the count map and code only the symbols inside the mask (ours); False: send no mask and
        # code every symbol, the masked-out ones too (the official code).
        self.send_mask = bool(config.get("send_mask", True)) and self.use_importance
        self.mask_variant = config.get("mask", "code")
        if self.mask_variant not in importance.VARIANTS:
            raise ConfigError(f"mask must be one of {importance.VARIANTS}, got {self.mask_variant!r}")
        self.distortion = config.get("distortion", "ms_ssim")
        if self.distortion not in DISTORTIONS:
            raise ConfigError(f"distortion must be one of {DISTORTIONS}, got {self.distortion!r}")
        self.pc_loss = config.get("pc_loss", "total")
        if self.pc_loss not in PC_LOSSES:
            raise ConfigError(f"pc_loss must be one of {PC_LOSSES}, got {self.pc_loss!r}")
        self.pc_input_grad = bool(config.get("pc_input_grad", False))
        self.h_target = float(config.get("h_target", 0.4))
        self.beta = float(config.get("beta", 500.0))
        self.ms_ssim_weight = float(config.get("ms_ssim_weight", 5000.0))
        self.mse_weight = float(config.get("mse_weight", 1.0))
        self.l2_weight = float(config.get("l2_weight", 0.005))
        self.l2_centers = float(config.get("l2_centers", 0.1))
        self.sigma = float(config.get("sigma", 1.0))

    # --- the forward pass ---------------------------------------------------------------------------------
    def _apply(self, module, params, stats, x, train):
        variables = {"params": params, "batch_stats": stats}
        if train:
            out, updated = module.apply(variables, x, train=True, mutable=["batch_stats"])
            return out, updated["batch_stats"]
        return module.apply(variables, x, train=False), stats

    def _quantize(self, ae_params, enc_out):
        """(q, symbols, m): quantized latents (N, h, w, K), their symbols and the mask (N, h, w, K)."""
        z = enc_out[..., 1:]
        if self.use_importance:
            y = importance.importance(enc_out[..., 0], self.K)
            m = importance.mask(y, self.K, self.mask_variant)
        else:
            m = jnp.ones_like(z)
        q, symbols = nearest_center(m * z, ae_params["centers"], self.sigma)
        return q, symbols, m

    @staticmethod
    def _volume(x):
        """(N, h, w, K) -> (N, K, h, w): depth = latent channel."""
        return jnp.moveaxis(x, -1, 1)

    # --- training -----------------------------------------------------------------------------------------
    def init(self, rng, example_batch):
        n, h, w, _ = np.shape(example_batch["image"])
        if h % 8 or w % 8:
            raise ConfigError(f"mentzer2018 trains on patches whose sides are multiples of 8, got {h}x{w}")
        k_enc, k_dec, k_c, k_pc = jax.random.split(rng, 4)
        enc = self.encoder.init(k_enc, jnp.zeros((1, h, w, 3), jnp.uint8), train=False)
        dec = self.decoder.init(k_dec, jnp.zeros((1, h // 8, w // 8, self.K), jnp.float32), train=False)
        centers = jax.random.uniform(k_c, (self.L,), jnp.float32, -2.0, 2.0)  # spec 4: U[-2, 2], not a linspace
        params = {
            "autoencoder": {"encoder": enc["params"], "decoder": dec["params"], "centers": centers},
            "context_model": self.context.init(k_pc),
        }
        state = {"batch_stats": {"encoder": enc["batch_stats"], "decoder": dec["batch_stats"]}}
        return {"params": params, "state": state}

    def loss(self, params, state, batch, rng, train):
        ae = params["autoencoder"]
        image = batch["image"]
        x = jnp.asarray(image, jnp.float32)
        stats = state["batch_stats"]
        enc_out, enc_stats = self._apply(self.encoder, ae["encoder"], stats["encoder"], image, train)
        q, symbols, m = self._quantize(ae, enc_out)
        x_hat, dec_stats = self._apply(self.decoder, ae["decoder"], stats["decoder"], q, train)
        x_hat = jnp.clip(x_hat, 0.0, 255.0)

        # Rate: the exact context model on the quantized volume (spec 6.1).
        values = input_values(self._volume(q), None, gradient=self.pc_input_grad)
        logits = self.context.logits(params["context_model"], values, pad_value(ae["centers"]))
        bits = self.context.bits(logits, self._volume(symbols))  # (N, K, h, w)
        m_vol = self._volume(m)
        h_real = jnp.mean(bits)
        h_mask = jnp.mean(bits * m_vol)
        h_soft = 0.5 * (h_mask + h_real)
        rate_loss = self.beta * jnp.maximum(h_soft - self.h_target, 0.0)

        ms_ssim = training_ms_ssim(x, x_hat)
        mse = jnp.mean(jnp.square(x - x_hat))
        if self.distortion == "ms_ssim":
            distortion = self.ms_ssim_weight * jnp.mean(1.0 - ms_ssim)
        else:
            distortion = self.mse_weight * mse
        l2 = self.l2_weight * (_l2(ae["encoder"]) + _l2(ae["decoder"])) + self.l2_centers * 0.5 * jnp.sum(
            jnp.square(ae["centers"])
        )
        total = distortion + rate_loss + l2
        objective = {"autoencoder": total, "context_model": total if self.pc_loss == "total" else h_soft}

        pixels = x.shape[0] * x.shape[1] * x.shape[2]
        sent = (jax.lax.stop_gradient(m_vol) > 0).astype(jnp.float32)
        metrics = {
            "loss": total,
            "distortion": distortion,
            "rate_loss": rate_loss,
            "l2": l2,
            "H_real": h_real,
            "H_mask": h_mask,
            "H_soft": h_soft,
            # What a file pays for its symbols (the sent ones; the count map comes on top): estimated.
            "bpp": jnp.sum(bits * sent) / pixels,
            "bpp_all_symbols": jnp.sum(bits) / pixels,  # the official code's logged rate
            "channels_used": jnp.mean(jnp.sum(sent, axis=1)),
            "ms_ssim": jnp.mean(ms_ssim),
            "psnr": 10.0 * jnp.log10(255.0**2 / jnp.maximum(mse, 1e-10)),
        }
        new_state = {"batch_stats": {"encoder": enc_stats, "decoder": dec_stats}}
        return objective, (metrics, new_state)

    # --- jitted pieces used by compress/decompress --------------------------------------------------------
    @functools.partial(jax.jit, static_argnums=(0,))
    def _analyse(self, ae, stats, image):
        enc_out, _ = self._apply(self.encoder, ae["encoder"], stats["encoder"], image, False)
        q, symbols, m = self._quantize(ae, enc_out)
        return symbols, importance.counts(m)

    @functools.partial(jax.jit, static_argnums=(0,))
    def _synthesise(self, ae, stats, symbols):
        q = ae["centers"][symbols]
        x_hat, _ = self._apply(self.decoder, ae["decoder"], stats["decoder"], q, False)
        return x_hat

    @functools.partial(jax.jit, static_argnums=(0,))
    def _dense_index(self, cm, centers, volume):
        values = input_values(centers, volume)
        return self.context.logit_index(self.context.logits(cm, values, pad_value(centers)))

    @functools.partial(jax.jit, static_argnums=(0,))
    def _float_logits(self, cm, centers, volume):
        return self.context.float_logits(cm, centers[volume], jax.lax.stop_gradient(centers[0]))

    @staticmethod
    def zero_symbol(centers) -> int:
        """The symbol of the center nearest 0: what masked-out positions hold (ties: the lower index)."""
        centers = np.asarray(centers, np.float32)
        return int(np.argmin(np.square(np.float32(0.0) - centers)))

    @staticmethod
    @functools.lru_cache(maxsize=4)
    def schedule(shape) -> schedules.Schedule:
        return schedules.wavefront(*shape)

    # --- table functions ----------------------------------------------------------------------------------
    def dense_tables(self, variables, sent):
        """The encoder's table function: every symbol's table from ONE dense pass over the finished volume."""
        ae, cm = variables["params"]["autoencoder"], variables["params"]["context_model"]
        zero = self.zero_symbol(ae["centers"])

        def dense(symbols):
            full = np.where(sent, symbols, zero).astype(np.int32)
            index = np.asarray(self._dense_index(cm, jnp.asarray(ae["centers"]), jnp.asarray(full)[None]))[0]
            # Tables only where a symbol is sent (the walker never looks up the others).
            freqs = np.zeros((*full.shape, self.L), np.uint32)
            freqs[sent] = self.context.frequencies(index[sent])
            return freqs

        return dense

    def wavefront_tables(self, variables, sent):
        """The decoder's table function: front by front, one cached jitted step per front (and per margin
        front before the first symbol); reads only symbols of earlier fronts."""
        ae, cm = variables["params"]["autoencoder"], variables["params"]["context_model"]
        centers = np.asarray(ae["centers"], np.float32)
        zero = self.zero_symbol(centers)
        shape = sent.shape
        unsent_value = float(np.asarray(input_values(jnp.asarray(centers), jnp.asarray([zero])))[0])
        wave = Wavefront(self.context, cm, centers, shape, unsent_value)
        state = {"next": wave.first, "rows": None}

        def tables(symbols, coding_pass, where):
            t = coding_pass.step[0]
            while state["next"] <= t:  # fronts without sent symbols (and the margin fronts) run too
                s = state["next"]
                d, h, w = wave.positions(s - 1)
                previous = np.where(sent[d, h, w], symbols[d, h, w], zero).astype(np.int32)
                state["rows"] = wave.step(s, previous)
                state["next"] = s + 1
            d, h, w = wave.positions(t)
            return self.context.frequencies(state["rows"][sent[d, h, w]])

        return tables

    def network_timing(self, variables, image, timed) -> dict:
        """`lcomp bench`'s network part: seconds of the encoder network (with mask and quantizer) and of the
        decoder network on this image; `timed(fn)` is the bench's timer."""
        ae, stats = variables["params"]["autoencoder"], variables["state"]["batch_stats"]
        padded, _ = pad_to_multiple(self.check_image(image), self.pad_multiple)
        x = jnp.asarray(padded)[None]
        symbols, _ = self._analyse(ae, stats, x)
        return {
            "encode_network_seconds": timed(lambda: jax.block_until_ready(self._analyse(ae, stats, x))),
            "decode_network_seconds": timed(lambda: jax.block_until_ready(self._synthesise(ae, stats, symbols))),
        }

    # --- compress -----------------------------------------------------------------------------------------
    def analyse(self, variables, image):
        """(symbols (K, h, w) with 0 where not sent, sent mask (K, h, w), counts (h, w)) of an image."""
        padded, _ = pad_to_multiple(self.check_image(image), self.pad_multiple)
        ae, stats = variables["params"]["autoencoder"], variables["state"]["batch_stats"]
        symbols, counts = self._analyse(ae, stats, jnp.asarray(padded)[None])
        volume = np.moveaxis(np.asarray(symbols[0]), -1, 0)
        counts = np.asarray(counts[0]) if self.send_mask else np.full(volume.shape[1:], self.K, np.int32)
        sent = mask_from_counts(counts, self.K)
        return np.where(sent, volume, 0).astype(np.int32), sent, counts

    def compress(self, variables, image, **settings) -> Compressed:
        if settings:
            raise ConfigError(f"{self.name} has no setting(s) {sorted(settings)}")
        image = self.check_image(image)
        symbols, sent, counts = self.analyse(variables, image)
        streams, estimates = schedules.encode(
            self.schedule(symbols.shape), symbols, dense_tables=self.dense_tables(variables, sent), sent=sent,
            precision=FREQUENCY_PRECISION,
        )
        parts = []
        side_bits = 0.0
        if self.send_mask:
            mask_part = encode_integer_map(counts, self.K + 1)
            parts.append(("mask", mask_part))
            side_bits = 8.0 * len(mask_part)  # coded adaptively: its size is its cost
        parts.append(("symbols", streams["symbols"]))
        header = container.Header(codec=self.name, fingerprint=fingerprint(variables), height=image.shape[0],
                                  width=image.shape[1], settings={})
        data = container.pack(container.Container(header, tuple(parts)))
        return Compressed(data, side_bits + estimates["symbols"])

    # --- decompress ---------------------------------------------------------------------------------------
    def decode_symbols(self, variables, data):
        """The symbol volume (K, h, w) a file carries, with the unsent symbols filled in (center nearest 0)."""
        box, _ = self.unpack_own(variables, data)
        header = box.header
        h, w = -(-header.height // 8), -(-header.width // 8)
        if self.send_mask:
            if "mask" not in box.part_names:
                raise BitstreamError("this model's files carry a mask part; it is missing")
            counts = decode_integer_map(box.part("mask"), (h, w), self.K + 1)
        else:
            if "mask" in box.part_names:
                raise BitstreamError("this model (send_mask=False or no importance map) writes no mask part")
            counts = np.full((h, w), self.K, np.int32)
        sent = mask_from_counts(counts, self.K)
        stream = box.part("symbols")
        tables = self.wavefront_tables(variables, sent)
        used = []

        def recording(symbols, coding_pass, where):
            freqs = tables(symbols, coding_pass, where)
            used.append((where, freqs))
            return freqs

        symbols = schedules.decode(self.schedule(sent.shape), {"symbols": stream}, recording, sent=sent,
                                   precision=FREQUENCY_PRECISION)
        # The range coder has no redundancy: a damaged stream (or one with a word appended) can decode to some
        # other symbols and still end where it should. The stream is a function of the symbols and their
        # tables, so only the exact stream they encode to is accepted (one coder call: ~1 % of the decode).
        if used:
            check = SymbolEncoder(FREQUENCY_PRECISION)
            check.encode(np.concatenate([symbols[where] for where, _ in used]),
                         freqs=np.concatenate([freqs for _, freqs in used]))
            if check.to_bytes() != bytes(stream):
                raise BitstreamError("the symbol stream is not the one its decoded symbols encode to (damaged data)")
        elif stream:
            raise BitstreamError("this file sends no symbols, but its symbol stream is not empty")
        zero = self.zero_symbol(variables["params"]["autoencoder"]["centers"])
        return np.where(sent, symbols, zero).astype(np.int32), header

    def decompress(self, variables, data, **settings):
        if settings:
            raise ConfigError(f"decompress takes no setting(s) {sorted(settings)}")
        volume, header = self.decode_symbols(variables, data)
        ae, stats = variables["params"]["autoencoder"], variables["state"]["batch_stats"]
        x_hat = self._synthesise(ae, stats, jnp.asarray(np.moveaxis(volume, 0, -1))[None])
        return crop(to_u8(x_hat[0]), (header.height, header.width))
